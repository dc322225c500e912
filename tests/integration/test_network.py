"""The whole network as one store, over real HTTP: a real LocalChain file, four in-process
uvicorn miners on loopback ports, each with an :class:`Axon` so it refuses writes routed
elsewhere, the network client (``EngramClient.from_network``) and the gateway.

Each miner announces its axon once; clients probe the miners (``GET /health``) and
trust an answer for a probe interval, so a miner that just crashed is still routed
to within it, and routed around after. Everything embeds with the tiny hash embedder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from bittensor.sp_core import Keypair
from fastapi import FastAPI

from engram.chain.local import LocalChain
from engram.cid import generate_cid
from engram.config import MODEL_VERSION, ChainParams, GatewayConfig, MinerConfig
from engram.errors import DimensionMismatchError, NotFoundError, QuorumError, UnavailableError
from engram.gateway.app import create_gateway_app
from engram.miner.app import create_miner_app
from engram.miner.axon import Axon
from engram.network.client import ReadReport, WriteReport
from engram.network.routing import RouteCheck, closest
from engram.sdk.client import EngramClient
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread

NETUID = 1
VALIDATOR = Keypair.create_from_uri("//validator")
LIAR = Keypair.create_from_uri("//liar")
MIN_STAKE = 1_000.0
TEXTS = [f"note {i}: the network keeps three copies of everything ({i * 7})" for i in range(30)]


@dataclass
class Cluster:
    root: Path
    chain: LocalChain
    miners: dict[str, ThreadedServer]  # by hotkey
    axons: list[Axon]
    extra: list[ThreadedServer] = field(default_factory=list)

    def client(self, **kwargs: Any) -> EngramClient:
        return EngramClient.from_network(
            chain=self.chain.url, netuid=NETUID, embedder=HashEmbedder(), **kwargs
        )

    def routed(self, cid: str) -> list[str]:
        return [n.hotkey for n in closest(cid, self.chain.metagraph(NETUID).serving(), 3)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    params = ChainParams(block_time_s=1.0, axon_ttl_blocks=10_000, min_validator_stake=MIN_STAKE)
    chain = LocalChain.create(tmp_path / "chain.sqlite", NETUID, params)
    chain.register(NETUID, VALIDATOR, stake=MIN_STAKE, coldkey="validator-coldkey")
    miners: dict[str, ThreadedServer] = {}
    axons: list[Axon] = []
    c = Cluster(tmp_path, chain, miners, axons)
    try:
        for i in range(4):
            signer = Keypair.create_from_uri(f"//miner-{i}")
            hotkey = signer.ss58_address
            uid = chain.register(NETUID, signer, coldkey=f"miner-coldkey-{i}")
            port = free_port()
            chain.serve_axon(NETUID, signer, "127.0.0.1", port)
            axon = Axon(chain, NETUID, signer, uid, "127.0.0.1", port, 0.5, RouteCheck(hotkey))
            config = MinerConfig(home=tmp_path / f"miner{i}", port=port, reader_threads=2)
            app = create_miner_app(config, embedder=HashEmbedder(), axon=axon)
            axons.append(axon)
            miners[hotkey] = serve_in_thread(app, port, f"miner-{i}")
        for axon in axons:  # every miner sees all four before the first write
            axon.announce()
        yield c
    finally:
        for s in [*miners.values(), *c.extra]:
            if s.thread.is_alive():
                s.stop()
        chain.close()


def _expected_records(tmp_path: Path, texts: list[str]) -> dict[str, Any]:
    """The same texts through the embedded store: the records every replica should hold."""
    local = EngramClient(path=tmp_path / "reference", embedder=HashEmbedder())
    try:
        cids = local.batch_ingest([{"text": t, "metadata": {"n": i}} for i, t in enumerate(texts)])
        assert not cids.failed
        return {cid: local.get(cid) for cid in cids.cids}
    finally:
        local.close()


def _held_by(miner: ThreadedServer, namespace: str = "default") -> set[str]:
    with httpx.Client(base_url=miner.url, timeout=10) as http:
        body = http.get("/list", params={"namespace": namespace, "limit": 1000}).json()
    return {r["cid"] for r in body["records"]}


def test_batch_ingest_lands_on_exactly_the_routed_replicas(cluster: Cluster) -> None:
    client = cluster.client()
    try:
        items = [{"text": t, "metadata": {"n": i}} for i, t in enumerate(TEXTS)]
        result = client.batch_ingest(items)
        assert not result.failed, result.errors
        cids = [str(c) for c in result.cids]
        assert len(set(cids)) == len(TEXTS)

        reports = client.network_report
        assert isinstance(reports, list) and len(reports) == len(TEXTS)
        for cid, report in zip(cids, reports, strict=True):
            assert isinstance(report, WriteReport)
            assert report.ok and report.cid == cid
            routed = cluster.routed(cid)
            assert list(report.replicas) == routed
            assert sorted(report.acked) == sorted(routed)
            assert report.failed == {}

        for hotkey, miner in cluster.miners.items():
            expected = {c for c in cids if hotkey in cluster.routed(c)}
            assert _held_by(miner) == expected, hotkey

        expected_records = _expected_records(cluster.root, TEXTS)
        assert set(expected_records) == set(cids)  # same CIDs as the embedded store
        for i, cid in enumerate(cids):
            record = client.get(cid)
            assert record is not None
            assert record == expected_records[cid]
            assert record.text == TEXTS[i] and record.metadata == {"n": i}

            hits = client.query(TEXTS[i], top_k=3)
            assert hits[0].cid == cid
            assert hits[0].text == TEXTS[i]
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert len({h.cid for h in hits}) == len(hits)
        read = client.network_report
        assert isinstance(read, ReadReport)
        assert sorted(read.answered) == sorted(cluster.miners) and read.failed == {}
        assert client.query(TEXTS[0], top_k=1, ef=200)[0].cid == cids[0]  # a beam per search
    finally:
        client.close()


def test_a_miner_refuses_a_write_routing_sends_elsewhere(cluster: Cluster) -> None:
    vector = HashEmbedder().encode(["misrouted"])[0]
    metadata = {"k": "v"}
    cid = generate_cid(vector, metadata, MODEL_VERSION, "misrouted")
    routed = cluster.routed(cid)
    (outsider,) = [h for h in cluster.miners if h not in routed]
    body = {"raw_embedding": vector.tolist(), "metadata": metadata, "text": "misrouted"}
    with httpx.Client(timeout=10) as http:
        refused = http.post(cluster.miners[outsider].url + "/IngestSynapse", json=body)
        assert refused.status_code == 421, refused.text
        assert refused.json()["code"] == "not_a_replica"
        assert cid in refused.json()["error"]
        accepted = http.post(cluster.miners[routed[0]].url + "/IngestSynapse", json=body)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["cid"] == cid
    assert cid not in _held_by(cluster.miners[outsider])


def test_a_write_with_two_replicas_down_misses_the_quorum(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas crashed since the client last probed them: routed to, they fail the write;
    a client that probes afresh routes around them, and the next closest miner accepts."""
    text = "a record whose replicas are mostly down"
    cid = generate_cid(HashEmbedder().encode([text])[0], {}, MODEL_VERSION, text)
    routed = cluster.routed(cid)
    monkeypatch.setenv("ENGRAM_PROBE_INTERVAL_S", "60")
    client = cluster.client()
    client.query("every miner answers now", top_k=1)
    for hotkey in routed[1:]:
        cluster.miners[hotkey].stop()
    try:
        with pytest.raises(QuorumError):
            client.ingest(text)
        (report,) = client.network_report  # type: ignore[misc]
        assert report.cid == cid
        assert not report.ok and "quorum" in (report.error or "")
        assert list(report.replicas) == routed
        assert list(report.acked) == [routed[0]]
        assert set(report.failed) == set(routed[1:])
    finally:
        client.close()
    with cluster.client() as fresh:
        fresh.ingest(text)
        (report,) = fresh.network_report  # type: ignore[misc]
        (outsider,) = set(cluster.miners) - set(routed)
        assert report.ok and sorted(report.acked) == sorted([routed[0], outsider])


