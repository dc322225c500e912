"""The agent-memory API (docs/memory.md) in every mode: embedded and one miner over HTTP (sync
and async twins), raw HTTP against a miner, and the network through the network client and a
gateway.

The harness modes use the real embedding model: whether a sentence without its final period
is a near-duplicate is a question of meaning. The network tests run on test_network's
in-process subnet with its tiny deterministic HashEmbedder (the project's choice there), so a
near-duplicate has to be the identical text; they look at replication and plumbing only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from bittensor.sp_core import Keypair

from engram import EngramClient
from engram.api.calls import GetLifecycle
from engram.api.node import Lifecycle
from engram.config import GatewayConfig, MinerConfig
from engram.embed import Embedder, get_embedder
from engram.errors import (
    ConflictError,
    ForbiddenError,
    InvalidCIDError,
    InvalidFilterError,
    InvalidRequestError,
    NotFoundError,
)
from engram.gateway.app import create_gateway_app
from engram.memory.model import Link, Memory
from engram.memory.tokens import count_tokens
from engram.miner.app import create_miner_app
from engram.node.local import LocalNode
from engram.records import IngestItem
from engram.sdk.remote import RemoteNode
from engram.sdk.transports import NetworkTransport
from engram.security.access import Caller, Permission
from engram.security.signing import HotkeyAuth
from tests.conftest import HashEmbedder, free_port, serve_in_thread
from tests.integration import test_network
from tests.integration.test_sdk import ALICE, MISSING_CID, Blocking, Harness, harness  # noqa: F401

FIRST = "Alice prefers flat whites every morning."
NEAR_DUPLICATE = "Alice prefers flat whites every morning"  # the same sentence, no final period
UPDATED = "Alice now drinks oat cortados every morning."
COFFEE_QUERY = "what coffee does Alice drink"
FLEETING = "The plumber comes at noon today to fix the kitchen sink."
PLUMBER_QUERY = "when does the plumber come to fix the sink"
OTHERS = [
    ("Bob is allergic to peanuts and shellfish.", "health", ["bob"]),
    ("Carol's birthday party is on the ninth of June.", "event", ["carol", "party"]),
    ("The team standup moved to half past nine.", "work", ["work"]),
    ("Dave keeps his spare house key under the blue flowerpot.", "home", ["dave", "home"]),
]
BAD_CID = "not-a-cid"

LifecycleOf = Callable[[Sequence[str]], dict[str, Lifecycle]]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedder]:
    """The real model, loaded once for the module."""
    with pytest.MonkeyPatch.context() as mp:  # the session's ENGRAM_HOME, never ~/.engram
        mp.setenv("ENGRAM_HOME", str(tmp_path_factory.getbasetemp() / "engram-home"))
        yield get_embedder()


# --- one lifecycle, run in every mode ------------------------------------------------------------


def _memory(harness: Harness, client: Any) -> Any:  # noqa: F811
    """``client.memory`` with plain (blocking) methods in the async modes too."""
    if harness.runner is None:
        return client.memory
    return Blocking(client.client.memory, harness.runner)


def _lifecycle_of(harness: Harness, client: Any) -> LifecycleOf:  # noqa: F811
    """The node's own lifecycle entries: the store behind an embedded client, else the miner."""
    if harness.http:
        assert harness.server is not None
        node = RemoteNode(harness.server.url)
        harness.stack.callback(node.close)
        return lambda cids: node.lifecycle(None, cids)
    inner = client.client if harness.runner is not None else client
    local: LocalNode = inner._transport.node
    return lambda cids: local.lifecycle(None, cids)


def _cids(memories: Sequence[Memory]) -> list[str]:
    return [m.cid for m in memories]


