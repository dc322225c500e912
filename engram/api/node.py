"""The node API: every operation an Engram node offers, declared once.

A *node* is anything that stores records and answers searches: the store in
this process (:class:`engram.node.local.LocalNode`), the whole network
(:class:`engram.network.node.NetworkNode`) or one node over HTTP
(:class:`engram.sdk.remote.RemoteNode`). Each implements :class:`Node`; one
router (:mod:`engram.server.routes`) serves any of them over HTTP, and the SDK's
calls (:mod:`engram.api.calls`) run against any of them. Adding an operation
means: a method here, its wire message, its call (which names its route), the
implementations, and one line per SDK twin; ``tests/unit/test_node_api.py``
fails until every one of those is there, and mypy checks each implementation
against this protocol.

``caller`` is who a server acts for (a verified hotkey, or nobody); ``None``
means the node's own identity (the operator of an embedded store, the signer
of a client).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engram.errors import EngramError
from engram.records import IngestItem, QueryResult, Record
from engram.security.access import Caller, Permission


@dataclass(frozen=True)
class Stored:
    """One item written: its CID and, on the network, the replicas that acknowledged it."""

    cid: str
    replicas: tuple[str, ...] = ()


IngestOutcome = Stored | EngramError  # an item that failed yields its error, in place

LIFECYCLE_ACTIONS = ("archive", "unarchive", "forget", "review")
"""What :meth:`Node.set_lifecycle` does to a memory; ``review`` is a recall (FSRS)."""


@dataclass(frozen=True)
class Lifecycle:
    """A memory's mutable state, kept beside its record: ``active``, ``archived`` or
    ``forgotten``, and its FSRS card as JSON (``None`` until its first recall)."""

    state: str = "active"
    card: str | None = None
    updated_at: float = 0.0


class Node(Protocol):
    """Every operation of an Engram node. Reads never change anything."""

    def ingest(
        self, items: Sequence[IngestItem], caller: Caller | None = None
    ) -> list[IngestOutcome]:
        """Embed texts (once) and store each item; a bad item fails alone."""
        ...

    def query(
        self,
        text: str | None,
        vector: Sequence[float] | None,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
        caller: Caller | None = None,
        ef: int | None = None,
    ) -> list[QueryResult]:
        """The ``top_k`` records nearest to ``vector`` or to ``text`` embedded, best first.
        ``ef`` is the search's HNSW beam width (``None``: each namespace's calibrated one)."""
        ...

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
        """Hybrid search: vector and keyword (BM25) channels fused, each hit saying what each
        channel contributed; ``mode`` is ``hybrid``, ``vector`` or ``keyword``. ``vector`` is
        the text already embedded with the canonical model (else the node embeds it); ``ef``
        is the vector channel's HNSW beam width, as in :meth:`query`."""
        ...

    def get(self, cid: str, namespace: str | None, caller: Caller | None = None) -> Record | None:
        """The record, or ``None``; with no namespace, any copy the caller may read."""
        ...

    def delete(self, cid: str, namespace: str | None, caller: Caller | None = None) -> None:
        """Delete a record; :class:`~engram.errors.NotFoundError` when it is not there."""
        ...

    def list(
        self,
        limit: int,
        offset: int,
        namespace: str | None,
        filter: Mapping[str, Any] | None = None,
        caller: Caller | None = None,
    ) -> list[Record]:
        """A page of a namespace's records (matching ``filter``) in a stable order."""
        ...

    def count(self, namespace: str | None, caller: Caller | None = None) -> int:
        """Records in a namespace, or in the whole node."""
        ...

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        """Sizes and counters; names only the namespaces the caller may read."""
        ...

    def health(self) -> dict[str, Any]:
        """Whether the node answers; ``ready`` is false until it can serve every request."""
        ...

    def set_grant(
        self,
        namespace: str,
        hotkey: str,
        permission: Permission,
        granted: bool,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """Grant or revoke a hotkey's permission in a namespace the caller owns."""
        ...

    def describe_namespace(self, namespace: str, caller: Caller | None = None) -> dict[str, Any]:
        """A namespace's owner (``None``: public) and, for its owner, the grants."""
        ...

    def lifecycle(
        self, namespace: str | None, cids: Sequence[str], caller: Caller | None = None
    ) -> dict[str, Lifecycle]:
        """The lifecycle of the given memories that have one (never changed: absent)."""
        ...

    def set_lifecycle(
        self,
        namespace: str | None,
        cids: Sequence[str],
        action: str,
        caller: Caller | None = None,
    ) -> dict[str, Lifecycle]:
        """Archive, unarchive, forget or review memories the node holds; returns what they
        became (a CID the node does not hold is left out)."""
        ...

    def close(self) -> None:
        """Release files, threads and connections."""
        ...


OPERATIONS: tuple[str, ...] = tuple(
    name
    for name, _ in inspect.getmembers(Node, inspect.isfunction)
    if not name.startswith("_") and name != "close"
)
"""The operations of :class:`Node`, in name order (``close`` is lifecycle, not an operation)."""
