"""The memory API as MCP tools, over any client mode (embedded, one node, the network).

Each tool mirrors a ``client.memory`` method argument for argument and answers
with the same JSON as structured content (and as text, for hosts that read
only text). Engram's errors become tool errors carrying their message, so an
agent reads what to fix instead of the session failing. Every memory is also a
resource, ``engram://<cid>``.

Served over HTTP in front of a gateway (``engram mcp --http --url GATEWAY
--api-keys``), every request carries its caller's own gateway API key, and
the tools act with it (:class:`KeyedClients`).
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp_types import ToolAnnotations
from pydantic import AnyHttpUrl

from engram._version import __version__
from engram.config import MCP_MAX_KEYED_CLIENTS
from engram.errors import EngramError, InvalidRequestError, NotFoundError, UnauthorizedError
from engram.memory.model import Context, Link, Memory
from engram.sdk.async_client import AsyncEngramClient
from engram.sdk.memory import AsyncMemoryClient

P = ParamSpec("P")
T = TypeVar("T")

INSTRUCTIONS = (
    "Long-term memory. Store facts worth keeping with memory_store; before answering, "
    "recall with memory_search or memory_context (a prompt-ready block within a token "
    "budget). When a fact changes, memory_update it (the old version is kept in "
    "memory_versions); memory_forget what the user wants forgotten."
)
_READ = ToolAnnotations(read_only_hint=False, idempotent_hint=False)  # a recall is recorded
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False)


def _tool_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Engram's errors as tool errors that keep their message."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except EngramError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from exc

    return wrapper


class KeyedClients:
    """One client per gateway API key, for an HTTP server whose callers each bring their own
    key (``Authorization: Bearer``): the key is checked with the gateway and every tool call
    acts with the caller's key, so it can do exactly what the key allows. The clients live on
    the server's event loop; their connections end with it."""

    def __init__(self, gateway_url: str, namespace: str | None, mcp_url: str) -> None:
        self.gateway_url = gateway_url
        self.namespace = namespace
        self.mcp_url = mcp_url
        self._clients: OrderedDict[str, AsyncEngramClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self, key: str) -> AsyncEngramClient:
        client = self._clients.pop(key, None)
        if client is None:
            client = AsyncEngramClient(self.gateway_url, namespace=self.namespace, api_key=key)
        self._clients[key] = client  # the most recently used last
        while len(self._clients) > MCP_MAX_KEYED_CLIENTS:
            _, old = self._clients.popitem(last=False)
            closing = asyncio.get_running_loop().create_task(old.close())
            self._closing.add(closing)  # held until done: the loop keeps only weak references
            closing.add_done_callback(self._closing.discard)
        return client

    async def verify_token(self, token: str) -> AccessToken | None:
        """The key as the gateway knows it now, or ``None`` (a 401) for a bad or revoked one."""
        try:
            key = await self._client(token).keys.current()
        except EngramError:
            refused = self._clients.pop(token, None)
            if refused is not None:
                await refused.close()
            return None
        return AccessToken(
            token=token, client_id=key.id, scopes=list(key.scopes), resource=self.mcp_url
        )

    def memory(self) -> AsyncMemoryClient:
        """The memories of the key that authenticated the current request."""
        token = get_access_token()
        if token is None:
            raise UnauthorizedError("send a gateway API key as Authorization: Bearer <key>")
        return self._client(token.token).memory

    def auth(self) -> AuthSettings:
        return AuthSettings(
            issuer_url=AnyHttpUrl(self.gateway_url),
            resource_server_url=AnyHttpUrl(self.mcp_url),
            validate_token_resource=True,
        )


