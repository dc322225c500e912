"""The memory API over any node: store, search, context, update, versions, forget, archive.

:class:`Memories` holds the logic once and runs on any
:class:`~engram.api.node.Node` — the embedded store, one node over HTTP, the
whole network — so a miner or gateway serving the memory routes and an SDK
running it in-process behave the same. Everything it keeps is an ordinary
record (replicated and proven like any other) plus the node's lifecycle
entries (:meth:`~engram.api.node.Node.set_lifecycle`).
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from engram.api.node import Lifecycle, Node
from engram.config import DEFAULT_NAMESPACE, MEMORY_STATES, Limits, MemoryConfig
from engram.errors import (
    ConflictError,
    EngramError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from engram.memory import decay
from engram.memory.model import KIND, Context, Link, Memory, memory_metadata
from engram.memory.tokens import count_tokens
from engram.records import IngestItem
from engram.security.access import Caller

_MAX_HITS = Limits().max_top_k


def _named(namespace: str | None) -> str:
    return namespace or DEFAULT_NAMESPACE


def _memories(extra: Mapping[str, Any] | None = None, state: Any = "active") -> dict[str, Any]:
    parts: list[Mapping[str, Any]] = [{"kind": KIND}]
    if state is not None:
        parts.append({"$state": state})
    if extra:
        parts.append(extra)
    return {"$and": parts}


class Memories:
    """The memory API of one node, acting for ``caller`` (``None``: the node's own)."""

    def __init__(
        self, node: Node, caller: Caller | None = None, config: MemoryConfig | None = None
    ) -> None:
        self.node = node
        self.caller = caller
        self.config = config or MemoryConfig()

    # --- writes --------------------------------------------------------------------------

    def store(
        self,
        content: str,
        category: str | None = None,
        importance: float | None = None,
        tags: Sequence[str] = (),
        source: str | None = None,
        ttl_s: float | None = None,
        namespace: str | None = None,
    ) -> Memory:
        """A new memory; a near-duplicate of an active one returns that one instead
        (``duplicate_of`` set) and stores nothing."""
        importance = self.config.default_importance if importance is None else importance
        metadata = memory_metadata(content, category, importance, tags, source, time.time(), ttl_s)
        similar = self._similar(content, namespace)
        if similar and similar[0][1] >= self.config.duplicate_similarity:
            existing = self.get(similar[0][0], namespace)
            return existing.model_copy(update={"duplicate_of": existing.cid})
        links = [cid for cid, score in similar if score >= self.config.link_similarity]
        if links:
            metadata["links"] = links
        return self._write(content, metadata, namespace)

    def update(
        self,
        cid: str,
        content: str,
        category: str | None = None,
        importance: float | None = None,
        tags: Sequence[str] | None = None,
        source: str | None = None,
        ttl_s: float | None = None,
        namespace: str | None = None,
    ) -> Memory:
        """A new version of a memory: it supersedes the old one, which leaves search; fields
        not given are carried over (an expiry still ahead too, unless ``ttl_s`` sets one)."""
        old = self.get(cid, namespace)
        if old.state == "forgotten":
            raise ConflictError(f"memory {cid} is forgotten: store the content as a new memory")
        if old.state == "superseded":
            newest = self.versions(cid, namespace)[-1].cid
            raise ConflictError(
                f"memory {cid} was already updated: update its newest version {newest}"
            )
        now = time.time()
        metadata = memory_metadata(
            content,
            old.category if category is None else category,
            old.importance if importance is None else importance,
            old.tags if tags is None else tags,
            old.source if source is None else source,
            now,
            ttl_s,
            supersedes=cid,
            links=[
                c
                for c, score in self._similar(content, namespace)
                if score >= self.config.link_similarity and c != cid
            ],
        )
        if ttl_s is None and old.expires_at is not None and old.expires_at > now:
            metadata["expires_at"] = old.expires_at  # an expired one comes back without one
        return self._write(content, metadata, namespace)

    def _write(self, content: str, metadata: dict[str, Any], namespace: str | None) -> Memory:
        item = IngestItem(text=content, metadata=metadata, namespace=namespace)
        (outcome,) = self.node.ingest([item], self.caller)
        if isinstance(outcome, EngramError):
            raise outcome
        return Memory.from_record(outcome.cid, content, metadata, namespace=_named(namespace))

    def _similar(self, content: str, namespace: str | None) -> list[tuple[str, float]]:
        """Active memories by cosine similarity to ``content``, most similar first."""
        hits = self.node.query(
            content,
            None,
            self.config.max_links + 1,
            _memories(),
            namespace,
            False,
            self.caller,
        )
        return [(h.cid, h.score) for h in hits]

    def forget(self, cid: str, namespace: str | None = None) -> Memory:
        """Hide a memory from search, context and listings for good (``delete`` erases it)."""
        return self._change(cid, namespace, "forget")

    def archive(self, cid: str, namespace: str | None = None) -> Memory:
        """Hide a memory from search and context; it stays listable (``state="archived"``)."""
        return self._change(cid, namespace, "archive")

    def unarchive(self, cid: str, namespace: str | None = None) -> Memory:
        return self._change(cid, namespace, "unarchive")

    def _change(self, cid: str, namespace: str | None, action: str) -> Memory:
        memory = self.get(cid, namespace)
        if memory.state == "forgotten" and action != "forget":
            raise ConflictError(f"memory {cid} is forgotten and cannot be {action}d")
        self.node.set_lifecycle(namespace, [cid], action, self.caller)
        return self.get(cid, namespace)

    def delete(self, cid: str, namespace: str | None = None) -> None:
        """Erase a memory's record (other versions stay)."""
        self.get(cid, namespace)
        self.node.delete(cid, namespace, self.caller)

    # --- reads ---------------------------------------------------------------------------

    def get(self, cid: str, namespace: str | None = None) -> Memory:
        record = self.node.get(cid, namespace, self.caller)
        if record is None or record.metadata.get("kind") != KIND:
            raise NotFoundError(f"no memory {cid} in namespace {namespace or 'default'}")
        (memory,) = self._stated(
            [Memory.from_record(cid, record.text, record.metadata, namespace=_named(namespace))],
            namespace,
        )
        return memory

    def search(
        self,
        query: str,
        limit: int = 10,
        filters: Mapping[str, Any] | None = None,
        namespace: str | None = None,
    ) -> list[Memory]:
        """Active memories for ``query``: hybrid relevance weighted by memory strength
        (FSRS retrievability, importance its floor). Each one returned counts as recalled."""
        found = self._ranked(query, limit, filters, namespace)
        self._recalled([m.cid for m in found], namespace)
        return found

    def _ranked(
        self, query: str, limit: int, filters: Mapping[str, Any] | None, namespace: str | None
    ) -> list[Memory]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_HITS:
            raise InvalidRequestError(f"limit must be an integer in 1..{_MAX_HITS}")
        depth = min(max(limit, self.config.search_candidates), _MAX_HITS)
        hits = self.node.search(
            query, depth, _memories(filters), namespace, "hybrid", None, self.caller
        )
        # A replica counts a memory superseded only if it holds the newer version too.
        newer = self._superseded([h.cid for h in hits], namespace)
        hits = [h for h in hits if h.cid not in newer]
        states = self._lifecycles([h.cid for h in hits], namespace)
        now, weight = time.time(), self.config.decay_weight
        ranked = []
        for hit in hits:
            created = float(hit.metadata.get("created_at") or now)
            card = states.get(hit.cid, Lifecycle()).card
            recall = decay.retrievability(card, created, now)
            strength = decay.strength(float(hit.metadata.get("importance", 0.5)), recall)
            score = hit.score * (1.0 - weight + weight * strength)
            ranked.append(
                Memory.from_record(
                    hit.cid,
                    hit.text,
                    hit.metadata,
                    namespace=_named(namespace),
                    score=score,
                    relevance=hit.score,
                    retrievability=recall,
                )
            )
        ranked.sort(key=lambda m: -(m.score or 0.0))
        return ranked[:limit]

    def _lifecycles(self, cids: Sequence[str], namespace: str | None) -> dict[str, Lifecycle]:
        return self.node.lifecycle(namespace, cids, self.caller) if cids else {}

    def _superseded(self, cids: Sequence[str], namespace: str | None) -> set[str]:
        """Which of ``cids`` a newer version names, asked of the whole node (or network)."""
        if not cids:
            return set()
        newer = self._records({"supersedes": {"$in": list(cids)}}, namespace, limit=len(cids))
        return {m.supersedes for m in newer if m.supersedes}

    def _recalled(self, cids: Sequence[str], namespace: str | None) -> None:
        """Count a recall as a review; a caller who may only read leaves no trace."""
        if cids:
            with contextlib.suppress(ForbiddenError, UnauthorizedError):
                self.node.set_lifecycle(namespace, cids, "review", self.caller)

    def context(self, query: str, max_tokens: int, namespace: str | None = None) -> Context:
        """The most relevant active memories as one block of at most ``max_tokens`` tokens,
        best first, each line dated; memories that do not fit are skipped."""
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        lines: list[str] = []
        used: list[str] = []
        tokens = 0
        for memory in self._ranked(query, self.config.context_candidates, None, namespace):
            day = datetime.fromtimestamp(memory.created_at, UTC).date().isoformat()
            label = f" ({memory.category})" if memory.category else ""
            line = f"- [{day}]{label} {memory.content}"
            size = count_tokens("\n".join([*lines, line]))
            if size <= max_tokens:
                lines.append(line)
                used.append(memory.cid)
                tokens = size
        self._recalled(used, namespace)
        return Context(context="\n".join(lines), cids=used, tokens=tokens, max_tokens=max_tokens)

    def versions(self, cid: str, namespace: str | None = None) -> list[Memory]:
        """Every version of a memory, oldest to newest."""
        chain = [self.get(cid, namespace)]
        seen = {cid}
        while chain[0].supersedes and chain[0].supersedes not in seen:
            seen.add(chain[0].supersedes)
            try:
                chain.insert(0, self.get(chain[0].supersedes, namespace))
            except NotFoundError:
                break  # an older version was deleted: the chain starts here
        while True:
            newer = self._records({"supersedes": chain[-1].cid}, namespace, limit=1)
            if not newer or newer[0].cid in seen:
                return chain
            seen.add(newer[0].cid)
            chain.append(self.get(newer[0].cid, namespace))

    def list(
        self,
        category: str | None = None,
        tags: Sequence[str] = (),
        state: str = "active",
        limit: int = 50,
        offset: int = 0,
        namespace: str | None = None,
    ) -> builtins.list[Memory]:
        """Memories in one lifecycle state (or ``"all"``) in the order they were stored;
        ``tags`` keeps those with any of them."""
        if state != "all" and state not in MEMORY_STATES:
            raise InvalidRequestError(f"state must be all or one of {', '.join(MEMORY_STATES)}")
        extra: dict[str, Any] = {}
        if category is not None:
            extra["category"] = category
        if tags:
            extra["tags"] = {"$in": list(tags)}
        # Each replica judges "superseded" by the versions it holds: ask for the superseded
        # with the active, then keep what the state across the whole node says.
        asked = {"all": None, "superseded": ["active", "superseded"]}.get(state, state)
        found = self._stated(self._records(extra, namespace, limit, offset, asked), namespace)
        return [m for m in found if state in ("all", m.state)]

    def links(self, cid: str, namespace: str | None = None) -> builtins.list[Link]:
        """The memories linked to this one, both ways, typed."""
        memory = self.get(cid, namespace)
        named = [Link(cid=c, type="similar") for c in memory.links]
        if memory.supersedes:
            named.append(Link(cid=memory.supersedes, type="updates"))
        # What this memory names may have been deleted since; what names it exists.
        links = [n for n in named if self.node.get(n.cid, namespace, self.caller) is not None]
        links += [Link(cid=m.cid, type="similar") for m in self._records({"links": cid}, namespace)]
        links += [
            Link(cid=m.cid, type="updated_by")
            for m in self._records({"supersedes": cid}, namespace)
        ]
        return list({(link.cid, link.type): link for link in links}.values())

    def _records(
        self,
        extra: Mapping[str, Any],
        namespace: str | None,
        limit: int = 100,
        offset: int = 0,
        state: str | builtins.list[str] | None = None,
    ) -> builtins.list[Memory]:
        records = self.node.list(
            limit, offset, namespace, _memories(extra or None, state), self.caller
        )
        return [
            Memory.from_record(r.cid, r.text, r.metadata, namespace=_named(namespace))
            for r in records
        ]

    def _stated(self, memories: Sequence[Memory], namespace: str | None) -> builtins.list[Memory]:
        """Each memory with its lifecycle state, as the filters define it (``$state``)."""
        if not memories:
            return []
        cids = [m.cid for m in memories]
        marks = self._lifecycles(cids, namespace)
        superseded = self._superseded(cids, namespace)
        now = time.time()
        out = []
        for m in memories:
            mark = marks.get(m.cid, Lifecycle()).state
            if mark in ("forgotten", "archived"):
                state = mark
            elif m.expires_at is not None and m.expires_at <= now:
                state = "expired"
            elif m.cid in superseded:
                state = "superseded"
            else:
                state = "active"
            out.append(m.model_copy(update={"state": state}))
        return out
