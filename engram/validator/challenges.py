"""Storage proofs against one miner: HMAC challenges on records the validator holds, and audits.

* HMAC (docs/architecture.md, "Storage proofs"): a fresh nonce and a short deadline on a corpus record
  routed to the miner; verified against the validator's own copy.
* Audit: the miner's inventory commitment (Merkle root, count), inclusion
  proofs at random indexes, and the record at each, which must hash to its
  CID. This samples what the miner really holds, records the validator never
  wrote included.

Every request of a miner is sent at once, and the loop challenges all miners
at once, so all replicas of a CID are challenged together and the deadline is
short: relaying a challenge to an honest peer is harder (not impossible; see
the known limit in :mod:`engram.proofs`). Any exception, timeout or mismatch
is a failure, recorded with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence

import httpx

from engram.api.calls import ChallengeCall, CommitmentCall, Get, InventoryCall
from engram.api.exchange import call_node
from engram.chain.base import Neuron
from engram.cid import verify_cid
from engram.config import ClientConfig
from engram.errors import EngramError
from engram.proofs import MerkleTree, make_challenge, verify_response
from engram.records import Record
from engram.validator.state import ChallengeRecord

log = logging.getLogger("engram.validator")
_RANDOM = random.SystemRandom()  # which records and indexes: not guessable by a miner


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, EngramError) else repr(exc)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class _Failed(Exception):
    """An audit step that did not check out (the reason is the message)."""


async def hmac_challenge(
    http: httpx.AsyncClient, neuron: Neuron, record: Record, deadline_s: float
) -> ChallengeRecord:
    """One HMAC challenge on ``record`` (the validator's verified copy)."""
    challenge = make_challenge(record.cid, deadline_s)
    config = ClientConfig(timeout_s=deadline_s, retries=0, backoff_s=0)
    started = time.perf_counter()
    try:
        answer = await call_node(
            http, str(neuron.axon_url), ChallengeCall(challenge), config, deadline_s
        )
        passed = verify_response(challenge, answer, record)
        reason = None if passed else "wrong proof, or answered after the deadline"
    except Exception as exc:  # any failure to answer is a failed challenge, recorded
        passed, reason = False, _reason(exc)
    latency = _ms(started)
    return ChallengeRecord(neuron.uid, neuron.hotkey, record.cid, "hmac", passed, latency, reason)


async def _commitment(
    http: httpx.AsyncClient, url: str, config: ClientConfig, deadline_s: float
) -> tuple[str, int]:
    return await call_node(http, url, CommitmentCall(), config, deadline_s)


async def audit(
    http: httpx.AsyncClient,
    neuron: Neuron,
    root: str,
    index: int,
    deadline_s: float,
) -> ChallengeRecord:
    """Check the inclusion proof at ``index`` against ``root``, then the record behind it.

    A root that moved since the commitment (the miner stored something in
    between) is accepted only if it is the miner's fresh commitment.
    """
    url = str(neuron.axon_url)
    config = ClientConfig(timeout_s=deadline_s, retries=0, backoff_s=0)
    started = time.perf_counter()
    cid: str | None = None
    try:
        answered_root, proof = await call_node(http, url, InventoryCall(index), config, deadline_s)
        cid = proof.cid
        if proof.index != index:
            raise _Failed(f"asked for inventory index {index}, got a proof for {proof.index}")
        if not MerkleTree.verify(answered_root, proof):
            raise _Failed(f"the inclusion proof of {cid} does not lead to its root")
        if answered_root != root:
            fresh, _ = await _commitment(http, url, config, deadline_s)
            if answered_root != fresh:
                raise _Failed("the proof's root is not the miner's commitment")
        # No namespace: an auditor checks a record it never held, wherever the miner keeps it.
        record = await call_node(http, url, Get(cid, None), config, deadline_s)
        if record is None:
            raise _Failed(f"{cid} is in the inventory but the miner cannot return it")
        if record.cid != cid:
            raise _Failed(f"asked for {cid}, got {record.cid}")
        verify_cid(cid, record.embedding, record.metadata, record.model_version, record.text)
        passed, reason = True, None
    except Exception as exc:  # any failure to answer or to check out is a failed audit
        passed, reason = False, _reason(exc)
    return ChallengeRecord(neuron.uid, neuron.hotkey, cid, "audit", passed, _ms(started), reason)


async def audits(
    http: httpx.AsyncClient, neuron: Neuron, count: int, deadline_s: float, expect_records: bool
) -> list[ChallengeRecord]:
    """``count`` audits at random inventory indexes.

    An empty inventory is audited only when the miner is known to have held
    records (it then fails every audit); a new, empty miner has nothing to
    prove yet.
    """
    if count <= 0:
        return []
    config = ClientConfig(timeout_s=deadline_s, retries=0, backoff_s=0)
    started = time.perf_counter()
    try:
        root, size = await _commitment(http, str(neuron.axon_url), config, deadline_s)
    except Exception as exc:  # no commitment: every audit of this round fails
        reason = "no inventory commitment: " + _reason(exc)
        return [
            ChallengeRecord(neuron.uid, neuron.hotkey, None, "audit", False, _ms(started), reason)
            for _ in range(count)
        ]
    if size <= 0:
        if not expect_records:
            return []
        reason = "the inventory is empty but the miner acknowledged records"
        return [
            ChallengeRecord(neuron.uid, neuron.hotkey, None, "audit", False, _ms(started), reason)
            for _ in range(count)
        ]
    indexes = _RANDOM.sample(range(size), min(count, size))
    return list(await asyncio.gather(*(audit(http, neuron, root, i, deadline_s) for i in indexes)))


async def challenge_miner(
    http: httpx.AsyncClient,
    neuron: Neuron,
    candidates: Sequence[Record],
    *,
    challenges: int,
    audit_count: int,
    deadline_s: float,
) -> list[ChallengeRecord]:
    """HMAC challenges on up to ``challenges`` of ``candidates`` plus ``audit_count`` audits.

    ``candidates`` are the corpus records routed to this miner that it has
    acknowledged or been seen holding, so a newly joined miner is not failed
    for records nobody has copied to it yet.
    """
    picked = _RANDOM.sample(list(candidates), min(challenges, len(candidates)))
    hmac_results, audit_results = await asyncio.gather(
        asyncio.gather(*(hmac_challenge(http, neuron, r, deadline_s) for r in picked)),
        audits(http, neuron, audit_count, deadline_s, bool(candidates)),
    )
    outcomes = [*hmac_results, *audit_results]
    failed = [o for o in outcomes if not o.passed]
    if failed:
        log.info(
            "miner %s failed %d of %d proofs (first: %s)",
            neuron.uid,
            len(failed),
            len(outcomes),
            failed[0].reason,
        )
    return outcomes


__all__ = ["audit", "audits", "challenge_miner", "hmac_challenge"]
