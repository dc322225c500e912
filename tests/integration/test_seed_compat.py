"""The original Engram network's SDK keeps working unchanged against a miner and the gateway.

These tests replay the original SDK's wire calls (:mod:`tests.integration.seed_wire`,
stdlib ``urllib`` and ``json`` only): the same routes, methods, JSON bodies and
headers as its ``EngramClient`` sends, including its legacy fields
(``namespace_key``, ``namespace_hotkey``, ``namespace_sig``,
``namespace_timestamp_ms``, ``hotkey``, ``nonce``, ``signature``), its
``DELETE /retrieve/{cid}`` and its ``POST /list``. docs/architecture.md, "Compatibility with the original clients".

Every test runs twice: against a standalone miner, and against a gateway over a
small subnet (the ``cluster`` of test_network.py: a LocalChain file and four
in-process miners with axons). All
servers are real uvicorn servers on loopback ports and embed with the tiny hash
embedder; no test looks at meaning. Every answer's status is asserted, and every
answer must survive ``json.dumps``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bittensor.sp_core import Keypair

from engram.cid import generate_cid, parse_cid
from engram.config import MODEL_VERSION, GatewayConfig, MinerConfig, SecurityConfig
from engram.gateway.app import create_gateway_app
from engram.miner.app import create_miner_app
from engram.proofs import Challenge, ChallengeResponse, verify_response
from engram.records import Record
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread, unit_vectors
from tests.integration import test_network
from tests.integration.seed_wire import Reply, SeedOfflineError, SeedWire

CID_RE = re.compile(r"^v1::[0-9a-f]{64}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
LEGACY_NULLS: dict[str, Any] = {
    "namespace": None,
    "namespace_key": None,
    "namespace_hotkey": None,
    "namespace_sig": None,
    "namespace_timestamp_ms": None,
    "hotkey": None,
    "nonce": None,
    "signature": None,
}


def _embed(text: str) -> list[float]:
    return [float(x) for x in HashEmbedder().encode([text])[0]]


# --- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standalone_miner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    home = tmp_path_factory.mktemp("seed-miner")
    port = free_port()
    config = MinerConfig(home=home, port=port, reader_threads=2)
    # The original clients cannot sign a delete: a node serving them lets anyone delete a
    # public record written unsigned, as the original network did.
    security = SecurityConfig(rate_limits=False, unsigned_public_deletes=True)
    app = create_miner_app(config, embedder=HashEmbedder(), security=security)
    server = serve_in_thread(app, port, "seed-miner")
    try:
        yield server
    finally:
        server.stop()


# The subnet exactly as test_network.py builds it: a LocalChain file and four in-process
# miners with axons; each gateway test puts a gateway in front of a fresh one.
cluster = test_network.cluster


@pytest.fixture(params=["miner", "gateway"])
def node(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The base URL of a standalone miner, then of a gateway over a subnet."""
    if request.param == "miner":
        miner: ThreadedServer = request.getfixturevalue("standalone_miner")
        return miner.url
    monkeypatch.setenv("ENGRAM_UNSIGNED_PUBLIC_DELETES", "true")  # read by the cluster's miners
    subnet: test_network.Cluster = request.getfixturevalue("cluster")
    port = free_port()
    config = GatewayConfig(
        chain=subnet.chain.url, netuid=test_network.NETUID, port=port, home=subnet.root / "gateway"
    )
    app = create_gateway_app(config, embedder=HashEmbedder())
    gateway = serve_in_thread(app, port, "seed-gateway")
    subnet.extra.append(gateway)  # the cluster stops it with its miners
    return gateway.url


@pytest.fixture
def tag() -> str:
    """A metadata value no other test uses, to find this test's records among the others."""
    return uuid.uuid4().hex


# --- helpers -------------------------------------------------------------------------------


def _ok(reply: Reply) -> dict[str, Any]:
    """A 200 whose JSON object body survives json.dumps."""
    assert reply.status == 200, (reply.status, reply.raw[:1000])
    json.dumps(reply.body)
    return reply.data