def _run_lifecycle(mem: Any, near_duplicate: str, lifecycle: LifecycleOf | None) -> list[Memory]:
    """Store, duplicate, update, versions, search, links, archive, forget and TTL through one
    ``client.memory``; returns what it stored (oldest first) for callers that check more.

    One unrelated memory stays active throughout, so no search here comes back empty (an
    empty search is its own test). On the network the two versions may sit on different
    replicas; test_a_superseded_memory_leaves_search_on_every_replica makes sure they do."""
    anchor = mem.store(OTHERS[0][0], category=OTHERS[0][1], tags=OTHERS[0][2])
    fleeting = mem.store(FLEETING, category="chore", ttl_s=1)
    assert fleeting.expires_at == pytest.approx(fleeting.created_at + 1)
    assert fleeting.cid in _cids(mem.search(PLUMBER_QUERY)), "a TTL memory is found at once"

    first = mem.store(FIRST, category="preference", importance=0.7, tags=["alice", "coffee"])
    assert first.state == "active" and first.duplicate_of is None
    assert (first.category, first.importance, first.tags) == (
        "preference",
        0.7,
        ["alice", "coffee"],
    )
    stored = len(mem.list(state="all"))

    for again in (FIRST, near_duplicate):  # nothing new is stored; the first one comes back
        duplicate = mem.store(again, category="other")
        assert duplicate.cid == first.cid and duplicate.duplicate_of == first.cid
        assert duplicate.content == FIRST and duplicate.category == "preference"
    assert len(mem.list(state="all")) == stored

    if lifecycle is not None:
        assert lifecycle([first.cid]).get(first.cid, Lifecycle()).card is None  # never recalled

    new = mem.update(first.cid, UPDATED)
    assert new.cid != first.cid and new.supersedes == first.cid and new.content == UPDATED
    assert (new.category, new.importance, new.tags) == ("preference", 0.7, ["alice", "coffee"])
    for cid in (first.cid, new.cid):  # the same chain from either end
        versions = mem.versions(cid)
        assert _cids(versions) == [first.cid, new.cid]
        assert [v.state for v in versions] == ["superseded", "active"]
    assert mem.get(first.cid).state == "superseded"

    found = mem.search(COFFEE_QUERY)
    assert new.cid in _cids(found) and found[0].score is not None
    assert first.cid not in _cids(found)
    if lifecycle is not None:  # a search is a recall: the node now holds an FSRS card for each
        cards = lifecycle(_cids(found))
        assert all(cards[m.cid].card is not None for m in found), cards

    assert Link(cid=first.cid, type="updates") in mem.links(new.cid)
    assert Link(cid=new.cid, type="updated_by") in mem.links(first.cid)

    archived = mem.archive(new.cid)
    assert archived.cid == new.cid and archived.state == "archived"
    assert new.cid not in _cids(mem.search(COFFEE_QUERY))
    assert new.cid not in mem.context(COFFEE_QUERY, max_tokens=500).cids
    assert new.cid not in _cids(mem.list())
    assert new.cid in _cids(mem.list(state="archived"))
    listed = {m.cid: m.state for m in mem.list(state="all")}
    assert listed[new.cid] == "archived" and listed[first.cid] == "superseded"

    assert mem.unarchive(new.cid).state == "active"
    assert new.cid in _cids(mem.search(COFFEE_QUERY))
    assert new.cid in _cids(mem.list())

    forgotten = mem.forget(new.cid)
    assert forgotten.state == "forgotten" and mem.get(new.cid).state == "forgotten"
    assert new.cid not in _cids(mem.search(COFFEE_QUERY))
    assert new.cid not in mem.context(COFFEE_QUERY, max_tokens=500).cids
    assert new.cid not in _cids(mem.list())
    assert new.cid in _cids(mem.list(state="forgotten"))
    with pytest.raises(ConflictError, match="forgotten"):
        mem.update(new.cid, "Alice gave up coffee.")
    with pytest.raises(ConflictError):
        mem.unarchive(new.cid)

    time.sleep(max(0.0, (fleeting.expires_at or 0) + 0.2 - time.time()))
    assert fleeting.cid not in _cids(mem.search(PLUMBER_QUERY)), "an expired memory is found"
    assert mem.get(fleeting.cid).state == "expired"
    assert fleeting.cid in _cids(mem.list(state="expired"))
    assert fleeting.cid not in _cids(mem.list())
    assert mem.get(anchor.cid).state == "active"
    return [anchor, fleeting, first, new]


