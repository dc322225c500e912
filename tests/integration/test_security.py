"""Signed requests, owned namespaces, sealing and rate limits, over real HTTP on loopback.

A real miner app (real SQLite, the real embedding model) runs on uvicorn in a
thread; requests are signed with real sr25519 keys through bittensor's own
``http_auth``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bittensor.sp_core import Keypair

from engram import EngramClient, SealKey
from engram.api.calls import record_from_wire
from engram.config import MinerConfig, SecurityConfig
from engram.errors import ForbiddenError, UnauthorizedError
from engram.miner.app import create_miner_app
from engram.proofs import ChallengeResponse, make_challenge, verify_response
from engram.security.signing import HotkeyAuth, sign_request
from tests.conftest import ThreadedServer, free_port, serve_in_thread

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
CAROL = Keypair.create_from_uri("//Carol")
SECRET = "the launch code is 0000 and the vault is under the oak tree"


def _serve(home: Path, **security: Any) -> ThreadedServer:
    settings = SecurityConfig(**{"rate_limits": False, **security})
    app = create_miner_app(MinerConfig(home=home), security=settings)
    return serve_in_thread(app, free_port(), "secure-miner")


@pytest.fixture(scope="module")
def miner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    server = _serve(tmp_path_factory.mktemp("secure-miner"))
    yield server
    server.stop()


def _http(miner: ThreadedServer, who: Keypair | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=miner.url, timeout=30, auth=HotkeyAuth(who) if who is not None else None
    )


def _signed(miner: ThreadedServer, method: str, path: str, doc: Any, who: Keypair) -> httpx.Request:
    request = httpx.Request(
        method,
        miner.url + path,
        content=json.dumps(doc).encode(),
        headers={"content-type": "application/json"},
    )
    sign_request(request, who)
    return request


def _ingest(miner: ThreadedServer, who: Keypair | None, text: str, namespace: str) -> str:
    with _http(miner, who) as http:
        r = http.post("/IngestSynapse", json={"text": text, "namespace": namespace})
    assert r.status_code == 200, r.text
    return r.json()["cid"]


def test_a_replayed_signed_request_is_rejected(miner: ThreadedServer) -> None:
    request = _signed(miner, "POST", "/QuerySynapse", {"query_text": "anything"}, ALICE)
    with httpx.Client(timeout=30) as http:
        assert http.send(request).status_code == 200
        again = http.send(request)
    assert again.status_code == 401
    assert again.json()["code"] == "unauthorized" and "already accepted" in again.json()["error"]


def test_a_request_signed_by_one_hotkey_and_claimed_by_another_is_rejected(
    miner: ThreadedServer,
) -> None:
    request = _signed(miner, "POST", "/QuerySynapse", {"query_text": "anything"}, ALICE)
    request.headers["X-Bittensor-Hotkey"] = BOB.ss58_address
    with httpx.Client(timeout=30) as http:
        r = http.send(request)
    assert r.status_code == 401 and "does not verify" in r.json()["error"]


def test_a_body_altered_after_signing_is_rejected(miner: ThreadedServer) -> None:
    doc = {"text": "pay bob 1 tao", "namespace": "alice-ledger"}
    request = _signed(miner, "POST", "/IngestSynapse", doc, ALICE)
    altered = json.dumps({**doc, "text": "pay bob 1000 tao"}).encode()
    forged = httpx.Request(
        "POST", request.url, content=altered, headers=dict(request.headers.items())
    )
    forged.headers["content-length"] = str(len(altered))
    with httpx.Client(timeout=30) as http:
        r = http.send(forged)
    assert r.status_code == 401 and "does not verify" in r.json()["error"]
    with _http(miner, ALICE) as http:
        assert http.get("/count", params={"namespace": "alice-ledger"}).json()["count"] == 0


def test_a_signed_request_bound_to_another_node_is_rejected(miner: ThreadedServer) -> None:
    request = httpx.Request("GET", miner.url + "/count")
    sign_request(request, ALICE, receiver=BOB.ss58_address)
    with httpx.Client(timeout=30) as http:
        r = http.send(request)
    assert r.status_code == 401 and "receiving hotkey" in r.json()["error"]


def _attempts(cid: str, namespace: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every way to read, probe or remove a record: (method, path, kwargs)."""
    nonce = make_challenge(cid, 30)
    challenge = {"cid": cid, "nonce_hex": nonce.nonce_hex, "expires_at": nonce.expires_at}
    return [
        ("POST", "/QuerySynapse", {"json": {"query_text": SECRET, "namespace": namespace}}),
        ("GET", "/list", {"params": {"namespace": namespace}}),
        ("GET", "/count", {"params": {"namespace": namespace}}),
        ("GET", f"/retrieve/{cid}", {"params": {"namespace": namespace}}),
        ("GET", f"/retrieve/{cid}", {}),
        ("POST", "/ChallengeSynapse", {"json": challenge}),
        ("DELETE", f"/records/{cid}", {"params": {"namespace": namespace}}),
        ("GET", f"/namespaces/{namespace}", {}),
    ]