def _refused(reply: Reply) -> dict[str, Any]:
    """A 4xx with a JSON error that says what is wrong."""
    assert 400 <= reply.status < 500, (reply.status, reply.raw[:1000])
    json.dumps(reply.body)
    body = reply.data
    assert isinstance(body.get("error"), str) and body["error"], body
    return body


def _write_refused(reply: Reply, reason: str) -> None:
    """A refused write is a 4xx that says why, from a miner and from a gateway (whose
    replicas all refused it for that reason)."""
    assert reason in _refused(reply)["error"]


def _ingested(reply: Reply) -> str:
    body = _ok(reply)
    assert not body.get("error"), body
    cid = body.get("cid")
    assert isinstance(cid, str) and CID_RE.match(cid), body
    parse_cid(cid)
    return cid


def _results(reply: Reply) -> list[dict[str, Any]]:
    body = _ok(reply)
    assert not body.get("error"), body
    results = body.get("results") or []
    assert isinstance(results, list)
    for hit in results:
        json.dumps(hit)
        assert isinstance(hit["cid"], str) and CID_RE.match(hit["cid"]), hit
        assert isinstance(hit["score"], float | int), hit
        assert isinstance(hit["metadata"], dict), hit
    return results


def _records(reply: Reply) -> list[dict[str, Any]]:
    body = _ok(reply)
    records = body.get("records") or []
    assert isinstance(records, list)
    for record in records:
        json.dumps(record)
        assert isinstance(record["cid"], str) and CID_RE.match(record["cid"]), record
        assert isinstance(record["metadata"], dict), record
    return records


def _listed(client: SeedWire, **kwargs: Any) -> set[str]:
    return {r["cid"] for r in _records(client.list(limit=200, **kwargs))}


def _vector(seed: int) -> list[float]:
    return [float(x) for x in unit_vectors(1, seed=seed)[0]]


# --- the tests -----------------------------------------------------------------------------


def test_ingest(node: str, tag: str) -> None:
    client = SeedWire(node)
    text = f"the original SDK stores a note ({tag})"
    metadata = {"source": "seed-sdk", "tag": tag, "n": 1}
    reply = client.ingest(text, metadata)
    assert client.sent[-1] == {"text": text, "metadata": metadata}
    cid = _ingested(reply)
    assert cid == generate_cid(np.asarray(_embed(text), np.float32), metadata, MODEL_VERSION, text)
    assert _ingested(client.ingest(text, metadata)) == cid  # the same record, the same CID

    empty = SeedWire(node).ingest(f"no metadata at all ({tag})")  # sent as "metadata": {}
    assert _ingested(empty)


def test_ingest_embedding(node: str, tag: str) -> None:
    client = SeedWire(node)
    vector = _vector(seed=int(tag[:8], 16))
    metadata = {"tag": tag, "kind": "vector"}
    reply = client.ingest_embedding(vector, metadata)
    assert client.sent[-1] == {"raw_embedding": vector, "metadata": metadata}
    cid = _ingested(reply)
    assert cid == generate_cid(np.asarray(vector, np.float32), metadata)

    hits = _results(client.query_by_vector(vector, top_k=1))
    assert [h["cid"] for h in hits] == [cid]
    assert hits[0]["metadata"] == metadata
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_query_by_text(node: str, tag: str) -> None:
    client = SeedWire(node)
    texts = [f"query by text {i}: {tag}" for i in range(4)]
    cids = [
        _ingested(client.ingest(t, {"tag": tag, "topic": "even" if i % 2 == 0 else "odd"}))
        for i, t in enumerate(texts)
    ]
    for i, text in enumerate(texts):
        reply = client.query(text, top_k=3)
        assert client.sent[-1] == {"query_text": text, "top_k": 3}
        hits = _results(reply)
        assert 1 <= len(hits) <= 3
        assert hits[0]["cid"] == cids[i]
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert hits[0]["metadata"]["tag"] == tag
        assert len({h["cid"] for h in hits}) == len(hits)

    # The original's filter: dict[str, str], AND of every pair.
    reply = client.query(texts[1], top_k=10, filter={"tag": tag, "topic": "odd"})
    assert client.sent[-1] == {
        "query_text": texts[1],
        "top_k": 10,
        "filter": {"tag": tag, "topic": "odd"},
    }
    hits = _results(reply)
    assert sorted(h["cid"] for h in hits) == sorted([cids[1], cids[3]])
    assert hits[0]["cid"] == cids[1]


