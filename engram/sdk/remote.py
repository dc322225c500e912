"""One node over HTTP as a :class:`~engram.api.node.Node`, for code that wants the node API
itself rather than the client (tools, tests, a process that relays to one miner).

Each operation is its call (:mod:`engram.api.calls`) sent through the SDK's
own HTTP transport (its connection pool, retries and error mapping); the node's caller is whoever the ``signer`` signs
as, so ``caller`` arguments are refused rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from engram.api.calls import (
    Call,
    Count,
    Delete,
    DescribeNamespace,
    Get,
    GetLifecycle,
    Health,
    ListRecords,
    Query,
    Search,
    SetGrant,
    SetLifecycle,
    Stats,
    split_batch,
)
from engram.api.node import IngestOutcome, Lifecycle, Node, Stored
from engram.config import ClientConfig
from engram.errors import EngramError, InvalidRequestError, error_from_wire
from engram.records import IngestItem, QueryResult, Record
from engram.sdk._base import Target, check_url
from engram.sdk.transports import HttpTransport
from engram.security.access import Caller, Permission
from engram.security.signing import Signer

T = TypeVar("T")


class RemoteNode:
    """The node at ``url`` (a miner or a gateway), signed by ``signer`` when one is given."""

    def __init__(
        self, url: str, config: ClientConfig | None = None, signer: Signer | None = None
    ) -> None:
        self._transport = HttpTransport(
            Target(url=check_url(url), config=config or ClientConfig(), signer=signer)
        )
        self.url = self._transport.url

    @classmethod
    def over(cls, transport: HttpTransport) -> RemoteNode:
        """The node an SDK client's transport already talks to (its pool, its signer)."""
        node = cls.__new__(cls)
        node._transport, node.url = transport, transport.url
        return node

    def _send(self, call: Call[T], caller: Caller | None = None) -> T:
        if caller is not None:
            raise InvalidRequestError(
                "a remote node acts for its signer: sign with signer=..., not caller=..."
            )
        return self._transport.execute(call)

    def ingest(
        self, items: Sequence[IngestItem], caller: Caller | None = None
    ) -> list[IngestOutcome]:
        outcomes: list[IngestOutcome] = [EngramError("not sent")] * len(items)
        chunks, rejected = split_batch(items, self._transport.limits)
        for i, reason in rejected:
            outcomes[i] = InvalidRequestError(reason)
        for indices, call in chunks:
            answer = self._send(call, caller)
            for i, (cid, error, code) in zip(indices, answer, strict=True):
                failure = error_from_wire(0, {"error": error or "not stored", "code": code})
                outcomes[i] = Stored(cid) if cid is not None else failure
        return outcomes

    def query(
        self,
        text: str | None,
        vector: Sequence[float] | np.ndarray | None,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
        caller: Caller | None = None,
        ef: int | None = None,
    ) -> list[QueryResult]:
        vec = None if vector is None else [float(x) for x in vector]
        call = Query(text, vec, top_k, filter, namespace, include_embedding, ef)
        return self._send(call, caller)

    def search(
        self,
        text: str,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        mode: str,
        vector: Sequence[float] | None = None,
        caller: Caller | None = None,
        ef: int | None = None,
    ) -> list[QueryResult]:
        vec = None if vector is None else [float(x) for x in vector]
        return self._send(Search(text, top_k, filter, namespace, mode, vec, ef), caller)

    def get(self, cid: str, namespace: str | None, caller: Caller | None = None) -> Record | None:
        return self._send(Get(cid, namespace), caller)

    def delete(self, cid: str, namespace: str | None, caller: Caller | None = None) -> None:
        self._send(Delete(cid, namespace), caller)

    def list(
        self,
        limit: int,
        offset: int,
        namespace: str | None,
        filter: Mapping[str, Any] | None = None,
        caller: Caller | None = None,
    ) -> list[Record]:
        return self._send(ListRecords(limit, offset, namespace, filter), caller)

    def count(self, namespace: str | None, caller: Caller | None = None) -> int:
        return self._send(Count(namespace), caller)

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        return self._send(Stats(), caller)

    def health(self) -> dict[str, Any]:
        return self._send(Health())

    def set_grant(
        self,
        namespace: str,
        hotkey: str,
        permission: Permission,
        granted: bool,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        return self._send(SetGrant(namespace, hotkey, permission, granted), caller)

    def describe_namespace(self, namespace: str, caller: Caller | None = None) -> dict[str, Any]:
        return self._send(DescribeNamespace(namespace), caller)

    def lifecycle(
        self, namespace: str | None, cids: Sequence[str], caller: Caller | None = None
    ) -> dict[str, Lifecycle]:
        return self._send(GetLifecycle(namespace, tuple(cids)), caller)

    def set_lifecycle(
        self,
        namespace: str | None,
        cids: Sequence[str],
        action: str,
        caller: Caller | None = None,
    ) -> dict[str, Lifecycle]:
        return self._send(SetLifecycle(namespace, tuple(cids), action), caller)

    def close(self) -> None:
        self._transport.close()


__all__ = ["RemoteNode"]


if TYPE_CHECKING:

    def _implements_node(node: RemoteNode) -> Node:
        """mypy checks here that RemoteNode offers every operation of :class:`Node`, as declared."""
        return node
