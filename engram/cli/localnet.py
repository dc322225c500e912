"""``engram localnet``: a whole subnet on this machine, for trying Engram and for the e2e tests."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from engram.cli._output import cli_errors, fail, stderr, stdout, usage_error
from engram.config import PORT_RANGE, engram_home
from engram.errors import InvalidRequestError

if TYPE_CHECKING:
    from engram.localnet import Localnet

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _exit_on_signal(signum: int, frame: object) -> None:
    """Ctrl-C, ``kill`` or a closed terminal: unwind, stop every child, exit 128 + the signal."""
    raise typer.Exit(128 + signum)


def localnet(
    miners: Annotated[int, typer.Option(min=1, help="number of miners")] = 3,
    home: Annotated[
        Path | None,
        typer.Option(
            help="where everything lives [default ENGRAM_HOME/localnet]", show_default=False
        ),
    ] = None,
    base_port: Annotated[
        int,
        typer.Option(
            min=PORT_RANGE[0], max=PORT_RANGE[1], help="first miner's port; the next ones follow"
        ),
    ] = 8091,
    gateway_port: Annotated[
        int, typer.Option(min=PORT_RANGE[0], max=PORT_RANGE[1], help="gateway port")
    ] = 8090,
    validator_port: Annotated[
        int,
        typer.Option(min=PORT_RANGE[0], max=PORT_RANGE[1], help="validator status API port"),
    ] = 8089,
) -> None:
    """Run a whole subnet here: LocalChain, N miners, a validator and a gateway.

    Data is kept under --home, so a second start resumes. Ctrl-C, SIGTERM or
    SIGHUP stops every process; one localnet runs per home.
    """
    from engram.localnet import Localnet

    try:
        net = Localnet(
            home=(home or engram_home() / "localnet").expanduser(),
            miners=miners,
            miner_ports=[base_port + i for i in range(miners)],
            gateway_port=gateway_port,
            validator_port=validator_port,
        )
    except InvalidRequestError as exc:
        usage_error(exc.message)
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in STOP_SIGNALS}
    try:
        _run(net)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(net: Localnet) -> None:
    """Prepare, start and watch ``net``; whatever ends it, every child is stopped."""
    out = stderr()
    with cli_errors():
        hotkeys = net.prepare()  # the home's lock and free ports, then the chain
    try:
        with cli_errors():
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
        for sig in STOP_SIGNALS:  # stopping is bounded; a second signal must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        out.print("stopping localnet...")
        net.stop()
