"""A whole subnet as real processes: 4 miners, a validator and a gateway on one LocalChain.

Only the public Bittensor chain is replaced (by the LocalChain file, shared by
every process here); everything else is real: wallets, HTTP on loopback, the
embedding model, SQLite stores, and SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest

from engram import EngramClient
from engram.chain.local import LocalChain
from engram.localnet import Localnet
from engram.network.routing import closest
from engram.validator.state import read_summary
from tests.conftest import localnet_on_free_ports

pytestmark = pytest.mark.slow

T = TypeVar("T")
MINERS = 4
TEXTS = [
    f"note {i}: the {topic} team met on day {i % 28 + 1} to discuss {subject}"
    for i, (topic, subject) in enumerate(
        (t, s)
        for t in ("storage", "search", "billing", "mobile", "infra")
        for s in (
            "latency budgets",
            "index rebuilds",
            "quarterly planning",
            "hiring",
            "on-call pain",
            "customer churn",
            "disk usage",
            "embedding drift",
            "api limits",
            "release notes",
            "flaky tests",
            "vector recall",
            "schema changes",
            "cost cuts",
            "security review",
            "launch dates",
            "metrics",
            "support tickets",
            "roadmap",
            "privacy",
            "caching",
            "sharding",
            "backups",
            "alerts",
            "docs",
            "onboarding",
            "pricing",
            "benchmarks",
            "partners",
            "travel",
            "retros",
            "offsites",
            "budgets",
            "compliance",
            "uptime",
            "dashboards",
            "mentoring",
            "code review",
            "research",
            "demos",
        )
    )
]
QUERIES = ["index rebuild for search", "how much does billing cost", "security review of infra"]


def _wait(predicate: Callable[[], T], timeout_s: float, what: str, step_s: float = 0.5) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Localnet]:
    with localnet_on_free_ports(tmp_path_factory.mktemp("localnet"), MINERS).running() as net:
        yield net


@pytest.fixture(scope="module")
def chain(net: Localnet) -> Iterator[LocalChain]:
    c = LocalChain(net.home / "chain.sqlite")
    yield c
    c.close()


@pytest.fixture(scope="module")
def client(net: Localnet) -> Iterator[EngramClient]:
    with EngramClient.from_network(chain=net.chain_url, netuid=net.netuid) as c:
        yield c


@pytest.fixture(scope="module")
def stored(client: EngramClient) -> list[str]:
    assert len(TEXTS) == 200
    result = client.batch_ingest([{"text": t, "metadata": {"i": i}} for i, t in enumerate(TEXTS)])
    assert result.failed == []
    reports = client.network_report
    assert isinstance(reports, list) and len(reports) == 200
    assert all(len(r.acked) == 3 for r in reports), [r for r in reports if len(r.acked) != 3]
    return [c for c in result.cids if c is not None]


def _held(url: str, cid: str) -> dict | None:
    r = httpx.get(f"{url}/retrieve/{cid}", timeout=5)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


def test_writes_land_on_exactly_the_three_closest_miners(
    net: Localnet, chain: LocalChain, stored: list[str]
) -> None:
    miners = chain.metagraph(net.netuid).serving()
    assert len(miners) == MINERS
    for cid in stored:
        expected = {n.hotkey for n in closest(cid, miners, 3)}
        copies = {n.hotkey: _held(str(n.axon_url), cid) for n in miners}
        holders = {h for h, doc in copies.items() if doc is not None}
        assert holders == expected, cid
        docs = [copies[h] for h in holders]
        assert all(d == docs[0] for d in docs), f"replicas of {cid} differ"
        assert docs[0]["cid"] == cid


def test_sdk_and_gateway_return_the_same_top10(
    net: Localnet, client: EngramClient, stored: list[str]
) -> None:
    with EngramClient(net.gateway_url) as via_gateway:
        for q in QUERIES:
            direct = client.query(q, top_k=10)
            gated = via_gateway.query(q, top_k=10)
            assert [h.cid for h in direct] == [h.cid for h in gated]
            assert np.allclose([h.score for h in direct], [h.score for h in gated], atol=1e-5)
            assert len(direct) == 10 and set(h.cid for h in direct) <= set(stored)


def test_validator_sets_weights(net: Localnet, chain: LocalChain, stored: list[str]) -> None:
    graph = chain.metagraph(net.netuid)
    validator = next(n for n in graph.neurons if n.validator_permit)
    weights = _wait(
        lambda: chain.metagraph(net.netuid).weights.get(validator.uid),
        90,
        "the validator's weights on chain",
    )
    miner_uids = {n.uid for n in graph.serving()}
    assert {u for u, w in weights.items() if w > 0} <= miner_uids
    assert sum(weights.values()) == pytest.approx(1.0)


def test_validator_restart_keeps_scores_and_history(net: Localnet, stored: list[str]) -> None:
    def scores() -> dict:
        return httpx.get(net.validator_url + "/api/scores", timeout=5).json()

    def after_two_rounds() -> dict | None:
        s = scores()
        return s if s["round"] >= 2 and s["miners"] else None

    _wait(after_two_rounds, 60, "two scoring rounds")
    child = next(c for c in net.children if c.name == "validator")
    child.terminate()
    child.wait()
    before = read_summary(net.home / "validator")  # what the stopped validator left on disk
    net.restart("validator")
    net.wait_ready()
    after = scores()
    assert after["hotkey"] == before["hotkey"] and after["namespace"] == before["namespace"]
    assert after["round"] >= before["round"] >= 2
    assert set(after["miners"]) == set(before["miners"])
    # Each round keeps at least 90 % of the EMA (alpha 0.1), whatever the new score; a
    # validator that forgot its state would start again from 0.
    kept = 0.9 ** (after["round"] - before["round"])
    for uid, miner in before["miners"].items():
        assert miner["ema"] > 0.1
        assert after["miners"][uid]["ema"] >= kept * miner["ema"] - 1e-9
        assert after["miners"][uid]["proof_issued"] >= miner["proof_issued"]
    old_log = child.log.read_text(errors="replace")
    assert "validator stopped; state closed" in old_log


def test_sigkilled_miner_loses_nothing_and_is_repaired(
    net: Localnet, chain: LocalChain, client: EngramClient, stored: list[str]
) -> None:
    before = chain.metagraph(net.netuid).serving()
    victim_child = next(c for c in net.children if c.name == "miner-0")
    victim = next(n for n in before if n.axon_url == victim_child.url)
    on_victim = [c for c in stored if victim in closest(c, before, 3)]
    assert on_victim

    os.kill(victim_child.process.pid, signal.SIGKILL)
    victim_child.process.wait()

    # Nothing lost, no query fails, right after the kill.
    for q in QUERIES:
        assert len(client.query(q, top_k=10)) == 10
    for cid in on_victim:
        record = client.get(cid)
        assert record is not None and record.cid == cid

    # Its axon stays announced; probes find it silent, routing moves on, the validator repairs.
    def dashboard_serving() -> dict[str, bool]:
        neurons = httpx.get(net.gateway_url + "/api/network", timeout=10).json()["neurons"]
        return {n["hotkey"]: n["serving"] for n in neurons}

    _wait(
        lambda: dashboard_serving().get(victim.hotkey) is False,
        30,
        "the killed miner to drop out of routing",
    )
    assert victim.hotkey in {n.hotkey for n in chain.metagraph(net.netuid).serving()}
    survivors = [n for n in before if n.hotkey != victim.hotkey]

    def repaired() -> bool:
        return all(
            _held(str(n.axon_url), cid) is not None
            for cid in on_victim
            for n in closest(cid, survivors, 3)
        )

    _wait(repaired, 90, "the killed miner's records on their next closest miners", step_s=2)


def test_chain_file_saw_no_lock_errors(net: Localnet, stored: list[str]) -> None:
    for log in Path(net.home, "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert "database is locked" not in text, log.name
        assert "Traceback" not in text, f"{log.name}:\n{text[-3000:]}"
