"""The network transport's backend: the whole network behind the embedded store's methods.

:class:`~engram.network.client.Network` is asynchronous; this runs it on a
private event loop thread so the client's calls (``call.local(backend)``) work
unchanged from both twins, and keeps the last read or write report so callers
can see which replicas answered.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from engram.chain import open_chain
from engram.config import NetworkConfig
from engram.embed import Embedder
from engram.errors import EngramError, QuorumError
from engram.memory import IngestItem
from engram.network.client import Network, ReadReport, WriteReport
from engram.records import QueryResult, Record
from engram.security.access import Permission
from engram.security.signing import Signer

T = TypeVar("T")


class NetworkBackend:
    """Routing, replication and scatter-gather with the embedded store's method set."""

    def __init__(
        self,
        config: NetworkConfig,
        embedder: Embedder | None = None,
        verify: bool = False,
        signer: Signer | None = None,
    ) -> None:
        self.verify = verify
        self.report: list[WriteReport] | ReadReport | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="engram-network", daemon=True
        )
        self._thread.start()
        self.chain = open_chain(config.chain)
        self.network = self._run(self._make(config, embedder, signer))

    async def _make(
        self, config: NetworkConfig, embedder: Embedder | None, signer: Signer | None
    ) -> Network:
        # Made on our loop, so its HTTP pool binds to it.
        return Network(self.chain, config, embedder=embedder, signer=signer)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def ingest(self, items: Sequence[IngestItem]) -> list[str | EngramError]:
        outcomes = self._run(self.network.ingest(items))
        self.report = [o for o in outcomes if isinstance(o, WriteReport)]
        return [
            o
            if isinstance(o, EngramError)
            else (str(o.cid) if o.ok else QuorumError(o.error or "write quorum not met"))
            for o in outcomes
        ]

    def query(
        self,
        text: str | None,
        vector: Sequence[float] | np.ndarray | None,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
    ) -> list[QueryResult]:
        async def run() -> tuple[list[QueryResult], ReadReport]:
            query = await self.network.embed_query(text) if vector is None else list(vector)
            return await self.network.query(
                query, top_k, filter, namespace, include_embedding, self.verify
            )

        results, self.report = self._run(run())
        return results

    def get(self, cid: str, namespace: str | None) -> Record | None:
        record, self.report = self._run(self.network.get(cid, namespace, verify=True))
        return record

    def delete(self, cid: str, namespace: str | None) -> None:
        self.report = self._run(self.network.delete(cid, namespace))

    def list(self, limit: int, offset: int, namespace: str | None) -> list[Record]:
        return self._run(self.network.list(limit, offset, namespace))

    def count(self, namespace: str | None) -> int:
        return self._run(self.network.count(namespace))

    def stats(self) -> dict[str, Any]:
        return self._run(self.network.stats())

    def health(self) -> dict[str, Any]:
        return self._run(self.network.health())

    def set_grant(
        self, namespace: str, hotkey: str, permission: Permission, granted: bool
    ) -> dict[str, Any]:
        return self._run(self.network.set_grant(namespace, hotkey, permission, granted))

    def describe(self, namespace: str) -> dict[str, Any]:
        return self._run(self.network.describe(namespace))

    def close(self) -> None:
        try:
            self._run(self.network.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            self.chain.close()