def test_nobody_but_the_owner_or_a_grantee_reads_probes_or_deletes_a_private_record(
    miner: ThreadedServer,
) -> None:
    cid = _ingest(miner, ALICE, SECRET, "alice-diary")
    for who in (None, BOB):
        with _http(miner, who) as http:
            for method, path, kwargs in _attempts(cid, "alice-diary"):
                r = http.request(method, path, **kwargs)
                assert r.status_code in (401, 403, 404), (who, method, path, r.text)
                assert SECRET not in r.text and '"embedding"' not in r.text, (path, r.text)
    # Unnamed lookups never reveal the record either; the public side of the node is unchanged.
    with _http(miner, BOB) as http:
        hits = http.post("/QuerySynapse", json={"query_text": SECRET}).json()["results"]
        assert all(h["cid"] != cid for h in hits)
        assert "alice-diary" not in http.get("/stats").json()["namespaces"]
    with _http(miner, ALICE) as http:
        assert (
            http.get(f"/retrieve/{cid}", params={"namespace": "alice-diary"}).json()["text"]
            == SECRET
        )
        hits = http.post(
            "/QuerySynapse", json={"query_text": "vault", "namespace": "alice-diary"}
        ).json()["results"]
        assert [h["cid"] for h in hits] == [cid]


def test_a_grant_lets_a_hotkey_in_and_revoking_it_takes_effect_at_once(
    miner: ThreadedServer,
) -> None:
    cid = _ingest(miner, ALICE, "our shared agent memory", "team-memory")
    path = f"/retrieve/{cid}"
    params = {"namespace": "team-memory"}
    with _http(miner, ALICE) as alice, _http(miner, BOB) as bob:
        assert bob.get(path, params=params).status_code == 403
        info = alice.post(
            "/namespaces/team-memory/grants",
            json={"hotkey": BOB.ss58_address, "permission": "read"},
        ).json()
        assert info["owner"] == ALICE.ss58_address
        assert info["grants"] == [{"hotkey": BOB.ss58_address, "permission": "read"}]
        assert bob.get(path, params=params).json()["text"] == "our shared agent memory"
        # read is not write: Bob can neither add nor delete
        assert (
            bob.post(
                "/IngestSynapse", json={"text": "bob was here", "namespace": "team-memory"}
            ).status_code
            == 403
        )
        assert bob.delete(f"/records/{cid}", params=params).status_code == 403
        # only the owner manages grants
        r = bob.post(
            "/namespaces/team-memory/grants",
            json={"hotkey": CAROL.ss58_address, "permission": "read"},
        )
        assert r.status_code == 403
        revoked = alice.delete(
            f"/namespaces/team-memory/grants/{BOB.ss58_address}", params={"permission": "read"}
        )
        assert revoked.status_code == 200 and revoked.json()["grants"] == []
        assert bob.get(path, params=params).status_code == 403
        assert alice.get(path, params=params).status_code == 200


def test_a_stranger_cannot_delete_a_public_record(miner: ThreadedServer) -> None:
    cid = _ingest(miner, ALICE, "a public note anyone may read", "default")
    with _http(miner, BOB) as bob, _http(miner) as anyone:
        assert bob.get(f"/retrieve/{cid}").status_code == 200  # public: readable by all
        assert bob.delete(f"/records/{cid}").status_code == 403
        assert anyone.delete(f"/records/{cid}").status_code == 401
        assert anyone.get(f"/retrieve/{cid}").status_code == 200
    unsigned = _ingest(miner, None, "an unsigned public note", "default")
    with _http(miner, ALICE) as alice:
        r = alice.delete(f"/records/{unsigned}")
        assert r.status_code == 403 and "permanent" in r.json()["error"]
        assert alice.delete(f"/records/{cid}").status_code == 200


def test_a_challenge_is_answered_for_a_record_the_caller_may_read(miner: ThreadedServer) -> None:
    """Anyone may read a public record, so anyone may challenge it, signed or not; a private
    record's existence is not revealed to a caller who may not read it."""
    cid = _ingest(miner, ALICE, "challenge me", "default")
    hidden = _ingest(miner, ALICE, "challenge me privately", "alice-proofs")
    challenge = make_challenge(cid, 30)
    doc = {"cid": cid, "nonce_hex": challenge.nonce_hex, "expires_at": challenge.expires_at}
    private = {**doc, "cid": hidden}
    with _http(miner) as anyone:
        unsigned = anyone.post("/ChallengeSynapse", json=doc)
        assert anyone.post("/ChallengeSynapse", json=private).status_code == 404
    with _http(miner, BOB) as bob:
        answer = bob.post("/ChallengeSynapse", json=doc)
        record = bob.get(f"/retrieve/{cid}").json()
        assert bob.post("/ChallengeSynapse", json=private).status_code == 404
    for reply in (unsigned, answer):
        assert reply.status_code == 200
        response = ChallengeResponse(reply.json()["embedding_hash"], reply.json()["proof"])
        assert verify_response(challenge, response, record_from_wire(record))


