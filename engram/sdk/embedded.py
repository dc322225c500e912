"""The embedded transport: the storage engine in this process, no server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engram import __version__
from engram.config import Limits, StoreConfig, engram_home
from engram.embed import Embedder
from engram.errors import EngramError
from engram.memory import IngestItem, Memory
from engram.records import QueryResult, Record
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
        self.memory = Memory(self.store, embedder)

    def ingest(self, items: Sequence[IngestItem]) -> list[str | EngramError]:
        return self.memory.ingest(items)

    def query(
        self,
        text: str | None,
        vector: Sequence[float] | np.ndarray | None,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
    ) -> list[QueryResult]:
        return self.memory.query(text, vector, top_k, filter, namespace, include_embedding)

    def get(self, cid: str, namespace: str | None) -> Record | None:
        return self.store.get(cid, namespace)

    def delete(self, cid: str, namespace: str | None) -> None:
        self.memory.delete(cid, namespace)

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

    def health(self) -> dict[str, Any]:
        return {
            "mode": "embedded",
            "status": "ok",
            "ready": True,
            "store": True,
            "model": self.memory.embedder_loaded,  # loaded on first text, not before
            "version": __version__,
        }

    def close(self) -> None:
        self.store.close()
