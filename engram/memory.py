"""A store plus the canonical embedder: text in, records out.

The embedded SDK and the miner both run exactly this, so text is embedded,
validated and stored the same way wherever it arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.config import MODEL_VERSION, Limits
from engram.embed import Embedder, get_embedder
from engram.errors import EngramError, InvalidRequestError, NotFoundError
from engram.records import QueryResult, Record, check_namespace, check_text
from engram.security.access import OPERATOR, Caller, NamespaceAccess, Permission
from engram.store import Store


@dataclass(frozen=True)
class IngestItem:
    """One record to ingest: text to embed, or an embedding (optionally with its text)."""

    text: str | None = None
    embedding: Sequence[float] | np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    model_version: str = MODEL_VERSION


class Memory:
    """Ingest and query by text or vector over one :class:`Store`, as one caller or another.

    Every method takes the :class:`Caller` it acts for and applies the
    namespace rules of :mod:`engram.security.access` first; the default is
    the store's operator, who may do anything to its own files.
    """

    def __init__(self, store: Store, embedder: Embedder | None = None) -> None:
        self.store = store
        self.access = NamespaceAccess(store.db)
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        """Loaded on first use, so vector-only work never pays for the model."""
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    @property
    def embedder_loaded(self) -> bool:
        return self._embedder is not None

    def prepare(self, items: Sequence[IngestItem]) -> list[Record | EngramError]:
        """Embed texts (one batch) and build each record; a bad item yields its error."""
        return prepare_records(items, lambda: self.embedder, self.store.record, self.store.limits)

    def commit(
        self, prepared: Sequence[Record | EngramError], caller: Caller = OPERATOR
    ) -> list[str | EngramError]:
        """Store the prepared records in one transaction; errors pass through in place.

        A record in a namespace the caller may not write fails alone.
        """
        refused: dict[str, EngramError | None] = {}
        for ns in {p.namespace for p in prepared if isinstance(p, Record)}:
            try:
                self.access.admit_write(caller, ns)
                refused[ns] = None
            except EngramError as exc:
                refused[ns] = exc
        outcome = [(refused[p.namespace] or p) if isinstance(p, Record) else p for p in prepared]
        records = [p for p in outcome if isinstance(p, Record)]
        cids = iter(self.store.put(records, writer=caller.hotkey))
        return [next(cids) if isinstance(p, Record) else p for p in outcome]

    def ingest(
        self, items: Sequence[IngestItem], caller: Caller = OPERATOR
    ) -> list[str | EngramError]:
        return self.commit(self.prepare(items), caller)

    def delete(self, cid: str, namespace: str | None, caller: Caller = OPERATOR) -> None:
        """Delete a record, or raise :class:`NotFoundError` naming where it was looked for."""
        ns = check_namespace(namespace, self.store.limits)
        self.access.admit_delete(caller, ns, cid)
        if not self.store.delete(cid, ns):
            raise NotFoundError(f"no record {cid} in namespace {ns}")

    def _readable(self, caller: Caller, namespace: str | None) -> str:
        """The checked namespace name, once the caller may read it."""
        ns = check_namespace(namespace, self.store.limits)
        self.access.require(caller, ns, Permission.READ)
        return ns

    def get(self, cid: str, namespace: str | None, caller: Caller = OPERATOR) -> Record | None:
        return self.store.get(cid, self._readable(caller, namespace))

    def find(self, cid: str, caller: Caller = OPERATOR) -> Record | None:
        """The oldest copy of ``cid`` the caller may read; copies it may not are never named."""
        for record in self.store.find_all(cid):
            if self.access.can(caller, record.namespace, Permission.READ):
                return record
        return None

    def list(
        self, namespace: str | None, limit: int, offset: int, caller: Caller = OPERATOR
    ) -> list[Record]:
        return self.store.list(self._readable(caller, namespace), limit, offset)

    def count(self, namespace: str | None, caller: Caller = OPERATOR) -> int:
        """Records in a namespace the caller may read, or in the whole store (a number only)."""
        if namespace is None:
            return self.store.count()
        return self.store.count(self._readable(caller, namespace))

    def set_grant(
        self, caller: Caller, namespace: str, hotkey: str, permission: Permission, granted: bool
    ) -> dict[str, Any]:
        """Grant or revoke, as the namespace's owner; returns the namespace as it now is."""
        ns = check_namespace(namespace, self.store.limits)
        self.access.set_grant(caller, ns, hotkey, permission, granted)
        return self.access.describe(caller, ns)

    def describe(self, caller: Caller, namespace: str) -> dict[str, Any]:
        return self.access.describe(caller, check_namespace(namespace, self.store.limits))

    def namespaces(self, caller: Caller = OPERATOR) -> dict[str, int]:
        """Record counts of the namespaces the caller may read (private names stay hidden)."""
        return {
            ns: n
            for ns, n in self.store.namespaces().items()
            if self.access.can(caller, ns, Permission.READ)
        }

    def embed_query(self, text: str) -> np.ndarray:
        check_text(text, self.store.limits, required=True)
        return self.embedder.encode([text])[0]

    def query(
        self,
        text: str | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        include_embedding: bool = False,
        caller: Caller = OPERATOR,
    ) -> list[QueryResult]:
        """Search by ``vector``, or by ``text`` embedded with the canonical model."""
        if (text is None) == (vector is None):
            raise InvalidRequestError("give exactly one of query text or query vector")
        self._readable(caller, namespace)
        if vector is None:
            vector = self.embed_query(text or "")
        return self.store.search(vector, top_k, filter, namespace, include_embedding)


def prepare_records(
    items: Sequence[IngestItem],
    embedder: Callable[[], Embedder],
    build: Callable[..., Record],
    limits: Limits,
) -> list[Record | EngramError]:
    """Embed every text of ``items`` in one batch, then ``build`` each record.

    A bad item yields its error in place. ``embedder`` is called only when
    some item has text to embed, so vector-only work never loads the model.
    The embedded store, the miner and the network client all prepare here, so
    a text gets the same vector, and the same CID, in every mode.
    """
    out: list[Record | EngramError | None] = [None] * len(items)
    to_embed: list[int] = []
    for i, item in enumerate(items):
        if item.embedding is not None:
            continue
        try:
            check_text(item.text, limits, required=True)
            if item.model_version != MODEL_VERSION:
                raise InvalidRequestError(
                    f"text is embedded with model {MODEL_VERSION}; send raw_embedding "
                    f"for model_version {item.model_version!r}"
                )
            to_embed.append(i)
        except EngramError as exc:
            out[i] = exc
    vectors: dict[int, np.ndarray] = {}
    if to_embed:
        encoded = embedder().encode([items[i].text or "" for i in to_embed])
        vectors = dict(zip(to_embed, encoded, strict=True))
    for i, item in enumerate(items):
        if out[i] is not None:
            continue
        try:
            vector = vectors[i] if item.embedding is None else item.embedding
            out[i] = build(vector, item.metadata, item.text, item.namespace, item.model_version)
        except EngramError as exc:
            out[i] = exc
    return [o for o in out if o is not None]
