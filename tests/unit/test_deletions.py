"""Deletions that reach replicas which missed them: tombstones kept with the signed request that
asked for the delete, and applied elsewhere only where that proof holds.

Real stores (SQLite files) and real sr25519 signatures; each "replica" is a LocalNode over
its own store, as each miner is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from bittensor.sp_core import Keypair

from engram.api.calls import Delete
from engram.errors import ConflictError, ForbiddenError, InvalidRequestError
from engram.node.local import LocalNode
from engram.records import IngestItem, Record
from engram.security.access import Caller, SignedRequest
from engram.security.signing import sign_request, signature_headers
from engram.store import Store
from engram.store.db import Deletion
from tests.conftest import unit_vectors

ALICE = Keypair.create_from_uri("//Alice")
MALLORY = Keypair.create_from_uri("//Mallory")
VALIDATOR = Caller(hotkey=Keypair.create_from_uri("//Validator").ss58_address, validator=True)


def _delete_as(signer: Keypair, cid: str, namespace: str) -> Caller:
    """A caller as a miner's gate makes it from the delete ``signer`` signed for one miner
    (bound to another miner's hotkey: a proof holds on every replica)."""
    call = Delete(cid, namespace).request()
    request = httpx.Request(call.method, "http://127.0.0.1:9" + call.path, params=call.params)
    sign_request(request, signer, receiver=MALLORY.ss58_address)
    target = request.url.raw_path.decode()
    signed = SignedRequest(call.method, target, b"", signature_headers(request.headers))
    return Caller(hotkey=signer.ss58_address, signed_request=signed)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[LocalNode]]:
    nodes = [LocalNode(Store(tmp_path / f"r{i}")) for i in range(3)]
    yield nodes
    for node in nodes:
        node.close()


def _write(nodes: list[LocalNode], n: int, namespace: str = "notes") -> list[Record]:
    """``n`` records written by Alice to every replica; her first signed write makes her the
    namespace's owner, except in a ``public-`` one, which the operator writes first."""
    items = [IngestItem(embedding=v, namespace=namespace) for v in unit_vectors(n, seed=3)]
    alice = Caller(hotkey=ALICE.ss58_address)
    if namespace.startswith("public-"):
        for node in nodes:  # a record written unsigned leaves the namespace unclaimed
            node.ingest([IngestItem(embedding=unit_vectors(1, seed=99)[0], namespace=namespace)])
    stored = [node.ingest(items, alice) for node in nodes]
    cids = [str(getattr(o, "cid", o)) for o in stored[0]]
    assert all([str(getattr(o, "cid", o)) for o in s] == cids for s in stored)
    found = [nodes[0].get(cid, namespace, alice) for cid in cids]
    assert all(r is not None for r in found)
    return [r for r in found if r is not None]


def test_a_delete_keeps_its_proof_and_the_missed_replica_applies_it(
    replicas: list[LocalNode],
) -> None:
    first, second, missed = replicas
    records = _write(replicas, 3)
    gone = records[0]
    for node in (first, second):  # the third replica is down while Alice deletes
        node.delete(gone.cid, "notes", _delete_as(ALICE, gone.cid, "notes"))

    kept = first.deletions(0, 100, VALIDATOR)
    assert [(d.namespace, d.cid) for d in kept] == [("notes", gone.cid)]
    assert kept[0].proof is not None and abs(kept[0].deleted_at - time.time()) < 60

    assert missed.apply_deletions(kept) == ["deleted"]
    assert missed.get(gone.cid, "notes") is None
    assert missed.count("notes") == 2
    # Told again (by another validator, or after a restart): nothing left to do.
    assert missed.apply_deletions(kept) == ["absent"]
    # The replica that applied it keeps the same proof, so it can tell others in turn.
    assert [d.proof for d in missed.deletions(0, 100, VALIDATOR)] == [kept[0].proof]


def test_a_proof_holds_only_for_what_its_signer_may_delete_and_asked_to(
    replicas: list[LocalNode],
) -> None:
    first, _, other = replicas
    records = _write(replicas, 3)
    # Mallory's signature is valid, but she may not delete in Alice's namespace.
    mallory = _delete_as(MALLORY, records[0].cid, "notes")
    assert mallory.signed_request is not None
    forged = Deletion(1, "notes", records[0].cid, time.time(), mallory.signed_request.to_json())
    (outcome,) = other.apply_deletions([forged])
    assert outcome.startswith("refused:") and "may not write" in outcome

    first.delete(records[1].cid, "notes", _delete_as(ALICE, records[1].cid, "notes"))
    (real,) = first.deletions(0, 10, VALIDATOR)
    assert real.proof is not None
    # Her proof for one record does not delete another.
    moved = replace(real, cid=records[2].cid)
    (outcome,) = other.apply_deletions([moved])
    assert outcome.startswith("refused:") and records[1].cid in outcome
    # A changed target or body breaks the signature.
    signed = SignedRequest.from_json(real.proof)
    for namespace, tampered in (
        ("public", replace(signed, target=signed.target.replace("notes", "public"))),
        ("notes", replace(signed, body=b'{"namespace":"notes"}')),
    ):
        claim = replace(real, namespace=namespace, proof=tampered.to_json())
        (outcome,) = other.apply_deletions([claim])
        assert outcome.startswith("refused:") and "signature" in outcome
    (outcome,) = other.apply_deletions([replace(real, proof="not json")])
    assert outcome.startswith("refused:")
    assert other.count("notes") == 3  # nothing was deleted by any of them
    assert other.apply_deletions([real]) == ["deleted"]


