"""Simplified Yuma consensus: how validators' weights become miners' incentive.

Pure functions over numpy arrays, no I/O, so the chain (and tests) can run the
same maths anywhere.
"""

from __future__ import annotations

import numpy as np

_HALF = 0.5 - 1e-9  # "at least half the stake", forgiving float rounding


def yuma(stakes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each miner's share of the incentive, given the validators' stake and weights.

    ``stakes`` is ``[V]``, ``weights`` is ``[V, M]``: row ``i`` is validator
    ``i``'s weights over miner uids ``0..M-1`` (rows are L1-normalised here
    again; an all-zero row stays zero). The result is ``[M]`` and sums to 1,
    or is all zeros when nobody gave any weight.

    1. Stake ``S`` is normalised to sum 1 (all-zero stake counts equally).
    2. Consensus per miner ``j``: ``c_j`` is the largest ``w`` such that
       validators holding at least half the stake gave ``W_ij >= w`` — the
       stake-weighted median of the column, taking the upper value on an
       exact 50/50 split.
    3. Clip ``W'_ij = min(W_ij, c_j)``. This is the point of Yuma: one
       validator (or any minority of stake) cannot lift a miner above what a
       stake majority agrees it is worth, so colluding with a miner only pays
       with a majority of stake behind it.
    4. Rank ``r_j = sum_i S_i W'_ij``; incentive ``= r / sum(r)``.

    Raises ``ValueError`` on mismatched shapes, negative or non-finite input.
    """
    s = np.asarray(stakes, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != s.shape[0]:
        raise ValueError(f"weights must be [V={s.shape[0]}, M], got shape {w.shape}")
    n_miners = w.shape[1]
    if s.shape[0] == 0 or n_miners == 0:
        return np.zeros(n_miners)
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(w))):
        raise ValueError("stakes and weights must be finite")
    if np.any(s < 0) or np.any(w < 0):
        raise ValueError("stakes and weights must be >= 0")

    total_stake = s.sum()
    s = s / total_stake if total_stake > 0 else np.full(s.shape, 1.0 / s.shape[0])
    row_sums = w.sum(axis=1, keepdims=True)
    w = np.divide(w, row_sums, out=np.zeros_like(w), where=row_sums > 0)

    # Stake-weighted median per column: walk the column from the largest weight
    # down, accumulating stake; the weight where the stake first reaches half
    # is the largest w that half the stake gave at least.
    order = np.argsort(-w, axis=0, kind="stable")
    sorted_w = np.take_along_axis(w, order, axis=0)
    cumulative = np.cumsum(s[order], axis=0)
    first = np.argmax(cumulative >= _HALF, axis=0)
    consensus = sorted_w[first, np.arange(n_miners)]

    clipped = np.minimum(w, consensus[np.newaxis, :])
    rank = s @ clipped
    total = rank.sum()
    return rank / total if total > 0 else np.zeros(n_miners)
