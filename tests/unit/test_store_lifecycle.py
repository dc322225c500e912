"""The store's lifecycle and search quality: bounded close, segments, per-search ef, calibration.

Real SQLite and FAISS files; the hard data set is the one recall collapsed on at a fixed ef
(near-uniform 384-d points around 200 centres, queries near stored points).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from engram.config import StoreConfig
from engram.errors import InvalidRequestError
from engram.store import Store
from tests.conftest import unit_vectors


def hard_set(n: int, queries: int, seed: int = 0, dim: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """(stored, queries), unit length: 200 gaussian centres, per-point noise 0.9 per dimension
    (near-uniform), each query a stored point plus noise 0.3 per dimension."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    raw = centres[rng.integers(0, 200, n)]
    raw += 0.9 * rng.standard_normal((n, dim)).astype(np.float32)
    near = raw[rng.choice(n, queries, replace=False)]
    near += 0.3 * rng.standard_normal((queries, dim)).astype(np.float32)
    return (
        raw / np.linalg.norm(raw, axis=1, keepdims=True),
        near / np.linalg.norm(near, axis=1, keepdims=True),
    )


def _recall(store: Store, data: np.ndarray, cids: list[str], queries: np.ndarray, **kw) -> float:
    row = {cid: i for i, cid in enumerate(cids)}
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    found = [[row[h.cid] for h in store.search(q, 10, **kw)] for q in queries]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def test_store_close_returns_promptly_while_indexing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    vecs = unit_vectors(20_000, seed=1)
    for start in range(0, len(vecs), 2_000):
        store.put([store.record(v) for v in vecs[start : start + 2_000]])
    store.search(vecs[0], top_k=1)
    time.sleep(0.3)  # the indexer is busy with the backlog now
    assert store.stats()["default"]["pending"] > 0
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < store.config.close_timeout_s + 0.5
    store._indexer.join(10)
    assert not store._indexer.is_alive()
    with Store(tmp_path) as again:  # what was indexed was kept; the rest is pending again
        assert again.count() == 20_000
        assert again.search(vecs[7], top_k=1)[0].score == pytest.approx(1.0, abs=1e-5)
        stats = again.stats()["default"]
        assert stats["indexed"] + stats["pending"] == 20_000


def test_store_close_past_its_timeout_leaves_the_indexer_to_finish(tmp_path: Path) -> None:
    config = StoreConfig(close_timeout_s=0.0, index_step_s=1.0)
    store = Store(tmp_path, config)
    vecs = unit_vectors(12_000, seed=2)
    store.put([store.record(v) for v in vecs])
    store.search(vecs[0], top_k=1)
    time.sleep(0.2)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 0.5
    store._indexer.join(20)  # it finished its step, checkpointed and closed SQLite itself
    assert not store._indexer.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):
        store.db.count()
    with Store(tmp_path) as again:
        assert again.count() == 12_000
        assert again.search(vecs[5], top_k=1)[0].score == pytest.approx(1.0, abs=1e-5)
        assert again.stats()["default"]["indexed"] > 0


def test_store_checkpoints_while_running(tmp_path: Path) -> None:
    """Without close(), the index reaches the disk every ``checkpoint_rows`` rows."""
    config = StoreConfig(index_batch_rows=500, checkpoint_rows=1_000, index_step_s=0.05)
    store = Store(tmp_path, config)
    vecs = unit_vectors(4_000, seed=3)
    store.put([store.record(v) for v in vecs])
    deadline = time.monotonic() + 30
    checkpoint = None
    while time.monotonic() < deadline:
        checkpoint = store.db.checkpoint("default")
        if checkpoint is not None and checkpoint.upto >= 1_000:
            break
        time.sleep(0.05)
    assert checkpoint is not None and checkpoint.upto >= 1_000
    assert all((tmp_path / "index" / f).is_file() for f in checkpoint.files)
    store.close()


def test_store_segments_split_search_compact_and_reopen(tmp_path: Path) -> None:
    config = StoreConfig(index_segment_rows=500, index_batch_rows=100, calibration_min_rows=10**9)
    vecs = unit_vectors(1_800, seed=4)
    with Store(tmp_path, config) as store:
        cids = store.put([store.record(v, {"i": i}) for i, v in enumerate(vecs)])
        store.flush()
        stats = store.stats()["default"]
        assert (stats["segments"], stats["indexed"], stats["pending"]) == (4, 1_800, 0)
        for j in (0, 499, 500, 1_234, 1_799):  # a row of every segment, found by its vector
            assert store.search(vecs[j], top_k=1, ef=256)[0].cid == cids[j]
        flt = {"i": {"$in": [3, 700, 1_700]}}
        assert {h.metadata["i"] for h in store.search(vecs[3], top_k=10, filter=flt)} == {
            3,
            700,
            1_700,
        }
        for cid in cids[500:1_000]:  # the whole second segment
            store.delete(cid)
        store.flush()
        stats = store.stats()["default"]
        assert (stats["segments"], stats["indexed"], stats["tombstones"]) == (3, 1_300, 0)
    with Store(tmp_path, config) as store:
        assert store.search(vecs[1_500], top_k=1)[0].cid == cids[1_500]
        stats = store.stats()["default"]
        assert (stats["segments"], stats["indexed"], stats["pending"]) == (3, 1_300, 0)
        assert cids[700] not in {h.cid for h in store.search(vecs[700], top_k=10)}


@pytest.mark.parametrize("ef", [0, -1, 4_097, True, "64", 1.5])
def test_store_search_ef_is_validated(store: Store, ef: object) -> None:
    store.put([store.record(v) for v in unit_vectors(20)])
    with pytest.raises(InvalidRequestError, match="ef"):
        store.search(unit_vectors(1)[0], ef=ef)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="ef"):
        store.hybrid_search("x", unit_vectors(1)[0], ef=ef, mode="vector")  # type: ignore[arg-type]


def test_store_search_ef_widens_the_beam(tmp_path: Path) -> None:
    data, queries = hard_set(3_000, 100, seed=5)
    with Store(tmp_path, StoreConfig(calibration_recall=0)) as store:
        cids = store.put([store.record(v) for v in data])
        store.flush()
        narrow = _recall(store, data, cids, queries, ef=1)
        wide = _recall(store, data, cids, queries, ef=1_000)
        assert narrow < 0.9 < 0.99 <= wide
        assert store.stats()["default"]["ef"] == StoreConfig().hnsw_ef_search  # not calibrated
        vector_hits = store.hybrid_search("x", queries[0], top_k=10, mode="vector", ef=1_000)
        assert [h.cid for h in vector_hits] == [h.cid for h in store.search(queries[0], ef=1_000)]


def test_store_calibrates_its_default_ef_to_the_target_recall(tmp_path: Path) -> None:
    """On the hard data the fixed default ef misses; calibrated, the default holds recall."""
    data, queries = hard_set(5_000, 200, seed=6)
    with Store(tmp_path) as store:
        cids = store.put([store.record(v) for v in data])
        store.flush()
        stats = store.stats()["default"]
        assert stats["ef"] > StoreConfig().hnsw_ef_search and stats["recall"] >= 0.95
        assert _recall(store, data, cids, queries, ef=StoreConfig().hnsw_ef_search) < 0.95
        assert _recall(store, data, cids, queries) >= 0.95
        calibrated = (stats["ef"], stats["recall"])
    with Store(tmp_path) as store:  # kept with the checkpoint, not measured again
        store.search(queries[0])
        stats = store.stats()["default"]
        assert (stats["ef"], stats["recall"]) == calibrated