def test_a_flood_from_one_identity_gets_429_while_another_is_served(tmp_path: Path) -> None:
    server = _serve(tmp_path / "limited", rate_limits=True, query_per_s=2.0, query_burst=5.0)
    try:
        with _http(server, BOB) as bob, _http(server, ALICE) as alice, _http(server) as anyone:
            statuses = [bob.get("/count").status_code for _ in range(20)]
            assert statuses[:5] == [200] * 5 and statuses.count(429) >= 14, statuses
            limited = bob.get("/count")
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.json()["code"] == "rate_limited"
            assert alice.get("/count").status_code == 200  # another hotkey has its own bucket
            assert anyone.get("/count").status_code == 200  # and so has an unsigned IP
    finally:
        server.stop()


def test_require_signatures_refuses_unsigned_reads_and_ingest(tmp_path: Path) -> None:
    app = create_miner_app(
        MinerConfig(home=tmp_path / "strict", require_signatures=True),
        security=SecurityConfig(rate_limits=False),
    )
    server = serve_in_thread(app, free_port(), "strict-miner")
    try:
        with _http(server) as anyone, _http(server, ALICE) as alice:
            r = anyone.post("/QuerySynapse", json={"query_text": "hi"})
            assert r.status_code == 401 and "signed" in r.json()["error"]
            assert anyone.post("/IngestSynapse", json={"text": "hi"}).status_code == 401
            assert anyone.get("/health").status_code == 200  # liveness stays open
            assert alice.post("/IngestSynapse", json={"text": "hi"}).status_code == 200
    finally:
        server.stop()


def test_the_sdk_signs_and_seals_and_the_miner_stores_only_ciphertext(
    miner: ThreadedServer,
) -> None:
    key = SealKey.generate()
    ns = "alice-sealed"
    with EngramClient(miner.url, keypair=ALICE, seal_key=key, clear_fields=["kind"]) as alice:
        cid = alice.ingest(SECRET, metadata={"kind": "note", "pin": 1234}, namespace=ns)
        hits = alice.query("where is the vault", namespace=ns, filter={"kind": "note"})
        assert [h.cid for h in hits] == [cid] and hits[0].text == SECRET
        assert hits[0].metadata == {"kind": "note", "pin": 1234} and hits[0].embedding is None
        assert alice.get(cid, namespace=ns).text == SECRET
        assert alice.list(namespace=ns)[0].metadata["pin"] == 1234
    with _http(miner, ALICE) as http:
        stored = http.get(f"/retrieve/{cid}", params={"namespace": ns}).json()
    assert stored["text"] is None and "pin" not in stored["metadata"]
    assert stored["metadata"]["kind"] == "note" and "_sealed" in stored["metadata"]
    assert "vault" not in json.dumps(stored) and "1234" not in json.dumps(stored["metadata"])
    with EngramClient(miner.url, keypair=ALICE) as no_key:  # the owner without the key: ciphertext
        assert no_key.get(cid, namespace=ns).text is None


def test_the_embedded_store_obeys_the_same_rules(tmp_path: Path) -> None:
    path = tmp_path / "embedded"
    with EngramClient(path=path, keypair=ALICE) as alice:
        cid = alice.ingest(SECRET, namespace="alice-local")
        public = alice.ingest("public words", namespace="default")
    with EngramClient(path=path, keypair=BOB) as bob:
        with pytest.raises(ForbiddenError):
            bob.query("vault", namespace="alice-local")
        with pytest.raises(ForbiddenError):
            bob.get(cid, namespace="alice-local")
        with pytest.raises(ForbiddenError):
            bob.delete(public)
        assert "alice-local" not in bob.stats()["namespaces"]
    with EngramClient(path=path, keypair=ALICE) as alice:
        alice.grant(BOB.ss58_address, "read", namespace="alice-local")
    with EngramClient(path=path, keypair=BOB) as bob:
        assert bob.get(cid, namespace="alice-local").text == SECRET
    with EngramClient(path=path) as operator:  # the files' owner, no key: may do anything
        assert operator.get(cid, namespace="alice-local").text == SECRET


def test_the_http_client_maps_refusals_to_the_error_tree(miner: ThreadedServer) -> None:
    cid = _ingest(miner, ALICE, "mapped errors", "alice-mapped")
    with EngramClient(miner.url) as anyone, pytest.raises(UnauthorizedError):
        anyone.get(cid, namespace="alice-mapped")
    with EngramClient(miner.url, keypair=BOB) as bob, pytest.raises(ForbiddenError):
        bob.list(namespace="alice-mapped")
