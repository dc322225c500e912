"""``EngramClient``: one API whether the store is in-process or one node over HTTP.

Every method only hands a plan from :class:`~engram.sdk._base.ClientCore` to
its transport; the logic lives in ``_base`` so the async twin cannot drift.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from engram.api.calls import Count, Delete, Health, Search, Stats
from engram.api.exchange import run_sync
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
from engram.sdk.keys import KeysClient
from engram.sdk.memory import MemoryClient
from engram.sdk.remote import RemoteNode
from engram.sdk.sealer import Sealer, sealer_for
from engram.sdk.transports import HttpTransport, JsonlFile, open_transport
from engram.security.sealing import SealKey

T = TypeVar("T")


class EngramClient:
    """Semantic memory: ingest text or vectors, query by meaning.

    ``EngramClient()`` opens the embedded store under ``ENGRAM_HOME`` (default
    ``~/.engram``), ``EngramClient(path=DIR)`` one at ``DIR``, and
    ``EngramClient("http://host:8091")`` talks to a node (a miner or gateway)
    with per-request timeouts and retries. Every mode returns the same types
    and raises the same exceptions.

    ``wallet=`` (a bittensor Wallet) or ``keypair=`` signs every request with
    that hotkey: needed to delete, and to use a private namespace (the first
    signed write to an empty namespace makes the signer its owner; see
    :meth:`grant`). ``seal_key=`` seals text and metadata on this side before
    they leave (``clear_fields`` stay readable and filterable; ``noise_sigma``
    blurs the embeddings, which otherwise stay in clear for search).
    ``api_key=`` (or ``ENGRAM_API_KEY``) is a gateway's key: the gateway acts for the key's
    owner within its namespaces and scopes; :attr:`keys` makes and revokes them.

    ``miner_url=`` and ``timeout=`` are the original SDK's names for ``url`` and
    ``timeout_s``, accepted so code written for it runs unchanged.
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
        self._transport = open_transport(target)
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
    ) -> EngramClient:
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
    def from_subnet(
        cls,
        netuid: int = 450,
        network: str = "test",
        *,
        top_n: int = PROBE_TOP_N,
        probe_timeout: float = PROBE_TIMEOUT_S,
        **options: Any,
    ) -> EngramClient:
        """The original SDK's entry point: :meth:`from_network` on the Bittensor ``network``.

        ``network`` is ``test`` (the testnet, where the original network runs as
        netuid 450), ``finney`` or a ``ws://`` endpoint, or any chain :meth:`from_network`
        takes; ``options`` are its keyword arguments. The ``top_n`` best serving miners
        (by incentive, then stake) are probed first: an
        :class:`~engram.errors.UnavailableError` when none answers ``/health`` within
        ``probe_timeout`` seconds.
        """
        from engram.network.survey import check_top_miners
        from engram.sdk.transports import NetworkTransport

        client = cls.from_network(network, netuid, **options)
        transport = client._transport
        assert isinstance(transport, NetworkTransport)
        try:
            transport.node.run(check_top_miners(transport.node.network, top_n, probe_timeout))
        except BaseException:
            client.close()
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
    def memory(self) -> MemoryClient:
        """The agent-memory API (store, search, context, update, versions, forget, archive,
        list, links) in this client's mode and namespace."""
        sealed = self._core.sealer is not None
        if isinstance(self._transport, HttpTransport) and self.target.signer is not None:
            # Composed here from signed node operations, which a gateway relays with the
            # signature intact (it cannot sign the steps of a memory call for the user).
            node = RemoteNode.over(self._transport)
            return MemoryClient(lambda call: self._core.named(call).local(node), sealed)
        return MemoryClient(lambda call: self._run(self._core.call(call)), sealed)

    @functools.cached_property
    def keys(self) -> KeysClient:
        """The API keys of the gateway this client talks to (make, list, rotate, revoke)."""
        if not isinstance(self._transport, HttpTransport):
            raise InvalidRequestError(
                "API keys are a gateway's: open the client with the gateway's url"
            )
        return KeysClient(self._transport.execute)

    def _run(self, plan: Plan[T]) -> T:
        return run_sync(plan, self._transport.execute)

    # --- writes --------------------------------------------------------------------------

    def ingest(
        self, text: str, metadata: Mapping[str, Any] | None = None, namespace: str | None = None
    ) -> str:
        """Embed ``text`` with the canonical model and store it; returns its CID."""
        return self._run(self._core.ingest(text, metadata, namespace))

    def ingest_embedding(
        self,
        vector: Sequence[float] | np.ndarray,
        metadata: Mapping[str, Any] | None = None,
        text: str | None = None,
        namespace: str | None = None,
    ) -> str:
        """Store a vector you computed (optionally with its text); returns its CID."""
        return self._run(self._core.ingest_embedding(vector, metadata, text, namespace))

    def batch_ingest(
        self, items: Iterable[Mapping[str, Any] | IngestItem], namespace: str | None = None
    ) -> BatchResult:
        """Ingest many items (``{"text" | "embedding", "metadata"?}``); bad items don't stop good ones.

        ``result.failed`` lists the failures with their messages. Over HTTP the
        batch is split to fit the node's limits (1000 items, 10 MiB a request).
        """
        return self._run(self._core.batch_ingest(items, namespace))

    def batch_ingest_file(
        self,
        path: str | Path,
        namespace: str | None = None,
        batch_size: int = FILE_BATCH_ITEMS,
        progress: bool = True,
    ) -> FileIngestReport:
        """Ingest a JSONL file (one item a line); a bad line is reported, not fatal."""
        with JsonlFile(path, progress) as lines:
            return self._run(self._core.batch_ingest_file(lines, namespace, batch_size))

    def delete(self, cid: str, namespace: str | None = None) -> None:
        """Delete a record; raises :class:`~engram.errors.NotFoundError` if it is not there."""
        return self._run(self._core.call(Delete(cid, namespace)))

    # --- reads ---------------------------------------------------------------------------

    def query(
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
        return self._run(plan)

    def search(
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
        return self._run(self._core.search(call))

    def query_by_vector(
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
        return self._run(plan)

    def get(self, cid: str, namespace: str | None = None) -> Record | None:
        """The whole record, or ``None`` when this CID is not stored in the namespace."""
        return self._run(self._core.get(cid, namespace))

    def list(
        self,
        limit: int = 100,
        offset: int = 0,
        namespace: str | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """A page of records in insertion order, only those matching ``filter`` when given."""
        return self._run(self._core.list(limit, offset, namespace, filter))

    def count(self, namespace: str | None = None) -> int:
        """Records in ``namespace``, or in the whole store when no namespace is given."""
        return self._run(self._core.call(Count(namespace)))

    def stats(self) -> dict[str, Any]:
        """Sizes and counters of the store (or node) behind this client."""
        return self._run(self._core.call(Stats()))

    def grant(
        self, hotkey: str, permission: str = "read", namespace: str | None = None
    ) -> dict[str, Any]:
        """Let ``hotkey`` read (or write) a namespace this client's hotkey owns.

        The first signed write, or this first grant, to an empty namespace
        makes the signer its owner. Returns the owner and grants.
        """
        return self._run(self._core.set_grant(namespace, hotkey, permission, True))

    def revoke(
        self, hotkey: str, permission: str = "read", namespace: str | None = None
    ) -> dict[str, Any]:
        """Take a grant back; the next request signed by ``hotkey`` is refused."""
        return self._run(self._core.set_grant(namespace, hotkey, permission, False))

    def namespace_info(self, namespace: str | None = None) -> dict[str, Any]:
        """Owner of a namespace (``None``: public) and, for its owner, the grants."""
        return self._run(self._core.describe_namespace(namespace))

    def health(self) -> dict[str, Any]:
        """Whether the store (or node) answers; ``ready`` is false while a node loads its model."""
        return self._run(self._core.call(Health()))

    def is_online(self) -> bool:
        """Whether the store (or node) answers and is ready; never raises for a node that is down."""
        try:
            return bool(self.health()["ready"])
        except UpstreamError:
            return False

    def close(self) -> None:
        """Close the store or the HTTP connections."""
        self._transport.close()

    def __enter__(self) -> EngramClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EngramClient({self.target.where!r}, namespace={self.namespace!r})"