def create_server(
    client: AsyncEngramClient | None = None, keyed: KeyedClients | None = None
) -> MCPServer[Any]:
    """An MCP server whose tools act on ``client``'s memories (its mode and namespace), or,
    with ``keyed``, on those the API key of each HTTP request opens."""
    if (client is None) == (keyed is None):
        raise ValueError("give a client or keyed clients")
    server: MCPServer[Any] = MCPServer(
        "engram",
        instructions=INSTRUCTIONS,
        version=__version__,
        website_url=None,
        token_verifier=keyed,
        auth=keyed.auth() if keyed is not None else None,
    )
    memory: Callable[[], AsyncMemoryClient] = (
        (lambda: client.memory) if client is not None else keyed.memory  # type: ignore[union-attr]
    )

    @server.tool(annotations=_WRITE)
    @_tool_errors
    async def memory_store(
        content: str,
        category: str | None = None,
        importance: float | None = None,
        tags: list[str] | None = None,
        source: str | None = None,
        ttl_s: float | None = None,
    ) -> Memory:
        """Store a memory. A near-duplicate of an active memory is not stored again: that
        memory is returned with duplicate_of set. importance is 0..1 (default 0.5);
        ttl_s makes it expire after that many seconds."""
        return await memory().store(content, category, importance, tags or (), source, ttl_s)

    @server.tool(annotations=_READ)
    @_tool_errors
    async def memory_search(
        query: str, limit: int = 10, filters: dict[str, Any] | None = None
    ) -> list[Memory]:
        """Active memories relevant to query, best first (meaning and keywords, weighted by
        how strong each memory is). filters match metadata, e.g. {"category": "preference"}."""
        return await memory().search(query, limit, filters)

    @server.tool(annotations=_READ)
    @_tool_errors
    async def memory_context(query: str, max_tokens: int) -> Context:
        """The memories most relevant to query as one dated block of at most max_tokens
        tokens, ready for a prompt, with the CIDs of the memories used."""
        return await memory().context(query, max_tokens)

    @server.tool(annotations=_WRITE)
    @_tool_errors
    async def memory_update(
        cid: str,
        content: str,
        category: str | None = None,
        importance: float | None = None,
        tags: list[str] | None = None,
        source: str | None = None,
        ttl_s: float | None = None,
    ) -> Memory:
        """Replace a memory's content with a new version that supersedes it; fields left
        out are carried over. Returns the new memory (a new CID)."""
        return await memory().update(cid, content, category, importance, tags, source, ttl_s)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    @_tool_errors
    async def memory_versions(cid: str) -> list[Memory]:
        """Every version of a memory, oldest to newest, each with its state."""
        return await memory().versions(cid)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    @_tool_errors
    async def memory_forget(cid: str) -> Memory:
        """Forget a memory: it no longer appears in search, context or lists."""
        return await memory().forget(cid)

    @server.tool(annotations=_WRITE)
    @_tool_errors
    async def memory_archive(cid: str) -> Memory:
        """Archive a memory: hidden from search and context, still listed as archived."""
        return await memory().archive(cid)

    @server.tool(annotations=_WRITE)
    @_tool_errors
    async def memory_unarchive(cid: str) -> Memory:
        """Bring an archived memory back into search and context."""
        return await memory().unarchive(cid)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    @_tool_errors
    async def memory_list(
        category: str | None = None,
        tags: list[str] | None = None,
        limit: int = 50,
        offset: int = 0,
        state: str = "active",
    ) -> list[Memory]:
        """Memories in the order they were stored: by category, by tags (any of them), and
        by state (active, archived, forgotten, expired, superseded or all)."""
        return await memory().list(category, tags or (), state, limit, offset)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    @_tool_errors
    async def memory_links(cid: str) -> list[Link]:
        """Memories linked to this one: similar ones, and the versions it updates or that
        update it."""
        return await memory().links(cid)

    @server.resource("engram://{cid}", mime_type="application/json")
    async def memory_resource(cid: str) -> str:
        """One memory, with its state."""
        try:
            return (await memory().get(cid)).model_dump_json()
        except (NotFoundError, InvalidRequestError) as exc:
            raise ResourceNotFoundError(f"{exc.code}: {exc.message}") from exc
        except EngramError as exc:
            raise ResourceError(f"{exc.code}: {exc.message}") from exc

    return server
