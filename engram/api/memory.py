"""The memory API's calls (docs/memory.md): each one's HTTP codec, routes and in-process run.

They follow :class:`~engram.api.calls.Call` exactly as the node's own calls do,
so the one router serves them on the miner (over its store) and the gateway
(over the network), and the SDK's ``client.memory`` sends them over HTTP or
runs them in-process. The logic is :class:`~engram.memory.service.Memories`,
run on whichever node answers. The routes are the seed memory server's
(``/store``, ``/context``, ``/versions/{cid}``, ``/memory/{cid}/update|forget|
archive|unarchive``), with ``/memory/search`` and ``/memory/list`` because the
node's own ``/search`` and ``/list`` are record-level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from engram.api.calls import Call, Incoming, Route
from engram.api.exchange import HttpRequest, to_json
from engram.api.node import Node
from engram.api.wire import (
    DeleteResponse,
    LinksResponse,
    MemoriesResponse,
    MemoryContextRequest,
    MemoryListParams,
    MemorySearchRequest,
    MemoryStoreRequest,
    MemoryUpdateRequest,
    NamespaceParams,
    VersionsResponse,
)
from engram.cid import parse_cid
from engram.memory.model import Context, Link, Memory
from engram.memory.service import Memories
from engram.security.access import Caller
from engram.security.ratelimit import Budget


def _path(cid: str, tail: str = "") -> str:
    return "/memory/" + quote(cid, safe=":") + tail


def _query(namespace: str | None) -> dict[str, Any]:
    return {} if namespace is None else {"namespace": namespace}


def _memories(body: Any, key: str) -> list[Memory]:
    return [Memory.model_validate(m) for m in body[key]]


def _dump(memories: Sequence[Memory]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in memories]


@dataclass(frozen=True)
class StoreMemory(Call[Memory]):
    """Store a memory; a near-duplicate of an active one returns that one (``duplicate_of``)."""

    routes: ClassVar[tuple[Route, ...]] = tuple(
        Route("POST", path, Budget.INGEST, body=MemoryStoreRequest, response=Memory)
        for path in ("/store", "/memory/store")
    )
    content: str
    category: str | None = None
    importance: float | None = None
    tags: tuple[str, ...] = ()
    source: str | None = None
    ttl_s: float | None = None
    namespace: str | None = None

    def request(self) -> HttpRequest:
        doc = {
            "content": self.content,
            "category": self.category,
            "importance": self.importance,
            "tags": list(self.tags),
            "source": self.source,
            "ttl_s": self.ttl_s,
            "namespace": self.namespace,
        }
        return HttpRequest("POST", "/memory/store", body=to_json(doc))

    def parse(self, body: Any) -> Memory:
        return Memory.model_validate(body)

    def local(self, node: Node, caller: Caller | None = None) -> Memory:
        return Memories(node, caller).store(
            self.content,
            self.category,
            self.importance,
            self.tags,
            self.source,
            self.ttl_s,
            self.namespace,
        )

    @classmethod
    def from_request(cls, incoming: Incoming) -> StoreMemory:
        b = incoming.body
        return cls(
            b.content, b.category, b.importance, tuple(b.tags), b.source, b.ttl_s, b.namespace
        )

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return self.local(node, caller).model_dump()


@dataclass(frozen=True)
class SearchMemories(Call[list[Memory]]):
    """Active memories for a query, by relevance and strength; each one found is recalled."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", "/memory/search", body=MemorySearchRequest, response=MemoriesResponse),
    )
    query: str
    limit: int = 10
    filters: Mapping[str, Any] | None = None
    namespace: str | None = None

    def request(self) -> HttpRequest:
        doc = {
            "query": self.query,
            "limit": self.limit,
            "filters": None if self.filters is None else dict(self.filters),
            "namespace": self.namespace,
        }
        return HttpRequest("POST", "/memory/search", body=to_json(doc))

    def parse(self, body: Any) -> list[Memory]:
        return _memories(body, "memories")

    def local(self, node: Node, caller: Caller | None = None) -> list[Memory]:
        return Memories(node, caller).search(self.query, self.limit, self.filters, self.namespace)

    @classmethod
    def from_request(cls, incoming: Incoming) -> SearchMemories:
        b = incoming.body
        return cls(b.query, b.limit, b.filters, b.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return {"memories": _dump(self.local(node, caller))}


@dataclass(frozen=True)
class MemoryContext(Call[Context]):
    """A prompt-ready block of the best memories within a token budget."""

    routes: ClassVar[tuple[Route, ...]] = tuple(
        Route("POST", path, body=MemoryContextRequest, response=Context)
        for path in ("/context", "/memory/context")
    )
    query: str
    max_tokens: int
    namespace: str | None = None

    def request(self) -> HttpRequest:
        doc = {"query": self.query, "max_tokens": self.max_tokens, "namespace": self.namespace}
        return HttpRequest("POST", "/memory/context", body=to_json(doc))

    def parse(self, body: Any) -> Context:
        return Context.model_validate(body)

    def local(self, node: Node, caller: Caller | None = None) -> Context:
        return Memories(node, caller).context(self.query, self.max_tokens, self.namespace)

    @classmethod
    def from_request(cls, incoming: Incoming) -> MemoryContext:
        b = incoming.body
        return cls(b.query, b.max_tokens, b.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return self.local(node, caller).model_dump()


@dataclass(frozen=True)
class UpdateMemory(Call[Memory]):
    """A new version of a memory, superseding it; fields left out are carried over."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route(
            "POST", "/memory/{cid}/update", Budget.INGEST, body=MemoryUpdateRequest, response=Memory
        ),
    )
    cid: str
    content: str
    category: str | None = None
    importance: float | None = None
    tags: tuple[str, ...] | None = None
    source: str | None = None
    ttl_s: float | None = None
    namespace: str | None = None

    def __post_init__(self) -> None:
        parse_cid(self.cid)

    def request(self) -> HttpRequest:
        doc = {
            "content": self.content,
            "category": self.category,
            "importance": self.importance,
            "tags": None if self.tags is None else list(self.tags),
            "source": self.source,
            "ttl_s": self.ttl_s,
            "namespace": self.namespace,
        }
        return HttpRequest("POST", _path(self.cid, "/update"), body=to_json(doc))

    def parse(self, body: Any) -> Memory:
        return Memory.model_validate(body)

    def local(self, node: Node, caller: Caller | None = None) -> Memory:
        return Memories(node, caller).update(
            self.cid,
            self.content,
            self.category,
            self.importance,
            self.tags,
            self.source,
            self.ttl_s,
            self.namespace,
        )

    @classmethod
    def from_request(cls, incoming: Incoming) -> UpdateMemory:
        b = incoming.body
        tags = None if b.tags is None else tuple(b.tags)
        return cls(
            incoming.path["cid"],
            b.content,
            b.category,
            b.importance,
            tags,
            b.source,
            b.ttl_s,
            b.namespace,
        )

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return self.local(node, caller).model_dump()


@dataclass(frozen=True)
class _OneMemory(Call[Memory]):
    """A call on one memory named by its CID, answered with the memory as it now is."""

    cid: str
    namespace: str | None = None

    def __post_init__(self) -> None:
        parse_cid(self.cid)

    def parse(self, body: Any) -> Memory:
        return Memory.model_validate(body)

    @classmethod
    def from_request(cls, incoming: Incoming) -> _OneMemory:
        return cls(incoming.path["cid"], incoming.params.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return self.local(node, caller).model_dump()


def _change_route(action: str) -> tuple[Route, ...]:
    return (
        Route(
            "POST",
            f"/memory/{{cid}}/{action}",
            Budget.INGEST,
            params=NamespaceParams,
            response=Memory,
        ),
    )


@dataclass(frozen=True)
class _ChangeMemory(_OneMemory):
    action: ClassVar[str] = ""

    def request(self) -> HttpRequest:
        return HttpRequest("POST", _path(self.cid, f"/{self.action}"), _query(self.namespace))

    def local(self, node: Node, caller: Caller | None = None) -> Memory:
        change = getattr(Memories(node, caller), self.action)
        memory: Memory = change(self.cid, self.namespace)
        return memory


@dataclass(frozen=True)
class ForgetMemory(_ChangeMemory):
    """Hide a memory from search, context and listings for good."""

    action: ClassVar[str] = "forget"
    routes: ClassVar[tuple[Route, ...]] = _change_route("forget")


@dataclass(frozen=True)
class ArchiveMemory(_ChangeMemory):
    """Hide a memory from search and context; it stays listable as archived."""

    action: ClassVar[str] = "archive"
    routes: ClassVar[tuple[Route, ...]] = _change_route("archive")


@dataclass(frozen=True)
class UnarchiveMemory(_ChangeMemory):
    """Bring an archived memory back to search."""

    action: ClassVar[str] = "unarchive"
    routes: ClassVar[tuple[Route, ...]] = _change_route("unarchive")


@dataclass(frozen=True)
class GetMemory(_OneMemory):
    """One memory, with its lifecycle state."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/memory/{cid}", params=NamespaceParams, response=Memory),
    )

    def request(self) -> HttpRequest:
        return HttpRequest("GET", _path(self.cid), _query(self.namespace))

    def local(self, node: Node, caller: Caller | None = None) -> Memory:
        return Memories(node, caller).get(self.cid, self.namespace)


