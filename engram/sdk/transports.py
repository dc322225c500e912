"""Transports: the only parts of the client that do I/O.

Each one answers a :class:`~engram.api.calls.Call` and knows nothing of the
client's logic. The in-process ones run the call on a node (the embedded
:class:`~engram.node.local.LocalNode` or the whole network's
:class:`~engram.network.node.NetworkNode`; the async ones in a worker thread,
since both block); the HTTP ones send the requests
:func:`~engram.api.exchange.exchange` asks for and sleep when it says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from engram._version import __version__
from engram.api.calls import HTTP_BATCH_LIMITS, BatchLimits, Call
from engram.api.exchange import (
    HttpReply,
    HttpRequest,
    Sleep,
    exchange,
    perform_async,
    perform_sync,
    run_async,
    run_sync,
)
from engram.errors import InvalidRequestError
from engram.network.client import ReadReport, WriteReport
from engram.network.node import NetworkNode
from engram.node.local import LocalNode
from engram.sdk._base import Target
from engram.security.access import OPERATOR, Caller
from engram.security.signing import HotkeyAuth, signer_hotkey

T = TypeVar("T")
_HEADERS = {"user-agent": f"engram-sdk/{__version__}", "accept": "application/json"}


def _local_node(target: Target) -> LocalNode:
    # Without a key the process owns its files and may do anything; with one it obeys
    # the namespace rules as that hotkey, exactly as a miner would make it.
    caller = OPERATOR if target.signer is None else Caller(hotkey=signer_hotkey(target.signer))
    return LocalNode.open(target.path, target.embedder, caller=caller)


def _client_kwargs(target: Target) -> dict[str, Any]:
    # Per-request timeout (connect, read, write and pool each); retries are ours, not httpx's.
    # A signer signs each attempt afresh: a retry is a new request, never a replay.
    auth = HotkeyAuth(target.signer) if target.signer is not None else None
    key = target.config.api_key
    return {
        "base_url": target.url,
        "timeout": target.config.timeout_s,
        "headers": {**_HEADERS, "authorization": f"Bearer {key.strip()}"} if key else _HEADERS,
        "auth": auth,
    }


class LocalTransport:
    """The embedded store, called directly."""

    limits = BatchLimits()  # one transaction per batch, as the embedded mode always did

    def __init__(self, target: Target) -> None:
        self.node = _local_node(target)

    def execute(self, call: Call[T]) -> T:
        return call.local(self.node)

    def close(self) -> None:
        self.node.close()


class AsyncLocalTransport:
    """The embedded store, called from a worker thread so the event loop never blocks."""

    limits = BatchLimits()

    def __init__(self, target: Target) -> None:
        self.node = _local_node(target)

    async def execute(self, call: Call[T]) -> T:
        return await asyncio.to_thread(call.local, self.node)

    async def close(self) -> None:
        await asyncio.to_thread(self.node.close)


class NetworkTransport:
    """The whole network: routing, replication and scatter-gather (docs/architecture.md, "Routing and replication")."""

    limits = HTTP_BATCH_LIMITS  # every replica is a node with a node's limits

    def __init__(self, target: Target) -> None:
        assert target.network is not None
        self.node = NetworkNode(
            target.network, target.embedder, verify=target.verify, signer=target.signer
        )

    @property
    def report(self) -> list[WriteReport] | ReadReport | None:
        return self.node.report

    def execute(self, call: Call[T]) -> T:
        return call.local(self.node)

    def close(self) -> None:
        self.node.close()


class AsyncNetworkTransport(NetworkTransport):
    """The network from async code; the backend runs on its own event loop thread."""

    async def execute(self, call: Call[T]) -> T:  # type: ignore[override]
        return await asyncio.to_thread(call.local, self.node)

    async def close(self) -> None:  # type: ignore[override]
        await asyncio.to_thread(self.node.close)


class HttpTransport:
    """One node over HTTP with a pooled ``httpx.Client``."""

    limits = HTTP_BATCH_LIMITS

    def __init__(self, target: Target) -> None:
        assert target.url is not None
        self.url, self.config = target.url, target.config
        self._http = httpx.Client(**_client_kwargs(target))

    def execute(self, call: Call[T]) -> T:
        return run_sync(exchange(call, self.url, self.config), self._perform)

    def _perform(self, step: HttpRequest | Sleep) -> HttpReply | Exception | None:
        return perform_sync(self._http, step)

    def close(self) -> None:
        self._http.close()


class AsyncHttpTransport:
    """One node over HTTP with a pooled ``httpx.AsyncClient``."""

    limits = HTTP_BATCH_LIMITS

    def __init__(self, target: Target) -> None:
        assert target.url is not None
        self.url, self.config = target.url, target.config
        self._http = httpx.AsyncClient(**_client_kwargs(target))

    async def execute(self, call: Call[T]) -> T:
        return await run_async(exchange(call, self.url, self.config), self._perform)

    async def _perform(self, step: HttpRequest | Sleep) -> HttpReply | Exception | None:
        return await perform_async(self._http, step)

    async def close(self) -> None:
        await self._http.aclose()


def open_transport(target: Target) -> LocalTransport | HttpTransport | NetworkTransport:
    if target.network is not None:
        return NetworkTransport(target)
    return LocalTransport(target) if target.url is None else HttpTransport(target)


def open_async_transport(
    target: Target,
) -> AsyncLocalTransport | AsyncHttpTransport | AsyncNetworkTransport:
    if target.network is not None:
        return AsyncNetworkTransport(target)
    return AsyncLocalTransport(target) if target.url is None else AsyncHttpTransport(target)


class JsonlFile:
    """An ingest file's lines, with a progress bar on stderr (bytes read, ok, failed)."""

    def __init__(self, path: str | Path, progress: bool) -> None:
        self._file = Path(path)
        if not self._file.is_file():
            raise InvalidRequestError(f"{self._file} is not a file")
        self.path = str(self._file)
        self._bar = Progress(
            TextColumn("[bold]ingest[/] {task.fields[name]}"),
            BarColumn(),
            TextColumn(
                "{task.percentage:>3.0f}% · {task.fields[ok]} ok · {task.fields[bad]} failed"
            ),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not progress,
        )

    def __enter__(self) -> JsonlFile:
        self._fh = self._file.open("rb")
        self._bar.start()
        self._task = self._bar.add_task(
            "ingest", total=self._file.stat().st_size, name=self._file.name, ok=0, bad=0
        )
        return self

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._fh)

    def progress(self, ok: int, bad: int) -> None:
        self._bar.update(self._task, completed=self._fh.tell(), ok=ok, bad=bad)

    def __exit__(self, *exc: object) -> None:
        try:
            self._bar.stop()
        finally:
            self._fh.close()