def test_memory_lifecycle_in_every_mode(harness: Harness, model: Embedder) -> None:  # noqa: F811
    client = harness.client(embedder=model)
    _run_lifecycle(_memory(harness, client), NEAR_DUPLICATE, _lifecycle_of(harness, client))


def test_a_search_or_context_counts_as_a_recall(harness: Harness, model: Embedder) -> None:  # noqa: F811
    """Recalls are what keep a memory strong, so each hit must reach the node's FSRS card."""
    client = harness.client(embedder=model)
    mem = _memory(harness, client)
    lifecycle = _lifecycle_of(harness, client)
    stored = [mem.store(text, category=c, tags=t) for text, c, t in OTHERS]
    assert lifecycle(_cids(stored)) == {}  # storing alone leaves no entry
    found = mem.search("who is allergic to peanuts", limit=1)
    assert _cids(found) == [stored[0].cid]
    first = lifecycle([stored[0].cid])[stored[0].cid]
    assert first.card is not None and first.state == "active"
    assert set(lifecycle(_cids(stored))) == {stored[0].cid}  # only what was returned
    used = mem.context("when is Carol's birthday party", max_tokens=30).cids
    assert used
    assert all(lifecycle(used)[cid].card is not None for cid in used)
    again = mem.search("who is allergic to peanuts", limit=1)[0]
    assert lifecycle([again.cid])[again.cid].card != first.card  # a second review moves it


def test_memory_context_stays_within_its_budget(harness: Harness, model: Embedder) -> None:  # noqa: F811
    client = harness.client(embedder=model)
    mem = _memory(harness, client)
    stored = [mem.store(text, category=c, tags=t) for text, c, t in OTHERS]
    stored.append(mem.store(FIRST, category="preference"))
    by_content = {m.content: m.cid for m in stored}
    sizes = {}
    for budget in (1, 8, 20, 45, 200):
        ctx = mem.context("what do I know about my friends", max_tokens=budget)
        assert ctx.max_tokens == budget
        assert ctx.tokens <= budget and count_tokens(ctx.context) <= budget, (budget, ctx)
        assert ctx.tokens == count_tokens(ctx.context)
        shown = [cid for content, cid in by_content.items() if content in ctx.context]
        assert sorted(ctx.cids) == sorted(shown), (budget, ctx)
        assert len(ctx.context.splitlines()) == len(ctx.cids)
        sizes[budget] = len(ctx.cids)
    assert sizes[1] == 0 and sizes[200] == len(stored)  # all five fit in 200 tokens
    assert 0 < sizes[45] < len(stored)
    line = mem.context("Bob's allergy", max_tokens=200).context.splitlines()[0]
    assert line.endswith("(health) Bob is allergic to peanuts and shellfish.")
    assert line.startswith("- [20")  # dated


def test_memory_list_filters_by_category_tags_and_pages(harness: Harness, model: Embedder) -> None:  # noqa: F811
    client = harness.client(embedder=model)
    mem = _memory(harness, client)
    stored = [mem.store(text, category=c, tags=t) for text, c, t in OTHERS]
    assert _cids(mem.list()) == _cids(stored)  # the order they were stored
    assert _cids(mem.list(category="health")) == [stored[0].cid]
    assert _cids(mem.list(tags=["home"])) == [stored[3].cid]  # any item of a list matches
    assert _cids(mem.list(tags=["party", "work"])) == [stored[1].cid, stored[2].cid]
    assert _cids(mem.list(category="home", tags=["dave"])) == [stored[3].cid]
    assert mem.list(category="home", tags=["bob"]) == []
    assert mem.list(category="nothing-here") == []
    assert _cids(mem.list(limit=2, offset=1)) == _cids(stored[1:3])
    filtered = mem.search("allergy", filters={"category": "health"})
    assert _cids(filtered) == [stored[0].cid]


