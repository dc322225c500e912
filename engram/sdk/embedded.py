"""The embedded transport: the storage engine in this process, no server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engram.config import Limits, StoreConfig, engram_home
from engram.embed import Embedder, get_embedder
from engram.errors import EngramError, NotFoundError
from engram.records import QueryResult, Record, check_text
from engram.sdk._base import IngestItem
from engram.store import Store


class EmbeddedTransport:
    """Runs every client call against a local :class:`Store` under ``path``."""

    def __init__(
        self,
        path: str | Path | None = None,
        embedder: Embedder | None = None,
        config: StoreConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = Store(path or engram_home(), config=config, limits=limits)
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def ingest(self, items: Sequence[IngestItem], namespace: str | None) -> list[str | EngramError]:
        """Store the valid items in one transaction; each failure is returned in its place."""
        outcome: list[str | EngramError | None] = [None] * len(items)
        to_embed: list[int] = []
        for i, item in enumerate(items):
            if item.embedding is None:
                try:
                    check_text(item.text, self.store.limits, required=True)
                    to_embed.append(i)
                except EngramError as exc:
                    outcome[i] = exc
        vectors: dict[int, Any] = {}
        if to_embed:
            encoded = self.embedder.encode([items[i].text or "" for i in to_embed])
            vectors = dict(zip(to_embed, encoded, strict=True))
        records: list[tuple[int, Record]] = []
        for i, item in enumerate(items):
            if outcome[i] is not None:
                continue
            try:
                vector = vectors[i] if item.embedding is None else item.embedding
                record = self.store.record(vector, item.metadata, item.text, namespace)
                records.append((i, record))
            except EngramError as exc:
                outcome[i] = exc
        if records:
            cids = self.store.put([r for _, r in records])
            for (i, _), cid in zip(records, cids, strict=True):
                outcome[i] = cid
        return [o for o in outcome if o is not None]

    def query_text(
        self,
        text: str,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
    ) -> list[QueryResult]:
        check_text(text, self.store.limits, required=True)
        vector = self.embedder.encode([text])[0]
        return self.store.search(vector, top_k, filter, namespace, include_embedding)

    def query_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
    ) -> list[QueryResult]:
        return self.store.search(vector, top_k, filter, namespace, include_embedding)

    def get(self, cid: str, namespace: str | None) -> Record | None:
        return self.store.get(cid, namespace)

    def delete(self, cid: str, namespace: str | None) -> None:
        if not self.store.delete(cid, namespace):
            raise NotFoundError(f"no record {cid} in namespace {namespace or 'default'}")

    def list(self, limit: int, offset: int, namespace: str | None) -> list[Record]:
        return self.store.list(namespace, limit, offset)

    def count(self, namespace: str | None) -> int:
        return self.store.count(namespace)

    def stats(self) -> dict[str, Any]:
        return {
            "mode": "embedded",
            "path": str(self.store.path),
            "records": self.store.count(),
            "namespaces": self.store.namespaces(),
            "index": self.store.stats(),
        }

    def close(self) -> None:
        self.store.close()
