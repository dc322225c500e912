"""Data commands: ingest, query, get, delete and status, against a node or the embedded store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from engram.cli._client import FILE_BATCH_ITEMS, FileIngestReport, open_client, open_reader
from engram.cli._output import (
    EXIT_ERROR,
    cli_errors,
    compact_json,
    excerpt,
    fail,
    parse_filter,
    print_json,
    reject_constant,
    short_cid,
    stderr,
    stdout,
    usage_error,
)
from engram.cli.options import (
    ChainOption,
    CidArgument,
    Connection,
    FilterOption,
    HomeOption,
    JsonOption,
    NamespaceOption,
    NetuidOption,
    SignerOption,
    TopKOption,
    UrlOption,
    WalletPathOption,
)
from engram.config import DEFAULT_NAMESPACE
from engram.records import QueryResult

SHOWN_FILE_ERRORS = 10
EfOption = Annotated[
    int | None,
    typer.Option(
        "--ef",
        help="HNSW beam width of this search: wider finds more of the true nearest, slower "
        "(default: the namespace's own, calibrated to its data)",
    ),
]


# --- argument parsing ------------------------------------------------------------------------


def _parse_value(raw: str) -> Any:
    """A metadata value: JSON when it parses (numbers, true/false, null, lists, objects), else text."""
    try:
        return json.loads(raw, parse_constant=reject_constant)
    except ValueError:
        return raw


def _parse_metadata(pairs: list[str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            usage_error(f"--metadata expects key=value, got {pair!r}")
        metadata[key] = _parse_value(value)
    return metadata


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
    out = stdout()
    name = escape(Path(report.path).name)
    colour = "red" if report.failed else "green"
    out.print(
        f"[{colour}]ingested {report.ingested}[/] record(s) from {name}, "
        f"[{colour}]{report.failed} failed[/]"
    )
    if not report.errors:
        return
    err = stderr()
    for line, message in report.errors[:SHOWN_FILE_ERRORS]:
        err.print(f"  [red]line {line}:[/] {escape(message)}", soft_wrap=True)
    hidden = report.failed - SHOWN_FILE_ERRORS
    if hidden > 0:
        err.print(f"  … and {hidden} more (--json lists them all)")


# --- commands --------------------------------------------------------------------------------


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
        usage_error("give TEXT or --file, exactly one of them")
    if file is not None and metadata:
        usage_error("--metadata applies to TEXT; in a --file put metadata on each line")
    meta = _parse_metadata(metadata or [])
    with cli_errors(), open_client(Connection(url, home, wallet, wallet_path)) as client:
        if file is not None:
            report = client.batch_ingest_file(
                file, namespace=namespace, batch_size=batch_size, progress=not json_output
            )
            if json_output:
                print_json(_file_report_json(report))
            else:
                _print_file_report(report)
            if report.failed:
                raise typer.Exit(EXIT_ERROR)
            return
        assert text is not None
        cid = client.ingest(text, metadata=meta, namespace=namespace)
    if json_output:
        print_json({"cid": cid, "namespace": namespace or DEFAULT_NAMESPACE})
    else:
        stdout().print(cid, soft_wrap=True)


def query(
    text: Annotated[str, typer.Argument(help="what to search for, by meaning")],
    top_k: TopKOption = 5,
    filter: FilterOption = None,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
    ef: EfOption = None,
) -> None:
    """Find the records nearest in meaning to TEXT, best first."""
    where = parse_filter(filter)
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        results = client.query(text, top_k=top_k, filter=where, namespace=namespace, ef=ef)
    _show_results(results, json_output)


def search(
    text: Annotated[str, typer.Argument(help="what to search for, by meaning and by words")],
    mode: Annotated[
        str, typer.Option("--mode", help="hybrid (both channels), vector or keyword")
    ] = "hybrid",
    top_k: TopKOption = 5,
    filter: FilterOption = None,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
    ef: EfOption = None,
) -> None:
    """Hybrid search for TEXT: nearest in meaning and matching its words, fused, best first."""
    where = parse_filter(filter)
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        results = client.search(
            text, top_k=top_k, filter=where, namespace=namespace, mode=mode, ef=ef
        )
    _show_results(results, json_output)


def _show_results(results: list[QueryResult], json_output: bool) -> None:
    """Hits as JSON, or a table; a search's hits also show their rank in each channel."""
    if json_output:
        print_json([r.to_dict() for r in results])
        return
    out = stdout()
    if not results:
        out.print("[dim]no results[/]")
        return
    channels = any(r.channels for r in results)
    caption = "CIDs are shortened; --json prints them in full"
    if channels:
        caption += "; v, k: rank in the vector and keyword channels"
    table = Table(caption=caption, caption_justify="left")
    table.add_column("score", justify="right", no_wrap=True)
    if channels:
        table.add_column("v", justify="right", no_wrap=True)
        table.add_column("k", justify="right", no_wrap=True)
    table.add_column("cid", no_wrap=True)
    table.add_column("text")
    table.add_column("metadata")
    for r in results:
        ranks = {c: str(int(v["rank"])) for c, v in (r.channels or {}).items()}
        cells = [ranks.get("vector", "-"), ranks.get("keyword", "-")] if channels else []
        table.add_row(
            f"{r.score:.3f}",
            *cells,
            escape(short_cid(r.cid)),
            escape(excerpt(r.text)),
            escape(compact_json(r.metadata)) if r.metadata else "",
        )
    out.print(table)


