"""``engram memory``: the agent-memory API (docs/memory.md), one command per ``client.memory`` call.

Every command is a thin layer over :class:`~engram.sdk.memory.MemoryClient`: it
takes the data commands' connection options, ``--namespace`` and ``--json``
(the answer's JSON: a memory's ``model_dump()``, a list of them, a context's).
Input is checked by the memory service, so its errors (one red line, exit 1)
read the same here, in the SDK and over HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from engram.cli._client import open_client, open_reader
from engram.cli._output import (
    cli_errors,
    compact_json,
    excerpt,
    parse_filter,
    print_json,
    short_cid,
    stderr,
    stdout,
)
from engram.cli.options import (
    CidArgument,
    Connection,
    FilterOption,
    HomeOption,
    JsonOption,
    NamespaceOption,
    SignerOption,
    UrlOption,
    WalletPathOption,
)
from engram.config import DEFAULT_NAMESPACE, MEMORY_STATES
from engram.memory.model import Memory

app = typer.Typer(
    help="Agent memory: store, search, pack into a context, update, archive and forget.",
    no_args_is_help=True,
)

CAPTION = "CIDs are shortened; --json prints them in full"

ContentArgument = Annotated[str, typer.Argument(help="the memory's text", show_default=False)]
QueryArgument = Annotated[
    str, typer.Argument(help="what to recall, by meaning and by words", show_default=False)
]
CategoryOption = Annotated[
    str | None,
    typer.Option(
        "--category", "-c", help="the memory's category, to filter by", show_default=False
    ),
]
ImportanceOption = Annotated[
    float | None,
    typer.Option(
        "--importance",
        help="0 to 1, the floor of the memory's strength (default 0.5)",
        show_default=False,
    ),
]
TagOption = Annotated[
    list[str] | None, typer.Option("--tag", "-t", help="a tag, repeatable", show_default=False)
]
SourceOption = Annotated[
    str | None, typer.Option("--source", help="where the memory came from", show_default=False)
]
TtlOption = Annotated[
    float | None,
    typer.Option("--ttl", help="seconds until the memory expires", show_default=False),
]
LimitOption = Annotated[int, typer.Option("--limit", "-k", min=1, help="how many memories")]


# --- rendering -------------------------------------------------------------------------------


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def _memory_table(
    memories: Sequence[Memory], *, scored: bool = False, tags: bool = False, created: bool = False
) -> Table:
    """Memories as rows: [score,] shortened CID, state, category, [tags,] [created,] content."""
    table = Table(caption=CAPTION, caption_justify="left")
    if scored:
        table.add_column("score", justify="right", no_wrap=True)
    table.add_column("cid", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("category")
    if tags:
        table.add_column("tags")
    if created:
        table.add_column("created (UTC)", no_wrap=True)
    table.add_column("content")
    for m in memories:
        cells = [escape(short_cid(m.cid)), m.state, escape(m.category or "-")]
        if scored:
            cells.insert(0, f"{m.score:.3f}" if m.score is not None else "-")
        if tags:
            cells.append(escape(", ".join(m.tags) or "-"))
        if created:
            cells.append(_when(m.created_at))
        table.add_row(*cells, escape(excerpt(m.content)))
    return table


def _show_memories(memories: Sequence[Memory], json_output: bool, **columns: bool) -> None:
    """Memories as JSON (each one's ``model_dump()``), or a table with the optional ``columns``."""
    if json_output:
        print_json([m.model_dump() for m in memories])
    elif not memories:
        stdout().print("[dim]no memories[/]")
    else:
        stdout().print(_memory_table(memories, **columns))


def _show_cid(memory: Memory, json_output: bool) -> None:
    """A written memory: its CID on stdout (or its JSON); a duplicate says so on stderr."""
    if json_output:
        print_json(memory.model_dump())
        return
    stdout().print(memory.cid, soft_wrap=True)
    if memory.duplicate_of:
        stderr().print(
            f"[yellow]duplicate of {escape(memory.duplicate_of)}, nothing stored[/]",
            soft_wrap=True,
        )


# --- commands --------------------------------------------------------------------------------


@app.command("store")
def memory_store(
    content: ContentArgument,
    category: CategoryOption = None,
    importance: ImportanceOption = None,
    tag: TagOption = None,
    source: SourceOption = None,
    ttl: TtlOption = None,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Store a memory and print its CID; a near-duplicate of an active one stores nothing."""
    with cli_errors(), open_client(Connection(url, home, wallet, wallet_path)) as client:
        memory = client.memory.store(
            content,
            category=category,
            importance=importance,
            tags=tag or (),
            source=source,
            ttl_s=ttl,
            namespace=namespace,
        )
    _show_cid(memory, json_output)


@app.command("search")
def memory_search(
    query: QueryArgument,
    limit: LimitOption = 10,
    filter: FilterOption = None,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Active memories for QUERY, best first (hybrid relevance weighted by memory strength)."""
    where = parse_filter(filter)
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        memories = client.memory.search(query, limit=limit, filters=where, namespace=namespace)
    _show_memories(memories, json_output, scored=True)


@app.command("context")
def memory_context(
    query: QueryArgument,
    max_tokens: Annotated[
        int,
        typer.Option("--max-tokens", help="the block's budget in tokens", show_default=False),
    ],
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print the best memories for QUERY as one prompt-ready block within --max-tokens.

    The block goes to stdout as it is; the CIDs it used and its size go to stderr.
    """
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        context = client.memory.context(query, max_tokens, namespace=namespace)
    if json_output:
        print_json(context.model_dump())
        return
    if context.context:
        typer.echo(context.context)  # verbatim: no markup, wrapping or emoji codes
    err = stderr()
    used = len(context.cids)
    err.print(
        f"[dim]{used} {'memory' if used == 1 else 'memories'}, "
        f"{context.tokens} of {context.max_tokens} tokens[/]"
    )
    for cid in context.cids:
        err.print(f"[dim]  {escape(cid)}[/]", soft_wrap=True)


@app.command("update")
def memory_update(
    cid: CidArgument,
    content: ContentArgument,
    category: CategoryOption = None,
    importance: ImportanceOption = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            "-t",
            help="a tag, repeatable; given, the tags replace the old ones",
            show_default=False,
        ),
    ] = None,
    source: SourceOption = None,
    ttl: TtlOption = None,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Store CONTENT as the new version of memory CID and print its CID.

    The old version becomes superseded; options not given are carried over.
    """
    with cli_errors(), open_client(Connection(url, home, wallet, wallet_path)) as client:
        memory = client.memory.update(
            cid,
            content,
            category=category,
            importance=importance,
            tags=tag or None,
            source=source,
            ttl_s=ttl,
            namespace=namespace,
        )
    _show_cid(memory, json_output)


@app.command("versions")
def memory_versions(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every version of memory CID, oldest to newest, with its state."""
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        memories = client.memory.versions(cid, namespace=namespace)
    _show_memories(memories, json_output, created=True)


@app.command("get")
def memory_get(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one memory with its state."""
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        m = client.memory.get(cid, namespace=namespace)
    if json_output:
        print_json(m.model_dump())
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")  # a CID is folded, never cut
    grid.add_row("cid", escape(m.cid))
    grid.add_row("state", m.state)
    grid.add_row("category", escape(m.category or "-"))
    grid.add_row("importance", f"{m.importance:g}")
    grid.add_row("tags", escape(compact_json(m.tags)))
    grid.add_row("source", escape(m.source or "-"))
    grid.add_row("created", _when(m.created_at) + " UTC")
    grid.add_row("expires", _when(m.expires_at) + (" UTC" if m.expires_at is not None else ""))
    grid.add_row("supersedes", escape(m.supersedes or "-"))
    grid.add_row("content", escape(m.content))
    stdout().print(grid)


def _change(
    action: str, cid: str, namespace: str | None, conn: Connection, json_output: bool
) -> None:
    """A lifecycle change (forget, archive, unarchive); prints the memory's state after it."""
    with cli_errors(), open_client(conn) as client:
        change = {
            "forget": client.memory.forget,
            "archive": client.memory.archive,
            "unarchive": client.memory.unarchive,
        }[action]
        memory = change(cid, namespace=namespace)
    if json_output:
        print_json(memory.model_dump())
    else:
        stdout().print(f"{escape(memory.cid)} is now {memory.state}", soft_wrap=True)


@app.command("forget")
def memory_forget(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Forget memory CID for good: out of search, context and lists (but --state forgotten)."""
    _change("forget", cid, namespace, Connection(url, home, wallet, wallet_path), json_output)


@app.command("archive")
def memory_archive(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Archive memory CID: hidden from search and context, still listed (--state archived)."""
    _change("archive", cid, namespace, Connection(url, home, wallet, wallet_path), json_output)


@app.command("unarchive")
def memory_unarchive(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Bring archived memory CID back into search and context."""
    _change("unarchive", cid, namespace, Connection(url, home, wallet, wallet_path), json_output)


@app.command("delete")
def memory_delete(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Erase memory CID's record (its other versions stay)."""
    with cli_errors(), open_client(Connection(url, home, wallet, wallet_path)) as client:
        client.memory.delete(cid, namespace=namespace)
    if json_output:
        print_json({"cid": cid, "namespace": namespace or DEFAULT_NAMESPACE, "deleted": True})
    else:
        stdout().print(f"deleted {escape(cid)}", soft_wrap=True)


@app.command("list")
def memory_list(
    category: Annotated[
        str | None, typer.Option("--category", "-c", help="only this category", show_default=False)
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            "-t",
            help="only memories with this tag (any of those given)",
            show_default=False,
        ),
    ] = None,
    state: Annotated[
        str, typer.Option("--state", help=f"{', '.join(MEMORY_STATES)} or all")
    ] = "active",
    limit: LimitOption = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="memories to skip")] = 0,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Memories in one state, in the order they were stored."""
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        memories = client.memory.list(
            category=category,
            tags=tag or (),
            state=state,
            limit=limit,
            offset=offset,
            namespace=namespace,
        )
    _show_memories(memories, json_output, tags=True)


@app.command("links")
def memory_links(
    cid: CidArgument,
    namespace: NamespaceOption = None,
    url: UrlOption = None,
    home: HomeOption = None,
    wallet: SignerOption = None,
    wallet_path: WalletPathOption = None,
    json_output: JsonOption = False,
) -> None:
    """Memories linked to CID: similar, updates (an older version), updated_by (a newer one)."""
    with cli_errors(), open_reader(Connection(url, home, wallet, wallet_path)) as client:
        links = client.memory.links(cid, namespace=namespace)
    if json_output:
        print_json([link.model_dump() for link in links])
        return
    if not links:
        stdout().print("[dim]no links[/]")
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")  # in full, to pass on to another command
    for link in links:
        grid.add_row(link.type, escape(link.cid))
    stdout().print(grid)
