"""The network as a :class:`~engram.api.node.Node`: routing, replication, scatter-gather.

:class:`~engram.network.client.Network` is asynchronous; this runs it on a
private event-loop thread so the node's operations are plain calls, the same
as the local node's: the SDK's network mode runs calls on it and the gateway
serves it with the router every node shares. It keeps the last read or write
report so SDK users can see which replicas answered.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from engram._version import __version__
from engram.api.node import IngestOutcome, Lifecycle, Node, Stored
from engram.chain import Chain, open_chain
from engram.config import NetworkConfig
from engram.embed import Embedder
from engram.errors import EngramError, InvalidRequestError, QuorumError, error_from_wire
from engram.network.client import Network, ReadReport, WriteReport, acting_for
from engram.records import IngestItem, QueryResult, Record
from engram.security.access import Caller, Permission
from engram.security.signing import Signer

T = TypeVar("T")


class NetworkNode:
    """The miners of one subnet, behind the node operations.

    ``served`` marks a node behind a server (the gateway): it is ready only
    once its model is loaded (:meth:`warm_up`) and miners are serving.
    """

    def __init__(
        self,
        config: NetworkConfig,
        embedder: Embedder | None = None,
        *,
        verify: bool = False,
        signer: Signer | None = None,
        chain: Chain | None = None,
        served: bool = False,
    ) -> None:
        self.verify = verify
        self.served = served
        self.report: list[WriteReport] | ReadReport | None = None
        self._model_ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="engram-network", daemon=True
        )
        self._thread.start()
        self._owns_chain = chain is None
        self.chain = chain if chain is not None else open_chain(config.chain)
        self.network = self.run(self._make(config, embedder, signer))

    async def _make(
        self, config: NetworkConfig, embedder: Embedder | None, signer: Signer | None
    ) -> Network:
        # Made on our loop, so its HTTP pool binds to it.
        return Network(
            self.chain, config, embedder=embedder, signer=signer, serves_others=self.served
        )

    def run(self, coro: Coroutine[Any, Any, T], caller: Caller | None = None) -> T:
        """Run a coroutine of :attr:`network` on the node's loop and wait for it, acting for
        ``caller``: its legacy namespace key and its signed request go on to the miners."""
        if caller is not None:
            coro = acting_for(caller, coro)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """:meth:`run` from another event loop (a server's), without blocking it."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def warm_up(self) -> None:
        """Load the model off the request path; a served node is ready once it answers."""
        self.network.embedder.encode(["warm up"])
        self._model_ready.set()

    def ingest(
        self, items: Sequence[IngestItem], caller: Caller | None = None
    ) -> list[IngestOutcome]:
        outcomes = self.run(self.network.ingest(items), caller)
        self.report = [o for o in outcomes if isinstance(o, WriteReport)]
        return [_stored(o) for o in outcomes]

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
        async def run() -> tuple[list[QueryResult], ReadReport]:
            if (text is None) == (vector is None):
                raise InvalidRequestError("give exactly one of query text or query vector")
            query = await self.network.embed_query(text or "") if vector is None else list(vector)
            return await self.network.query(
                query, top_k, filter, namespace, include_embedding, self.verify, ef
            )

        results, self.report = self.run(run(), caller)
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
        search = self.network.search(text, top_k, filter, namespace, mode, vector, ef)
        results, self.report = self.run(search, caller)
        return results

    def get(self, cid: str, namespace: str | None, caller: Caller | None = None) -> Record | None:
        record, self.report = self.run(self.network.get(cid, namespace, verify=True), caller)
        return record

    def delete(self, cid: str, namespace: str | None, caller: Caller | None = None) -> None:
        self.report = self.run(self.network.delete(cid, namespace), caller)

    def list(
        self,
        limit: int,
        offset: int,
        namespace: str | None,
        filter: Mapping[str, Any] | None = None,
        caller: Caller | None = None,
    ) -> list[Record]:
        return self.run(self.network.list(limit, offset, namespace, filter), caller)

    def count(self, namespace: str | None, caller: Caller | None = None) -> int:
        return self.run(self.network.count(namespace), caller)

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        return self.run(self.network.stats())

    def health(self) -> dict[str, Any]:
        state = self.run(self.network.health())
        if not self.served:
            return state
        model = self._model_ready.is_set()
        ready = bool(state["ready"]) and model
        status = "ok" if ready else ("starting" if not model else state["status"])
        return {
            **state,
            "status": status,
            "ready": ready,
            "store": bool(state["ready"]),
            "model": model,
            "version": __version__,
        }

    def set_grant(
        self,
        namespace: str,
        hotkey: str,
        permission: Permission,
        granted: bool,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        return self.run(self.network.set_grant(namespace, hotkey, permission, granted), caller)

    def describe_namespace(self, namespace: str, caller: Caller | None = None) -> dict[str, Any]:
        return self.run(self.network.describe(namespace), caller)

    def lifecycle(
        self, namespace: str | None, cids: Sequence[str], caller: Caller | None = None
    ) -> dict[str, Lifecycle]:
        return self.run(self.network.lifecycle(namespace, cids), caller)

    def set_lifecycle(
        self,
        namespace: str | None,
        cids: Sequence[str],
        action: str,
        caller: Caller | None = None,
    ) -> dict[str, Lifecycle]:
        return self.run(self.network.lifecycle(namespace, cids, action), caller)

    def close(self) -> None:
        try:
            self.run(self.network.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            if self._owns_chain:
                self.chain.close()


def _stored(outcome: WriteReport | EngramError) -> IngestOutcome:
    if isinstance(outcome, EngramError):
        return outcome
    if not outcome.ok or outcome.cid is None:
        message = outcome.error or "write quorum not met"
        if outcome.code is not None:  # the quorum failed, every refusal with the same error
            reason = next(iter(outcome.failed.values()), message)
            refusal = error_from_wire(0, {"error": reason, "code": outcome.code})
            if 400 <= refusal.status < 500:
                return refusal  # the caller's error, not the network's
        return QuorumError(message)
    return Stored(outcome.cid, tuple(outcome.acked))


if TYPE_CHECKING:

    def _implements_node(node: NetworkNode) -> Node:
        """mypy checks here that NetworkNode offers every operation of :class:`Node`, as declared."""
        return node
