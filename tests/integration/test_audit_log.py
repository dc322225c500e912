"""The audit log of changes: every write, delete and grant change asked of a miner or a gateway
leaves one entry (who, what, when, from where, how it ended), its namespace's owner reads them
with a signed ``GET /audit``, nobody else does, no secret a request carried is kept, and the
file keeps only the newest ``audit_max_rows`` entries.

Real SQLite files and real HTTP on loopback; the gateway runs on test_network's subnet of four
miners. The tiny deterministic HashEmbedder: only plumbing and permissions are looked at.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bittensor import http_auth
from bittensor.sp_core import Keypair

from engram.config import GatewayConfig, MinerConfig, SecurityConfig
from engram.gateway.app import create_gateway_app
from engram.miner.app import create_miner_app
from engram.security.signing import HotkeyAuth, sign_request
from engram.server.auditlog import FILENAME, GATEWAY_FILENAME, AuditEntry, AuditLog
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread
from tests.integration import test_network

cluster = test_network.cluster
ALICE = Keypair.create_from_uri("//audit-alice")
BOB = Keypair.create_from_uri("//audit-bob")
NS = "alice-audit"
SECRET_TEXT = "the safe behind the painting opens with 31-41-59"
SECRET_KEY = "legacy-namespace-key-never-logged-2718281828"


def _miner(home: Path, **security: Any) -> ThreadedServer:
    settings = SecurityConfig(**{"rate_limits": False, **security})
    app = create_miner_app(MinerConfig(home=home), embedder=HashEmbedder(), security=settings)
    return serve_in_thread(app, free_port(), "audit-miner")


@pytest.fixture(scope="module")
def miner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedServer, Path]]:
    home = tmp_path_factory.mktemp("audit-miner")
    server = _miner(home)
    yield server, home
    server.stop()


def _http(url: str, who: Keypair | None = None) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, auth=HotkeyAuth(who) if who else None)


def _audit(url: str, who: Keypair | None, namespace: str = NS, **params: Any) -> httpx.Response:
    with _http(url, who) as http:
        return http.get("/audit", params={"namespace": namespace, **params})


def _file_bytes(home: Path, name: str) -> bytes:
    """The log as it sits on disk, its write-ahead log included."""
    return b"".join(p.read_bytes() for p in home.glob(name + "*"))


def _changes(url: str) -> tuple[str, set[str]]:
    """alice's writes, batch, delete and grant in NS, then bob's refused write and an
    anonymous one; and an unsigned legacy write guarded by a namespace_key elsewhere.
    Returns the deleted CID and a signature header's value sent."""
    signatures: set[str] = set()
    with _http(url, ALICE) as alice:
        first = alice.post(
            "/IngestSynapse", json={"text": SECRET_TEXT, "metadata": {"n": 1}, "namespace": NS}
        )
        assert first.status_code == 200, first.text
        cid = first.json()["cid"]
        items = [{"text": f"batch note {i}", "namespace": NS} for i in range(3)]
        batch = alice.post("/BatchIngestSynapse", json={"items": items})
        assert batch.status_code == 200 and all(batch.json()["cids"]), batch.text
        # one request signed by hand, to look for its signature in the file afterwards
        request = alice.build_request("DELETE", f"/records/{cid}", params={"namespace": NS})
        sign_request(request, ALICE)
        signatures |= {request.headers[http_auth.HEADER_SIGNATURE]}
        deleted = alice.send(request, auth=None)
        assert deleted.status_code == 200, deleted.text
        grant = alice.post(
            f"/namespaces/{NS}/grants", json={"hotkey": BOB.ss58_address, "permission": "read"}
        )
        assert grant.status_code == 200, grant.text
    with _http(url, BOB) as bob:
        refused = bob.post("/IngestSynapse", json={"text": "bob may only read", "namespace": NS})
        assert refused.status_code == 403, refused.text
    with _http(url) as anonymous:
        refused = anonymous.post("/IngestSynapse", json={"text": "who knows", "namespace": NS})
        assert refused.status_code == 401, refused.text
        legacy = anonymous.post(
            "/IngestSynapse",
            json={"text": "legacy", "namespace": "legacy-keyed", "namespace_key": SECRET_KEY},
        )
        assert legacy.status_code == 200, legacy.text
    assert signatures, "the signed request carried no signature headers"
    return cid, signatures


def _check_entries(url: str, cid: str, started: float) -> list[dict[str, Any]]:
    answer = _audit(url, ALICE)
    assert answer.status_code == 200, answer.text
    assert answer.json()["namespace"] == NS
    entries = answer.json()["entries"]
    seen = [(e["actor"], e["method"], e["route"], e["status"], e["code"]) for e in entries]
    alice, bob = ALICE.ss58_address, BOB.ss58_address
    assert seen == [  # newest first
        ("anonymous", "POST", "/IngestSynapse", 401, "unauthorized"),
        (bob, "POST", "/IngestSynapse", 403, "forbidden"),
        (alice, "POST", "/namespaces/{namespace}/grants", 200, None),
        (alice, "DELETE", "/records/{cid}", 200, None),
        (alice, "POST", "/BatchIngestSynapse", 200, None),
        (alice, "POST", "/IngestSynapse", 200, None),
    ]
    assert [e["cid"] for e in entries] == [None, None, None, cid, None, None]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    for e in entries:
        assert e["namespace"] == NS and e["client_ip"] == "127.0.0.1"
        assert started - 1 <= e["at"] <= time.time() + 1
        AuditEntry.model_validate(e)
    # paging: the newest two, then the two before them
    page = _audit(url, ALICE, limit=2).json()["entries"]
    assert [e["id"] for e in page] == ids[:2]
    older = _audit(url, ALICE, limit=2, before_id=ids[1]).json()["entries"]
    assert [e["id"] for e in older] == ids[2:4]
    return entries


