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
from engram.security.access import OPERATOR, Caller, Permission
from engram.security.signing import Signer, signer_hotkey
from engram.store import Store


class EmbeddedTransport:
    """Runs every client call against a local :class:`Store` under ``path``."""

    def __init__(
        self,
        path: str | Path | None = None,
        embedder: Embedder | None = None,
        config: StoreConfig | None = None,
        limits: Limits | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.store = Store(path or engram_home(), config=config, limits=limits)
        self.memory = Memory(self.store, embedder)
        # Without a key the process owns its files and may do anything; with one it obeys
        # the namespace rules as that hotkey, exactly as a miner would make it.
        self.caller = OPERATOR if signer is None else Caller(hotkey=signer_hotkey(signer))

    def ingest(self, items: Sequence[IngestItem]) -> list[str | EngramError]:
        return self.memory.ingest(items, self.caller)

    def query(
        self,
        text: str | None,
        vector: Sequence[float] | np.ndarray | None,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
    ) -> list[QueryResult]:
        return self.memory.query(
            text, vector, top_k, filter, namespace, include_embedding, self.caller
        )

    def get(self, cid: str, namespace: str | None) -> Record | None:
        return self.memory.get(cid, namespace, self.caller)

    def delete(self, cid: str, namespace: str | None) -> None:
        self.memory.delete(cid, namespace, self.caller)

    def list(self, limit: int, offset: int, namespace: str | None) -> list[Record]:
        return self.memory.list(namespace, limit, offset, self.caller)

    def count(self, namespace: str | None) -> int:
        return self.memory.count(namespace, self.caller)

    def set_grant(
        self, namespace: str, hotkey: str, permission: Permission, granted: bool
    ) -> dict[str, Any]:
        return self.memory.set_grant(self.caller, namespace, hotkey, permission, granted)

    def describe(self, namespace: str) -> dict[str, Any]:
        return self.memory.describe(self.caller, namespace)

    def stats(self) -> dict[str, Any]:
        return {
            "mode": "embedded",
            "path": str(self.store.path),
            "records": self.store.count(),
            "namespaces": self.memory.namespaces(self.caller),
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
