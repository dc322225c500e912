"""Shared fixtures: real SQLite stores in temporary directories, a tiny embedder for plumbing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from engram.store import Store

DIM = 384


@pytest.fixture(autouse=True)
def _engram_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the developer's ~/.engram; share one model cache across the session."""
    home = tmp_path_factory.getbasetemp() / "engram-home"
    monkeypatch.setenv("ENGRAM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class HashEmbedder:
    """Deterministic stand-in for plumbing tests that never look at meaning."""

    model_id = "test/hash-embedder"
    dim = DIM

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            rows.append(unit_vectors(1, seed=seed)[0])
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), DIM)