@dataclass(frozen=True)
class DeleteMemory(Call[None]):
    """Erase a memory's record."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route(
            "DELETE",
            "/memory/{cid}",
            Budget.INGEST,
            params=NamespaceParams,
            response=DeleteResponse,
        ),
    )
    cid: str
    namespace: str | None = None

    def __post_init__(self) -> None:
        parse_cid(self.cid)

    def request(self) -> HttpRequest:
        return HttpRequest("DELETE", _path(self.cid), _query(self.namespace))

    def parse(self, body: Any) -> None:
        return None

    def local(self, node: Node, caller: Caller | None = None) -> None:
        Memories(node, caller).delete(self.cid, self.namespace)

    @classmethod
    def from_request(cls, incoming: Incoming) -> DeleteMemory:
        return cls(incoming.path["cid"], incoming.params.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        self.local(node, caller)
        return {"cid": self.cid, "deleted": True}


@dataclass(frozen=True)
class MemoryVersions(Call[list[Memory]]):
    """Every version of a memory, oldest to newest."""

    routes: ClassVar[tuple[Route, ...]] = tuple(
        Route("GET", path, params=NamespaceParams, response=VersionsResponse)
        for path in ("/versions/{cid}", "/memory/{cid}/versions")
    )
    cid: str
    namespace: str | None = None

    def __post_init__(self) -> None:
        parse_cid(self.cid)

    def request(self) -> HttpRequest:
        return HttpRequest("GET", _path(self.cid, "/versions"), _query(self.namespace))

    def parse(self, body: Any) -> list[Memory]:
        return _memories(body, "versions")

    def local(self, node: Node, caller: Caller | None = None) -> list[Memory]:
        return Memories(node, caller).versions(self.cid, self.namespace)

    @classmethod
    def from_request(cls, incoming: Incoming) -> MemoryVersions:
        return cls(incoming.path["cid"], incoming.params.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return {"versions": _dump(self.local(node, caller))}


@dataclass(frozen=True)
class MemoryLinks(Call[list[Link]]):
    """The memories linked to one, both ways, typed (similar, updates, updated_by)."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/memory/{cid}/links", params=NamespaceParams, response=LinksResponse),
    )
    cid: str
    namespace: str | None = None

    def __post_init__(self) -> None:
        parse_cid(self.cid)

    def request(self) -> HttpRequest:
        return HttpRequest("GET", _path(self.cid, "/links"), _query(self.namespace))

    def parse(self, body: Any) -> list[Link]:
        return [Link.model_validate(link) for link in body["links"]]

    def local(self, node: Node, caller: Caller | None = None) -> list[Link]:
        return Memories(node, caller).links(self.cid, self.namespace)

    @classmethod
    def from_request(cls, incoming: Incoming) -> MemoryLinks:
        return cls(incoming.path["cid"], incoming.params.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return {"links": [link.model_dump() for link in self.local(node, caller)]}


@dataclass(frozen=True)
class ListMemories(Call[list[Memory]]):
    """Memories in one lifecycle state (or all), in the order they were stored."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/memory/list", params=MemoryListParams, response=MemoriesResponse),
    )
    category: str | None = None
    tags: tuple[str, ...] = ()
    state: str = "active"
    limit: int = 50
    offset: int = 0
    namespace: str | None = None
    _fields: ClassVar[tuple[str, ...]] = ("category", "state", "limit", "offset", "namespace")

    def request(self) -> HttpRequest:
        params: dict[str, Any] = {
            k: getattr(self, k) for k in self._fields if getattr(self, k) is not None
        }
        if self.tags:
            params["tags"] = list(self.tags)
        return HttpRequest("GET", "/memory/list", params)

    def parse(self, body: Any) -> list[Memory]:
        return _memories(body, "memories")

    def local(self, node: Node, caller: Caller | None = None) -> list[Memory]:
        return Memories(node, caller).list(
            self.category, self.tags, self.state, self.limit, self.offset, self.namespace
        )

    @classmethod
    def from_request(cls, incoming: Incoming) -> ListMemories:
        p = incoming.params
        return cls(p.category, tuple(p.tags), p.state, p.limit, p.offset, p.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return {"memories": _dump(self.local(node, caller))}


MEMORY_CALLS: tuple[type[Call[Any]], ...] = (
    StoreMemory,
    SearchMemories,
    MemoryContext,
    ListMemories,  # before GetMemory: /memory/list is not /memory/{cid}
    UpdateMemory,
    ForgetMemory,
    ArchiveMemory,
    UnarchiveMemory,
    GetMemory,
    DeleteMemory,
    MemoryVersions,
    MemoryLinks,
)
"""Every memory call; the router mounts them beside the node's own."""
