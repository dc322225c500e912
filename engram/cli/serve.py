"""The long-running roles: miner, validator and gateway, each configured from flags over env."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from engram.cli._output import cli_errors, usage_error
from engram.cli.options import (
    ChainOption,
    ListenHostOption,
    LogLevelOption,
    NetuidOption,
    WalletOption,
    WalletPathOption,
)
from engram.config import GatewayConfig, MinerConfig, ValidatorConfig, load_config, parent_pid
from engram.errors import EngramError
from engram.process import exit_with_parent

T = TypeVar("T")


def _follow_parent() -> None:
    """A child of ``engram localnet`` stops itself once that parent is gone, even SIGKILLed."""
    parent = parent_pid()
    if parent is not None:
        exit_with_parent(parent)


def _load(cls: type[T], **flags: Any) -> T:
    """The role's config from defaults, env and ``flags``; a bad value is a usage error (exit 2)."""
    try:
        return load_config(cls, **flags)
    except EngramError as exc:
        usage_error(exc.message)


def miner(
    host: ListenHostOption = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port [ENGRAM_PORT]", show_default=False)
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="data directory [ENGRAM_HOME]", show_default=False)
    ] = None,
    log_level: LogLevelOption = None,
    reader_threads: Annotated[
        int | None,
        typer.Option(help="threads that serve queries [ENGRAM_READER_THREADS]", show_default=False),
    ] = None,
    shutdown_grace_s: Annotated[
        float | None,
        typer.Option(
            help="seconds in-flight requests may finish on SIGTERM [ENGRAM_SHUTDOWN_GRACE_S]",
            show_default=False,
        ),
    ] = None,
    chain: ChainOption = None,
    netuid: NetuidOption = None,
    wallet: WalletOption = None,
    wallet_path: WalletPathOption = None,
    external_ip: Annotated[
        str | None,
        typer.Option(help="address announced on chain [ENGRAM_EXTERNAL_IP]", show_default=False),
    ] = None,
    accept_unrouted: Annotated[
        bool | None,
        typer.Option(
            "--accept-unrouted/--routed-only",
            help="store writes routing sends to other miners [ENGRAM_ACCEPT_UNROUTED]",
            show_default=False,
        ),
    ] = None,
    sync_interval_s: Annotated[
        float | None,
        typer.Option(
            help="seconds between re-reads of the metagraph (the axon is announced again "
            "only if the chain lists another address) [ENGRAM_SYNC_INTERVAL_S]",
            show_default=False,
        ),
    ] = None,
    require_signatures: Annotated[
        bool | None,
        typer.Option(
            "--require-signatures/--allow-unsigned",
            help="refuse unsigned requests, public reads and ingest included "
            "[ENGRAM_REQUIRE_SIGNATURES]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a miner: an HTTP node over a durable local store; with --chain, on a subnet."""
    config = _load(
        MinerConfig,
        host=host,
        port=port,
        home=home,
        log_level=log_level,
        reader_threads=reader_threads,
        shutdown_grace_s=shutdown_grace_s,
        chain=chain,
        netuid=netuid,
        wallet=wallet,
        wallet_path=wallet_path,
        external_ip=external_ip,
        accept_unrouted=accept_unrouted,
        sync_interval_s=sync_interval_s,
        require_signatures=require_signatures,
    )
    with cli_errors():
        from engram.miner.app import serve_miner

        _follow_parent()
        serve_miner(config)


def validator(
    chain: ChainOption = None,
    netuid: NetuidOption = None,
    wallet: WalletOption = None,
    wallet_path: WalletPathOption = None,
    home: Annotated[
        Path | None, typer.Option(help="state directory [ENGRAM_HOME]", show_default=False)
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="address of the status API [ENGRAM_HOST]", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="port of the status API, /api/scores [ENGRAM_PORT]", show_default=False),
    ] = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run a validator: score miners on recall, latency and proofs, repair, set weights.

    Cadences and sizes come from ENGRAM_SCORE_INTERVAL_S, ENGRAM_CHALLENGE_INTERVAL_S,
    ENGRAM_WEIGHTS_INTERVAL_S, ENGRAM_REPAIR_INTERVAL_S, ENGRAM_CORPUS_SIZE and the other
    settings listed in the README.
    """
    config = _load(
        ValidatorConfig,
        chain=chain,
        netuid=netuid,
        wallet=wallet,
        wallet_path=wallet_path,
        home=home,
        host=host,
        port=port,
        log_level=log_level,
    )
    with cli_errors():
        from engram.validator import serve_validator

        _follow_parent()
        serve_validator(config)


def gateway(
    chain: ChainOption = None,
    netuid: NetuidOption = None,
    host: ListenHostOption = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port [ENGRAM_PORT, default 8090]", show_default=False)
    ] = None,
    validator_url: Annotated[
        str | None,
        typer.Option(
            help="a validator's status API, for scores in /api/network [ENGRAM_VALIDATOR_URL]",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOption = None,
    wallet: Annotated[
        str | None,
        typer.Option(
            help="wallet as NAME/HOTKEY whose hotkey signs the gateway's calls to miners and "
            "acts for the API keys it issues; none: unsigned, no API keys [ENGRAM_WALLET]",
            show_default=False,
        ),
    ] = None,
    wallet_path: WalletPathOption = None,
) -> None:
    """Run a gateway: the miner protocol in front of the whole network, plus /api/network."""
    config = _load(
        GatewayConfig,
        chain=chain,
        netuid=netuid,
        host=host,
        port=port,
        validator_url=validator_url,
        log_level=log_level,
        wallet=wallet,
        wallet_path=wallet_path,
    )
    with cli_errors():
        from engram.gateway.app import serve_gateway

        _follow_parent()
        serve_gateway(config)
