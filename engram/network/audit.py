"""Audit one CID on its replicas: fetch the record from each and recompute its CID (docs/architecture.md, "Storage proofs").

Anyone can run it from the CID alone, without ever having held the record:
a replica passes when the record it returns hashes to the CID it was asked
for. The verdicts say why the others did not (missing, tampered, down).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from engram.api.calls import Get
from engram.api.exchange import call_node
from engram.chain.base import Neuron
from engram.cid import verify_cid
from engram.config import ClientConfig
from engram.errors import EngramError, UpstreamError
from engram.records import Record

VERIFIED = "verified"  # returned a record that hashes to the CID
MISSING = "missing"  # answered, but does not hold the CID
MISMATCH = "mismatch"  # returned a record that hashes to another CID (tampered)
UNREACHABLE = "unreachable"  # did not answer in time, or answered with a server error
REFUSED = "refused"  # answered the request with a client error


@dataclass(frozen=True)
class ReplicaAudit:
    """One replica's answer and the verdict on it."""

    rank: int  # 0 is the primary
    uid: int
    hotkey: str
    axon: str | None
    verdict: str
    latency_ms: float | None
    detail: str = ""
    record: Record | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == VERIFIED


@dataclass(frozen=True)
class CIDAudit:
    """A CID checked on every replica routing names for it."""

    cid: str
    replicas: tuple[ReplicaAudit, ...]

    @property
    def verified(self) -> int:
        return sum(r.ok for r in self.replicas)

    @property
    def health(self) -> str:
        """HEALTHY with every replica verified, LOST with none, DEGRADED between (docs/architecture.md, "Routing and replication")."""
        if self.replicas and self.verified == len(self.replicas):
            return "healthy"
        return "degraded" if self.verified else "lost"

    @property
    def record(self) -> Record | None:
        """The record as a verified replica returned it (all verified copies are identical)."""
        return next((r.record for r in self.replicas if r.ok), None)


def judge(cid: str, answer: Record | BaseException | None) -> tuple[str, str]:
    """The verdict on one replica's answer to ``GET /retrieve/<cid>``, and why."""
    if isinstance(answer, BaseException):
        if isinstance(answer, EngramError):
            return (REFUSED if 400 <= answer.status < 500 else UNREACHABLE), answer.message
        return UNREACHABLE, repr(answer)
    if answer is None:
        return MISSING, "does not hold this CID"
    try:
        verify_cid(cid, answer.embedding, answer.metadata, answer.model_version, answer.text)
    except EngramError as exc:
        return MISMATCH, exc.message
    return VERIFIED, "the record hashes to this CID"


async def audit_replica(
    http: httpx.AsyncClient, cid: str, neuron: Neuron, rank: int, deadline_s: float
) -> ReplicaAudit:
    """Fetch ``cid`` from one miner under ``deadline_s`` and judge what came back."""
    config = ClientConfig(timeout_s=deadline_s, retries=0, backoff_s=0)
    started = time.perf_counter()
    answer: Record | BaseException | None
    try:
        if neuron.axon_url is None:
            raise UpstreamError(f"uid {neuron.uid} announces no axon")
        answer = await call_node(http, neuron.axon_url, Get(cid, None), config, deadline_s)
    except EngramError as exc:
        answer = exc
    latency_ms = (time.perf_counter() - started) * 1000
    verdict, detail = judge(cid, answer)
    return ReplicaAudit(
        rank=rank,
        uid=neuron.uid,
        hotkey=neuron.hotkey,
        axon=neuron.axon_url,
        verdict=verdict,
        latency_ms=latency_ms if not isinstance(answer, BaseException) else None,
        detail=detail,
        record=answer if verdict == VERIFIED and isinstance(answer, Record) else None,
    )


async def audit_cid(
    http: httpx.AsyncClient, cid: str, replicas: Sequence[Neuron], deadline_s: float = 3.0
) -> CIDAudit:
    """Audit ``cid`` on each of ``replicas`` (primary first) at once."""
    audits = await asyncio.gather(
        *(audit_replica(http, cid, n, rank, deadline_s) for rank, n in enumerate(replicas))
    )
    return CIDAudit(cid, tuple(audits))


__all__ = [
    "MISMATCH",
    "MISSING",
    "REFUSED",
    "UNREACHABLE",
    "VERIFIED",
    "CIDAudit",
    "ReplicaAudit",
    "audit_cid",
    "audit_replica",
    "judge",
]
