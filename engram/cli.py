"""The ``engram`` command: the only place that prints or exits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engram.config import MinerConfig, load_config

app = typer.Typer(help="Engram: decentralized semantic memory for AI.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Engram: decentralized semantic memory for AI."""


@app.command()
def miner(
    host: Annotated[str | None, typer.Option(help="address to listen on [ENGRAM_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [ENGRAM_PORT]")] = None,
    home: Annotated[Path | None, typer.Option(help="data directory [ENGRAM_HOME]")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug/info/warning/error")] = None,
    reader_threads: Annotated[int | None, typer.Option(help="query threads")] = None,
) -> None:
    """Run a miner: an HTTP node over a durable local store."""
    from engram.miner.app import serve_miner

    config = load_config(
        MinerConfig,
        host=host,
        port=port,
        home=home,
        log_level=log_level,
        reader_threads=reader_threads,
    )
    serve_miner(config)
