"""``AsyncEngramClient``: :class:`~engram.sdk.client.EngramClient` for asyncio code.

The same methods and signatures (the tests compare them), each awaiting the
same plan from :class:`~engram.sdk._base.ClientCore`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from engram.api.calls import Count, Delete, Health, Search, Stats
from engram.api.exchange import run_async
from engram.config import PROBE_TIMEOUT_S, PROBE_TOP_N
from engram.embed import Embedder
from engram.errors import InvalidRequestError, UpstreamError
from engram.network.client import ReadReport, WriteReport
from engram.records import IngestItem, QueryResult, Record
from engram.sdk._base import (
    FILE_BATCH_ITEMS,
    BatchResult,
    ClientCore,
    FileIngestReport,
    Plan,
    Target,
    choose_target,
    network_target,
    pick_signer,
    query_vector,
)
from engram.sdk.keys import AsyncKeysClient
from engram.sdk.memory import AsyncMemoryClient
from engram.sdk.remote import RemoteNode
from engram.sdk.sealer import Sealer, sealer_for
from engram.sdk.transports import AsyncHttpTransport, JsonlFile, open_async_transport
from engram.security.sealing import SealKey

T = TypeVar("T")


class AsyncEngramClient:
    """Semantic memory for asyncio: the arguments, methods and results of ``EngramClient``.

    Over HTTP it uses ``httpx.AsyncClient``; the embedded store runs in a
    worker thread. Use ``async with AsyncEngramClient(...) as client``.

    ``wallet=``/``keypair=`` sign requests and ``seal_key=`` seals records,
    exactly as for :class:`~engram.sdk.client.EngramClient`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        path: str | Path | None = None,
        namespace: str | None = None,
        embedder: Embedder | None = None,
        timeout_s: float | None = None,
        retries: int | None = None,
        backoff_s: float | None = None,
        wallet: Any = None,
        keypair: Any = None,
        seal_key: SealKey | None = None,
        clear_fields: Collection[str] = (),
        noise_sigma: float = 0.0,
        miner_url: str | None = None,
        timeout: float | None = None,
        api_key: str | None = None,
    ) -> None:
        target = choose_target(
            url,
            path=path,
            embedder=embedder,
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
            signer=pick_signer(wallet, keypair),
            miner_url=miner_url,
            timeout=timeout,
            api_key=api_key,
        )
        self._open(target, namespace, sealer_for(seal_key, clear_fields, noise_sigma, embedder))

    def _open(self, target: Target, namespace: str | None, sealer: Sealer | None) -> None:
        self.target = target
        self._transport = open_async_transport(target)
        self._signed_node: RemoteNode | None = None  # composes memory calls when signing
        self._core = ClientCore(namespace, self._transport.limits, sealer)

    @classmethod
    def from_network(
        cls,
        chain: str | None = None,
        netuid: int | None = None,
        *,
        namespace: str | None = None,
        embedder: Embedder | None = None,
        verify: bool = False,
        replicas: int | None = None,
        write_quorum: int | None = None,
        read_deadline_s: float | None = None,
        wallet: Any = None,
        keypair: Any = None,
        seal_key: SealKey | None = None,
        clear_fields: Collection[str] = (),
        noise_sigma: float = 0.0,
    ) -> AsyncEngramClient:
        """The whole network of ``chain`` (default: the LocalChain under ENGRAM_HOME).

        Text is embedded here, once, and the same vector is written to the
        CID's R replicas (default 3) with a write quorum (default 2); reads ask
        every serving miner and merge. ``verify=True`` checks every returned
        record against its CID. :attr:`network_report` tells which replicas
        answered the last call.
        """
        client = cls.__new__(cls)
        target = network_target(
            chain,
            netuid,
            embedder=embedder,
            verify=verify,
            replicas=replicas,
            write_quorum=write_quorum,
            read_deadline_s=read_deadline_s,
            signer=pick_signer(wallet, keypair),
        )
        client._open(target, namespace, sealer_for(seal_key, clear_fields, noise_sigma, embedder))
        return client

    @classmethod
    async def from_subnet(
        cls,
        netuid: int = 450,
        network: str = "test",
        *,
        top_n: int = PROBE_TOP_N,
        probe_timeout: float = PROBE_TIMEOUT_S,
        **options: Any,
    ) -> AsyncEngramClient:
        """The original SDK's entry point: :meth:`from_network` on the Bittensor ``network``.

        ``network`` is ``test`` (the testnet, where the original network runs as
        netuid 450), ``finney`` or a ``ws://`` endpoint, or any chain :meth:`from_network`
        takes; ``options`` are its keyword arguments. The ``top_n`` best serving miners
        (by incentive, then stake) are probed first: an
        :class:`~engram.errors.UnavailableError` when none answers ``/health`` within
        ``probe_timeout`` seconds.
        """
        from engram.network.survey import check_top_miners
        from engram.sdk.transports import AsyncNetworkTransport

        client = cls.from_network(network, netuid, **options)
        transport = client._transport
        assert isinstance(transport, AsyncNetworkTransport)
        try:
            await transport.node.arun(
                check_top_miners(transport.node.network, top_n, probe_timeout)
            )
        except BaseException:
            await client.close()
            raise
        return client

    @property
    def network_report(self) -> list[WriteReport] | ReadReport | None:
        """Network mode: the last write's reports (one per record: replicas, acked, failed) or
        the last read's (miners that answered, and why others did not); else ``None``."""
        return getattr(self._transport, "report", None)

    @property
    def namespace(self) -> str | None:
        """The namespace used when a call names none (``None``: the default namespace)."""
        return self._core.namespace

    @property
    def clear_fields(self) -> frozenset[str] | None:
        """The metadata fields a sealing client leaves readable (``None``: it does not seal)."""
        sealer = self._core.sealer
        return None if sealer is None else frozenset(sealer.clear_fields)

    @functools.cached_property
    def memory(self) -> AsyncMemoryClient:
        """The agent-memory API (store, search, context, update, versions, forget, archive,
        list, links) in this client's mode and namespace."""
        sealed = self._core.sealer is not None
        if isinstance(self._transport, AsyncHttpTransport) and self.target.signer is not None:
            # Composed here from signed node operations, which a gateway relays with the
            # signature intact (it cannot sign the steps of a memory call for the user).
            node = self._signed_node = RemoteNode(
                self._transport.url, self.target.config, self.target.signer
            )
            return AsyncMemoryClient(
                lambda call: asyncio.to_thread(self._core.named(call).local, node), sealed
            )
        return AsyncMemoryClient(lambda call: self._run(self._core.call(call)), sealed)

    @functools.cached_property
    def keys(self) -> AsyncKeysClient:
        """The API keys of the gateway this client talks to (make, list, rotate, revoke)."""
        if not isinstance(self._transport, AsyncHttpTransport):
            raise InvalidRequestError(
                "API keys are a gateway's: open the client with the gateway's url"
            )
        return AsyncKeysClient(self._transport.execute)

    async def _run(self, plan: Plan[T]) -> T:
        return await run_async(plan, self._transport.execute)

    # --- writes --------------------------------------------------------------------------

    async def ingest(
        self, text: str, metadata: Mapping[str, Any] | None = None, namespace: str | None = None
    ) -> str:
        """Embed ``text`` with the canonical model and store it; returns its CID."""
        return await self._run(self._core.ingest(text, metadata, namespace))

    async def ingest_embedding(
        self,
        vector: Sequence[float] | np.ndarray,
        metadata: Mapping[str, Any] | None = None,
        text: str | None = None,
        namespace: str | None = None,
    ) -> str:
        """Store a vector you computed (optionally with its text); returns its CID."""
        return await self._run(self._core.ingest_embedding(vector, metadata, text, namespace))

    async def batch_ingest(
        self, items: Iterable[Mapping[str, Any] | IngestItem], namespace: str | None = None
    ) -> BatchResult:
        """Ingest many items (``{"text" | "embedding", "metadata"?}``); bad items don't stop good ones.

        ``result.failed`` lists the failures with their messages. Over HTTP the
        batch is split to fit the node's limits (1000 items, 10 MiB a request).
        """
        return await self._run(self._core.batch_ingest(items, namespace))

    async def batch_ingest_file(
        self,
        path: str | Path,
        namespace: str | None = None,
        batch_size: int = FILE_BATCH_ITEMS,
        progress: bool = True,
    ) -> FileIngestReport:
        """Ingest a JSONL file (one item a line); a bad line is reported, not fatal."""
        with JsonlFile(path, progress) as lines:
            return await self._run(self._core.batch_ingest_file(lines, namespace, batch_size))

    async def delete(self, cid: str, namespace: str | None = None) -> None:
        """Delete a record; raises :class:`~engram.errors.NotFoundError` if it is not there."""
        return await self._run(self._core.call(Delete(cid, namespace)))

    # --- reads ---------------------------------------------------------------------------

    async def query(
        self,
        text: str,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        include_embedding: bool = False,
        ef: int | None = None,
    ) -> list[QueryResult]:
        """Records nearest in meaning to ``text``, best first (cosine similarity). ``ef``: the
        search's HNSW beam width, wider for better recall (default: the namespace's, which
        the node calibrates to recall@10 >= 0.95 on its own data)."""
        plan = self._core.query(text, top_k, filter, namespace, include_embedding, ef)
        return await self._run(plan)

    async def search(
        self,
        text: str,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        mode: str = "hybrid",
        vector: Sequence[float] | np.ndarray | None = None,
        ef: int | None = None,
    ) -> list[QueryResult]:
        """Hybrid search: meaning (vector) and words (BM25) fused, best first; each result's
        ``channels`` says what each contributed. ``mode``: hybrid, vector or keyword.
        ``vector``: the text already embedded by the model of the namespace's vectors
        (otherwise the node embeds it with the canonical model). ``ef``: the vector
        channel's HNSW beam width, as in :meth:`query`."""
        vec = None if vector is None else query_vector(vector)
        call = Search(text, top_k, filter, namespace, mode, vec, ef)
        return await self._run(self._core.search(call))

    async def query_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        include_embedding: bool = False,
        ef: int | None = None,
    ) -> list[QueryResult]:
        """Records nearest to ``vector``, best first (cosine similarity); ``ef`` as in
        :meth:`query`."""
        plan = self._core.query_by_vector(vector, top_k, filter, namespace, include_embedding, ef)
        return await self._run(plan)

    async def get(self, cid: str, namespace: str | None = None) -> Record | None:
        """The whole record, or ``None`` when this CID is not stored in the namespace."""
        return await self._run(self._core.get(cid, namespace))

    async def list(
        self,
        limit: int = 100,
        offset: int = 0,
        namespace: str | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """A page of records in insertion order, only those matching ``filter`` when given."""
        return await self._run(self._core.list(limit, offset, namespace, filter))

    async def count(self, namespace: str | None = None) -> int:
        """Records in ``namespace``, or in the whole store when no namespace is given."""
        return await self._run(self._core.call(Count(namespace)))

    async def stats(self) -> dict[str, Any]:
        """Sizes and counters of the store (or node) behind this client."""
        return await self._run(self._core.call(Stats()))

    async def grant(
        self, hotkey: str, permission: str = "read", namespace: str | None = None
    ) -> dict[str, Any]:
        """Let ``hotkey`` read (or write) a namespace this client's hotkey owns.

        The first signed write, or this first grant, to an empty namespace
        makes the signer its owner. Returns the owner and grants.
        """
        return await self._run(self._core.set_grant(namespace, hotkey, permission, True))

    async def revoke(
        self, hotkey: str, permission: str = "read", namespace: str | None = None
    ) -> dict[str, Any]:
        """Take a grant back; the next request signed by ``hotkey`` is refused."""
        return await self._run(self._core.set_grant(namespace, hotkey, permission, False))

    async def namespace_info(self, namespace: str | None = None) -> dict[str, Any]:
        """Owner of a namespace (``None``: public) and, for its owner, the grants."""
        return await self._run(self._core.describe_namespace(namespace))

    async def health(self) -> dict[str, Any]:
        """Whether the store (or node) answers; ``ready`` is false while a node loads its model."""
        return await self._run(self._core.call(Health()))

    async def is_online(self) -> bool:
        """Whether the store (or node) answers and is ready; never raises for a node that is down."""
        try:
            return bool((await self.health())["ready"])
        except UpstreamError:
            return False

    async def close(self) -> None:
        """Close the store or the HTTP connections."""
        await self._transport.close()
        if self._signed_node is not None:
            self._signed_node.close()

    async def __aenter__(self) -> AsyncEngramClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncEngramClient({self.target.where!r}, namespace={self.namespace!r})"
