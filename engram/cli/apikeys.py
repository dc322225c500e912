"""``engram keys``: a gateway's API keys, made and revoked by the namespace owner's wallet."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from engram.api.keys import KeyInfo, KeySecret
from engram.cli._client import open_client
from engram.cli._output import cli_errors, print_json, stderr, stdout
from engram.cli.options import Connection, JsonOption, SignerOption, UrlOption, WalletPathOption

app = typer.Typer(
    help="API keys of a gateway: let an agent act in your namespaces without your hotkey.",
    no_args_is_help=True,
)

ScopeOption = Annotated[
    list[str],
    typer.Option("--scope", "-s", help="read, write or admin; repeat for several"),
]

KeyIdArgument = Annotated[str, typer.Argument(help="the key's id (ek_<id>_...)")]


def _connection(url: str | None, wallet: str | None, wallet_path: WalletPathOption) -> Connection:
    return Connection(url, None, wallet, wallet_path)


def _show(key: KeyInfo) -> None:
    revoked = " [red]revoked[/red]" if key.revoked_at else ""
    stdout().print(
        f"{escape(key.id)}  {','.join(key.scopes)}  {escape(', '.join(key.namespaces))}"
        f"  {escape(key.label)}{revoked}"
    )


def _print(key: KeyInfo, json_output: bool) -> None:
    """One key; a new secret (make, rotate) below it, once, with a word on keeping it."""
    if json_output:
        print_json(key.model_dump())
        return
    _show(key)
    if isinstance(key, KeySecret):
        stdout().print(key.api_key, soft_wrap=True, highlight=False)
        stderr().print("Keep this key secret: it is shown once (rotate or revoke it by its id).")


@app.command("create")
def create(
    namespaces: Annotated[list[str], typer.Argument(help="namespaces the key opens")],
    scope: ScopeOption = ["read"],  # noqa: B006 - typer reads the default
    label: Annotated[str, typer.Option(help="a note to tell your keys apart")] = "",
    url: UrlOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make a key over namespaces your wallet owns (grant the gateway's hotkey first)."""
    with cli_errors(), open_client(_connection(url, wallet, wallet_path)) as client:
        key = client.keys.create(namespaces, scope, label)
    _print(key, json_output)


@app.command("list")
def list_keys(
    url: UrlOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your keys on the gateway, revoked ones included (never their secrets)."""
    with cli_errors(), open_client(_connection(url, wallet, wallet_path)) as client:
        keys = client.keys.list()
    if json_output:
        print_json([k.model_dump() for k in keys])
        return
    table = Table("id", "scopes", "namespaces", "label", "state")
    for k in keys:
        state = "revoked" if k.revoked_at else ("rotated" if k.rotated_at else "active")
        table.add_row(k.id, ",".join(k.scopes), ", ".join(k.namespaces), k.label, state)
    stdout().print(table)


@app.command("rotate")
def rotate(
    key_id: KeyIdArgument,
    url: UrlOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """A new secret for a key; the old one is refused from the next request on."""
    with cli_errors(), open_client(_connection(url, wallet, wallet_path)) as client:
        key = client.keys.rotate(key_id)
    _print(key, json_output)


@app.command("revoke")
def revoke(
    key_id: KeyIdArgument,
    url: UrlOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Refuse a key from the next request on."""
    with cli_errors(), open_client(_connection(url, wallet, wallet_path)) as client:
        key = client.keys.revoke(key_id)
    _print(key, json_output)
