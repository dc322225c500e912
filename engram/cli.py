"""The ``engram`` command: the only place that prints or exits.

A thin layer over :class:`engram.EngramClient`. Every data command runs against
the embedded store (``--home`` or ``ENGRAM_HOME``) unless a node is named with
``--url`` or ``ENGRAM_URL``; ``--json`` prints machine-readable JSON on stdout
and nothing else there.

Exit codes: 0 success, 1 an Engram error (not found, invalid input rejected by
the store or node, unreachable node) or a partly failed file ingest, 2 a usage
error (bad option values, conflicting options), 130 interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engram.config import (
    DEFAULT_NAMESPACE,
    ChainParams,
    GatewayConfig,
    MinerConfig,
    ValidatorConfig,
    default_wallet_path,
    engram_home,
    engram_url,
    load_config,
)
from engram.errors import EngramError
from engram.sdk import EngramClient, FileIngestReport
from engram.sdk._base import FILE_BATCH_ITEMS

app = typer.Typer(
    help="Engram: decentralized semantic memory for AI.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
CID_SHORT_HEX = 12
EXCERPT_CHARS = 80
SHOWN_FILE_ERRORS = 10

# --- shared options --------------------------------------------------------------------------

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="node to talk to (a miner or gateway), e.g. http://127.0.0.1:8091 "
        "[ENGRAM_URL]; without it the embedded store is used",
        show_default=False,
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="directory of the embedded store [ENGRAM_HOME, default ~/.engram]",
        show_default=False,
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace", "-n", help="namespace to use (default: default)", show_default=False
    ),
]
ChainOption = Annotated[
    str | None,
    typer.Option(
        help="chain as local:PATH [ENGRAM_CHAIN, default local:ENGRAM_HOME/chain.sqlite]",
        show_default=False,
    ),
]
NetuidOption = Annotated[
    int | None, typer.Option(help="subnet [ENGRAM_NETUID, default 1]", show_default=False)
]
WalletOption = Annotated[
    str | None,
    typer.Option(help="wallet as NAME/HOTKEY [ENGRAM_WALLET]", show_default=False),
]
SignerOption = Annotated[
    str | None,
    typer.Option(
        "--wallet",
        help="sign requests with this wallet's hotkey, as NAME/HOTKEY (needed to delete, "
        "and to use a private namespace)",
        show_default=False,
    ),
]
WalletPathOption = Annotated[
    Path | None,
    typer.Option(
        help="wallets folder [ENGRAM_WALLET_PATH, default ~/.bittensor/wallets]",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    str | None,
    typer.Option(help="debug, info, warning or error [ENGRAM_LOG_LEVEL]", show_default=False),
]
RequireSignaturesOption = Annotated[
    bool | None,
    typer.Option(
        "--require-signatures/--allow-unsigned",
        help="refuse unsigned requests, public reads and ingest included "
        "[ENGRAM_REQUIRE_SIGNATURES]",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print machine-readable JSON on stdout, nothing else")
]


# --- output helpers --------------------------------------------------------------------------


def _stdout() -> Console:
    # Built per call so a redirected or replaced sys.stdout (pipes, tests) is honoured.
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """One red line on stderr, then exit with ``code``."""
    _stderr().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _usage_error(message: str) -> NoReturn:
    _fail(message, EXIT_USAGE)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, allow_nan=False))


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Engram errors become one red line and exit 1; Ctrl-C exits 130 quietly."""
    try:
        yield
    except EngramError as exc:
        _fail(exc.message)
    except OSError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _open_client(
    url: str | None,
    home: Path | None,
    wallet: str | None = None,
    wallet_path: Path | None = None,
) -> Iterator[EngramClient]:
    """The one place that picks the mode: a node (``--url``/``ENGRAM_URL``) or the embedded store.

    An explicit ``--home`` outranks ``ENGRAM_URL``; ``--url`` with ``--home`` is a usage error.
    With ``--wallet`` every request is signed by that hotkey.
    """
    from engram.chain.keys import open_wallet

    if url and home is not None:
        _usage_error("give --url (a node) or --home (the embedded store), not both")
    if not url and home is None:
        url = engram_url()
    signer = open_wallet(wallet, wallet_path or default_wallet_path()) if wallet else None
    client = EngramClient(url, wallet=signer) if url else EngramClient(path=home, wallet=signer)
    with client:
        yield client


# --- argument parsing ------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; such values stay strings.
    raise ValueError(name)


