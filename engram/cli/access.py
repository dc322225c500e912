"""Grant and revoke: share a private namespace your wallet owns with other hotkeys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from engram.cli._client import open_client
from engram.cli._output import cli_errors, print_json, stdout, usage_error
from engram.cli.options import (
    Connection,
    HomeOption,
    JsonOption,
    NamespaceOption,
    PermissionOption,
    SignerOption,
    UrlOption,
    WalletPathOption,
)


def _set_grant(
    granted: bool,
    hotkey: str,
    permission: str,
    namespace: str | None,
    conn: Connection,
    json_output: bool,
) -> None:
    if namespace is None:
        usage_error("name the private namespace with --namespace")
    with cli_errors(), open_client(conn) as client:
        change = client.grant if granted else client.revoke
        info = change(hotkey, permission, namespace=namespace)
    if json_output:
        print_json(info)
        return
    out = stdout()
    out.print(f"namespace {escape(info['namespace'])} · owner {escape(str(info['owner']))}")
    for g in info["grants"]:
        out.print(f"  {escape(g['hotkey'])}  {g['permission']}")


def grant(
    hotkey: Annotated[str, typer.Argument(help="the SS58 hotkey to let in")],
    permission: PermissionOption = "read",
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Let another hotkey read or write a namespace your wallet owns (shared agent memory)."""
    conn = Connection(url, home, wallet, wallet_path)
    _set_grant(True, hotkey, permission, namespace, conn, json_output)


def revoke(
    hotkey: Annotated[str, typer.Argument(help="the SS58 hotkey to shut out")],
    permission: PermissionOption = "read",
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Take back a grant; it takes effect on the next request."""
    conn = Connection(url, home, wallet, wallet_path)
    _set_grant(False, hotkey, permission, namespace, conn, json_output)
