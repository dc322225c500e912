import hashlib
import hmac
import time

import numpy as np
import pytest

from engram.config import Limits
from engram.errors import ChallengeExpiredError, NotFoundError
from engram.proofs import (
    ChallengeResponse,
    InclusionProof,
    MerkleTree,
    make_challenge,
    respond,
    verify_response,
)
from engram.records import Record, make_record


def _record(text: str = "the stored text", seed: int = 1) -> Record:
    vec = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return make_record(vec, {"source": "test", "n": seed}, text, dim=384, limits=Limits())


def test_proofs_honest_answer_verifies() -> None:
    record = _record()
    challenge = make_challenge(record.cid, ttl_s=5)
    assert verify_response(challenge, respond(challenge, record), record)


def test_proofs_challenges_are_fresh() -> None:
    cid = _record().cid
    nonces = {make_challenge(cid).nonce_hex for _ in range(100)}
    assert len(nonces) == 100 and all(len(n) == 64 for n in nonces)


def test_proofs_answer_from_embedding_hash_alone_fails() -> None:
    """A miner that kept only sha256(embedding) (or any 32-byte digest) cannot answer."""
    record = _record()
    challenge = make_challenge(record.cid)
    emb_hash = hashlib.sha256(record.embedding.tobytes()).digest()
    nonce = bytes.fromhex(challenge.nonce_hex)
    digests = [emb_hash, hashlib.sha256(record.cid.encode()).digest(), bytes(32)]
    for digest in digests:
        for proof in (
            hmac.new(nonce, digest, hashlib.sha256).hexdigest(),
            hmac.new(nonce, digest.hex().encode(), hashlib.sha256).hexdigest(),
            hmac.new(digest, nonce, hashlib.sha256).hexdigest(),
        ):
            forged = ChallengeResponse(embedding_hash=emb_hash.hex(), proof=proof)
            assert not verify_response(challenge, forged, record)


def test_proofs_expired_challenge_fails() -> None:
    record = _record()
    challenge = make_challenge(record.cid, ttl_s=0.5)
    answer = respond(challenge, record)
    assert not verify_response(challenge, answer, record, now=challenge.expires_at + 0.001)
    with pytest.raises(ChallengeExpiredError):
        respond(challenge, record, now=time.time() + 1)


def test_proofs_old_answer_fails_a_new_challenge() -> None:
    record = _record()
    first = make_challenge(record.cid, 5)
    answer = respond(first, record)
    assert verify_response(first, answer, record)
    second = make_challenge(record.cid, 5)
    assert not verify_response(second, answer, record), "an old answer must pass no new challenge"


def test_proofs_tampered_record_fails() -> None:
    record = _record()
    challenge = make_challenge(record.cid)
    answer = respond(challenge, record)
    emb = record.embedding.copy()
    emb[0] = np.nextafter(emb[0], np.float32(2))
    tampered = [
        Record(record.cid, emb, record.metadata, record.text),
        Record(record.cid, record.embedding, {**record.metadata, "n": 2}, record.text),
        Record(record.cid, record.embedding, record.metadata, record.text + "!"),
    ]
    for bad in tampered:
        assert not verify_response(challenge, answer, bad)
        assert not verify_response(challenge, respond(challenge, bad), record)


def test_proofs_answer_for_another_cid_fails() -> None:
    a, b = _record(seed=1), _record(seed=2)
    challenge = make_challenge(a.cid)
    assert not verify_response(challenge, respond(make_challenge(b.cid), b), a)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 17])
def test_merkle_every_member_proves(n: int) -> None:
    cids = [_record(seed=i).cid for i in range(n)]
    tree = MerkleTree(reversed(cids))
    assert len(tree) == n
    for cid in cids:
        assert MerkleTree.verify(tree.root, tree.prove(cid))


def test_merkle_rejects_forgeries() -> None:
    cids = [_record(seed=i).cid for i in range(6)]
    tree = MerkleTree(cids)
    proof = tree.prove(cids[2])
    outsider = _record(seed=99).cid
    assert not MerkleTree.verify(tree.root, InclusionProof(outsider, 2, proof.siblings))
    flipped = [(side, ("0" if h[0] != "0" else "1") + h[1:]) for side, h in proof.siblings]
    assert not MerkleTree.verify(tree.root, InclusionProof(cids[2], 2, flipped))
    assert MerkleTree(cids[:5]).root != tree.root
    assert MerkleTree(cids + cids).root == tree.root  # duplicates and order do not matter
    with pytest.raises(NotFoundError):
        tree.prove(outsider)
