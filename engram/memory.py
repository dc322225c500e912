"""A store plus the canonical embedder: text in, records out.

The embedded SDK and the miner both run exactly this, so text is embedded,
validated and stored the same way wherever it arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.config import DEFAULT_NAMESPACE, MODEL_VERSION, Limits
from engram.embed import Embedder, get_embedder
from engram.errors import EngramError, InvalidRequestError, NotFoundError
from engram.records import QueryResult, Record, check_text
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
    """Ingest and query by text or vector over one :class:`Store`."""

    def __init__(self, store: Store, embedder: Embedder | None = None) -> None:
        self.store = store
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

    def commit(self, prepared: Sequence[Record | EngramError]) -> list[str | EngramError]:
        """Store the prepared records in one transaction; errors pass through in place."""
        records = [p for p in prepared if isinstance(p, Record)]
        cids = iter(self.store.put(records))
        return [next(cids) if isinstance(p, Record) else p for p in prepared]

    def ingest(self, items: Sequence[IngestItem]) -> list[str | EngramError]:
        return self.commit(self.prepare(items))

    def delete(self, cid: str, namespace: str | None) -> None:
        """Delete a record, or raise :class:`NotFoundError` naming where it was looked for."""
        if not self.store.delete(cid, namespace):
            raise NotFoundError(f"no record {cid} in namespace {namespace or DEFAULT_NAMESPACE}")

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
    ) -> list[QueryResult]:
        """Search by ``vector``, or by ``text`` embedded with the canonical model."""
        if (text is None) == (vector is None):
            raise InvalidRequestError("give exactly one of query text or query vector")
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
