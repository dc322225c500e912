"""``engram mcp``: the memory API as an MCP server (stdio, or streamable HTTP with ``--http``)."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from engram.cli._client import open_async_client
from engram.cli._output import cli_errors, fail, stderr, usage_error
from engram.cli.options import (
    ChainOption,
    Connection,
    HomeOption,
    NamespaceOption,
    NetuidOption,
    SignerOption,
    UrlOption,
    WalletPathOption,
)
from engram.sdk._base import check_url

if TYPE_CHECKING:
    from engram.mcp.server import KeyedClients
    from engram.sdk import AsyncEngramClient

HttpOption = Annotated[
    bool,
    typer.Option(
        "--http", help="serve streamable HTTP (at /mcp) instead of stdio, for remote agents"
    ),
]
HostOption = Annotated[str, typer.Option(help="address to listen on with --http")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="TCP port with --http")]
ApiKeysOption = Annotated[
    bool,
    typer.Option(
        "--api-keys",
        help="with --http and --url GATEWAY: each caller sends its own gateway API key "
        "(Authorization: Bearer) and the tools act with it",
    ),
]


def mcp(
    url: UrlOption = None,
    home: HomeOption = None,
    chain: ChainOption = None,
    netuid: NetuidOption = None,
    namespace: NamespaceOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    http: HttpOption = False,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8765,
    api_keys: ApiKeysOption = False,
) -> None:
    """Serve the memory API to agents over MCP: memory_store, memory_search, memory_context,
    memory_update, memory_versions, memory_forget, memory_archive, memory_unarchive,
    memory_list, memory_links, and a resource engram://CID per memory. Embedded store by
    default; --url for one node, --chain for the whole network; --wallet signs (private namespaces); --api-keys lets
    each HTTP caller act with its own gateway API key."""

    from engram.mcp.server import KeyedClients, create_server

    if api_keys and not (http and url):
        usage_error("--api-keys needs --http and --url (the gateway that issued the keys)")
    if api_keys and wallet:
        usage_error("give --api-keys or --wallet, not both: with keys, each caller acts as its key")
    client: AsyncEngramClient | KeyedClients
    with cli_errors():
        if api_keys:
            assert url is not None
            client = KeyedClients(check_url(url), namespace, f"http://{host}:{port}/mcp")
            server = create_server(keyed=client)
        else:
            client = open_async_client(
                Connection(url, home, wallet, wallet_path), namespace, chain, netuid
            )
            server = create_server(client)
    try:
        if http:
            # uvicorn re-raises the SIGTERM it handled once it has stopped: end as Ctrl-C
            # does, so the store is closed (its index saved) below.
            signal.signal(signal.SIGTERM, _interrupt)
            stderr().print(f"engram mcp: streamable HTTP on http://{host}:{port}/mcp")
            server.run("streamable-http", host=host, port=port)
        else:
            server.run("stdio")
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn exits 3 when it cannot listen
        if exc.code not in (0, None):
            fail(f"cannot serve on {host}:{port}: is the port in use?")
        raise
    finally:
        if not isinstance(client, KeyedClients):  # an embedded store is closed (index saved)
            anyio.run(client.close)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