def test_memory_bad_input_is_refused_and_loses_nothing(harness: Harness, model: Embedder) -> None:  # noqa: F811
    client = harness.client(embedder=model)
    mem = _memory(harness, client)
    stored = [mem.store(text, category=c, tags=t) for text, c, t in OTHERS]
    gone = mem.store("A memory that will be forgotten soon.")
    mem.forget(gone.cid)
    old = mem.update(stored[2].cid, "The team standup moved to ten o'clock.")
    before = {m.cid: m.state for m in mem.list(state="all")}

    for content in ("", "   "):
        with pytest.raises(InvalidRequestError, match="content"):
            mem.store(content)
    for ttl in (0, -5):
        with pytest.raises(InvalidRequestError, match="ttl_s"):
            mem.store("a memory with an expiry in the past", ttl_s=ttl)
        with pytest.raises(InvalidRequestError, match="ttl_s"):
            mem.update(stored[0].cid, "Bob is allergic to peanuts.", ttl_s=ttl)
    with pytest.raises(InvalidRequestError, match="importance"):
        mem.store("too important", importance=1.5)
    with pytest.raises(InvalidRequestError, match="importance"):
        mem.update(stored[0].cid, "Bob is allergic to peanuts.", importance=-0.1)
    with pytest.raises(InvalidRequestError, match="tags"):
        mem.store("tagged wrongly", tags="work")
    with pytest.raises(InvalidRequestError, match="tags"):
        mem.update(stored[0].cid, "Bob is allergic to peanuts.", tags="work")
    with pytest.raises(InvalidRequestError, match="tags"):
        mem.list(tags="work")
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        mem.context("anything", max_tokens=0)
    with pytest.raises(InvalidRequestError, match="limit"):
        mem.search("anything", limit=0)
    with pytest.raises(InvalidRequestError, match="limit"):
        mem.list(limit=0)
    with pytest.raises(InvalidRequestError, match="state"):
        mem.list(state="sleeping")
    with pytest.raises(InvalidFilterError):
        mem.search("anything", filters={"$state": "sleeping"})

    cid_calls: list[Callable[[str], Any]] = [
        mem.get,
        mem.versions,
        mem.links,
        mem.archive,
        mem.unarchive,
        mem.forget,
        mem.delete,
        lambda cid: mem.update(cid, "new content"),
    ]
    for call in cid_calls:
        with pytest.raises(NotFoundError):
            call(MISSING_CID)
        with pytest.raises(InvalidCIDError):
            call(BAD_CID)

    with pytest.raises(ConflictError, match="forgotten"):
        mem.update(gone.cid, "A memory that came back.")
    with pytest.raises(ConflictError, match=old.cid):  # names the newest version
        mem.update(stored[2].cid, "The team standup moved to eleven.")

    assert {m.cid: m.state for m in mem.list(state="all")} == before
    for cid in before:
        assert mem.get(cid).cid == cid


def test_memory_search_and_context_with_nothing_to_find(harness: Harness, model: Embedder) -> None:  # noqa: F811
    """No active memory is an empty answer, not an error: a fresh store, then one forgotten."""
    client = harness.client(embedder=model)
    mem = _memory(harness, client)
    assert mem.search(COFFEE_QUERY) == []
    assert mem.context(COFFEE_QUERY, max_tokens=50).model_dump() == {
        "context": "",
        "cids": [],
        "tokens": 0,
        "max_tokens": 50,
    }
    assert mem.list(state="all") == []
    only = mem.store(FIRST)
    mem.forget(only.cid)
    assert mem.search(COFFEE_QUERY) == []
    assert mem.context(COFFEE_QUERY, max_tokens=50).cids == []


def test_memory_delete_erases_one_version(harness: Harness, model: Embedder) -> None:  # noqa: F811
    client = harness.client(embedder=model)
    mem = _memory(harness, client)
    first = mem.store(FIRST)
    new = mem.update(first.cid, UPDATED)
    mem.delete(first.cid)
    with pytest.raises(NotFoundError):
        mem.get(first.cid)
    assert _cids(mem.versions(new.cid)) == [new.cid]  # the chain starts at what is left
    assert _cids(mem.list(state="all")) == [new.cid]


