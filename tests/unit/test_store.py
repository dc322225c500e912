"""The storage engine on real SQLite and FAISS files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from engram.config import StoreConfig
from engram.errors import (
    DimensionMismatchError,
    InvalidFilterError,
    InvalidRequestError,
    PayloadTooLargeError,
    StorageError,
)
from engram.store import Store
from tests.conftest import unit_vectors

SMALL = StoreConfig(index_batch_rows=256, exact_search_max_rows=64)


def _fill(
    store: Store, vecs: np.ndarray, namespace: str | None = None, start: int = 0
) -> list[str]:
    records = [
        store.record(
            v,
            {"i": i, "bucket": i % 10, "tag": "even" if i % 2 == 0 else "odd"},
            f"text number {i}",
            namespace,
        )
        for i, v in enumerate(vecs, start=start)
    ]
    return store.put(records)


def _counts(store: Store, namespace: str = "default") -> dict[str, int]:
    stats = store.stats()[namespace]
    return {key: stats[key] for key in ("indexed", "pending", "tombstones")}


def _exact_top(
    vecs: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None
) -> list[int]:
    scores = vecs @ q
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return [int(i) for i in np.argsort(-scores)[:k] if np.isfinite(scores[i])]


def test_store_roundtrip_get_list_count(store: Store) -> None:
    vecs = unit_vectors(30)
    cids = _fill(store, vecs)
    assert store.count() == 30
    rec = store.get(cids[3])
    assert rec is not None and rec.text == "text number 3" and rec.metadata["i"] == 3
    np.testing.assert_array_equal(rec.embedding, vecs[3])
    assert store.get("v1::" + "0" * 64) is None
    page = store.list(limit=10, offset=25)
    assert [r.metadata["i"] for r in page] == [25, 26, 27, 28, 29]


def test_store_reingest_is_idempotent(store: Store) -> None:
    vecs = unit_vectors(5)
    first = _fill(store, vecs)
    second = _fill(store, vecs)
    assert first == second and store.count() == 5
    assert len({h.cid for h in store.search(vecs[0], top_k=10)}) == 5


def test_store_write_is_searchable_at_once(store: Store) -> None:
    vecs = unit_vectors(3)
    cids = _fill(store, vecs)
    hits = store.search(vecs[1], top_k=3)
    assert hits[0].cid == cids[1] and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_store_scores_are_cosine_sorted_descending(tmp_path: Path) -> None:
    with Store(tmp_path, SMALL) as store:
        vecs = unit_vectors(600)
        _fill(store, vecs[:500])
        store.flush()
        _fill(store, vecs[500:], start=500)  # most indexed, the rest pending
        for j in range(0, 600, 30):  # near a stored point, so the true order is clear
            q = vecs[j] + 0.05 * unit_vectors(1, seed=j)[0]
            q /= np.linalg.norm(q)
            hits = store.search(q * 3.0, top_k=10)  # query length must not matter
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            assert all(-1.0 <= s <= 1.0 for s in scores)
            assert [h.metadata["i"] for h in hits][:5] == _exact_top(vecs, q, 5)


def test_store_indexes_in_background_and_reopens(tmp_path: Path) -> None:
    vecs = unit_vectors(1000)
    with Store(tmp_path, SMALL) as store:
        cids = _fill(store, vecs)
        store.flush()
        assert _counts(store) == {"indexed": 1000, "pending": 0, "tombstones": 0}
    assert list((tmp_path / "index").glob("*.faiss"))
    with Store(tmp_path, SMALL) as store:
        hits = store.search(vecs[42], top_k=1)
        assert hits[0].cid == cids[42]
        assert store.stats()["default"]["indexed"] == 1000


def test_store_delete_hides_record_everywhere(tmp_path: Path) -> None:
    vecs = unit_vectors(400)
    with Store(tmp_path, SMALL) as store:
        cids = _fill(store, vecs)
        store.flush()
        extra = store.put([store.record(unit_vectors(1, seed=7)[0])])[0]  # pending
        assert store.delete(cids[10]) and store.delete(extra)
        assert not store.delete(cids[10])
        assert store.get(cids[10]) is None and store.count() == 399
        assert cids[10] not in [h.cid for h in store.search(vecs[10], top_k=10)]
        assert extra not in [h.cid for h in store.search(unit_vectors(1, seed=7)[0], top_k=10)]
    with Store(tmp_path, SMALL) as store:  # tombstones survive a restart
        assert cids[10] not in [h.cid for h in store.search(vecs[10], top_k=10)]
        assert store.stats()["default"]["tombstones"] == 1
        # and the record can come back
        store.put([store.record(vecs[10], {"i": 10, "bucket": 0, "tag": "even"}, "text number 10")])
        assert store.search(vecs[10], top_k=1)[0].cid == cids[10]


def test_store_compacts_tombstones(tmp_path: Path) -> None:
    vecs = unit_vectors(500)
    with Store(tmp_path, SMALL) as store:
        cids = _fill(store, vecs)
        store.flush()
        for cid in cids[:200]:
            store.delete(cid)
        store.flush()
        assert _counts(store) == {"indexed": 300, "pending": 0, "tombstones": 0}
        for q in vecs[200:220]:
            assert store.search(q, top_k=1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_store_namespaces_are_separate(store: Store) -> None:
    vecs = unit_vectors(4)
    a = _fill(store, vecs[:2], "alpha")
    b = _fill(store, vecs[2:], "beta")
    assert {h.cid for h in store.search(vecs[0], 10, namespace="alpha")} == set(a)
    assert {h.cid for h in store.search(vecs[0], 10, namespace="beta")} == set(b)
    assert store.namespaces() == {"alpha": 2, "beta": 2}
    assert store.get(a[0], "beta") is None
    assert store.find(a[0]) is not None
    with pytest.raises(InvalidRequestError, match="namespace"):
        store.search(vecs[0], namespace="../etc")


@pytest.mark.parametrize(
    ("flt", "predicate"),
    [
        ({"bucket": 3}, lambda m: m["bucket"] == 3),
        ({"bucket": {"$eq": 3}}, lambda m: m["bucket"] == 3),
        ({"bucket": {"$ne": 3}}, lambda m: m["bucket"] != 3),
        ({"i": {"$gt": 50}}, lambda m: m["i"] > 50),
        ({"i": {"$gte": 50}}, lambda m: m["i"] >= 50),
        ({"i": {"$lt": 7}}, lambda m: m["i"] < 7),
        ({"i": {"$lte": 7}}, lambda m: m["i"] <= 7),
        ({"bucket": {"$in": [1, 2]}}, lambda m: m["bucket"] in (1, 2)),
        ({"bucket": {"$nin": [1, 2]}}, lambda m: m["bucket"] not in (1, 2)),
        ({"tag": "odd", "i": {"$lt": 20}}, lambda m: m["tag"] == "odd" and m["i"] < 20),
        (
            {"$and": [{"tag": "even"}, {"i": {"$gte": 10, "$lte": 30}}]},
            lambda m: m["tag"] == "even" and 10 <= m["i"] <= 30,
        ),
        (
            {"$or": [{"bucket": 9}, {"i": {"$in": [0, 1]}}]},
            lambda m: m["bucket"] == 9 or m["i"] in (0, 1),
        ),
        ({"missing": {"$ne": 1}}, lambda m: False),
        ({"bucket": "3"}, lambda m: m["bucket"] == 3),  # a string matches the number it spells
        ({"bucket": "03"}, lambda m: False),  # ... only as JSON spells it
        ({"bucket": {"$in": ["3", "4"]}}, lambda m: m["bucket"] in (3, 4)),
    ],
)
def test_store_filter_operators(tmp_path: Path, flt: dict, predicate) -> None:
    vecs = unit_vectors(300)
    with Store(tmp_path, SMALL) as store:
        _fill(store, vecs[:200])
        store.flush()
        _fill(store, vecs[200:], start=200)
        metas = [
            {"i": i, "bucket": i % 10, "tag": "even" if i % 2 == 0 else "odd"} for i in range(300)
        ]
        mask = np.array([predicate(m) for m in metas])
        q = unit_vectors(1, seed=5)[0]
        hits = store.search(q, top_k=10, filter=flt)
        assert all(predicate(h.metadata) for h in hits)
        assert [h.metadata["i"] for h in hits] == _exact_top(vecs, q, 10, mask)


def test_store_filter_types_are_strict(store: Store) -> None:
    store.put(
        [
            store.record(unit_vectors(1, seed=s)[0], {"v": v})
            for s, v in enumerate([1, "1", True, None, 1.5])
        ]
    )
    q = unit_vectors(1, seed=0)[0]
    assert [h.metadata["v"] for h in store.search(q, 10, {"v": 1})] == [1]
    assert [h.metadata["v"] for h in store.search(q, 10, {"v": True})] == [True]
    assert [h.metadata["v"] for h in store.search(q, 10, {"v": None})] == [None]
    assert sorted(h.metadata["v"] for h in store.search(q, 10, {"v": {"$gte": 1}})) == [1, 1.5]


@pytest.mark.parametrize(
    "flt",
    [
        {"$xor": []},
        {"a": {"$regex": "x"}},
        {"a": {"$gt": "x"}},
        {"a": {"$in": 3}},
        {"$or": {}},
        {"a": {"$eq": [1]}},
        {"": 1},
        [],
        {"a": {}},
    ],
)
def test_store_bad_filters_are_clear_errors(store: Store, flt) -> None:
    _fill(store, unit_vectors(2))
    with pytest.raises(InvalidFilterError):
        store.search(unit_vectors(1)[0], filter=flt)


@pytest.mark.parametrize(
    ("flt", "share", "exact_max"),
    [
        ({"bucket": 7}, 0.01, 2_048),  # 1 %: exact search over the matches
        ({"bucket": 7}, 0.01, 16),  # 1 % but many rows: still exact, by selectivity
        ({"bucket": {"$lt": 10}}, 0.10, 16),  # 10 %: filtered HNSW
    ],
)
def test_store_filters_keep_recall(tmp_path: Path, flt: dict, share: float, exact_max: int) -> None:
    """Filtered queries keep recall@10 >= 0.95 on 20k clustered records, whichever plan runs."""
    n = 20_000
    rng = np.random.default_rng(3)
    centers = unit_vectors(50, seed=4)
    data = centers[rng.integers(0, 50, n + 50)] + 0.3 * unit_vectors(n + 50, seed=5)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    vecs, queries = data[:n], data[n:]  # queries from the data's distribution, not stored
    with Store(tmp_path, StoreConfig(exact_search_max_rows=exact_max)) as store:
        cids = store.put([store.record(v, {"bucket": i % 100}) for i, v in enumerate(vecs)])
        store.flush()
        mask = np.arange(n) % 100 == 7 if share == 0.01 else np.arange(n) % 100 < 10
        assert mask.mean() == pytest.approx(share)
        recalls = []
        for q in queries:
            truth = {cids[i] for i in _exact_top(vecs, q, 10, mask)}
            got = {h.cid for h in store.search(q, 10, flt)}
            recalls.append(len(got & truth) / 10)
        assert np.mean(recalls) >= 0.95, np.mean(recalls)


def test_store_rejects_bad_vectors(store: Store) -> None:
    store.put([store.record(unit_vectors(1)[0])])  # the default namespace now holds 384-d
    with pytest.raises(DimensionMismatchError):
        store.record([0.1] * 3)
    with pytest.raises(DimensionMismatchError):
        store.search([0.1] * 3)
    with pytest.raises(InvalidRequestError, match="zeros"):
        store.put([store.record(np.zeros(384))])
    with pytest.raises(InvalidRequestError, match="NaN"):
        store.search([float("nan")] * 384)
    with pytest.raises(InvalidRequestError, match="top_k"):
        store.search(unit_vectors(1)[0], top_k=0)
    with pytest.raises(PayloadTooLargeError):
        store.record(unit_vectors(1)[0], text="x" * 10_000)
    with pytest.raises(InvalidRequestError, match="nested"):
        deep: dict = {}
        node = deep
        for _ in range(10):
            node["a"] = {}
            node = node["a"]
        store.record(unit_vectors(1)[0], deep)


def test_store_keyword_mode_of_hybrid_search(store: Store) -> None:
    _fill(store, unit_vectors(20))
    hits = store.hybrid_search("number 13", None, mode="keyword")
    assert hits and hits[0].text == "text number 13"
    assert hits[0].channels is not None and hits[0].channels["keyword"]["rank"] == 1


def test_store_recovers_from_missing_or_stray_index_files(tmp_path: Path) -> None:
    vecs = unit_vectors(300)
    with Store(tmp_path, SMALL) as store:
        cids = _fill(store, vecs)
        store.flush()
    for f in (tmp_path / "index").glob("*.faiss"):
        f.unlink()
    (tmp_path / "index" / "half-written.faiss.tmp").write_bytes(b"\x00" * 10)
    with Store(tmp_path, SMALL) as store:
        assert store.search(vecs[7], top_k=1)[0].cid == cids[7]
        store.flush()
        assert store.stats()["default"]["indexed"] == 300
    assert not list((tmp_path / "index").glob("*.tmp"))


def test_store_refuses_index_built_for_another_dimension(tmp_path: Path) -> None:
    with Store(tmp_path, SMALL) as store:
        _fill(store, unit_vectors(300))
        store.flush()
    with pytest.raises(StorageError, match="same settings"):
        Store(tmp_path, StoreConfig(dim=128)).search(unit_vectors(1, dim=128)[0])


def test_store_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "engram.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open"):
        Store(tmp_path)
    assert sqlite3.sqlite_version


def test_store_migrates_a_schema_1_file_by_indexing_its_fields(tmp_path: Path) -> None:
    vecs = unit_vectors(50)
    with Store(tmp_path) as store:
        _fill(store, vecs)
    conn = sqlite3.connect(tmp_path / "engram.db")
    with conn:  # as that code left it: a version in settings, no migrations recorded
        conn.execute("DELETE FROM record_fields")
        conn.execute("DROP TABLE _engram_migrations")
        conn.execute("DROP TABLE namespace_keys")
        conn.execute("INSERT INTO settings(key, value) VALUES ('schema_version', '1')")
    conn.close()
    with Store(tmp_path) as store:
        hits = store.search(vecs[3], top_k=10, filter={"bucket": 3})
        assert [h.metadata["i"] for h in hits] == _exact_top(
            vecs, vecs[3], 10, np.arange(50) % 10 == 3
        )


def test_store_namespace_dimension_is_fixed_by_its_first_write(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        six = np.eye(6, dtype=np.float32)
        store.put([store.record(v, {"i": i}, namespace="six") for i, v in enumerate(six)])
        store.put([store.record(unit_vectors(1)[0], namespace="canonical")])
        assert (store.dim_of("six"), store.dim_of("canonical"), store.dim_of("new")) == (
            6,
            384,
            None,
        )
        assert store.search(six[2], top_k=1, namespace="six")[0].metadata == {"i": 2}
        with pytest.raises(DimensionMismatchError, match="expected 6"):
            store.record(unit_vectors(1)[0], namespace="six")
        with pytest.raises(DimensionMismatchError, match="expected 6"):
            store.search(unit_vectors(1)[0], namespace="six")
        with pytest.raises(DimensionMismatchError, match="holds 2"):  # mixed, into a new one
            two, three = (
                store.record([1.0, 0.0], namespace="n"),
                store.record([1.0, 0, 0], namespace="n"),
            )
            store.put([two, three])
        assert store.dim_of("n") is None and store.count("n") == 0
        build = store.record_builder()
        first = build([1.0, 0.0], namespace="pair")
        with pytest.raises(DimensionMismatchError, match="expected 2"):
            build([1.0, 0.0, 0.0], namespace="pair")
        store.put([first])
    with Store(tmp_path) as store:  # kept across a reopen
        assert store.dim_of("six") == 6 and store.dim_of("pair") == 2
        assert store.search(six[4], top_k=1, namespace="six")[0].metadata == {"i": 4}
