"""The validator's private ground truth: random unit vectors only it can regenerate.

The corpus comes from a secret seed drawn with :mod:`secrets` on first start
and kept in the validator's state database, never a public file, so a miner
cannot precompute answers. It lives in the validator's own namespace, and
queries are fresh noisy copies of corpus vectors, new every round, so
answers cannot be cached either.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

import numpy as np

from engram.config import EMBEDDING_DIM, Limits
from engram.records import Record, make_record

SEED_BYTES = 32
QUERY_NOISE = 0.5  # norm of the gaussian noise added to a unit corpus vector
_NAMESPACE_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def corpus_namespace(hotkey: str) -> str:
    """``validator-<first 8 characters of the hotkey>``: one namespace per validator."""
    return "validator-" + _NAMESPACE_UNSAFE.sub("-", hotkey[:8])


def new_seed() -> str:
    """A fresh secret seed (hex); whoever knows it can rebuild the corpus."""
    return secrets.token_hex(SEED_BYTES)


def corpus_vector(seed_hex: str, index: int, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """The ``index``-th vector of the corpus: the same for the same seed, whatever the size."""
    rng = np.random.default_rng([int(seed_hex, 16), index])
    vector = rng.standard_normal(dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def build_records(
    seed_hex: str, namespace: str, start: int, stop: int, dim: int = EMBEDDING_DIM
) -> list[Record]:
    """Corpus records ``start..stop-1``, each a unit vector with metadata ``{"i": n}``."""
    limits = Limits()
    return [
        make_record(
            corpus_vector(seed_hex, i, dim), {"i": i}, None, namespace, dim=dim, limits=limits
        )
        for i in range(start, stop)
    ]


class Corpus:
    """The records plus a normalised matrix for exact nearest-neighbour truth."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = list(records)
        self.by_cid = {r.cid: i for i, r in enumerate(self.records)}
        if self.records:
            matrix = np.stack([np.asarray(r.embedding, dtype=np.float32) for r in self.records])
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            self.matrix = matrix / np.where(norms > 0, norms, 1.0)
        else:
            self.matrix = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def cids(self) -> list[str]:
        return [r.cid for r in self.records]

    def record(self, cid: str) -> Record:
        return self.records[self.by_cid[cid]]

    def top_k(self, query: np.ndarray, among: Sequence[int], k: int = 10) -> list[str]:
        """Exact top-k CIDs by cosine among the records at ``among`` (ties broken by CID)."""
        if not among:
            return []
        idx = np.asarray(among, dtype=np.int64)
        q = np.asarray(query, dtype=np.float32)
        q = q / (np.linalg.norm(q) or 1.0)
        scores = self.matrix[idx] @ q
        order = sorted(range(len(idx)), key=lambda j: (-float(scores[j]), self.records[idx[j]].cid))
        return [self.records[idx[j]].cid for j in order[:k]]

    def queries(
        self, among: Sequence[int], count: int, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """``count`` fresh queries: corpus vectors from ``among`` (or anywhere) plus noise.

        The noise is drawn from OS entropy unless ``rng`` is given, so no two
        rounds ask the same thing.
        """
        rng = rng or np.random.default_rng()
        pool = np.asarray(among if len(among) else range(len(self.records)), dtype=np.int64)
        if not len(pool) or count <= 0:
            return np.zeros((0, self.matrix.shape[1]), dtype=np.float32)
        sources = self.matrix[rng.choice(pool, size=count)]
        dim = self.matrix.shape[1]
        noisy = sources + rng.standard_normal((count, dim)) * (QUERY_NOISE / np.sqrt(dim))
        return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


__all__ = ["Corpus", "build_records", "corpus_namespace", "corpus_vector", "new_seed"]