# --- raw HTTP against a miner --------------------------------------------------------------------


@pytest.fixture
def miner_url(tmp_path: Path, model: Embedder) -> Iterator[str]:
    """A miner app on a free loopback port (rate limits off, as tests/conftest.py sets them)."""
    port = free_port()
    app = create_miner_app(MinerConfig(home=tmp_path / "miner", port=port), embedder=model)
    server = serve_in_thread(app, port, "memory-miner")
    try:
        yield server.url
    finally:
        server.stop()


MEMORY_KEYS = {
    "cid",
    "content",
    "category",
    "importance",
    "tags",
    "source",
    "created_at",
    "expires_at",
    "supersedes",
    "links",
    "state",
    "namespace",
    "score",
    "relevance",
    "retrievability",
    "duplicate_of",
}


def _ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, (answer.request.url, answer.status_code, answer.text)
    return answer.json()


def _refused(answer: httpx.Response, status: int, code: str | None = None) -> None:
    assert answer.status_code == status, (answer.request.url, answer.status_code, answer.text)
    body = answer.json()
    assert isinstance(body["error"], str) and body["error"], body
    if code is not None:
        assert body["code"] == code, body


def test_memory_routes_over_raw_http(miner_url: str) -> None:
    # Signed, as a real user's client would be: what it stores is its own to delete.
    with httpx.Client(base_url=miner_url, timeout=30, auth=HotkeyAuth(ALICE)) as http:
        first = _ok(http.post("/store", json={"content": FIRST, "tags": ["a", "b"]}))
        assert set(first) == MEMORY_KEYS
        assert first["content"] == FIRST and first["state"] == "active"
        assert first["tags"] == ["a", "b"] and first["importance"] == 0.5
        cid = first["cid"]
        other = _ok(
            http.post(
                "/memory/store",
                json={"content": OTHERS[0][0], "category": "health", "tags": ["b"]},
            )
        )
        plain = _ok(http.post("/store", json={"content": OTHERS[2][0], "tags": ["c"]}))
        duplicate = _ok(http.post("/store", json={"content": NEAR_DUPLICATE}))
        assert duplicate["cid"] == cid and duplicate["duplicate_of"] == cid
        # A plain record is no memory: the memory routes never show it, the node's own do.
        record = _ok(http.post("/IngestSynapse", json={"text": "Alice's coffee order, a record"}))
        _refused(http.get(f"/memory/{record['cid']}"), 404, "not_found")
        recalled = _ok(http.post("/memory/search", json={"query": COFFEE_QUERY}))["memories"]
        assert record["cid"] not in [m["cid"] for m in recalled]
        assert record["cid"] in [
            h["cid"] for h in _ok(http.post("/search", json={"query": "coffee"}))["results"]
        ]

        new = _ok(http.post(f"/memory/{cid}/update", json={"content": UPDATED}))
        assert new["supersedes"] == cid and new["tags"] == ["a", "b"]
        for path in (f"/versions/{new['cid']}", f"/memory/{cid}/versions"):
            versions = _ok(http.get(path))["versions"]
            assert [(v["cid"], v["state"]) for v in versions] == [
                (cid, "superseded"),
                (new["cid"], "active"),
            ]

        search = _ok(http.post("/memory/search", json={"query": COFFEE_QUERY, "limit": 5}))
        assert set(search) == {"memories"}
        found = [m["cid"] for m in search["memories"]]
        assert found[0] == new["cid"] and cid not in found
        hit = search["memories"][0]
        assert all(isinstance(hit[k], float) for k in ("score", "relevance", "retrievability"))
        assert _ok(http.get(f"/memory/{new['cid']}"))["state"] == "active"

        for path in ("/context", "/memory/context"):
            ctx = _ok(http.post(path, json={"query": COFFEE_QUERY, "max_tokens": 60}))
            assert set(ctx) == {"context", "cids", "tokens", "max_tokens"}
            assert ctx["max_tokens"] == 60 and ctx["tokens"] <= 60
            assert new["cid"] in ctx["cids"] and UPDATED in ctx["context"]

        links = _ok(http.get(f"/memory/{new['cid']}/links"))
        assert {"cid": cid, "type": "updates"} in links["links"]
        back = _ok(http.get(f"/memory/{cid}/links"))["links"]
        assert {"cid": new["cid"], "type": "updated_by"} in back

        tagged = _ok(http.get("/memory/list", params={"state": "all", "tags": ["a", "b"]}))
        assert [(m["cid"], m["state"]) for m in tagged["memories"]] == [
            (cid, "superseded"),
            (other["cid"], "active"),
            (new["cid"], "active"),
        ]
        health = _ok(http.get("/memory/list", params={"category": "health"}))["memories"]
        assert [m["cid"] for m in health] == [other["cid"]]

        assert _ok(http.post(f"/memory/{new['cid']}/archive"))["state"] == "archived"
        search = _ok(http.post("/memory/search", json={"query": COFFEE_QUERY}))
        assert new["cid"] not in [m["cid"] for m in search["memories"]]
        archived = _ok(http.get("/memory/list", params={"state": "archived"}))["memories"]
        assert [m["cid"] for m in archived] == [new["cid"]]
        assert _ok(http.post(f"/memory/{new['cid']}/unarchive"))["state"] == "active"
        assert _ok(http.post(f"/memory/{new['cid']}/forget"))["state"] == "forgotten"
        active = _ok(http.get("/memory/list"))["memories"]
        assert [m["cid"] for m in active] == [other["cid"], plain["cid"]]

        deleted = _ok(http.delete(f"/memory/{other['cid']}"))
        assert deleted == {"cid": other["cid"], "deleted": True}
        _refused(http.get(f"/memory/{other['cid']}"), 404, "not_found")

        # Bad input: a 4xx saying what to fix, never a 500.
        bad_posts = [
            ("/store", {"content": ""}, 400),
            ("/store", {"content": "   "}, 400),
            ("/store", {"content": "x", "ttl_s": 0}, 400),
            ("/store", {"content": "x", "ttl_s": -5}, 400),
            ("/store", {"content": "x", "importance": 1.5}, 400),
            ("/store", {"content": "x", "tags": "work"}, 400),
            ("/store", {}, 400),
            ("/context", {"query": "coffee", "max_tokens": 0}, 400),
            ("/context", {"query": "coffee"}, 400),
            ("/memory/search", {"query": "coffee", "limit": 0}, 400),
            ("/memory/search", {"query": "coffee", "filters": {"$state": "sleeping"}}, 400),
            (f"/memory/{new['cid']}/update", {"content": "Alice gave up coffee."}, 409),
            (f"/memory/{cid}/update", {"content": "Alice gave up coffee."}, 409),
            (f"/memory/{plain['cid']}/update", {"content": "x", "ttl_s": 0}, 400),
            (f"/memory/{MISSING_CID}/update", {"content": "x"}, 404),
            (f"/memory/{BAD_CID}/update", {"content": "x"}, 400),
            (f"/memory/{MISSING_CID}/archive", None, 404),
            (f"/memory/{BAD_CID}/forget", None, 400),
            (f"/memory/{new['cid']}/unarchive", None, 409),
        ]
        for path, body, status in bad_posts:
            _refused(http.post(path, json=body), status)
        bad_gets: list[tuple[str, dict[str, Any], int]] = [
            ("/memory/list", {"limit": 0}, 400),
            ("/memory/list", {"state": "sleeping"}, 400),
            (f"/memory/{MISSING_CID}", {}, 404),
            (f"/memory/{BAD_CID}", {}, 400),
            (f"/versions/{MISSING_CID}", {}, 404),
            (f"/versions/{BAD_CID}", {}, 400),
            (f"/memory/{MISSING_CID}/links", {}, 404),
        ]
        for path, params, status in bad_gets:
            _refused(http.get(path, params=params), status)
        _refused(http.delete(f"/memory/{MISSING_CID}"), 404)
        _refused(http.delete(f"/memory/{BAD_CID}"), 400)

        everything = _ok(http.get("/memory/list", params={"state": "all"}))["memories"]
        assert [(m["cid"], m["state"]) for m in everything] == [
            (cid, "superseded"),
            (plain["cid"], "active"),
            (new["cid"], "forgotten"),
        ]
        assert http.get("/health").status_code == 200


