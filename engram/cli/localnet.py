"""``engram localnet``: a whole subnet on this machine, for trying Engram and for the e2e tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from engram.cli._output import cli_errors, fail, stderr, stdout
from engram.config import engram_home


def localnet(
    miners: Annotated[int, typer.Option(min=1, help="number of miners")] = 3,
    home: Annotated[
        Path | None,
        typer.Option(
            help="where everything lives [default ENGRAM_HOME/localnet]", show_default=False
        ),
    ] = None,
    base_port: Annotated[int, typer.Option(help="first miner's port; the next ones follow")] = 8091,
    gateway_port: Annotated[int, typer.Option(help="gateway port")] = 8090,
    validator_port: Annotated[int, typer.Option(help="validator status API port")] = 8089,
) -> None:
    """Run a whole subnet here: LocalChain, N miners, a validator and a gateway; Ctrl-C stops it.

    Data is kept under --home, so a second start resumes.
    """
    from engram.localnet import Localnet

    net = Localnet(
        home=(home or engram_home() / "localnet").expanduser(),
        miners=miners,
        miner_ports=[base_port + i for i in range(miners)],
        gateway_port=gateway_port,
        validator_port=validator_port,
    )
    out = stderr()
    try:
        with cli_errors():
            hotkeys = net.prepare()
            out.print(f"chain      {net.chain_url} (netuid {net.netuid})")
            net.start()
            with out.status("starting miners, validator and gateway (loading the model)..."):
                net.wait_ready()
            table = Table(title="Engram localnet", title_justify="left")
            for column in ("process", "url", "hotkey", "log"):
                table.add_column(column)
            for child in net.children:
                spec = f"localnet/{child.name}"
                table.add_row(child.name, child.url, hotkeys.get(spec, ""), str(child.log))
            stdout().print(table)
            stdout().print(
                f"\nSDK:  EngramClient.from_network(chain={net.chain_url!r})\n"
                f"      EngramClient({net.gateway_url!r})\n"
                f"Web UI: {net.gateway_url}/ (dashboard: {net.gateway_url}/dashboard)\n"
                f"Network view: {net.gateway_url}/api/network\nCtrl-C stops everything."
            )
            while all(c.process.poll() is None for c in net.children):
                time.sleep(0.5)
            dead = [c for c in net.children if c.process.poll() is not None]
            fail(
                f"{dead[0].name} exited with status {dead[0].process.returncode}; see {dead[0].log}"
            )
    finally:
        out.print("stopping localnet...")
        net.stop()
