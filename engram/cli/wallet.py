"""``engram wallet``: create and list wallets in Bittensor's layout, shared with btcli."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from engram.cli._output import cli_errors, print_json, stdout
from engram.cli.options import JsonOption, WalletPathOption
from engram.config import default_wallet_path

app = typer.Typer(help="Create and list wallets (Bittensor's layout, shared with btcli).")


@app.command("new")
def wallet_new(
    name: Annotated[str, typer.Option(help="wallet (coldkey) name")] = "default",
    hotkey: Annotated[str, typer.Option(help="hotkey name")] = "default",
    path: WalletPathOption = None,
    password: Annotated[
        str | None,
        typer.Option(
            help="encrypt a new coldkey with this password (hotkeys are never encrypted)",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing keys")] = False,
    json_output: JsonOption = False,
) -> None:
    """Create a hotkey (and the wallet's coldkey if it has none); prints the mnemonics once."""
    from engram.chain.keys import identity, new_wallet

    folder = path or default_wallet_path()
    with cli_errors():
        created, mnemonics = new_wallet(
            f"{name}/{hotkey}", folder, overwrite=overwrite, password=password
        )
        ident = identity(created)
    doc = {
        "wallet": f"{name}/{hotkey}",
        "path": str(folder),
        "hotkey": ident.hotkey,
        "coldkey": ident.coldkey,
        "mnemonics": mnemonics,
    }
    if json_output:
        print_json(doc)
        return
    out = stdout()
    out.print(
        f"wallet  {name}/{hotkey} in {folder}\nhotkey  {ident.hotkey}\ncoldkey {ident.coldkey}"
    )
    for key, words in mnemonics.items():
        out.print(f"[bold]{key} mnemonic[/] (write it down; it is not shown again): {words}")


@app.command("list")
def wallet_list(path: WalletPathOption = None, json_output: JsonOption = False) -> None:
    """List wallets and their hotkeys with their addresses."""
    import bittensor as bt

    folder = path or default_wallet_path()
    rows = []
    for name, hotkeys in bt.wallets.list_wallets(str(folder)).items():
        for hk in hotkeys:
            w = bt.Wallet(name, hk, path=str(folder))
            rows.append({"wallet": f"{name}/{hk}", "hotkey": w.hotkeypub.ss58_address})
    if json_output:
        print_json(rows)
        return
    table = Table("wallet", "hotkey")
    for row in rows:
        table.add_row(row["wallet"], row["hotkey"])
    stdout().print(table if rows else f"no wallets under {folder}")