# --- the network: the network client and a gateway -----------------------------------------------

cluster = test_network.cluster
_JSON = {"content-type": "application/json"}


def _gateway(cluster: test_network.Cluster) -> str:
    """A gateway on the cluster's chain, on a free loopback port; stopped with the cluster."""
    port = free_port()
    config = GatewayConfig(
        chain=cluster.chain.url,
        netuid=test_network.NETUID,
        port=port,
        home=cluster.root / "gateway",
    )
    gateway = serve_in_thread(create_gateway_app(config, embedder=HashEmbedder()), port, "gw")
    cluster.extra.append(gateway)
    return gateway.url


def _miner_states(cluster: test_network.Cluster, cid: str) -> dict[str, str | None]:
    """What each miner's own lifecycle entry says of ``cid`` (``None``: it holds none)."""
    states: dict[str, str | None] = {}
    for hotkey, miner in cluster.miners.items():
        node = RemoteNode(miner.url)
        try:
            entry = node.lifecycle(None, [cid]).get(cid)
        finally:
            node.close()
        states[hotkey] = None if entry is None else entry.state
    return states


def _check_on_the_network(cluster: test_network.Cluster, mem: Any, lifecycle: LifecycleOf) -> None:
    """The lifecycle, then: each miner holding a memory obeys a change made on the network."""
    memories = _run_lifecycle(mem, FIRST, lifecycle)  # a duplicate is identical
    forgotten = memories[-1]
    holders = cluster.routed(forgotten.cid)
    assert len(holders) == 3
    states = _miner_states(cluster, forgotten.cid)
    assert {h: states[h] for h in holders} == dict.fromkeys(holders, "forgotten")
    assert [s for h, s in states.items() if h not in holders] == [None]  # nothing to mark

    kept = mem.store(OTHERS[3][0], category="home", tags=["dave"])
    assert mem.archive(kept.cid).state == "archived"
    holders = cluster.routed(kept.cid)
    states = _miner_states(cluster, kept.cid)
    assert {h: states[h] for h in holders} == dict.fromkeys(holders, "archived"), states
    call = GetLifecycle(None, (kept.cid,))  # the same through the wire call itself
    request = call.request()
    for hotkey in holders:
        with httpx.Client(base_url=cluster.miners[hotkey].url, timeout=10) as http:
            answer = http.post(request.path, content=request.body, headers=_JSON)
        assert answer.status_code == 200, answer.text
        assert call.parse(answer.json())[kept.cid].state == "archived"
    assert kept.cid in _cids(mem.list(state="archived"))
    assert kept.cid not in _cids(mem.search(OTHERS[3][0]))
    assert mem.unarchive(kept.cid).state == "active"
    states = _miner_states(cluster, kept.cid)
    assert {h: states[h] for h in holders} == dict.fromkeys(holders, "active")
    assert kept.cid in _cids(mem.search(OTHERS[3][0]))