def _check_refusals(url: str) -> None:
    assert _audit(url, BOB).status_code == 403  # a read grantee is not the owner
    unsigned = _audit(url, None)
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "unauthorized"
    for public in ("default", "legacy-keyed", "never-written"):
        refused = _audit(url, ALICE, public)  # no owner: nobody reads its log
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden", public
    bad = _audit(url, ALICE, limit=0)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"


def _check_no_secrets(home: Path, signatures: set[str], name: str = FILENAME) -> None:
    raw = _file_bytes(home, name)
    assert raw, f"no audit log under {home}"
    for secret in (SECRET_TEXT, SECRET_KEY, "batch note", *signatures):
        assert secret.encode() not in raw, f"the audit log holds {secret!r}"


def test_a_miner_logs_every_change_for_the_namespace_owner(
    miner: tuple[ThreadedServer, Path],
) -> None:
    server, home = miner
    started = time.time()
    cid, signatures = _changes(server.url)
    _check_entries(server.url, cid, started)
    _check_refusals(server.url)
    _check_no_secrets(home, signatures)


def test_a_gateway_logs_every_change_it_relays(cluster: test_network.Cluster) -> None:
    port = free_port()
    home = cluster.root / "gw"
    config = GatewayConfig(
        chain=cluster.chain.url, netuid=test_network.NETUID, port=port, home=home
    )
    gateway = serve_in_thread(create_gateway_app(config, embedder=HashEmbedder()), port, "gw")
    cluster.extra.append(gateway)

    started = time.time()
    cid, signatures = _changes(gateway.url)
    _check_entries(gateway.url, cid, started)
    _check_refusals(gateway.url)
    _check_no_secrets(home, signatures, GATEWAY_FILENAME)

    # each replica logged the relayed writes under alice's hotkey too, and tells its owner
    for hotkey in cluster.routed(cid):
        miner = cluster.miners[hotkey]
        entries = _audit(miner.url, ALICE).json()["entries"]
        ingests = [e for e in entries if e["route"] == "/IngestSynapse" and e["status"] == 200]
        assert [e["actor"] for e in ingests] == [ALICE.ss58_address], hotkey
        assert _audit(miner.url, BOB).status_code == 403


def test_only_the_newest_entries_are_kept(tmp_path: Path) -> None:
    server = _miner(tmp_path / "miner", audit_max_rows=50)
    try:
        with _http(server.url, ALICE) as alice:
            for i in range(120):
                answer = alice.post("/IngestSynapse", json={"text": f"note {i}", "namespace": NS})
                assert answer.status_code == 200, answer.text
            entries = alice.get("/audit", params={"namespace": NS, "limit": 1000}).json()["entries"]
    finally:
        server.stop()
    log = AuditLog(tmp_path / "miner" / FILENAME, 50)
    try:
        kept = len(log)
    finally:
        log.close()
    assert 50 <= kept <= 50 + 5  # the newest 50, and at most one trim's batch more
    assert len(entries) == kept
    ids = [e["id"] for e in entries]
    assert ids == list(range(120, 120 - kept, -1))  # the newest, none missing


def test_the_log_trims_claims_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"

    def entry(i: int, namespace: str) -> AuditEntry:
        return AuditEntry(
            at=float(i), actor="anonymous", method="POST", route="/store", namespace=namespace,
            client_ip="10.0.0.1", status=200,
        )  # fmt: skip

    with AuditLog(path, max_rows=50) as log:
        assert log.trim_every == 5
        for i in range(120):
            log.record(entry(i, "a" if i % 2 else "b"))
        assert 50 <= len(log) <= 55
        newest = log.entries("a", limit=3)
        assert [e.at for e in newest] == [119.0, 117.0, 115.0]
        assert [e.at for e in log.entries("a", limit=2, before_id=newest[1].id)] == [115.0, 113.0]
        log.claim("ns", "5Alice")
        log.claim("ns", "5Bob")  # the first writer stays
        log.claim("pub", None)
        log.claim("pub", "5Bob")
        assert (log.claimant("ns"), log.claimant("pub"), log.claimant("none")) == (
            "5Alice",
            None,
            None,
        )
    with AuditLog(path, max_rows=10) as log:  # a smaller bound applies when it opens
        assert len(log) == 10 and log.claimant("ns") == "5Alice"
        log.record(*(entry(i, "c") for i in range(200, 203)))
        assert [e.at for e in log.entries("c")] == [202.0, 201.0, 200.0]