def test_a_record_written_again_after_the_delete_stays(replicas: list[LocalNode]) -> None:
    first, _, later = replicas
    records = _write([first, later], 1)
    first.delete(records[0].cid, "notes", _delete_as(ALICE, records[0].cid, "notes"))
    (deletion,) = first.deletions(0, 10, VALIDATOR)
    # The replica dropped its copy and Alice wrote the same record again after the delete.
    assert later.store.delete(records[0].cid, "notes")
    time.sleep(0.01)
    _write([later], 1)
    assert later.apply_deletions([deletion]) == ["newer"]
    assert later.get(records[0].cid, "notes") is not None
    # Writing it again also ends the first replica's tombstone.
    _write([first], 1)
    assert first.deletions(0, 10, VALIDATOR) == []


def test_a_validators_copy_never_undoes_a_delete(replicas: list[LocalNode]) -> None:
    first = replicas[0]
    records = _write([first], 2, namespace="public-notes")
    # In a namespace nobody owns, only the writer deletes: Alice wrote these.
    first.delete(records[0].cid, "public-notes", _delete_as(ALICE, records[0].cid, "public-notes"))
    copies = [IngestItem(embedding=r.embedding, namespace=r.namespace) for r in records]
    outcomes = first.ingest(copies, VALIDATOR)
    assert isinstance(outcomes[0], ConflictError) and "was deleted" in outcomes[0].message
    assert not isinstance(outcomes[1], ConflictError)  # not deleted: the copy is fine
    assert first.get(records[0].cid, "public-notes") is None
    # Its writer may write it again.
    assert not isinstance(first.ingest(copies[:1], Caller(hotkey=ALICE.ss58_address))[0], Exception)
    assert first.get(records[0].cid, "public-notes") is not None


def test_deletions_are_shown_to_validators_only_and_unsigned_ones_never(
    replicas: list[LocalNode],
) -> None:
    first = replicas[0]
    records = _write([first], 2, namespace="public-notes")
    first.delete(records[0].cid, "public-notes")  # the operator, embedded: nothing to prove
    with pytest.raises(ForbiddenError, match="validators only"):
        first.deletions(0, 10, Caller(hotkey=ALICE.ss58_address))
    assert first.deletions(0, 10, VALIDATOR) == []
    # Yet its tombstone keeps a validator's stale copy out.
    stale = IngestItem(embedding=records[0].embedding, namespace="public-notes")
    assert isinstance(first.ingest([stale], VALIDATOR)[0], ConflictError)


def test_tombstones_expire_after_the_retention(tmp_path: Path) -> None:
    from engram.config import StoreConfig

    with Store(tmp_path, config=StoreConfig(deletion_retention_s=0.05)) as store:
        records = [store.record(v) for v in unit_vectors(2, seed=5)]
        store.put(records)
        store.delete(records[0].cid, proof="{}")
        assert [d.cid for d in store.db.deletions(0, 10)] == [records[0].cid]
        time.sleep(0.1)
        store.delete(records[1].cid, proof="{}")  # each delete drops the expired ones
        assert [d.cid for d in store.db.deletions(0, 10)] == [records[1].cid]


def test_a_proof_is_read_from_either_spelling_of_a_delete_and_never_with_a_key() -> None:
    cid = "v1::" + "ab" * 32
    modern = SignedRequest("DELETE", f"/records/{cid}?namespace=notes", b"", {})
    legacy = SignedRequest("DELETE", f"/retrieve/{cid}", b'{"namespace":"notes"}', {})
    assert Delete.from_signed(modern) == Delete.from_signed(legacy) == Delete(cid, "notes")
    keyed = replace(legacy, body=b'{"namespace":"notes","namespace_key":"a-shared-secret"}')
    with pytest.raises(InvalidRequestError, match="namespace key"):
        Delete.from_signed(keyed)
    with pytest.raises(InvalidRequestError, match="no delete"):
        Delete.from_signed(replace(modern, method="GET"))