def test_query_by_vector(node: str, tag: str) -> None:
    client = SeedWire(node)
    texts = [f"query by vector {i}: {tag}" for i in range(3)]
    cids = [_ingested(client.ingest(t, {"tag": tag})) for t in texts]
    for text, cid in zip(texts, cids, strict=True):
        vector = _embed(text)
        reply = client.query_by_vector(vector, top_k=2)
        assert client.sent[-1] == {"query_vector": vector, "top_k": 2}
        hits = _results(reply)
        assert 1 <= len(hits) <= 2
        assert hits[0]["cid"] == cid
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_batch_ingest_file(node: str, tag: str, tmp_path: Path) -> None:
    items: list[dict[str, Any]] = [
        {"text": f"batch line 0: {tag}", "metadata": {"tag": tag, "i": 0}},
        {"text": f"batch line 1: {tag}", "metadata": {"tag": tag, "i": 1}},
        {"text": f"batch line 2: {tag}"},  # no metadata: sent as {}
    ]
    lines = [
        json.dumps(items[0]),
        "",
        json.dumps(items[1]),
        "{not json",
        json.dumps({"metadata": {"tag": tag}}),  # no text
        json.dumps({"text": "   "}),  # blank text
        json.dumps(items[2]),
    ]
    path = tmp_path / "memories.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    client = SeedWire(node)
    cids, errors, replies = client.batch_ingest_file(path)
    for reply in replies:
        _ingested(reply)
    assert len(cids) == 3 and len(set(cids)) == 3, (cids, errors)
    assert len(errors) == 3, errors
    assert errors[0].startswith("line 4: JSON parse error")
    assert errors[1] == "line 5: missing or empty 'text' field"
    assert errors[2] == "line 6: missing or empty 'text' field"
    assert [b["metadata"] for b in client.sent] == [items[0]["metadata"], items[1]["metadata"], {}]

    for cid, item in zip(cids, items, strict=True):
        record = _ok(client.get(cid))
        assert record["cid"] == cid
        assert record["metadata"] == item.get("metadata", {})


def test_get(node: str, tag: str) -> None:
    client = SeedWire(node)
    metadata = {"tag": tag, "type": "note", "text": "a stored snippet"}
    cid = _ingested(client.ingest(f"retrieve me by CID ({tag})", metadata))

    record = _ok(client.get(cid))  # GET /retrieve/v1%3A%3A...
    assert record["cid"] == cid
    assert record["metadata"] == metadata

    missing = client.get("v1::" + "0" * 64)
    assert missing.status == 404, (missing.status, missing.raw[:500])
    _refused(missing)


def test_list_with_string_filters_matching_numbers(node: str, tag: str) -> None:
    client = SeedWire(node)
    years: list[Any] = [2024, 2023, "2024", 2024.5]
    cids = [
        _ingested(client.ingest(f"list year {y!r}: {tag}", {"tag": tag, "year": y})) for y in years
    ]

    reply = client.list(filter={"tag": tag})
    assert client.sent[-1] == {"limit": 50, "offset": 0, "filter": {"tag": tag}}
    assert {r["cid"] for r in _records(reply)} == set(cids)

    # The original types filters as dict[str, str]: "2024" matches the number 2024 too.
    reply = client.list(filter={"year": "2024", "tag": tag})
    by_cid = {r["cid"]: r for r in _records(reply)}
    assert set(by_cid) == {cids[0], cids[2]}
    assert by_cid[cids[0]]["metadata"] == {"tag": tag, "year": 2024}
    assert by_cid[cids[2]]["metadata"] == {"tag": tag, "year": "2024"}
    assert {r["cid"] for r in _records(client.list(filter={"year": "2023", "tag": tag}))} == {
        cids[1]
    }
    assert {r["cid"] for r in _records(client.list(filter={"year": "2024.5", "tag": tag}))} == {
        cids[3]
    }
    assert _records(client.list(filter={"year": "2025", "tag": tag})) == []

    # The same on a query.
    hits = _results(client.query(f"list year 2024: {tag}", top_k=10, filter={"year": "2024"}))
    assert {cids[0], cids[2]} <= {h["cid"] for h in hits}
    assert not {cids[1], cids[3]} & {h["cid"] for h in hits}

    # Pagination: limit and offset walk the filtered records without repeats.
    pages = [_records(client.list(filter={"tag": tag}, limit=1, offset=i)) for i in range(5)]
    assert [len(p) for p in pages] == [1, 1, 1, 1, 0]
    assert {p[0]["cid"] for p in pages[:4]} == set(cids)


