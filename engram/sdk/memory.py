"""``client.memory``: the agent-memory API (docs/memory.md) in every mode, sync and async.

Each method sends its call (:mod:`engram.api.memory`) through the client's
transport: over HTTP a miner or gateway runs it, embedded or on the network it
runs here (:class:`~engram.memory.service.Memories`). One line per method and
twin; the logic is in the service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from engram.api.calls import Call
from engram.api.memory import (
    ArchiveMemory,
    DeleteMemory,
    ForgetMemory,
    GetMemory,
    ListMemories,
    MemoryContext,
    MemoryLinks,
    MemoryVersions,
    SearchMemories,
    StoreMemory,
    UnarchiveMemory,
    UpdateMemory,
)
from engram.errors import InvalidRequestError
from engram.memory.model import Context, Link, Memory


def _check_unsealed(sealed: bool) -> None:
    if sealed:
        raise InvalidRequestError(
            "the memory API searches and packs readable text: use a client without seal_key"
        )


def _tags(tags: Sequence[str] | None) -> tuple[str, ...] | None:
    if isinstance(tags, str):
        raise InvalidRequestError("tags must be a list of strings, not one string")
    return None if tags is None else tuple(tags)


class MemoryClient:
    """Memories of an :class:`~engram.sdk.client.EngramClient` (see its ``memory``)."""

    def __init__(self, run: Callable[[Call[Any]], Any], sealed: bool = False) -> None:
        _check_unsealed(sealed)
        self._run = run

    def store(
        self,
        content: str,
        category: str | None = None,
        importance: float | None = None,
        tags: Sequence[str] = (),
        source: str | None = None,
        ttl_s: float | None = None,
        namespace: str | None = None,
    ) -> Memory:
        """Store a memory; a near-duplicate of an active one returns that one instead
        (``duplicate_of`` set). ``ttl_s``: seconds until it expires."""
        call = StoreMemory(
            content, category, importance, _tags(tags) or (), source, ttl_s, namespace
        )
        result: Memory = self._run(call)
        return result

    def search(
        self,
        query: str,
        limit: int = 10,
        filters: Mapping[str, Any] | None = None,
        namespace: str | None = None,
    ) -> list[Memory]:
        """Active memories for ``query`` (hybrid search weighted by memory strength)."""
        result: list[Memory] = self._run(SearchMemories(query, limit, filters, namespace))
        return result

    def context(self, query: str, max_tokens: int, namespace: str | None = None) -> Context:
        """The best memories as one prompt-ready block within ``max_tokens``, and their CIDs."""
        result: Context = self._run(MemoryContext(query, max_tokens, namespace))
        return result

    def update(
        self,
        cid: str,
        content: str,
        category: str | None = None,
        importance: float | None = None,
        tags: Sequence[str] | None = None,
        source: str | None = None,
        ttl_s: float | None = None,
        namespace: str | None = None,
    ) -> Memory:
        """A new version that supersedes ``cid``; fields not given are carried over."""
        call = UpdateMemory(
            cid, content, category, importance, _tags(tags), source, ttl_s, namespace
        )
        result: Memory = self._run(call)
        return result

    def versions(self, cid: str, namespace: str | None = None) -> list[Memory]:
        """Every version of the memory, oldest to newest."""
        result: list[Memory] = self._run(MemoryVersions(cid, namespace))
        return result

    def get(self, cid: str, namespace: str | None = None) -> Memory:
        result: Memory = self._run(GetMemory(cid, namespace))
        return result

    def forget(self, cid: str, namespace: str | None = None) -> Memory:
        """Hide the memory from search, context and listings for good."""
        result: Memory = self._run(ForgetMemory(cid, namespace))
        return result

    def archive(self, cid: str, namespace: str | None = None) -> Memory:
        """Hide the memory from search and context; it stays listable."""
        result: Memory = self._run(ArchiveMemory(cid, namespace))
        return result

    def unarchive(self, cid: str, namespace: str | None = None) -> Memory:
        result: Memory = self._run(UnarchiveMemory(cid, namespace))
        return result

    def delete(self, cid: str, namespace: str | None = None) -> None:
        """Erase the memory's record."""
        self._run(DeleteMemory(cid, namespace))

    def links(self, cid: str, namespace: str | None = None) -> list[Link]:
        """Memories linked to this one: similar, updates, updated_by."""
        result: list[Link] = self._run(MemoryLinks(cid, namespace))
        return result

    def list(
        self,
        category: str | None = None,
        tags: Sequence[str] = (),
        state: str = "active",
        limit: int = 50,
        offset: int = 0,
        namespace: str | None = None,
    ) -> list[Memory]:
        """Memories in ``state`` (``"all"`` for every one) in the order they were stored."""
        call = ListMemories(category, _tags(tags) or (), state, limit, offset, namespace)
        result: list[Memory] = self._run(call)
        return result