def _parse_value(raw: str) -> Any:
    """A metadata value: JSON when it parses (numbers, true/false, null, lists, objects), else text."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return raw


def _parse_metadata(pairs: list[str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            _usage_error(f"--metadata expects key=value, got {pair!r}")
        metadata[key] = _parse_value(value)
    return metadata


def _parse_filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        _usage_error(f"--filter is not valid JSON: {exc.msg} at column {exc.colno}")
    except ValueError as exc:
        _usage_error(f"--filter is not valid JSON: {exc} is not a JSON value")
    if not isinstance(value, dict):
        _usage_error(
            f'--filter must be a JSON object such as \'{{"lang": "en"}}\', '
            f"got {type(value).__name__}"
        )
    return value


# --- rendering -------------------------------------------------------------------------------


def _short_cid(cid: str) -> str:
    prefix, sep, digest = cid.partition("::")
    if not sep:
        return cid if len(cid) <= CID_SHORT_HEX + 4 else cid[: CID_SHORT_HEX + 4] + "…"
    return f"{prefix}::{digest[:CID_SHORT_HEX]}…" if len(digest) > CID_SHORT_HEX else cid


def _excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _render_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_render_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_render_value(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _render_stats(stats: Mapping[str, Any]) -> list[Any]:
    """A key/value grid; a mapping of mappings (like the per-namespace index) gets its own table."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    tables: list[Any] = []
    for key, value in stats.items():
        if (
            isinstance(value, Mapping)
            and value
            and all(isinstance(v, Mapping) for v in value.values())
        ):
            columns = list(dict.fromkeys(k for v in value.values() for k in v))
            table = Table(title=str(key), title_justify="left")
            table.add_column("name")
            for col in columns:
                table.add_column(str(col), justify="right")
            for name, row in value.items():
                table.add_row(
                    escape(str(name)), *(escape(_render_value(row.get(c))) for c in columns)
                )
            tables.append(table)
        else:
            grid.add_row(escape(str(key)), escape(_render_value(value)))
    return [grid, *tables]


def _file_report_json(report: FileIngestReport) -> dict[str, Any]:
    return {
        "path": report.path,
        "ingested": report.ingested,
        "failed": report.failed,
        "cids": report.cids,
        "errors": [{"line": line, "error": message} for line, message in report.errors],
    }


def _print_file_report(report: FileIngestReport) -> None:
    out = _stdout()
    name = escape(Path(report.path).name)
    colour = "red" if report.failed else "green"
    out.print(
        f"[{colour}]ingested {report.ingested}[/] record(s) from {name}, "
        f"[{colour}]{report.failed} failed[/]"
    )
    if not report.errors:
        return
    err = _stderr()
    for line, message in report.errors[:SHOWN_FILE_ERRORS]:
        err.print(f"  [red]line {line}:[/] {escape(message)}", soft_wrap=True)
    hidden = report.failed - SHOWN_FILE_ERRORS
    if hidden > 0:
        err.print(f"  … and {hidden} more (--json lists them all)")


# --- commands --------------------------------------------------------------------------------


@app.callback()
def main() -> None:
    """Engram: decentralized semantic memory for AI.

    Data commands use the embedded store under ENGRAM_HOME (default ~/.engram)
    unless a node is given with --url or ENGRAM_URL.
    """


@app.command()
def ingest(
    text: Annotated[
        str | None,
        typer.Argument(help="text to embed and store (or use --file)", show_default=False),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata",
            "-m",
            help="key=value metadata, repeatable; values are JSON when they parse "
            "(42, true, null, [1,2]), else strings",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help='JSONL file, one {"text"|"embedding", "metadata"?} object a line',
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="lines per write batch with --file")
    ] = FILE_BATCH_ITEMS,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Store TEXT (or every line of --file) and print its CID."""
    if (text is None) == (file is None):
        _usage_error("give TEXT or --file, exactly one of them")
    if file is not None and metadata:
        _usage_error("--metadata applies to TEXT; in a --file put metadata on each line")
    meta = _parse_metadata(metadata or [])
    with _cli_errors(), _open_client(url, home, wallet, wallet_path) as client:
        if file is not None:
            report = client.batch_ingest_file(
                file, namespace=namespace, batch_size=batch_size, progress=not json_output
            )
            if json_output:
                _print_json(_file_report_json(report))
            else:
                _print_file_report(report)
            if report.failed:
                raise typer.Exit(EXIT_ERROR)
            return
        assert text is not None
        cid = client.ingest(text, metadata=meta, namespace=namespace)
    if json_output:
        _print_json({"cid": cid, "namespace": namespace or DEFAULT_NAMESPACE})
    else:
        _stdout().print(cid, soft_wrap=True)


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="what to search for, by meaning")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="how many results")] = 5,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help='metadata filter as a JSON object, e.g. \'{"lang": "en"}\'',
            show_default=False,
        ),
    ] = None,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Find the records nearest in meaning to TEXT, best first."""
    where = _parse_filter(filter)
    with _cli_errors(), _open_client(url, home, wallet, wallet_path) as client:
        results = client.query(text, top_k=top_k, filter=where, namespace=namespace)
    if json_output:
        _print_json([r.to_dict() for r in results])
        return
    out = _stdout()
    if not results:
        out.print("[dim]no results[/]")
        return
    table = Table(caption="CIDs are shortened; --json prints them in full", caption_justify="left")
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("cid", no_wrap=True)
    table.add_column("text")
    table.add_column("metadata")
    for r in results:
        table.add_row(
            f"{r.score:.3f}",
            escape(_short_cid(r.cid)),
            escape(_excerpt(r.text)),
            escape(_compact_json(r.metadata)) if r.metadata else "",
        )
    out.print(table)