def test_list_typed_filters_stay_typed(node: str, tag: str) -> None:
    client = SeedWire(node)
    values: list[Any] = [2024, "2024x", 2025, "x2024", True]
    cids = [
        _ingested(client.ingest(f"typed year {v!r}: {tag}", {"tag": tag, "year": v}))
        for v in values
    ]
    assert {r["cid"] for r in _records(client.list(filter={"year": 2024, "tag": tag}))} == {cids[0]}
    assert {r["cid"] for r in _records(client.list(filter={"year": 2025, "tag": tag}))} == {cids[2]}
    assert {r["cid"] for r in _records(client.list(filter={"year": "2024x", "tag": tag}))} == {
        cids[1]
    }
    assert {r["cid"] for r in _records(client.list(filter={"year": True, "tag": tag}))} == {cids[4]}
    hits = _results(client.query(f"typed year 2024: {tag}", top_k=10, filter={"year": 2024}))
    assert cids[0] in {h["cid"] for h in hits}
    assert not set(cids[1:]) & {h["cid"] for h in hits}


def test_delete(node: str, tag: str) -> None:
    client = SeedWire(node)
    keep = _ingested(client.ingest(f"kept: {tag}", {"tag": tag}))
    cid = _ingested(client.ingest(f"deleted: {tag}", {"tag": tag}))
    assert {keep, cid} <= _listed(client)

    reply = client.delete(cid)  # DELETE /retrieve/v1%3A%3A..., no body, no headers
    body = _ok(reply)
    assert body.get("deleted") is True, body

    assert client.get(cid).status == 404
    _refused(client.get(cid))
    listed = _listed(client)
    assert cid not in listed and keep in listed
    hits = _results(client.query(f"deleted: {tag}", top_k=5))
    assert cid not in {h["cid"] for h in hits}
    assert _ok(client.get(keep))["cid"] == keep

    # The original reads a 404 as "not found": False.
    again = client.delete(cid)
    assert again.status == 404, (again.status, again.raw[:500])


def test_namespace_with_namespace_key(node: str, tag: str) -> None:
    namespace = f"seed_{tag[:16]}"
    key = secrets.token_hex(16)  # the original wants at least 16 characters
    owner = SeedWire(node, namespace=namespace, namespace_key=key, embed=_embed)
    text = f"a private note: {tag}"
    reply = owner.ingest(text, {"tag": tag})
    sent = owner.sent[-1]
    assert set(sent) == {"raw_embedding", "metadata", "namespace", "namespace_key"}
    assert sent["namespace"] == namespace and sent["namespace_key"] == key
    cid = _ingested(reply)
    second = _ingested(owner.ingest_embedding(_vector(seed=7), {"tag": tag}))

    hits = _results(owner.query(text, top_k=5))
    assert set(owner.sent[-1]) == {"query_vector", "top_k", "namespace", "namespace_key"}
    assert hits and hits[0]["cid"] == cid
    assert hits[0]["metadata"] == sent["metadata"]  # the sealed blob comes back untouched
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert second in {h["cid"] for h in _results(owner.query("anything", top_k=5))}

    # The same namespace with a wrong key: refused, both ways.
    intruder = SeedWire(
        node, namespace=namespace, namespace_key=secrets.token_hex(16), embed=_embed
    )
    _refused(intruder.query(text, top_k=5))
    _write_refused(intruder.ingest("an intruder's note", {"tag": tag}), "wrong namespace_key")
    _write_refused(intruder.ingest_embedding(_vector(seed=8), {"tag": tag}), "wrong namespace_key")

    # Without any key: the original sends "namespace_key": null; refused too.
    keyless = SeedWire(node, namespace=namespace)
    _write_refused(keyless.ingest_embedding(_vector(seed=9), {"tag": tag}), "namespace_key")
    assert keyless.sent[-1]["namespace_key"] is None
    query = {"query_vector": _embed(text), "top_k": 5, "namespace": namespace}
    _refused(keyless.post("QuerySynapse", query))
    _refused(keyless.list())  # {"limit", "offset", "namespace"}: no proof of the key

    # Nothing of it leaks into the public namespace.
    public = SeedWire(node)
    assert cid not in {h["cid"] for h in _results(public.query_by_vector(_embed(text), top_k=10))}
    assert cid not in _listed(public)
    leaked = public.get(cid)
    assert 400 <= leaked.status < 500, (leaked.status, leaked.raw[:500])