def test_memory_lifecycle_over_the_network(cluster: test_network.Cluster) -> None:
    with cluster.client() as client:
        transport = client._transport
        assert isinstance(transport, NetworkTransport)
        node = transport.node
        _check_on_the_network(cluster, client.memory, lambda cids: node.lifecycle(None, cids))


def test_memory_lifecycle_through_a_gateway(cluster: test_network.Cluster) -> None:
    url = _gateway(cluster)
    remote = RemoteNode(url)
    signer = Keypair.create_from_uri("//memory-user")
    try:
        with EngramClient(url, keypair=signer) as client:
            _check_on_the_network(cluster, client.memory, lambda c: remote.lifecycle(None, c))
    finally:
        remote.close()
    with httpx.Client(base_url=url, timeout=10) as http:
        _refused(http.post("/store", json={"content": "x", "ttl_s": -5}), 400)
        _refused(http.post("/context", json={"query": "x", "max_tokens": 0}), 400)
        _refused(http.get(f"/memory/{MISSING_CID}"), 404, "not_found")
        _refused(http.get(f"/versions/{BAD_CID}"), 400)


def _outcome(run: Callable[[], Any]) -> Any:
    """What ``run`` returned, or the error it raised, so one assertion shows every path."""
    try:
        return run()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def test_memory_search_with_nothing_to_find_on_the_network(cluster: test_network.Cluster) -> None:
    """No active memory is an empty answer on the network too, through a gateway as well."""
    url = _gateway(cluster)
    context = {"query": COFFEE_QUERY, "max_tokens": 50}
    with cluster.client() as client, httpx.Client(base_url=url, timeout=10) as http:
        outcomes = {
            "network search": _outcome(lambda: client.memory.search(COFFEE_QUERY)),
            "network context": _outcome(lambda: client.memory.context(COFFEE_QUERY, 50).cids),
            "gateway search": _outcome(
                lambda: http.post("/memory/search", json={"query": COFFEE_QUERY}).json()
            ),
            "gateway context": _outcome(lambda: http.post("/context", json=context).json()),
        }
    assert outcomes == {
        "network search": [],
        "network context": [],
        "gateway search": {"memories": []},
        "gateway context": {"context": "", "cids": [], "tokens": 0, "max_tokens": 50},
    }


