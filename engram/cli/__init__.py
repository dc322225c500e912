"""The ``engram`` command: the only place that prints or exits.

A thin layer over :class:`engram.EngramClient`. Every data command runs against
the embedded store (``--home`` or ``ENGRAM_HOME``) unless a node is named with
``--url`` or ``ENGRAM_URL``; ``--json`` prints machine-readable JSON on stdout
and nothing else there.

Exit codes: 0 success, 1 an Engram error (not found, invalid input rejected by
the store or node, unreachable node, a read on a home that holds no store) or a
partly failed file ingest, 2 a usage error (bad option values, conflicting
options, a port outside 1-65535), 3 a server whose start-up failed (its log says
why), 4 busy: a port already in use, or a localnet already running on that home
(nothing has been announced on chain), 128+N stopped by signal N (130 Ctrl-C,
129 SIGHUP, 143 SIGTERM: ``engram localnet`` stops all its processes first).

One module per command group (``records``, ``memory``, ``access``, ``apikeys``, ``serve``,
``localnet``, ``mcp``, ``wallet``, ``chain``); ``options`` declares the options they share. The top-level
commands are registered here, in the order ``engram --help`` lists them.
"""

from __future__ import annotations

import typer

from engram.cli import access, apikeys, chain, localnet, mcp, memory, records, serve, wallet
from engram.cli._client import API_KEY
from engram.cli.options import ApiKeyOption

__all__ = ["app"]

app = typer.Typer(
    help="Engram: decentralized semantic memory for AI.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(api_key: ApiKeyOption = None) -> None:
    """Engram: decentralized semantic memory for AI.

    Data commands use the embedded store under ENGRAM_HOME (default ~/.engram)
    unless a node is given with --url or ENGRAM_URL. Through a gateway,
    `engram --api-key KEY <command> --url GATEWAY` (or ENGRAM_API_KEY) acts with
    one of its API keys (see `engram keys`).
    """
    API_KEY.set(api_key)


for _command in (
    records.ingest,
    records.query,
    records.search,
    records.get,
    records.delete,
    records.status,
    access.grant,
    access.revoke,
    serve.miner,
    serve.validator,
    serve.gateway,
    localnet.localnet,
    mcp.mcp,
):
    app.command()(_command)
app.add_typer(memory.app, name="memory")
app.add_typer(apikeys.app, name="keys")
app.add_typer(wallet.app, name="wallet")
app.add_typer(chain.app, name="chain")