def test_a_delete_a_replica_missed_is_not_acknowledged(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that cannot confirm a delete would serve the record again: the delete is
    refused with a 503 naming it, and sent again once routing has moved past it."""
    monkeypatch.setenv("ENGRAM_PROBE_INTERVAL_S", "60")
    writer = Keypair.create_from_uri("//network-deleter")  # only its writer deletes a record
    client = cluster.client(keypair=writer)
    try:
        cid = client.ingest("a record deleted while one of its replicas is down")
        missing = cluster.routed(cid)[1]
        cluster.miners[missing].stop()
        with pytest.raises(UnavailableError, match="send the delete again") as refused:
            client.delete(cid)
        assert missing in str(refused.value)
    finally:
        client.close()
    with cluster.client(keypair=writer) as fresh:  # it probes afresh: the stopped one is not routed
        with pytest.raises(NotFoundError):  # every miner it reaches has deleted it
            fresh.delete(cid)
        assert fresh.get(cid) is None


def _liar_app(claimed_cid: str, embedding: list[float], text: str) -> FastAPI:
    """A 'miner' that answers every query with a record that does not hash to its CID."""
    app = FastAPI()

    @app.post("/QuerySynapse")
    async def query() -> dict[str, Any]:
        hit = {
            "cid": claimed_cid,
            "score": 1.0,
            "metadata": {"n": 0},
            "text": text,
            "embedding": embedding,
        }
        return {"results": [hit], "latency_ms": 0.1}

    @app.get("/health")
    async def health() -> dict[str, Any]:  # claims to be a ready miner, as a liar would
        return {"status": "ok", "ready": True, "store": True, "model": True, "version": "0"}

    return app


def test_verify_drops_a_lying_miners_hits(cluster: Cluster) -> None:
    texts = TEXTS[:5]
    writer = cluster.client()
    try:
        result = writer.batch_ingest(
            [{"text": t, "metadata": {"n": i}} for i, t in enumerate(texts)]
        )
        assert not result.failed, result.errors
        cids = [str(c) for c in result.cids]
    finally:
        writer.close()

    # The liar returns text 0's embedding and text under text 1's CID.
    embedding = HashEmbedder().encode([texts[0]])[0].tolist()
    port = free_port()
    cluster.chain.register(NETUID, LIAR, coldkey="liar-coldkey")
    cluster.extra.append(serve_in_thread(_liar_app(cids[1], embedding, texts[0]), port, "liar"))
    cluster.chain.serve_axon(NETUID, LIAR, "127.0.0.1", port)

    trusting = cluster.client()
    try:
        hits = trusting.query(texts[0], top_k=5)
        report = trusting.network_report
        assert isinstance(report, ReadReport) and LIAR.ss58_address in report.answered
        assert any(h.cid == cids[1] and h.text == texts[0] for h in hits)  # the lie got through
    finally:
        trusting.close()

    checking = cluster.client(verify=True)
    try:
        hits = checking.query(texts[0], top_k=5)
        report = checking.network_report
        assert isinstance(report, ReadReport)
        assert LIAR.ss58_address in report.failed
        assert LIAR.ss58_address not in report.answered
        assert sorted(report.answered) == sorted(cluster.miners)
        assert hits[0].cid == cids[0] and hits[0].text == texts[0]
        assert all(h.text == texts[int(h.metadata["n"])] for h in hits)
        assert all(h.embedding is None for h in hits)
    finally:
        checking.close()


def test_the_gateway_fronts_the_whole_network(cluster: Cluster) -> None:
    port = free_port()
    config = GatewayConfig(
        chain=cluster.chain.url, netuid=NETUID, port=port, home=cluster.root / "gateway"
    )
    gateway = serve_in_thread(create_gateway_app(config, embedder=HashEmbedder()), port, "gateway")
    cluster.extra.append(gateway)

    client = EngramClient(gateway.url)
    try:
        cids = [client.ingest(t, {"n": i}) for i, t in enumerate(TEXTS[:6])]
        for i, cid in enumerate(cids):
            held = [h for h, m in cluster.miners.items() if cid in _held_by(m)]
            assert sorted(held) == sorted(cluster.routed(cid))
            record = client.get(cid)
            assert record is not None and record.cid == cid
            assert record.text == TEXTS[i] and record.metadata == {"n": i}
            hits = client.query(TEXTS[i], top_k=3)
            assert hits[0].cid == cid
        batch = client.batch_ingest([{"text": t} for t in TEXTS[6:10]])
        assert not batch.failed and all(batch.cids)
        assert client.search(TEXTS[0], top_k=1, mode="vector", ef=200)[0].cid == cids[0]
    finally:
        client.close()

    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        bad = http.post("/QuerySynapse", json={"query_text": "x", "ef": 0})
        assert bad.status_code == 400 and "ef" in bad.json()["error"], bad.text
        bad = http.post("/QuerySynapse", json={"query_vector": [0.5] * 7, "top_k": 3})
        assert 400 <= bad.status_code < 500, (bad.status_code, bad.text)
        body = bad.json()
        assert set(body) >= {"error", "code"}
        assert isinstance(body["error"], str) and body["error"]

        view = http.get("/api/network")
        assert view.status_code == 200, view.text
        neurons = view.json()["neurons"]
    graph = cluster.chain.metagraph(NETUID)
    assert sorted(n["uid"] for n in neurons) == sorted(n.uid for n in graph.neurons)
    by_hotkey = {n["hotkey"]: n for n in neurons}
    assert set(by_hotkey) == {*cluster.miners, VALIDATOR.ss58_address}
    for hotkey in cluster.miners:
        entry = by_hotkey[hotkey]
        assert entry["role"] == "miner" and entry["serving"] is True
        assert entry["uid"] == graph.by_hotkey(hotkey).uid  # type: ignore[union-attr]
    validator = by_hotkey[VALIDATOR.ss58_address]
    assert validator["role"] == "validator" and validator["serving"] is False


def test_a_namespace_of_another_models_vectors_across_the_network(cluster: Cluster) -> None:
    """6-d vectors from another model live in their own namespace on every replica; the
    canonical model's 384-d text sits beside them, and a mismatch is the caller's error."""
    six = np.eye(6, dtype=np.float32)
    with cluster.client() as client:
        cids = [client.ingest_embedding(v, {"i": i}, "row", "six-d") for i, v in enumerate(six)]
        for i, cid in enumerate(cids):
            hits = client.query_by_vector(six[i], top_k=1, namespace="six-d")
            assert hits[0].cid == cid and hits[0].metadata == {"i": i}
        assert client.namespace_info("six-d")["dim"] == 6
        client.ingest("canonical text", namespace="text")
        with pytest.raises(DimensionMismatchError, match="expected 6"):
            client.query("text embeds to 384 dimensions", namespace="six-d")
        with pytest.raises(DimensionMismatchError):
            client.ingest_embedding(six[0], namespace="text")
