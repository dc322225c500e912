"""Talking to one node over HTTP: the protocol's calls, sent with retries and typed errors.

The client's :class:`~engram.sdk._base.Call` objects describe each request
and parse each answer; :func:`call_node` sends one to any node on a shared
``httpx.AsyncClient`` under a deadline. The network client, the validator and
the gateway all reach miners through this one function.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from engram.config import ClientConfig
from engram.errors import UpstreamTimeoutError
from engram.memory import IngestItem
from engram.proofs import Challenge, ChallengeResponse, InclusionProof
from engram.records import Record
from engram.sdk._base import (
    Call,
    HttpReply,
    HttpRequest,
    IngestMany,
    Outcome,
    Sleep,
    _json,
    exchange,
    run_async,
)
from engram.security.signing import Signer, sign_request

T = TypeVar("T")
_JSON = {"content-type": "application/json"}


async def perform_async(
    http: httpx.AsyncClient,
    step: HttpRequest | Sleep,
    base_url: str = "",
    timeout_s: float | None = None,
    signer: Signer | None = None,
    receiver: str | None = None,
) -> HttpReply | Exception | None:
    """One step of :func:`~engram.sdk._base.exchange` on an async client (its own timeout
    unless ``timeout_s`` is given), signed for ``receiver`` when a ``signer`` is given."""
    if isinstance(step, Sleep):
        await asyncio.sleep(step.seconds)
        return None
    request = http.build_request(
        step.method,
        base_url + step.path,
        params=step.params,
        content=step.body,
        headers=_JSON if step.body is not None else None,
        timeout=http.timeout if timeout_s is None else timeout_s,
    )
    if signer is not None:
        sign_request(request, signer, receiver)
    try:
        response = await http.send(request)
    except httpx.TransportError as exc:
        return exc
    return HttpReply(response.status_code, response.content)


async def call_node(
    http: httpx.AsyncClient,
    url: str,
    call: Call[T],
    config: ClientConfig,
    deadline_s: float | None = None,
    *,
    signer: Signer | None = None,
    receiver: str | None = None,
) -> T:
    """Send ``call`` to the node at ``url``; past ``deadline_s`` it is an UpstreamTimeoutError.

    With a ``signer`` every attempt is signed afresh, bound to the node's hotkey ``receiver``.
    """

    async def perform(step: HttpRequest | Sleep) -> HttpReply | Exception | None:
        return await perform_async(http, step, url, config.timeout_s, signer, receiver)

    try:
        return await asyncio.wait_for(run_async(exchange(call, url, config), perform), deadline_s)
    except TimeoutError as exc:
        raise UpstreamTimeoutError(f"{url} did not answer within {deadline_s}s") from exc


def store_records(records: Sequence[Record]) -> IngestMany:
    """A batch that stores these exact records (vector, metadata and text) on a node."""
    return IngestMany(
        [
            IngestItem(
                text=r.text,
                embedding=r.embedding,
                metadata=r.metadata,
                namespace=r.namespace,
                model_version=r.model_version,
            )
            for r in records
        ]
    )


@dataclass(frozen=True)
class ChallengeCall(Call[ChallengeResponse]):
    challenge: Challenge

    def request(self) -> HttpRequest:
        c = self.challenge
        doc = {"cid": c.cid, "nonce_hex": c.nonce_hex, "expires_at": c.expires_at}
        return HttpRequest("POST", "/ChallengeSynapse", body=_json(doc))

    def parse(self, body: Any) -> ChallengeResponse:
        return ChallengeResponse(str(body["embedding_hash"]), str(body["proof"]))


@dataclass(frozen=True)
class CommitmentCall(Call[tuple[str, int]]):
    """The node's inventory commitment: Merkle root and number of CIDs."""

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/commitment")

    def parse(self, body: Any) -> tuple[str, int]:
        return str(body["root"]), int(body["count"])


@dataclass(frozen=True)
class InventoryCall(Call[tuple[str, InclusionProof]]):
    """The CID at ``index`` of the node's sorted inventory, with its inclusion proof."""

    index: int

    def request(self) -> HttpRequest:
        return HttpRequest("GET", f"/inventory/{self.index}")

    def parse(self, body: Any) -> tuple[str, InclusionProof]:
        proof = InclusionProof(
            cid=str(body["cid"]),
            index=int(body["index"]),
            siblings=[(str(side), str(h)) for side, h in body["siblings"]],
        )
        return str(body["root"]), proof


def quoted(cid: str) -> str:
    return quote(cid, safe=":")


__all__ = [
    "ChallengeCall",
    "CommitmentCall",
    "InventoryCall",
    "Outcome",
    "call_node",
    "perform_async",
    "store_records",
]