@app.command()
def get(
    cid: Annotated[str, typer.Argument(help="the record's CID")],
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one record; with --json the whole record, embedding included."""
    with _cli_errors(), _open_client(url, home, wallet, wallet_path) as client:
        record = client.get(cid, namespace=namespace)
    if record is None:
        _fail(f"not found: no record {cid} in namespace {namespace or DEFAULT_NAMESPACE}")
    if json_output:
        _print_json(record.to_dict())
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("cid", escape(record.cid))
    grid.add_row("namespace", escape(record.namespace))
    grid.add_row("dims", str(len(record.embedding)))
    grid.add_row("model", escape(record.model_version))
    grid.add_row("metadata", escape(_compact_json(record.metadata)))
    grid.add_row("text", escape(record.text) if record.text is not None else "[dim]-[/]")
    _stdout().print(grid)


@app.command()
def delete(
    cid: Annotated[str, typer.Argument(help="the record's CID")],
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete one record; exits 1 if it is not there."""
    with _cli_errors(), _open_client(url, home, wallet, wallet_path) as client:
        client.delete(cid, namespace=namespace)
    if json_output:
        _print_json({"cid": cid, "namespace": namespace or DEFAULT_NAMESPACE, "deleted": True})
    else:
        _stdout().print(f"deleted {escape(cid)}", soft_wrap=True)


@app.command()
def status(
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the stats of the embedded store or of the node."""
    with _cli_errors(), _open_client(url, home, wallet, wallet_path) as client:
        stats = client.stats()
    if json_output:
        _print_json(stats)
        return
    out = _stdout()
    for part in _render_stats(stats):
        out.print(part)


PermissionOption = Annotated[
    str, typer.Option("--permission", "-p", help="read or write (write includes delete)")
]


def _set_grant(
    granted: bool,
    hotkey: str,
    permission: str,
    namespace: str | None,
    url: str | None,
    home: Path | None,
    wallet: str | None,
    wallet_path: Path | None,
    json_output: bool,
) -> None:
    if namespace is None:
        _usage_error("name the private namespace with --namespace")
    with _cli_errors(), _open_client(url, home, wallet, wallet_path) as client:
        change = client.grant if granted else client.revoke
        info = change(hotkey, permission, namespace=namespace)
    if json_output:
        _print_json(info)
        return
    out = _stdout()
    out.print(f"namespace {escape(info['namespace'])} · owner {escape(str(info['owner']))}")
    for g in info["grants"]:
        out.print(f"  {escape(g['hotkey'])}  {g['permission']}")


@app.command()
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
    _set_grant(True, hotkey, permission, namespace, url, home, wallet, wallet_path, json_output)


@app.command()
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
    _set_grant(False, hotkey, permission, namespace, url, home, wallet, wallet_path, json_output)


@app.command()
def miner(
    host: Annotated[
        str | None, typer.Option(help="address to listen on [ENGRAM_HOST]", show_default=False)
    ] = None,
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
            help="seconds between re-announcing the axon and re-reading the metagraph "
            "[ENGRAM_SYNC_INTERVAL_S]",
            show_default=False,
        ),
    ] = None,
    require_signatures: RequireSignaturesOption = None,
) -> None:
    """Run a miner: an HTTP node over a durable local store; with --chain, on a subnet."""
    try:
        config = load_config(
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
    except EngramError as exc:
        _usage_error(exc.message)
    with _cli_errors():
        from engram.miner.app import serve_miner

        serve_miner(config)


@app.command()
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
    try:
        config = load_config(
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
    except EngramError as exc:
        _usage_error(exc.message)
    with _cli_errors():
        from engram.validator import serve_validator

        serve_validator(config)


@app.command()
def gateway(
    chain: ChainOption = None,
    netuid: NetuidOption = None,
    host: Annotated[
        str | None, typer.Option(help="address to listen on [ENGRAM_HOST]", show_default=False)
    ] = None,
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
) -> None:
    """Run a gateway: the miner protocol in front of the whole network, plus /api/network."""
    try:
        config = load_config(
            GatewayConfig,
            chain=chain,
            netuid=netuid,
            host=host,
            port=port,
            validator_url=validator_url,
            log_level=log_level,
        )
    except EngramError as exc:
        _usage_error(exc.message)
    with _cli_errors():
        from engram.gateway.app import serve_gateway

        serve_gateway(config)


@app.command()
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
    out = _stderr()
    try:
        with _cli_errors():
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
            _stdout().print(table)
            _stdout().print(
                f"\nSDK:  EngramClient.from_network(chain={net.chain_url!r})\n"
                f"      EngramClient({net.gateway_url!r})\n"
                f"Web UI: {net.gateway_url}/ (dashboard: {net.gateway_url}/dashboard)\n"
                f"Network view: {net.gateway_url}/api/network\nCtrl-C stops everything."
            )
            while all(c.process.poll() is None for c in net.children):
                time.sleep(0.5)
            dead = [c for c in net.children if c.process.poll() is not None]
            _fail(
                f"{dead[0].name} exited with status {dead[0].process.returncode}; see {dead[0].log}"
            )
    finally:
        out.print("stopping localnet...")
        net.stop()


wallet_app = typer.Typer(help="Create and list wallets (Bittensor's layout, shared with btcli).")
chain_app = typer.Typer(help="Administer a LocalChain: create it, register neurons, show it.")
app.add_typer(wallet_app, name="wallet")
app.add_typer(chain_app, name="chain")


@wallet_app.command("new")
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
    with _cli_errors():
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
        _print_json(doc)
        return
    out = _stdout()
    out.print(
        f"wallet  {name}/{hotkey} in {folder}\nhotkey  {ident.hotkey}\ncoldkey {ident.coldkey}"
    )
    for key, words in mnemonics.items():
        out.print(f"[bold]{key} mnemonic[/] (write it down; it is not shown again): {words}")


@wallet_app.command("list")
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
        _print_json(rows)
        return
    table = Table("wallet", "hotkey")
    for row in rows:
        table.add_row(row["wallet"], row["hotkey"])
    _stdout().print(table if rows else f"no wallets under {folder}")


def _local_chain_path(chain: str) -> Path:
    if not chain.startswith("local:") or len(chain) == len("local:"):
        _usage_error(f"{chain!r} is not a LocalChain: give local:PATH")
    return Path(chain.removeprefix("local:")).expanduser()


@chain_app.command("create")
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
    with _cli_errors():
        LocalChain.create(_local_chain_path(chain), netuid, params).close()
    _stdout().print(f"created {chain} with subnet {netuid}")


@chain_app.command("register")
def chain_register(
    chain: Annotated[str, typer.Argument(help="local:PATH")],
    wallet: Annotated[str, typer.Option(help="wallet as NAME/HOTKEY")] = "default/default",
    wallet_path: WalletPathOption = None,
    netuid: Annotated[int, typer.Option(help="subnet")] = 1,
    stake: Annotated[float, typer.Option(help="stake to add (a validator needs a permit)")] = 0.0,
) -> None:
    """Register a wallet's hotkey on a subnet (idempotent) and optionally add stake."""
    from engram.chain.keys import identity, open_wallet
    from engram.chain.local import LocalChain

    with _cli_errors():
        ident = identity(open_wallet(wallet, wallet_path or default_wallet_path()))
        local = LocalChain(_local_chain_path(chain))
        try:
            uid = local.register(netuid, ident.hotkey, ident.coldkey)
            if stake > 0:
                local.add_stake(netuid, ident.hotkey, stake)
        finally:
            local.close()
    _stdout().print(f"{wallet} ({ident.hotkey}) is uid {uid} on subnet {netuid}")


@chain_app.command("show")
def chain_show(
    chain: Annotated[str, typer.Argument(help="local:PATH")],
    netuid: Annotated[int, typer.Option(help="subnet")] = 1,
    json_output: JsonOption = False,
) -> None:
    """Show a subnet's metagraph: neurons, axons, stake, permits, incentive, emission."""
    from engram.chain import open_chain

    with _cli_errors():
        local = open_chain(chain)
        try:
            graph = local.metagraph(netuid)
        finally:
            local.close()
    serving = {n.uid for n in graph.serving()}
    if json_output:
        _print_json(
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
    _stdout().print(table)