def get(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one record; with --json the whole record, embedding included."""
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        record = client.get(cid, namespace=namespace)
    if record is None:
        fail(f"not found: no record {cid} in namespace {namespace or DEFAULT_NAMESPACE}")
    if json_output:
        print_json(record.to_dict())
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("cid", escape(record.cid))
    grid.add_row("namespace", escape(record.namespace))
    grid.add_row("dims", str(len(record.embedding)))
    grid.add_row("model", escape(record.model_version))
    grid.add_row("metadata", escape(compact_json(record.metadata)))
    grid.add_row("text", escape(record.text) if record.text is not None else "[dim]-[/]")
    stdout().print(grid)


def delete(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete one record; exits 1 if it is not there."""
    with cli_errors(), open_client(Connection(url, home, wallet, wallet_path)) as client:
        client.delete(cid, namespace=namespace)
    if json_output:
        print_json({"cid": cid, "namespace": namespace or DEFAULT_NAMESPACE, "deleted": True})
    else:
        stdout().print(f"deleted {escape(cid)}", soft_wrap=True)


def status(
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="a subnet instead: its metagraph and each announced miner's health, stats and "
            "latency",
        ),
    ] = False,
    chain: ChainOption = None,
    netuid: NetuidOption = None,
) -> None:
    """Show the stats of the embedded store or of the node; with --live, of a subnet's miners."""
    if live:
        if url is not None or home is not None:
            usage_error("--live reads a chain: give --chain and --netuid, not --url or --home")
        _live_status(chain, netuid, json_output)
        return
    if chain is not None or netuid is not None:
        usage_error("--chain and --netuid go with --live")
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        stats = client.stats()
    if json_output:
        print_json(stats)
        return
    out = stdout()
    for part in _render_stats(stats):
        out.print(part)


def _live_status(chain: str | None, netuid: int | None, json_output: bool) -> None:
    from engram.chain import open_chain
    from engram.config import PROBE_TIMEOUT_S, NetworkConfig, load_config
    from engram.network.survey import live_status

    with cli_errors():
        config = load_config(NetworkConfig, chain=chain, netuid=netuid)
        opened = open_chain(config.chain)
        try:
            report = live_status(opened, config.netuid, PROBE_TIMEOUT_S).to_dict()
        finally:
            opened.close()
    if json_output:
        print_json(report)
        return
    table = Table(
        title=f"{escape(report['chain'])} · subnet {report['netuid']} · block {report['block']} · "
        f"{report['announced']} of {report['neurons']} announced, {report['ready']} serving "
        "(answered the probe)",
        title_justify="left",
        caption="hotkeys are shortened; --json prints them in full",
        caption_justify="left",
    )
    for column in ("uid", "hotkey", "stake", "permit", "incentive", "axon", "health", "latency"):
        table.add_column(column, no_wrap=True)
    table.add_column("records", justify="right")
    table.add_column("version")
    for m in report["miners"]:
        probe = m["probe"] or {}
        health, stats = probe.get("health") or {}, probe.get("stats") or {}
        state = ""
        if probe:
            state = "ok" if probe["ready"] else probe["error"] or health.get("status", "not ready")
        table.add_row(
            str(m["uid"]),
            m["hotkey"][:10] + "…",
            f"{m['stake']:g}",
            "yes" if m["validator_permit"] else "",
            f"{m['incentive']:.4f}",
            escape(m["axon"] or ""),
            escape(state),
            "" if probe.get("latency_ms") is None else f"{probe['latency_ms']:.0f} ms",
            str(stats.get("records", "")),
            escape(str(health.get("version", ""))),
        )
    stdout().print(table)