class AsyncMemoryClient:
    """Memories of an :class:`~engram.sdk.async_client.AsyncEngramClient`."""

    def __init__(self, run: Callable[[Call[Any]], Awaitable[Any]], sealed: bool = False) -> None:
        _check_unsealed(sealed)
        self._run = run

    async def store(
        self,
        content: str,
        category: str | None = None,
        importance: float | None = None,
        tags: Sequence[str] = (),
        source: str | None = None,
        ttl_s: float | None = None,
        namespace: str | None = None,
    ) -> Memory:
        call = StoreMemory(
            content, category, importance, _tags(tags) or (), source, ttl_s, namespace
        )
        result: Memory = await self._run(call)
        return result

    async def search(
        self,
        query: str,
        limit: int = 10,
        filters: Mapping[str, Any] | None = None,
        namespace: str | None = None,
    ) -> list[Memory]:
        result: list[Memory] = await self._run(SearchMemories(query, limit, filters, namespace))
        return result

    async def context(self, query: str, max_tokens: int, namespace: str | None = None) -> Context:
        result: Context = await self._run(MemoryContext(query, max_tokens, namespace))
        return result

    async def update(
        self,
        cid: str,
        content: str,
        category: str | None = None,
        importance: float | None = None,
        tags: Sequence[str] | None = None,
        source: str | None = None,
        ttl_s: float | None = None,
        namespace: str | None = None,
    ) -> Memory:
        call = UpdateMemory(
            cid, content, category, importance, _tags(tags), source, ttl_s, namespace
        )
        result: Memory = await self._run(call)
        return result

    async def versions(self, cid: str, namespace: str | None = None) -> list[Memory]:
        result: list[Memory] = await self._run(MemoryVersions(cid, namespace))
        return result

    async def get(self, cid: str, namespace: str | None = None) -> Memory:
        result: Memory = await self._run(GetMemory(cid, namespace))
        return result

    async def forget(self, cid: str, namespace: str | None = None) -> Memory:
        result: Memory = await self._run(ForgetMemory(cid, namespace))
        return result

    async def archive(self, cid: str, namespace: str | None = None) -> Memory:
        result: Memory = await self._run(ArchiveMemory(cid, namespace))
        return result

    async def unarchive(self, cid: str, namespace: str | None = None) -> Memory:
        result: Memory = await self._run(UnarchiveMemory(cid, namespace))
        return result

    async def delete(self, cid: str, namespace: str | None = None) -> None:
        await self._run(DeleteMemory(cid, namespace))

    async def links(self, cid: str, namespace: str | None = None) -> list[Link]:
        result: list[Link] = await self._run(MemoryLinks(cid, namespace))
        return result

    async def list(
        self,
        category: str | None = None,
        tags: Sequence[str] = (),
        state: str = "active",
        limit: int = 50,
        offset: int = 0,
        namespace: str | None = None,
    ) -> list[Memory]:
        call = ListMemories(category, _tags(tags) or (), state, limit, offset, namespace)
        result: list[Memory] = await self._run(call)
        return result