def test_legacy_fields_sent_as_null_are_accepted(node: str, tag: str) -> None:
    client = SeedWire(node)
    text = f"a body full of legacy nulls: {tag}"
    metadata = {"tag": tag}
    cid = _ingested(
        client.post("IngestSynapse", {"text": text, "metadata": metadata, **LEGACY_NULLS})
    )
    assert cid == generate_cid(np.asarray(_embed(text), np.float32), metadata, MODEL_VERSION, text)

    vector = _vector(seed=int(tag[8:16], 16))
    vector_cid = _ingested(
        client.post(
            "IngestSynapse", {"raw_embedding": vector, "metadata": metadata, **LEGACY_NULLS}
        )
    )

    hits = _results(client.post("QuerySynapse", {"query_text": text, "top_k": 3, **LEGACY_NULLS}))
    assert hits[0]["cid"] == cid
    hits = _results(
        client.post(
            "QuerySynapse",
            {"query_vector": vector, "top_k": 3, "filter": None, **LEGACY_NULLS},
        )
    )
    assert hits[0]["cid"] == vector_cid

    reply = client.post("list", {"limit": 50, "offset": 0, "filter": {"tag": tag}, **LEGACY_NULLS})
    assert {r["cid"] for r in _records(reply)} == {cid, vector_cid}


def test_keypair_signed_requests_are_accepted(node: str, tag: str) -> None:
    """The original signs the body: hotkey, nonce (unix ms), signature over nonce:endpoint:hash."""
    client = SeedWire(node, keypair=Keypair.create_from_uri("//Bob"))
    text = f"signed the original way: {tag}"
    cid = _ingested(client.ingest(text, {"tag": tag}))
    sent = client.sent[-1]
    assert set(sent) == {"text", "metadata", "hotkey", "nonce", "signature"}
    assert sent["hotkey"] == client.keypair.ss58_address

    hits = _results(client.query(text, top_k=3, filter={"tag": tag}))
    assert set(client.sent[-1]) == {"query_text", "top_k", "filter", "hotkey", "nonce", "signature"}
    assert [h["cid"] for h in hits] == [cid]
    vector = _vector(seed=11)
    vector_cid = _ingested(client.ingest_embedding(vector, {"tag": tag}))
    assert _results(client.query_by_vector(vector, top_k=1))[0]["cid"] == vector_cid
    assert {r["cid"] for r in _records(client.list(filter={"tag": tag}))} == {cid, vector_cid}


def test_delete_of_a_permanent_public_record_says_how_to_allow_it(tmp_path: Path) -> None:
    """By default a public record written unsigned is permanent: the refusal names the switch."""
    port = free_port()
    config = MinerConfig(home=tmp_path, port=port, reader_threads=2)
    app = create_miner_app(
        config, embedder=HashEmbedder(), security=SecurityConfig(rate_limits=False)
    )
    server = serve_in_thread(app, port, "strict-seed-miner")
    try:
        client = SeedWire(server.url)
        cid = _ingested(client.ingest("a permanent public note"))
        reply = client.delete(cid)
        assert reply.status == 403, (reply.status, reply.raw[:500])
        assert "unsigned_public_deletes" in reply.body["error"]
        assert _ok(client.get(cid))["cid"] == cid
    finally:
        server.stop()


