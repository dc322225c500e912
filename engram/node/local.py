"""The local node: one store, the canonical embedder and the namespace rules, in this process.

The embedded SDK runs it directly and the miner serves it over HTTP, so a
text is embedded, validated, stored, searched and guarded the same way
wherever it arrives. Every operation acts for a :class:`Caller`: the one
given (a server's verified client), or the node's own (the operator of an
embedded store, or the hotkey its SDK signs with).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engram._version import __version__
from engram.api.calls import Delete
from engram.api.node import LIFECYCLE_ACTIONS, IngestOutcome, Lifecycle, Node, Stored
from engram.config import Limits, StoreConfig, engram_home
from engram.embed import Embedder, get_embedder
from engram.errors import (
    ConflictError,
    EngramError,
    ForbiddenError,
    InvalidRequestError,
    NotAReplicaError,
    NotFoundError,
)
from engram.memory import decay
from engram.network.routing import RouteCheck
from engram.proofs import Challenge, ChallengeResponse, InclusionProof, MerkleTree, respond
from engram.records import (
    IngestItem,
    QueryResult,
    Record,
    check_mode,
    check_namespace,
    check_text,
    prepare_records,
)
from engram.security.access import OPERATOR, Caller, NamespaceAccess, Permission, SignedRequest
from engram.security.signing import proven_caller, signed_at
from engram.store import Store
from engram.store.db import Deletion

_LATENCY_WINDOW = 10_000


class LocalNode:
    """A :class:`~engram.api.node.Node` over one :class:`Store`.

    ``served`` marks a node behind a server (the miner): it is ready only once
    the model is loaded (:meth:`warm_up`) and never names its files. ``route``,
    on a subnet, refuses records that routing sends to other miners.
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None = None,
        *,
        caller: Caller = OPERATOR,
        route: RouteCheck | None = None,
        served: bool = False,
        unsigned_public_deletes: bool = False,
    ) -> None:
        self.store = store
        self.access = NamespaceAccess(store.db, unsigned_public_deletes)
        self.caller = caller
        self.route = route
        self.served = served
        self.started = time.monotonic()
        self._embedder = embedder
        self._model_ready = threading.Event()
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._queries = 0
        self._stats_lock = threading.Lock()
        self._tree: MerkleTree | None = None
        self._tree_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        embedder: Embedder | None = None,
        *,
        caller: Caller = OPERATOR,
        config: StoreConfig | None = None,
        limits: Limits | None = None,
    ) -> LocalNode:
        """The store under ``path`` (default ``ENGRAM_HOME``), opened for this process."""
        return cls(
            Store(path or engram_home(), config=config, limits=limits), embedder, caller=caller
        )

    # --- the model -----------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """Loaded on first use, so vector-only work never pays for the model."""
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def warm_up(self) -> None:
        """Load the model off the request path; a served node is ready once it answers."""
        self.embedder.encode(["warm up"])
        self._model_ready.set()

    def embed_query(self, text: str) -> np.ndarray:
        check_text(text, self.store.limits, required=True)
        return self.embedder.encode([text])[0]

    # --- writes --------------------------------------------------------------------------

    def prepare(self, items: Sequence[IngestItem]) -> list[Record | EngramError]:
        """Embed texts (one batch) and build each record; a bad item yields its error."""
        prepared = prepare_records(
            items, lambda: self.embedder, self.store.record_builder(), self.store.limits
        )
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
        self, prepared: Sequence[Record | EngramError], caller: Caller | None = None
    ) -> list[IngestOutcome]:
        """Store the prepared records in one transaction; errors pass through in place.

        A record in a namespace the caller may not write fails alone.
        """
        who = caller or self.caller
        refused: dict[str, EngramError | None] = {}
        for ns in {p.namespace for p in prepared if isinstance(p, Record)}:
            try:
                self.access.admit_write(who, ns)
                refused[ns] = None
            except EngramError as exc:
                refused[ns] = exc
        outcome = [(refused[p.namespace] or p) if isinstance(p, Record) else p for p in prepared]
        if who.validator:  # a validator's copies repair replicas: they never undo a delete
            outcome = self._not_deleted(outcome)
        records = [p for p in outcome if isinstance(p, Record)]
        cids = iter(self.store.put(records, writer=who.hotkey))
        if records:
            self._tree = None
        return [Stored(next(cids)) if isinstance(p, Record) else p for p in outcome]

    def _not_deleted(self, outcome: Sequence[Record | EngramError]) -> list[Record | EngramError]:
        keys = {(p.namespace, p.cid) for p in outcome if isinstance(p, Record)}
        deleted = self.store.db.deleted(keys)
        return [
            ConflictError(
                f"{p.cid} was deleted from namespace {p.namespace}: a validator's copy does "
                "not bring it back (a write by its writer or owner does)"
            )
            if isinstance(p, Record) and (p.namespace, p.cid) in deleted
            else p
            for p in outcome
        ]

    def ingest(
        self, items: Sequence[IngestItem], caller: Caller | None = None
    ) -> list[IngestOutcome]:
        prepared = self.prepare(items)
        if (caller or self.caller).validator:  # its copies keep the writer they had
            prepared = [
                replace(p, writer=item.writer) if isinstance(p, Record) and item.writer else p
                for p, item in zip(prepared, items, strict=True)
            ]
        return self.commit(prepared, caller)

    def delete(self, cid: str, namespace: str | None, caller: Caller | None = None) -> None:
        """Delete a record, or raise :class:`NotFoundError` naming where it was looked for.

        A signed delete's request is kept with the tombstone: the proof that shows
        replicas that missed the delete (down at the time) that its signer asked for it.
        """
        who = caller or self.caller
        ns = check_namespace(namespace, self.store.limits)
        self.access.admit_delete(who, ns, cid)
        proof, deleted_at = None, None
        if who.signed and who.signed_request is not None:
            with contextlib.suppress(EngramError):  # kept only if it proves this very delete
                if Delete.from_signed(who.signed_request) == Delete(cid, namespace):
                    deleted_at = signed_at(who.signed_request)  # the gate verified it
                    proof = who.signed_request.to_json()
        if not self.store.delete(cid, ns, deleted_at=deleted_at, proof=proof):
            raise NotFoundError(f"no record {cid} in namespace {ns}")
        self._tree = None

    def deletions(self, after: int, limit: int, caller: Caller | None = None) -> list[Deletion]:
        """The tombstones this node kept with a proof, for a validator to hand to replicas
        that missed them. Validators only: they name private namespaces (never contents)."""
        who = caller or self.caller
        if not (who.validator or who.operator):
            raise ForbiddenError("a node's deletions are read by validators only")
        return self.store.db.deletions(after, max(1, min(limit, self.store.limits.max_list_limit)))

    def apply_deletions(self, deletions: Sequence[Deletion]) -> list[str]:
        """Apply deletions other replicas kept, each judged as its signed request would have
        been here: ``deleted``; ``absent`` (no copy here); ``newer`` (the copy here was written
        after the delete, so it stays); or ``refused: why`` (the proof does not hold)."""
        return [self._apply_deletion(d) for d in deletions]

    def _apply_deletion(self, deletion: Deletion) -> str:
        try:
            signed = SignedRequest.from_json(deletion.proof or "")
            asked = Delete.from_signed(signed)
            ns = check_namespace(asked.namespace, self.store.limits)
            if (asked.cid, ns) != (deletion.cid, deletion.namespace):
                raise InvalidRequestError(f"its proof deletes {asked.cid} in {ns}")
            signer, deleted_at = proven_caller(signed)
            self.access.admit_delete(signer, ns, asked.cid)
        except NotFoundError:
            return "absent"
        except EngramError as exc:
            return f"refused: {exc.message}"
        if not self.store.delete(
            asked.cid, ns, deleted_at=deleted_at, proof=deletion.proof, written_before=deleted_at
        ):
            return "newer"
        self._tree = None
        return "deleted"

    # --- reads ---------------------------------------------------------------------------

    def _readable(self, caller: Caller | None, namespace: str | None) -> str:
        """The checked namespace name, once the caller may read it."""
        ns = check_namespace(namespace, self.store.limits)
        self.access.require(caller or self.caller, ns, Permission.READ)
        return ns

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
        """Search by ``vector``, or by ``text`` embedded with the canonical model."""
        started = time.perf_counter()
        if (text is None) == (vector is None):
            raise InvalidRequestError("give exactly one of query text or query vector")
        self._readable(caller, namespace)
        if vector is None:
            vector = self.embed_query(text or "")
        results = self.store.search(vector, top_k, filter, namespace, include_embedding, ef)
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self._stats_lock:
            self._queries += 1
            self._latencies.append(elapsed_ms)
        return results

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
        """Hybrid search; the text is embedded here unless ``vector`` is given, and never in
        keyword mode, which needs no model."""
        check_text(text, self.store.limits, required=True)
        self._readable(caller, namespace)
        query: Any = vector
        if query is None and check_mode(mode) != "keyword":
            query = self.embed_query(text)
        return self.store.hybrid_search(text, query, top_k, filter, namespace, mode, ef)

    def get(self, cid: str, namespace: str | None, caller: Caller | None = None) -> Record | None:
        if namespace is not None:
            return self.store.get(cid, self._readable(caller, namespace))
        who = caller or self.caller
        for record in self.store.find_all(cid):  # copies the caller may not read are never named
            if self.access.can(who, record.namespace, Permission.READ):
                return record
        return None

    def list(
        self,
        limit: int,
        offset: int,
        namespace: str | None,
        filter: Mapping[str, Any] | None = None,
        caller: Caller | None = None,
    ) -> list[Record]:
        return self.store.list(self._readable(caller, namespace), limit, offset, filter)

    def count(self, namespace: str | None, caller: Caller | None = None) -> int:
        """Records in a namespace the caller may read, or in the whole store (a number only)."""
        if namespace is None:
            return self.store.count()
        return self.store.count(self._readable(caller, namespace))

    def namespaces(self, caller: Caller | None = None) -> dict[str, int]:
        """Record counts of the namespaces the caller may read (private names stay hidden)."""
        who = caller or self.caller
        return {
            ns: n
            for ns, n in self.store.namespaces().items()
            if self.access.can(who, ns, Permission.READ)
        }

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        """Numbers; private namespaces count in ``records`` but are named only to their readers."""
        who = caller or self.caller
        readable = self.namespaces(who)
        hidden = self.access.private() - set(readable)
        with self._stats_lock:
            latencies = np.array(self._latencies) if self._latencies else None
            queries = self._queries
        where = {} if self.served else {"mode": "embedded", "path": str(self.store.path)}
        return {
            **where,
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

    def health(self) -> dict[str, Any]:
        """A served node is ready once its model answers; an embedded one loads it on use."""
        if self.served:
            model = ready = self._model_ready.is_set()
            where: dict[str, Any] = {}
        else:
            model, ready, where = self._embedder is not None, True, {"mode": "embedded"}
        return {
            **where,
            "status": "ok" if ready else "starting",
            "ready": ready,
            "store": True,
            "model": model,
            "version": __version__,
        }

    # --- memory lifecycle ----------------------------------------------------------------

    def lifecycle(
        self, namespace: str | None, cids: Sequence[str], caller: Caller | None = None
    ) -> dict[str, Lifecycle]:
        ns = self._readable(caller, namespace)
        return {c: Lifecycle(*row) for c, row in self.store.db.memory_states(ns, cids).items()}

    def set_lifecycle(
        self,
        namespace: str | None,
        cids: Sequence[str],
        action: str,
        caller: Caller | None = None,
    ) -> dict[str, Lifecycle]:
        """Change what the node holds of ``cids``; a recall (``review``) moves the FSRS card."""
        if action not in LIFECYCLE_ACTIONS:
            raise InvalidRequestError(f"action must be one of {', '.join(LIFECYCLE_ACTIONS)}")
        ns = check_namespace(namespace, self.store.limits)
        self.access.require(caller or self.caller, ns, Permission.WRITE)
        now = time.time()
        known = self.store.db.memory_states(ns, cids)  # WRITE is enough: no READ check
        changed: dict[str, Lifecycle] = {}
        for cid in dict.fromkeys(cids):
            record = self.store.get(cid, ns)
            if record is None:
                continue
            old = Lifecycle(*known[cid]) if cid in known else Lifecycle()
            state, card = old.state, old.card
            if action == "review":
                created = float(record.metadata.get("created_at") or now)
                card = decay.review(card, created, now)
            elif action == "forget":
                state = "forgotten"
            elif old.state != "forgotten":  # forgetting is final
                state = "archived" if action == "archive" else "active"
            self.store.db.set_memory_state(ns, cid, state, card, now)
            changed[cid] = Lifecycle(state, card, now)
        return changed

    # --- namespaces ----------------------------------------------------------------------

    def set_grant(
        self,
        namespace: str,
        hotkey: str,
        permission: Permission,
        granted: bool,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """Grant or revoke, as the namespace's owner; returns the namespace as it now is."""
        who = caller or self.caller
        ns = check_namespace(namespace, self.store.limits)
        self.access.set_grant(who, ns, hotkey, permission, granted)
        return self.describe_namespace(ns, who)

    def describe_namespace(self, namespace: str, caller: Caller | None = None) -> dict[str, Any]:
        """Owner, privacy, grants (to the owner) and the dimension its vectors have."""
        ns = check_namespace(namespace, self.store.limits)
        return {**self.access.describe(caller or self.caller, ns), "dim": self.store.dim_of(ns)}

    # --- storage proofs (a miner's extras) -----------------------------------------------

    def challenge(self, challenge: Challenge, caller: Caller) -> ChallengeResponse:
        """A proof over the record's bytes. It reveals nothing of them, so a validator may
        challenge any record; anyone else, a record they may read."""
        prover = Caller(
            hotkey=caller.hotkey,
            operator=caller.validator,
            namespace_key=caller.namespace_key,
        )
        record = self.get(challenge.cid, None, prover)
        if record is None:
            raise NotFoundError(f"no record {challenge.cid} on this node")
        return respond(challenge, record)

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

    def close(self) -> None:
        self.store.close()


if TYPE_CHECKING:

    def _implements_node(node: LocalNode) -> Node:
        """mypy checks here that LocalNode offers every operation of :class:`Node`, as declared."""
        return node
