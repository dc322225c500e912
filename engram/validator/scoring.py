"""The scoring formula of docs/architecture.md, "Scoring", as pure functions (no I/O), so it can be read and tested alone.

::

    score         = 0.50 · recall@10 + 0.30 · latency_score + 0.20 · proof_rate
    latency_score = 1 at ≤ 100 ms, 0 at ≥ 500 ms, linear between
    proof_rate    = passed / issued over a sliding window;
                    below 0.5 after ≥ 5 challenges → score (and weight) 0
    weights       = EMA (α = 0.1) of scores per uid, L1-normalised
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

RECALL_WEIGHT = 0.50
LATENCY_WEIGHT = 0.30
PROOF_WEIGHT = 0.20

RECALL_K = 10
LATENCY_FULL_MS = 100.0  # at or below: full latency score
LATENCY_ZERO_MS = 500.0  # at or above: no latency score (also what a failed query counts as)
SLASH_RATE = 0.5  # a proof rate below this ...
SLASH_MIN_CHALLENGES = 5  # ... after at least this many challenges zeroes the miner


def recall_at_k(
    returned_cids: Sequence[str], truth_cids: Sequence[str], k: int = RECALL_K
) -> float:
    """Share of the true top-k found in the first k returned.

    With no truth (routing assigns the miner none of the corpus) there is
    nothing to miss, so an answer counts as full recall; a failed query is
    scored 0 by the caller, never here.
    """
    truth = set(truth_cids[:k])
    if not truth:
        return 1.0
    return len(truth.intersection(returned_cids[:k])) / len(truth)


def latency_score(ms: float) -> float:
    """1 at ≤ 100 ms, 0 at ≥ 500 ms, linear between; NaN (no measurement) is 0."""
    if not math.isfinite(ms):
        return 0.0
    if ms <= LATENCY_FULL_MS:
        return 1.0
    if ms >= LATENCY_ZERO_MS:
        return 0.0
    return (LATENCY_ZERO_MS - ms) / (LATENCY_ZERO_MS - LATENCY_FULL_MS)


def proof_rate(passed: int, issued: int) -> float:
    """Passed over issued; no challenge issued yet means nothing proven, so 0."""
    if issued <= 0:
        return 0.0
    return min(max(passed, 0), issued) / issued


def slashed(passed: int, issued: int) -> bool:
    """Below half the challenges passed, once there are enough to judge."""
    return issued >= SLASH_MIN_CHALLENGES and proof_rate(passed, issued) < SLASH_RATE


def score(recall: float, latency_ms: float, proof_passed: int, proof_issued: int) -> float:
    """One round's score in [0, 1]; 0 when the proof rate triggers the slash rule."""
    if slashed(proof_passed, proof_issued):
        return 0.0
    recall = min(max(recall, 0.0), 1.0) if math.isfinite(recall) else 0.0
    return (
        RECALL_WEIGHT * recall
        + LATENCY_WEIGHT * latency_score(latency_ms)
        + PROOF_WEIGHT * proof_rate(proof_passed, proof_issued)
    )


def ema(prev: float | None, new: float, alpha: float) -> float:
    """Exponential moving average; a uid without history starts from 0, as on Bittensor."""
    return alpha * new + (1.0 - alpha) * (prev or 0.0)


def normalise(weights: Iterable[float]) -> list[float]:
    """L1-normalised, negatives and non-finite values as 0; all zeros stay zeros (no opinion)."""
    clean = [w if math.isfinite(w) and w > 0 else 0.0 for w in weights]
    total = math.fsum(clean)
    if total <= 0:
        return [0.0] * len(clean)
    return [w / total for w in clean]


@dataclass(frozen=True)
class MinerScore:
    """What one scoring round measured for one miner, and the score it earns."""

    uid: int
    hotkey: str
    recall: float
    latency_ms: float
    proof_passed: int
    proof_issued: int
    queries: int = 0
    failed: int = 0

    @property
    def proof_rate(self) -> float:
        return proof_rate(self.proof_passed, self.proof_issued)

    @property
    def slashed(self) -> bool:
        return slashed(self.proof_passed, self.proof_issued)

    @property
    def score(self) -> float:
        return score(self.recall, self.latency_ms, self.proof_passed, self.proof_issued)


__all__ = [
    "LATENCY_FULL_MS",
    "LATENCY_ZERO_MS",
    "SLASH_MIN_CHALLENGES",
    "SLASH_RATE",
    "MinerScore",
    "ema",
    "latency_score",
    "normalise",
    "proof_rate",
    "recall_at_k",
    "score",
    "slashed",
]