def test_namespace_signature_variant(standalone_miner: ThreadedServer, tag: str) -> None:
    """With a keypair the original proves a namespace with namespace_hotkey/_sig/_timestamp_ms.

    A miner honours it; a gateway relays requests unsigned, so it cannot (yet) vouch for
    the owner to the miners, and this variant is exercised against a miner only.
    """
    node = standalone_miner.url
    namespace = f"seed_sig_{tag[:16]}"
    key = secrets.token_hex(16)
    owner = SeedWire(
        node,
        namespace=namespace,
        namespace_key=key,
        keypair=Keypair.create_from_uri("//Dave"),
        embed=_embed,
    )
    text = f"a note in a signed namespace: {tag}"
    cid = _ingested(owner.ingest(text, {"tag": tag}))
    sent = owner.sent[-1]
    assert set(sent) == {
        "raw_embedding",
        "metadata",
        "namespace",
        "namespace_hotkey",
        "namespace_sig",
        "namespace_timestamp_ms",
        "hotkey",
        "nonce",
        "signature",
    }
    hits = _results(owner.query(text, top_k=3))
    assert hits and hits[0]["cid"] == cid

    # Another hotkey's proof for the same namespace is not its owner's.
    other = SeedWire(
        node,
        namespace=namespace,
        namespace_key=key,
        keypair=Keypair.create_from_uri("//Eve"),
        embed=_embed,
    )
    _refused(other.query(text, top_k=3))
    unsigned = SeedWire(node)
    _refused(
        unsigned.post("QuerySynapse", {"query_text": text, "top_k": 3, "namespace": namespace})
    )


def _challenge_answered(client: SeedWire, cid: str, **extra: Any) -> None:
    """An unsigned challenge (with ``extra`` fields) gets a proof that verifies."""
    nonce_hex = secrets.token_hex(32)
    expires_at = int(time.time()) + 60
    body = {"cid": cid, "nonce_hex": nonce_hex, "expires_at": expires_at, **extra}
    answer = _ok(client.post("ChallengeSynapse", body))
    assert HEX64_RE.match(answer.get("embedding_hash") or ""), answer
    assert HEX64_RE.match(answer.get("proof") or ""), answer

    stored = _ok(client.get(cid))
    record = Record(
        cid=stored["cid"],
        embedding=np.asarray(stored["embedding"], np.float32),
        metadata=stored["metadata"],
        text=stored.get("text"),
        namespace=stored.get("namespace", "default"),
        model_version=stored.get("model_version", MODEL_VERSION),
    )
    challenge = Challenge(cid, nonce_hex, float(expires_at))
    response = ChallengeResponse(answer["embedding_hash"], answer["proof"])
    assert verify_response(challenge, response, record)


def test_unsigned_challenge_of_a_public_record(standalone_miner: ThreadedServer, tag: str) -> None:
    """Challenges are a miner's (a gateway holds no records to prove)."""
    client = SeedWire(standalone_miner.url)
    cid = _ingested(client.ingest(f"prove you still hold me: {tag}", {"tag": tag}))
    _challenge_answered(client, cid)  # {cid, nonce_hex, expires_at}
    _challenge_answered(client, cid, hotkey=None, nonce=None, signature=None)
    # The original validator's own body adds validator_hotkey_hex (zeros when unset).
    _challenge_answered(client, cid, validator_hotkey_hex="0" * 64)


def test_health_and_is_online(node: str) -> None:
    client = SeedWire(node)
    health = _ok(client.health())
    assert health.get("status") == "ok", health
    assert client.is_online() is True

    nobody = SeedWire(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    assert nobody.is_online() is False
    with pytest.raises(SeedOfflineError):
        nobody.health()
