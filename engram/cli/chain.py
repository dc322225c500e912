"""``engram chain``: create, populate and inspect a LocalChain file; register on Bittensor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from engram.cli._output import cli_errors, fail, print_json, stdout, usage_error
from engram.cli.options import ChainArgument, JsonOption, SubnetOption, WalletPathOption
from engram.config import ChainParams, default_wallet_path

if TYPE_CHECKING:
    from bittensor import Wallet

    from engram.chain.keys import Identity
    from engram.chain.subtensor import SubtensorChain

app = typer.Typer(
    help="Administer a LocalChain: create it, register neurons, show it; register on Bittensor."
)


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
        int, typer.Option(help="kept for earlier versions; routing probes miners instead")
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
    chain: ChainArgument,
    wallet: Annotated[str, typer.Option(help="wallet as NAME/HOTKEY")] = "default/default",
    wallet_path: WalletPathOption = None,
    netuid: SubnetOption = 1,
    stake: Annotated[
        float, typer.Option(help="stake to add, LocalChain only (a validator needs a permit)")
    ] = 0.0,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="on Bittensor, pay the registration cost without asking"),
    ] = False,
) -> None:
    """Register a wallet's hotkey on a subnet (idempotent); on a LocalChain optionally add stake.

    On Bittensor (finney, test, local, ws://…) it is a burned registration: the
    cost, shown first, is paid from the wallet's coldkey once confirmed (or --yes).
    """
    from engram.chain import open_chain
    from engram.chain.keys import identity, open_wallet
    from engram.chain.local import LocalChain
    from engram.chain.subtensor import SubtensorChain

    if not chain.strip().startswith("local:") and stake > 0:
        usage_error("--stake is for a LocalChain; on Bittensor add stake with `btcli stake add`")
    with cli_errors():
        signer = open_wallet(wallet, wallet_path or default_wallet_path())
        ident = identity(signer)
        opened = open_chain(chain)
        try:
            if isinstance(opened, SubtensorChain):
                uid = _register_on_bittensor(opened, netuid, signer, ident, wallet, yes)
            else:
                uid = opened.register(netuid, signer)
                if stake > 0 and isinstance(opened, LocalChain):
                    opened.add_stake(netuid, ident.hotkey, stake)
        finally:
            opened.close()
    stdout().print(f"{wallet} ({ident.hotkey}) is uid {uid} on subnet {netuid}")


def _register_on_bittensor(
    chain: SubtensorChain, netuid: int, signer: Wallet, ident: Identity, name: str, yes: bool
) -> int:
    """A burned registration, paid only once its cost is shown and accepted."""
    known = chain.uid(netuid, ident.hotkey)
    if known is not None:
        return known
    cost = chain.registration_cost(netuid)
    balance = chain.balance(ident.coldkey)
    stdout().print(
        f"registering {name} ({ident.hotkey}) on subnet {netuid} of {chain.url} burns "
        f"{cost:.9g} TAO from coldkey {ident.coldkey}, which holds {balance:.9g} TAO",
        soft_wrap=True,
    )
    if balance < cost:
        fail(f"the coldkey holds {balance:.9g} TAO, less than the {cost:.9g} TAO registration")
    try:
        accepted = yes or typer.confirm("pay it?", default=False)
    except typer.Abort:  # no answer (stdin closed)
        accepted = False
    if not accepted:
        fail("not registered: nothing was paid (--yes pays without asking)")
    return chain.register(netuid, signer)


@app.command("show")
def chain_show(
    chain: ChainArgument,
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
