"""Auditing a CID on real HTTP nodes: an honest miner, one without the record, one that
returns a tampered copy, and a port where nobody listens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from engram.chain.base import Neuron
from engram.config import MinerConfig
from engram.miner.app import create_miner_app
from engram.network.audit import MISMATCH, MISSING, UNREACHABLE, VERIFIED, audit_cid
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread


def _tampering_app(honest_url: str) -> FastAPI:
    """A node that relays the honest miner's record with one word of its text changed."""
    app = FastAPI()

    @app.get("/retrieve/{cid}")
    async def retrieve(cid: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            doc = (await http.get(f"{honest_url}/retrieve/{cid}")).json()
        return {**doc, "text": doc["text"].replace("three", "two")}

    return app


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, ThreadedServer]]:
    started: dict[str, ThreadedServer] = {}
    try:
        for name in ("honest", "empty"):
            port = free_port()
            config = MinerConfig(home=tmp_path / name, port=port, reader_threads=1)
            app = create_miner_app(config, embedder=HashEmbedder())
            started[name] = serve_in_thread(app, port, name)
        port = free_port()
        started["liar"] = serve_in_thread(
            _tampering_app(started["honest"].url), port, "liar", ready_path=None
        )
        yield started
    finally:
        for server in started.values():
            server.stop()


def _neuron(uid: int, url_port: int) -> Neuron:
    return Neuron(uid, f"hotkey-{uid}", f"coldkey-{uid}", 0.0, False, "127.0.0.1", url_port)


def test_audit_gives_each_replica_its_verdict(nodes: dict[str, ThreadedServer]) -> None:
    text = "the network keeps three copies"
    stored = httpx.post(nodes["honest"].url + "/IngestSynapse", json={"text": text}, timeout=10)
    cid = stored.json()["cid"]
    replicas = [
        _neuron(0, nodes["honest"].port),
        _neuron(1, nodes["empty"].port),
        _neuron(2, nodes["liar"].port),
        _neuron(3, free_port()),
    ]

    async def run() -> Any:
        async with httpx.AsyncClient() as http:
            return await audit_cid(http, cid, replicas, deadline_s=2.0)

    audit = asyncio.run(run())
    verdicts = {r.uid: r.verdict for r in audit.replicas}
    assert verdicts == {0: VERIFIED, 1: MISSING, 2: MISMATCH, 3: UNREACHABLE}
    by_uid = {r.uid: r for r in audit.replicas}
    assert "hashes to" in by_uid[2].detail and cid in by_uid[2].detail
    assert by_uid[0].latency_ms is not None and by_uid[3].latency_ms is None
    assert [r.rank for r in audit.replicas] == [0, 1, 2, 3]
    assert audit.verified == 1 and audit.health == "degraded"
    assert audit.record is not None and audit.record.text == text