def test_a_superseded_memory_leaves_search_on_every_replica(cluster: test_network.Cluster) -> None:
    """The old version must leave search, context and the active list even where a replica
    holds it but not the version that supersedes it (their CIDs route independently)."""
    url = _gateway(cluster)
    with cluster.client() as client, httpx.Client(base_url=url, timeout=10) as http:
        mem = client.memory
        for i in range(20):  # a CID covers created_at: try until the replicas differ
            old = mem.store(f"Zed{i} prefers flat whites every morning.")
            new = mem.update(old.cid, f"Zed{i} now drinks oat cortados every morning.")
            if set(cluster.routed(old.cid)) != set(cluster.routed(new.cid)):
                break
        else:
            pytest.fail("every update landed on its old version's replicas")
        query = f"Zed{i} coffee"
        assert [v.state for v in mem.versions(new.cid)] == ["superseded", "active"]
        assert new.cid in _cids(mem.search(query))
        found = _ok(http.post("/memory/search", json={"query": query}))["memories"]
        leaks = {
            "network search": old.cid in _cids(mem.search(query)),
            "network context": old.cid in mem.context(query, max_tokens=500).cids,
            "network list": old.cid in _cids(mem.list()),
            "gateway search": old.cid in [m["cid"] for m in found],
        }
    assert leaks == dict.fromkeys(leaks, False)


def test_a_write_grantee_may_archive_without_a_read_grant(tmp_path: Path) -> None:
    """Changing a memory's lifecycle is a write: a hotkey granted only ``write`` may do it."""
    writer_key = Keypair.create_from_uri("//memory-writer").ss58_address
    owner, writer = Caller(hotkey=ALICE.ss58_address), Caller(hotkey=writer_key)
    node = LocalNode.open(tmp_path, HashEmbedder())
    try:
        (stored,) = node.ingest([IngestItem(text="a memory", namespace="private-ns")], owner)
        node.set_grant("private-ns", writer_key, Permission.WRITE, True, owner)
        cid = stored.cid  # type: ignore[union-attr]
        changed = node.set_lifecycle("private-ns", [cid], "archive", writer)
        assert changed[cid].state == "archived"
        with pytest.raises(ForbiddenError):  # reading the entries still needs read
            node.lifecycle("private-ns", [cid], writer)
    finally:
        node.close()
