"""``engram chain``: create, populate and inspect a LocalChain file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from engram.cli._output import cli_errors, print_json, stdout, usage_error
from engram.cli.options import JsonOption, LocalChainArgument, SubnetOption, WalletPathOption
from engram.config import ChainParams, default_wallet_path

app = typer.Typer(help="Administer a LocalChain: create it, register neurons, show it.")


def _local_chain_path(chain: str) -> Path:
    if not chain.startswith("local:") or len(chain) == len("local:"):
        usage_error(f"{chain!r} is not a LocalChain: give local:PATH")
    return Path(chain.removeprefix("local:")).expanduser()


@app.command("create")
def chain_create(
    chain: Annotated[str, typer.Argument(help="local:PATH of the new chain file")],
    netuid: Annotated[int, typer.Option(help="subnet to create")] = 1,
    block_time_s: Annotated[
        float, typer.Option(help="seconds per block")
    ] = ChainParams.block_time_s,
    tempo: Annotated[int, typer.Option(help="blocks per consensus epoch")] = ChainParams.tempo,
    axon_ttl_blocks: Annotated[
        int, typer.Option(help="blocks a miner stays routed to after its last announcement")
    ] = ChainParams.axon_ttl_blocks,
    min_validator_stake: Annotated[
        float, typer.Option(help="stake that earns a validator permit")
    ] = ChainParams.min_validator_stake,
) -> None:
    """Create a LocalChain file with one subnet (add a subnet to an existing file)."""
    from engram.chain.local import LocalChain

    params = ChainParams(
        block_time_s=block_time_s,
        tempo=tempo,
        axon_ttl_blocks=axon_ttl_blocks,
        min_validator_stake=min_validator_stake,
    )
    with cli_errors():
        LocalChain.create(_local_chain_path(chain), netuid, params).close()
    stdout().print(f"created {chain} with subnet {netuid}")


@app.command("register")
def chain_register(
    chain: LocalChainArgument,
    wallet: Annotated[str, typer.Option(help="wallet as NAME/HOTKEY")] = "default/default",
    wallet_path: WalletPathOption = None,
    netuid: SubnetOption = 1,
    stake: Annotated[float, typer.Option(help="stake to add (a validator needs a permit)")] = 0.0,
) -> None:
    """Register a wallet's hotkey on a subnet (idempotent) and optionally add stake."""
    from engram.chain.keys import identity, open_wallet
    from engram.chain.local import LocalChain

    with cli_errors():
        signer = open_wallet(wallet, wallet_path or default_wallet_path())
        ident = identity(signer)
        local = LocalChain(_local_chain_path(chain))
        try:
            uid = local.register(netuid, signer)
            if stake > 0:
                local.add_stake(netuid, ident.hotkey, stake)
        finally:
            local.close()
    stdout().print(f"{wallet} ({ident.hotkey}) is uid {uid} on subnet {netuid}")


@app.command("show")
def chain_show(
    chain: LocalChainArgument,
    netuid: SubnetOption = 1,
    json_output: JsonOption = False,
) -> None:
    """Show a subnet's metagraph: neurons, axons, stake, permits, incentive, emission."""
    from engram.chain import open_chain

    with cli_errors():
        local = open_chain(chain)
        try:
            graph = local.metagraph(netuid)
        finally:
            local.close()
    serving = {n.uid for n in graph.serving()}
    if json_output:
        print_json(
            {
                "chain": chain,
                "netuid": netuid,
                "block": graph.block,
                "neurons": [{**n.__dict__, "serving": n.uid in serving} for n in graph.neurons],
                "weights": {
                    str(v): {str(m): w for m, w in row.items()} for v, row in graph.weights.items()
                },
            }
        )
        return
    table = Table(title=f"{chain} · subnet {netuid} · block {graph.block}", title_justify="left")
    for column in ("uid", "hotkey", "stake", "permit", "axon", "serving", "incentive", "emission"):
        table.add_column(column)
    for n in graph.neurons:
        table.add_row(
            str(n.uid),
            n.hotkey,
            f"{n.stake:g}",
            "yes" if n.validator_permit else "",
            n.axon_url or "",
            "yes" if n.uid in serving else "",
            f"{n.incentive:.4f}",
            f"{n.emission:.4f}",
        )
    stdout().print(table)
