"""``engram mcp``: the memory API as an MCP server (stdio, or streamable HTTP with ``--http``)."""

from __future__ import annotations

from typing import Annotated

import typer

from engram.cli._client import open_async_client
from engram.cli._output import cli_errors, stderr
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

HttpOption = Annotated[
    bool,
    typer.Option(
        "--http", help="serve streamable HTTP (at /mcp) instead of stdio, for remote agents"
    ),
]
HostOption = Annotated[str, typer.Option(help="address to listen on with --http")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="TCP port with --http")]


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
) -> None:
    """Serve the memory API to agents over MCP: memory_store, memory_search, memory_context,
    memory_update, memory_versions, memory_forget, memory_archive, memory_list, memory_links,
    and a resource engram://CID per memory. Embedded store by default; --url for one node,
    --chain for the whole network; --wallet signs (private namespaces)."""
    from engram.mcp.server import create_server

    with cli_errors():
        client = open_async_client(
            Connection(url, home, wallet, wallet_path), namespace, chain, netuid
        )
    server = create_server(client)
    try:
        if http:
            stderr().print(f"engram mcp: streamable HTTP on http://{host}:{port}/mcp")
            server.run("streamable-http", host=host, port=port)
        else:
            server.run("stdio")
    except KeyboardInterrupt:
        pass
    finally:
        import anyio

        anyio.run(client.close)
