"""The filters the memory API stands on, on a real Store (SQLite and FAISS files): list items
match by item, ``$state`` selects by lifecycle in every search and listing; and memory decay
(FSRS retrievability and strength)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engram.config import DEFAULT_NAMESPACE, StoreConfig
from engram.errors import InvalidFilterError
from engram.memory import decay
from engram.store import Store
from tests.conftest import unit_vectors

DIM = 8
DAY = 86_400.0


@dataclass
class Filled:
    """A store holding one record per lifecycle state, each known by a short name."""

    store: Store
    vectors: np.ndarray
    cids: dict[str, str]  # name -> CID
    names: dict[str, str]  # CID -> name

    def listed(self, flt: Any) -> set[str]:
        return {self.names[r.cid] for r in self.store.list(limit=100, filter=flt)}

    def searched(self, flt: Any) -> set[str]:
        hits = self.store.search(self.vectors[0], top_k=50, filter=flt)
        return {self.names[h.cid] for h in hits}

    def hybrid(self, flt: Any, mode: str = "hybrid") -> set[str]:
        hits = self.store.hybrid_search("note", self.vectors[0], 50, flt, None, mode)
        return {self.names[h.cid] for h in hits}


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Filled]:
    """Records in every state: marks set on the node, expiries, and a supersedes chain."""
    store = Store(tmp_path / "store", StoreConfig(dim=DIM))
    vectors = unit_vectors(10, dim=DIM, seed=7)
    now = time.time()
    metadata: dict[str, dict[str, Any]] = {
        "tagged": {"kind": "memory", "tags": ["work", "home"], "category": "life"},
        "other": {"kind": "memory", "tags": ["x"]},
        "archived": {"kind": "memory", "tags": ["work"]},
        "forgotten": {"kind": "memory", "tags": ["home"]},
        "expired": {"kind": "memory", "expires_at": now - 10},
        "fresh": {"kind": "memory", "expires_at": now + 3600},
        "archived_and_expired": {"kind": "memory", "expires_at": now - 10},
        "old": {"kind": "memory", "category": "life"},
        "plain": {"n": 1},  # not a memory: none of the states applies, so it is active
    }
    records = [
        store.record(vectors[i], meta, f"note {name}")
        for i, (name, meta) in enumerate(metadata.items())
    ]
    cids = dict(zip(metadata, store.put(records), strict=True))
    (cids["new"],) = store.put(
        [store.record(vectors[9], {"kind": "memory", "supersedes": cids["old"]}, "note new")]
    )
    for name, state in (
        ("archived", "archived"),
        ("forgotten", "forgotten"),
        ("archived_and_expired", "archived"),
    ):
        store.db.set_memory_state(DEFAULT_NAMESPACE, cids[name], state, None, now)
    yield Filled(store, vectors, cids, {cid: name for name, cid in cids.items()})
    store.close()


ACTIVE = {"tagged", "other", "fresh", "new", "plain"}


# --- list items -----------------------------------------------------------------------------


def test_a_list_field_matches_any_of_its_items(filled: Filled) -> None:
    assert filled.listed({"tags": "work"}) == {"tagged", "archived"}
    assert filled.listed({"tags": {"$in": ["x", "home"]}}) == {"tagged", "other", "forgotten"}
    assert filled.listed({"tags": {"$eq": "home"}}) == {"tagged", "forgotten"}
    assert filled.listed({"tags": "nowhere"}) == set()
    assert filled.listed({"tags": "work", "category": "life"}) == {"tagged"}


def test_list_items_match_in_vector_and_hybrid_search(filled: Filled) -> None:
    wanted = {"tags": {"$in": ["x", "home"]}}
    assert filled.searched(wanted) == {"tagged", "other", "forgotten"}
    for mode in ("hybrid", "vector", "keyword"):
        assert filled.hybrid(wanted, mode) == {"tagged", "other", "forgotten"}, mode


# --- $state ---------------------------------------------------------------------------------


def test_state_active_leaves_out_marked_expired_and_superseded_records(filled: Filled) -> None:
    assert filled.listed({"$state": "active"}) == ACTIVE
    assert filled.listed({"$state": ["active"]}) == ACTIVE


def test_each_state_holds_its_records_by_precedence(filled: Filled) -> None:
    """Forgotten and archived (set on the node) come before expired, expired before superseded,
    so every record is in exactly one state."""
    expected = {
        "archived": {"archived", "archived_and_expired"},
        "forgotten": {"forgotten"},
        "expired": {"expired"},
        "superseded": {"old"},
        "active": ACTIVE,
    }
    for state, names in expected.items():
        assert filled.listed({"$state": state}) == names, state
    assert set().union(*expected.values()) == set(filled.cids)
    assert sum(map(len, expected.values())) == len(filled.cids)
    assert filled.listed({"$state": ["archived", "forgotten"]}) == {
        "archived",
        "archived_and_expired",
        "forgotten",
    }
    assert filled.listed({"$state": ["expired", "expired"]}) == {"expired"}


def test_an_unarchived_record_is_active_again(filled: Filled) -> None:
    cid = filled.cids["archived"]
    filled.store.db.set_memory_state(DEFAULT_NAMESPACE, cid, "active", None, time.time())
    assert "archived" in filled.listed({"$state": "active"})
    assert filled.listed({"$state": "archived"}) == {"archived_and_expired"}
    filled.store.db.set_memory_state(
        DEFAULT_NAMESPACE, filled.cids["archived_and_expired"], "active", None, time.time()
    )
    assert "archived_and_expired" in filled.listed({"$state": "expired"})  # its expiry remains


def test_state_filter_works_in_vector_and_hybrid_search(filled: Filled) -> None:
    assert filled.searched({"$state": "active"}) == ACTIVE
    assert filled.searched({"$state": ["archived", "forgotten"]}) == {
        "archived",
        "archived_and_expired",
        "forgotten",
    }
    for mode in ("hybrid", "vector", "keyword"):
        assert filled.hybrid({"$state": "active"}, mode) == ACTIVE, mode
        assert filled.hybrid({"$state": "superseded"}, mode) == {"old"}, mode


def test_state_combines_inside_and_or(filled: Filled) -> None:
    both = {"$and": [{"$state": "active"}, {"tags": "work"}]}
    either = {"$or": [{"$state": "archived"}, {"tags": "x"}]}
    nested = {"$and": [{"kind": "memory"}, {"$or": [{"$state": "expired"}, {"category": "life"}]}]}
    beside = {"$state": "active", "category": "life"}  # several keys mean AND
    for run in (filled.listed, filled.searched, filled.hybrid):
        assert run(both) == {"tagged"}
        assert run(either) == {"archived", "archived_and_expired", "other"}
        assert run(nested) == {"expired", "tagged", "old"}
        assert run(beside) == {"tagged"}


@pytest.mark.parametrize("state", ["sleeping", "ACTIVE", "all", [], ["active", "nope"], 5, None])
def test_an_unknown_state_is_refused(filled: Filled, state: Any) -> None:
    for run in (filled.listed, filled.searched, filled.hybrid):
        with pytest.raises(InvalidFilterError, match=r"\$state"):
            run({"$state": state})
    with pytest.raises(InvalidFilterError, match=r"\$state"):
        filled.listed({"$and": [{"kind": "memory"}, {"$state": state}]})


def test_an_expiry_passes_with_time(tmp_path: Path) -> None:
    """``expired`` is judged when the filter runs, not when the record was stored."""
    store = Store(tmp_path / "store", StoreConfig(dim=DIM))
    try:
        (cid,) = store.put(
            [store.record(unit_vectors(1, dim=DIM)[0], {"expires_at": time.time() + 0.3}, "soon")]
        )
        assert [r.cid for r in store.list(filter={"$state": "active"})] == [cid]
        time.sleep(0.35)
        assert store.list(filter={"$state": "active"}) == []
        assert [r.cid for r in store.list(filter={"$state": "expired"})] == [cid]
    finally:
        store.close()


# --- decay ----------------------------------------------------------------------------------


def test_retrievability_falls_with_time() -> None:
    created = 1_700_000_000.0
    days = [0, 1, 7, 30, 365]
    recall = [decay.retrievability(None, created, created + d * DAY) for d in days]
    assert recall[0] == pytest.approx(1.0)
    assert all(0.0 <= r <= 1.0 for r in recall)
    assert recall == sorted(recall, reverse=True) and len(set(recall)) == len(recall)
    assert recall[-1] < 0.5


def test_a_review_raises_retrievability_and_slows_its_fall() -> None:
    created = 1_700_000_000.0
    later = created + 10 * DAY
    before = decay.retrievability(None, created, later)
    card = decay.review(None, created, later)
    assert decay.retrievability(card, created, later) == pytest.approx(1.0)
    assert decay.retrievability(card, created, later) > before
    month = later + 30 * DAY  # the same 30 days fade less after the review
    assert decay.retrievability(card, created, month) > decay.retrievability(
        None, created, created + 30 * DAY
    )
    again = decay.review(card, created, month)
    assert decay.retrievability(again, created, month + 30 * DAY) > decay.retrievability(
        card, created, month
    )
    assert decay.review(None, created, later) == card  # deterministic: replicas agree


@pytest.mark.parametrize("recall", [0.0, 0.3, 1.0])
def test_strength_has_importance_as_its_floor(recall: float) -> None:
    assert decay.strength(1.0, recall) == 1.0
    assert decay.strength(0.0, recall) == pytest.approx(recall)
    assert decay.strength(0.5, recall) >= 0.5
    assert decay.strength(0.5, 1.0) == 1.0
