"""Hybrid search in every mode: embedded, one node over HTTP (sync and async twins), and the
network through the network client and a gateway.

The text tests use the real embedding model: whether a paraphrase is found is a
question of meaning. The network tests run on test_network's in-process subnet
with its tiny deterministic embedder, since they look at words and plumbing only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engram.config import GatewayConfig
from engram.embed import Embedder, get_embedder
from engram.errors import InvalidRequestError
from engram.gateway.app import create_gateway_app
from tests.conftest import HashEmbedder, free_port, serve_in_thread
from tests.integration import test_network
from tests.integration.test_sdk import Harness, harness  # noqa: F401 - the fixture, every mode

RARE = "Zxqvort ordered the usual espresso at the corner cafe before dawn."
PHYSICIAN = "The physician prescribed antibiotics for her infection."
CORPUS = [
    RARE,
    PHYSICIAN,
    "Our team shipped the quarterly report two days late.",
    "A thunderstorm knocked out power across the valley last night.",
    "She planted tomatoes and basil in the raised garden bed.",
    "The orchestra rehearsed the second movement of the symphony.",
    "He replaced the bicycle chain and oiled the gears.",
    "Grandma's recipe calls for butter, flour and a pinch of salt.",
    "The spacecraft entered orbit around the red planet.",
    "Tickets for the football final sold out within minutes.",
    "The museum opened a new wing for modern sculpture.",
    "They hiked to the summit and watched the sunrise.",
    "The startup raised money from two venture funds.",
    "A stray cat has been sleeping on our porch all week.",
    "The judge postponed the trial until next spring.",
    "Students protested the increase in tuition fees.",
]
FTS_SYNTAX = ['"', "*", "NEAR", "-", ":", 'a:b -c "d*', "NEAR(a b)", "AND OR NOT", "^x", "(", "''"]


@pytest.fixture(scope="module")
def model() -> Iterator[Embedder]:
    yield get_embedder()


@pytest.fixture
def filled(harness: Harness, model: Embedder) -> Any:  # noqa: F811
    client = harness.client(embedder=model)
    result = client.batch_ingest([{"text": t, "metadata": {"i": i}} for i, t in enumerate(CORPUS)])
    assert not result.failed
    return client


def _texts(results: list[Any]) -> list[str]:
    return [r.text for r in results]


def test_search_finds_a_rare_name_by_keyword_and_hybrid(filled: Any) -> None:
    for mode in ("keyword", "hybrid"):
        hits = filled.search("Zxqvort", top_k=3, mode=mode)
        assert hits and hits[0].text == RARE, (mode, _texts(hits))
        assert hits[0].channels["keyword"]["rank"] == 1


def test_search_finds_a_paraphrase_with_no_shared_word(filled: Any) -> None:
    for mode in ("vector", "hybrid"):
        hits = filled.search("doctor gave medicine", top_k=3, mode=mode)
        assert hits and hits[0].text == PHYSICIAN, (mode, _texts(hits))
        assert hits[0].channels["vector"]["rank"] == 1
    assert PHYSICIAN not in _texts(filled.search("doctor gave medicine", mode="keyword"))


def test_search_results_say_what_each_channel_contributed(filled: Any) -> None:
    hits = filled.search("a storm cut the power in the valley", top_k=5)
    assert hits[0].text == CORPUS[3]
    assert set(hits[0].channels) == {"vector", "keyword"}
    for channel in hits[0].channels.values():
        assert channel["rank"] >= 1 and isinstance(channel["score"], float)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    json.dumps(hits)  # results are plain JSON


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_search_never_reads_user_text_as_fts_syntax(filled: Any, mode: str) -> None:
    for text in FTS_SYNTAX:
        filled.search(text, mode=mode)  # no error, whatever it finds
    assert filled.search('"Zxqvort" OR -cafe*', mode=mode)[0].text == RARE


def test_search_filter_keeps_recall_at_one_percent(harness: Harness, model: Embedder) -> None:  # noqa: F811
    client = harness.client(embedder=model)
    items = [
        {"text": f"note {i} about {CORPUS[i % len(CORPUS)]}", "metadata": {"i": i}}
        for i in range(200)
    ]
    assert not client.batch_ingest(items).failed
    wanted = {"$in": [17, 117]}  # 2 of 200 records
    for mode in ("hybrid", "vector", "keyword"):
        hits = client.search("note about espresso", top_k=5, filter={"i": wanted}, mode=mode)
        got = {h.metadata["i"] for h in hits}
        assert got <= {17, 117}, (mode, got)
        if mode != "keyword":  # every match is a vector hit; words need not match
            assert got == {17, 117}, (mode, got)


def test_search_refuses_bad_input(filled: Any) -> None:
    with pytest.raises(InvalidRequestError, match="mode"):
        filled.search("anything", mode="fuzzy")
    with pytest.raises(InvalidRequestError):
        filled.search("   ")


# --- the network: the network client and a gateway ----------------------------------------

cluster = test_network.cluster


def test_search_over_the_network_and_a_gateway(cluster: test_network.Cluster) -> None:
    with cluster.client() as net:
        assert not net.batch_ingest([{"text": t} for t in CORPUS]).failed
        hits = net.search("Zxqvort espresso", top_k=3)
        assert hits[0].text == RARE and "keyword" in hits[0].channels
        assert net.search("Zxqvort", mode="keyword", top_k=1)[0].text == RARE
    port = free_port()
    config = GatewayConfig(chain=cluster.chain.url, netuid=test_network.NETUID, port=port)
    gateway = serve_in_thread(create_gateway_app(config, embedder=HashEmbedder()), port, "gw")
    cluster.extra.append(gateway)
    body = {"query": "Zxqvort", "limit": 3, "filters": None, "namespace": None, "mode": "keyword"}
    answer = httpx.post(gateway.url + "/search", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    top = answer.json()["results"][0]
    assert top["text"] == RARE and top["channels"]["keyword"]["rank"] == 1
    bad = httpx.post(gateway.url + "/search", json={**body, "mode": "fuzzy"}, timeout=10)
    assert bad.status_code == 400 and "mode" in bad.json()["error"]
