"""Everything a miner does, callable without HTTP: the routes are a thin layer over this."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from engram import __version__
from engram.errors import (
    EngramError,
    InvalidRequestError,
    NotAReplicaError,
    NotFoundError,
    UnauthorizedError,
)
from engram.memory import IngestItem, Memory
from engram.network.routing import RouteCheck
from engram.proofs import Challenge, ChallengeResponse, InclusionProof, MerkleTree, respond
from engram.protocol import IngestRequest
from engram.records import QueryResult, Record
from engram.security.access import ANONYMOUS, Caller

_LATENCY_WINDOW = 10_000


def item_from_request(req: IngestRequest) -> IngestItem:
    """A wire ingest request as an item: text, a vector, or both on purpose."""
    if req.text is None and req.raw_embedding is None:
        raise InvalidRequestError(
            "give text, raw_embedding, or both (to store this vector with this text)"
        )
    return IngestItem(
        text=req.text,
        embedding=req.raw_embedding,
        metadata=req.metadata or {},
        namespace=req.namespace,
        model_version=req.model_version,
    )


def items_from_batch(
    requests: Sequence[IngestRequest],
) -> tuple[list[IngestItem], list[EngramError | None]]:
    """A batch's valid items, and per request its error (``None`` where an item was made)."""
    items: list[IngestItem] = []
    errors: list[EngramError | None] = []
    for req in requests:
        try:
            items.append(item_from_request(req))
            errors.append(None)
        except EngramError as exc:
            errors.append(exc)
    return items, errors


class MinerService:
    """A store, the canonical embedder, proofs and the numbers ``/stats`` reports."""

    def __init__(self, memory: Memory, route: RouteCheck | None = None) -> None:
        self.memory = memory
        self.route = route  # None: a standalone node stores whatever it is sent
        self.store = memory.store
        self.started = time.monotonic()
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._queries = 0
        self._stats_lock = threading.Lock()
        self._tree: MerkleTree | None = None
        self._tree_lock = threading.Lock()

    # --- writes (one writer thread) ------------------------------------------------------

    def prepare(self, items: Sequence[IngestItem]) -> list[Record | Exception]:
        """Embed and validate; CPU-bound, so it runs on the reader pool, not the writer.

        On a subnet, a record whose CID routing sends to other miners is
        refused, so a miner cannot be filled with data it is not paid to hold.
        """
        prepared: list[Record | Exception] = list(self.memory.prepare(items))
        if self.route is None:
            return prepared
        return [
            p if not isinstance(p, Record) or self.route.accepts(p.cid) else self._misrouted(p)
            for p in prepared
        ]

    def _misrouted(self, record: Record) -> NotAReplicaError:
        holders = ", ".join(n.hotkey for n in self.route.replicas(record.cid)) if self.route else ""
        return NotAReplicaError(
            f"{record.cid} is routed to the miners {holders}, not to this one; "
            "write through the network client or a gateway"
        )

    def commit(
        self, prepared: Sequence[Record | Exception], caller: Caller
    ) -> list[str | Exception]:
        results = list(self.memory.commit(prepared, caller))  # type: ignore[arg-type]
        if any(isinstance(r, str) for r in results):
            self._tree = None
        return results

    def delete(self, cid: str, namespace: str | None, caller: Caller) -> None:
        self.memory.delete(cid, namespace, caller)
        self._tree = None

    # --- reads ---------------------------------------------------------------------------

    def query(
        self,
        text: str | None,
        vector: Sequence[float] | None,
        top_k: int,
        filter: dict[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
        caller: Caller,
    ) -> tuple[list[QueryResult], float]:
        """Results and the server-side latency in milliseconds."""
        started = time.perf_counter()
        results = self.memory.query(
            text, vector, top_k, filter, namespace, include_embedding, caller
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self._stats_lock:
            self._queries += 1
            self._latencies.append(elapsed_ms)
        return results, elapsed_ms

    def retrieve(self, cid: str, namespace: str | None, caller: Caller) -> Record:
        if namespace is None:
            record = self.memory.find(cid, caller)
        else:
            record = self.memory.get(cid, namespace, caller)
        if record is None:
            raise NotFoundError(f"no record {cid} on this miner")
        return record

    def challenge(self, challenge: Challenge, caller: Caller) -> ChallengeResponse:
        """A proof over the record's bytes; it reveals nothing of them, so a validator may
        challenge a private record, but nobody else can probe one's existence."""
        if not caller.signed:
            raise UnauthorizedError("challenges are signed by a validator's hotkey")
        prover = Caller(hotkey=caller.hotkey, operator=caller.validator)
        return respond(challenge, self.retrieve(challenge.cid, None, prover))

    def list(self, namespace: str | None, limit: int, offset: int, caller: Caller) -> list[Record]:
        return self.memory.list(namespace, limit, offset, caller)

    def count(self, namespace: str | None, caller: Caller) -> int:
        return self.memory.count(namespace, caller)

    def inventory(self) -> MerkleTree:
        """The Merkle tree over held CIDs, rebuilt only after the inventory changed."""
        with self._tree_lock:
            tree = self._tree
            if tree is None:
                tree = self._tree = MerkleTree(self.store.cids())
            return tree

    def prove(self, cid: str) -> tuple[str, InclusionProof]:
        tree = self.inventory()
        return tree.root, tree.prove(cid)

    def prove_at(self, index: int) -> tuple[str, InclusionProof]:
        tree = self.inventory()
        return tree.root, tree.prove_at(index)

    def stats(self, caller: Caller = ANONYMOUS) -> dict[str, Any]:
        """Numbers; private namespaces count in ``records`` but are named only to their readers."""
        readable = self.memory.namespaces(caller)
        hidden = self.memory.access.private() - set(readable)
        with self._stats_lock:
            latencies = np.array(self._latencies) if self._latencies else None
            queries = self._queries
        return {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "records": self.store.count(),
            "namespaces": readable,
            "queries_served": queries,
            "query_latency_p50_ms": None
            if latencies is None
            else float(np.percentile(latencies, 50)),
            "query_latency_p99_ms": None
            if latencies is None
            else float(np.percentile(latencies, 99)),
            "index": {ns: v for ns, v in self.store.stats().items() if ns not in hidden},
        }
