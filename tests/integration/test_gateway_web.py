"""The gateway's web pages and their JSON routes over real HTTP: a LocalChain file, three
in-process miners, the gateway, and the tiny hash embedder (nothing here looks at meaning).

The pages must be served from the package alone (no other origin), and every bad input
to the JSON routes must be a 4xx with a message, never a 500.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from bittensor.sp_core import Keypair

from engram.chain.local import LocalChain
from engram.config import ChainParams, GatewayConfig, MinerConfig
from engram.gateway.app import create_gateway_app
from engram.miner.app import create_miner_app
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread
from tests.pdf import make_pdf

NETUID = 1
MAX_UPLOAD = 4096
PAGES = ("/", "/browse", "/dashboard", "/cid/v1::" + "ab" * 32)


@dataclass
class Gateway:
    url: str
    chain: LocalChain
    miners: list[ThreadedServer]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("web")
    params = ChainParams(block_time_s=1.0, axon_ttl_blocks=10_000)
    chain = LocalChain.create(root / "chain.sqlite", NETUID, params)
    servers: list[ThreadedServer] = []
    try:
        for i in range(3):
            port = free_port()
            signer = Keypair.create_from_uri(f"//miner-{i}")
            chain.register(NETUID, signer, coldkey=f"miner-coldkey-{i}")
            chain.serve_axon(NETUID, signer, "127.0.0.1", port)
            config = MinerConfig(home=root / f"miner{i}", port=port, reader_threads=2)
            app = create_miner_app(config, embedder=HashEmbedder())
            servers.append(serve_in_thread(app, port, f"miner-{i}"))
        port = free_port()
        config = GatewayConfig(
            chain=chain.url, netuid=NETUID, port=port, max_upload_bytes=MAX_UPLOAD
        )
        app = create_gateway_app(config, embedder=HashEmbedder())
        gateway = serve_in_thread(app, port, "gateway")
        servers.append(gateway)
        yield Gateway(gateway.url, chain, servers[:3])
    finally:
        for s in servers:
            s.stop()
        chain.close()


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def _error(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    if code is not None:
        assert body["code"] == code, body
    return body["error"]


def test_web_pages_and_their_assets_come_from_the_gateway_alone(http: httpx.Client) -> None:
    assets: set[str] = set()
    for path in PAGES:
        page = http.get(path)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "aria-current=page" in page.text or path.startswith("/cid/")
        assets.update(re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text))
    assert {"/static/engram.css", "/static/favicon.svg"} <= assets
    static = Path(__file__).parents[2] / "engram" / "gateway" / "static"
    for path in static.iterdir():
        text = path.read_text()
        for url in re.findall(r"https?://[^\s\"'`)]+", text):
            assert url == "http://www.w3.org/2000/svg", f"{path.name} links to {url}"
        if path.suffix == ".js":
            assets.add(f"/static/{path.name}")
            assets.update(f"/static/{m}" for m in re.findall(r'from "\./([^"]+)"', text))
    for asset in assets:
        r = http.get(asset)
        assert r.status_code == 200, asset


def test_web_cid_page_with_a_bad_cid_is_a_400_page_and_a_400_json(http: httpx.Client) -> None:
    page = http.get("/cid/not-a-cid<script>")
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "<script>" not in page.text.split("<main", 1)[1]
    message = _error(http.get("/api/cid/not-a-cid/audit"), 400, "invalid_cid")
    assert "not a CID" in message


def test_web_audit_verifies_every_replica(http: httpx.Client) -> None:
    stored = http.post("/IngestSynapse", json={"text": "audit me", "metadata": {"n": 1}})
    assert stored.status_code == 200, stored.text
    cid = stored.json()["cid"]
    report = http.get(f"/api/cid/{cid}/audit").json()
    assert report["cid"] == cid and report["expected"] == 3
    assert report["verified"] == 3 and report["health"] == "healthy"
    assert [r["rank"] for r in report["replicas"]] == [0, 1, 2]
    assert all(r["verdict"] == "verified" and r["latency_ms"] > 0 for r in report["replicas"])
    record = report["record"]
    assert record["text"] == "audit me" and record["metadata"] == {"n": 1}
    assert record["dim"] == 384 and len(record["embedding_head"]) == 8


def test_web_audit_of_an_unknown_cid_finds_it_lost(http: httpx.Client) -> None:
    report = http.get("/api/cid/v1::" + "0" * 64 + "/audit").json()
    assert report["verified"] == 0 and report["health"] == "lost" and report["record"] is None
    assert [r["verdict"] for r in report["replicas"]] == ["missing"] * 3


def test_web_upload_a_pdf_stores_one_record_per_passage(http: httpx.Client) -> None:
    data = make_pdf(["Page one talks about comets.", "Page two is about tide pools."])
    r = http.post(
        "/api/upload",
        params={"filename": "sea.pdf", "namespace": "docs", "metadata": '{"shelf": 3}'},
        content=data,
        headers={"content-type": "application/pdf"},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["kind"] == "pdf" and doc["pages"] == 2 and doc["stored"] == 2
    assert doc["content_cid"] == hashlib.sha256(data).hexdigest()
    assert [c["page"] for c in doc["chunks"]] == [1, 2]
    assert all(len(c["replicas"]) == 3 and c["error"] is None for c in doc["chunks"])
    record = http.get(f"/retrieve/{doc['chunks'][1]['cid']}", params={"namespace": "docs"})
    assert record.json()["metadata"] == {
        "shelf": 3,
        "source": "sea.pdf",
        "content_cid": doc["content_cid"],
        "chunk": 1,
        "chunks": 2,
        "page": 2,
    }
    assert record.json()["text"] == "Page two is about tide pools."


def test_web_upload_markdown_keeps_sections(http: httpx.Client) -> None:
    text = "# Setup\n\nInstall it.\n\n## Usage\n\nRun it.\n"
    r = http.post(
        "/api/upload", params={"filename": "README.md"}, content=text.encode(), headers={}
    )
    assert r.status_code == 200, r.text
    assert [(c["section"], c["text"]) for c in r.json()["chunks"]] == [
        ("Setup", "# Setup\n\nInstall it."),
        ("Usage", "## Usage\n\nRun it."),
    ]


@pytest.mark.parametrize(
    ("params", "body", "status", "needle"),
    [
        ({"filename": "image.png"}, b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, 400, "upload a PDF"),
        ({"filename": "fake.pdf"}, b"plain words, not a PDF", 400, "not a PDF"),
        ({"filename": "broken.pdf"}, b"%PDF-1.4\nthis is not really a PDF", 400, "readable PDF"),
        ({"filename": "empty.txt"}, b"", 400, "empty"),
        ({"filename": "blank.txt"}, b"   \n\n  ", 400, "no text"),
        ({"filename": "big.txt"}, b"word " * (MAX_UPLOAD // 4), 413, "upload limit"),
        ({"filename": "latin1.txt"}, "caf\u00e9".encode("latin-1"), 400, "not UTF-8"),
        ({"filename": "a.txt", "metadata": "{nope"}, b"text", 400, "not valid JSON"),
        ({"filename": "a.txt", "metadata": "[1]"}, b"text", 400, "JSON object"),
        ({"filename": "a.txt", "metadata": '{"page": 1}'}, b"text", 400, "'page'"),
        ({"filename": "a.txt", "namespace": "no spaces"}, b"text", 400, "namespace"),
        ({}, b"text", 400, "filename"),
    ],
)
def test_web_upload_refuses_bad_files_with_a_4xx(
    http: httpx.Client, params: dict[str, str], body: bytes, status: int, needle: str
) -> None:
    r = http.post("/api/upload", params=params, content=body)
    assert needle in _error(r, status)


def test_web_history_samples_the_network(gateway: Gateway, http: httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while not (snapshots := http.get("/api/history").json()["snapshots"]):
        assert time.monotonic() < deadline, "no snapshot after 10 s"
        time.sleep(0.2)
    uids = {str(n.uid) for n in gateway.chain.metagraph(NETUID).neurons}
    assert set(snapshots[0]["miners"]) == uids
    # No validator here: every miner serves, none has been measured, no round has run.
    assert snapshots[0]["scored_at"] is None
    assert all(m["serving"] and m["measured_at"] is None for m in snapshots[0]["miners"].values())
    later = http.get("/api/history", params={"since": snapshots[-1]["t"]}).json()
    assert all(s["t"] > snapshots[-1]["t"] for s in later["snapshots"])
    assert later["size"] >= len(snapshots) and later["interval_s"] > 0
    _error(http.get("/api/history", params={"since": "yesterday"}), 400)


def test_web_routes_say_when_no_miner_is_up(tmp_path: Path) -> None:
    chain = LocalChain.create(tmp_path / "chain.sqlite", NETUID, ChainParams())
    port = free_port()
    config = GatewayConfig(chain=chain.url, netuid=NETUID, port=port)
    server = serve_in_thread(
        create_gateway_app(config, embedder=HashEmbedder()), port, "lonely", ready_path=None
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/dashboard").status_code == 200
            assert http.get("/api/network").json()["neurons"] == []
            audit = http.get("/api/cid/v1::" + "0" * 64 + "/audit")
            assert "no miner is serving" in _error(audit, 503, "unavailable")
            upload = http.post("/api/upload", params={"filename": "a.txt"}, content=b"hello")
            assert "no miner is serving" in _error(upload, 503, "unavailable")
    finally:
        server.stop()
        chain.close()
