"""Storage proofs: proving a miner still holds the whole record, not a hash of it.

* An HMAC challenge ``{cid, nonce_hex, expires_at}`` is answered with
  ``HMAC-SHA256(key=nonce, msg=canonical record bytes)``: the full embedding,
  canonical metadata and text. Keeping a 32-byte digest per record is not
  enough to answer, because the nonce is fresh and keys the HMAC.
* An audit needs no prior knowledge: fetch the whole record and recompute its
  CID (:func:`engram.cid.verify_cid`).
* An inventory commitment is a Merkle root over the sorted CIDs a miner holds,
  with inclusion proofs so auditors can sample its real inventory.

Known limit: a miner can relay a challenge to an honest peer that holds the
record. Short deadlines and challenging all replicas of a CID at once make
that harder; they do not make it impossible.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engram.cid import cid_of_bytes, parse_cid, vector_bytes
from engram.errors import ChallengeExpiredError, InvalidRequestError, NotFoundError
from engram.records import Record

NONCE_BYTES = 32
DEFAULT_CHALLENGE_TTL_S = 10.0


@dataclass(frozen=True)
class Challenge:
    cid: str
    nonce_hex: str
    expires_at: float

    def nonce(self) -> bytes:
        try:
            nonce = bytes.fromhex(self.nonce_hex)
        except ValueError as exc:
            raise InvalidRequestError("nonce_hex must be hexadecimal") from exc
        if len(nonce) < 16:
            raise InvalidRequestError("nonce must be at least 16 bytes")
        return nonce


@dataclass(frozen=True)
class ChallengeResponse:
    embedding_hash: str
    proof: str


def make_challenge(cid: str, ttl_s: float = DEFAULT_CHALLENGE_TTL_S) -> Challenge:
    """A fresh challenge: a random 32-byte nonce nobody could have answered before."""
    parse_cid(cid)
    return Challenge(cid, secrets.token_hex(NONCE_BYTES), time.time() + ttl_s)


def _answer(challenge: Challenge, canonical: bytes, embedding: np.ndarray) -> ChallengeResponse:
    proof = hmac.new(challenge.nonce(), canonical, hashlib.sha256).hexdigest()
    embedding_hash = hashlib.sha256(vector_bytes(embedding)).hexdigest()
    return ChallengeResponse(embedding_hash, proof)


def respond(challenge: Challenge, record: Record, now: float | None = None) -> ChallengeResponse:
    """The miner's answer; refuses expired challenges and records of another CID."""
    if not math.isfinite(challenge.expires_at):
        raise InvalidRequestError("expires_at must be a finite unix time")
    if (time.time() if now is None else now) > challenge.expires_at:
        raise ChallengeExpiredError(
            f"challenge for {challenge.cid} expired at {challenge.expires_at}"
        )
    if record.cid != challenge.cid:
        raise InvalidRequestError(f"record {record.cid} is not the challenged {challenge.cid}")
    return _answer(challenge, record.canonical_bytes(), record.embedding)


def verify_response(
    challenge: Challenge,
    response: ChallengeResponse,
    record: Record,
    now: float | None = None,
) -> bool:
    """True when ``response`` proves possession of ``record`` before the deadline.

    ``record`` is the verifier's own copy; it must hash to the challenged CID,
    so a tampered copy cannot be used to check (or forge) an answer.
    """
    if (time.time() if now is None else now) > challenge.expires_at:
        return False
    try:
        canonical = record.canonical_bytes()
        if cid_of_bytes(canonical) != challenge.cid:
            return False
        expected = _answer(challenge, canonical, record.embedding)
    except InvalidRequestError:
        return False
    proof_ok = hmac.compare_digest(expected.proof, str(response.proof))
    hash_ok = hmac.compare_digest(expected.embedding_hash, str(response.embedding_hash))
    return proof_ok and hash_ok


def _leaf(cid: str) -> bytes:
    return hashlib.sha256(b"\x00" + cid.encode()).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True)
class InclusionProof:
    cid: str
    index: int
    siblings: list[tuple[str, str]]  # (side of the sibling: "L" or "R", sibling hash hex)

    def to_dict(self) -> dict[str, object]:
        return {"cid": self.cid, "index": self.index, "siblings": [list(s) for s in self.siblings]}


class MerkleTree:
    """A Merkle tree over the sorted, de-duplicated CIDs of an inventory.

    Leaves and inner nodes are domain-separated (0x00 / 0x01 prefixes) and an
    odd node is promoted rather than duplicated, so no two inventories share a
    root.
    """

    def __init__(self, cids: Iterable[str]) -> None:
        self.cids = sorted(set(cids))
        self._position = {cid: i for i, cid in enumerate(self.cids)}
        self._levels: list[list[bytes]] = [[_leaf(c) for c in self.cids]]
        while len(self._levels[-1]) > 1:
            level = self._levels[-1]
            up = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self._levels.append(up)

    def __len__(self) -> int:
        return len(self.cids)

    @property
    def root(self) -> str:
        if not self.cids:
            return hashlib.sha256(b"").hexdigest()
        return self._levels[-1][0].hex()

    def prove(self, cid: str) -> InclusionProof:
        if cid not in self._position:
            raise NotFoundError(f"{cid} is not in this inventory")
        return self.prove_at(self._position[cid])

    def prove_at(self, index: int) -> InclusionProof:
        """The proof for the ``index``-th CID: auditors sample a miner's inventory this way."""
        if not 0 <= index < len(self.cids):
            raise NotFoundError(f"inventory index {index} is outside 0..{len(self.cids) - 1}")
        cid, position = self.cids[index], index
        siblings: list[tuple[str, str]] = []
        for level in self._levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):
                siblings.append(("L" if sibling < position else "R", level[sibling].hex()))
            position //= 2
        return InclusionProof(cid, index, siblings)

    @staticmethod
    def verify(root: str, proof: InclusionProof) -> bool:
        try:
            acc = _leaf(proof.cid)
            for side, sibling_hex in proof.siblings:
                sibling = bytes.fromhex(sibling_hex)
                acc = _node(sibling, acc) if side == "L" else _node(acc, sibling)
        except (ValueError, TypeError):
            return False
        return hmac.compare_digest(acc.hex(), root)
