"""Options that more than one command takes, declared once so their flags and help agree.

Data commands reach a node or the embedded store through the :class:`Connection`
bundle; the server commands share the chain, wallet and log options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

# --- data commands -----------------------------------------------------------------------------

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
SignerOption = Annotated[
    str | None,
    typer.Option(
        "--wallet",
        help="sign requests with this wallet's hotkey, as NAME/HOTKEY (needed to delete, "
        "and to use a private namespace)",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="a gateway API key (ek_...) to act with, given before the command; with --url "
        "only [ENGRAM_API_KEY]",
        show_default=False,
    ),
]
CidArgument = Annotated[str, typer.Argument(help="the record's CID")]
PermissionOption = Annotated[
    str, typer.Option("--permission", "-p", help="read or write (write includes delete)")
]
TopKOption = Annotated[int, typer.Option("--top-k", "-k", min=1, help="how many results")]
FilterOption = Annotated[
    str | None,
    typer.Option(
        "--filter",
        help='metadata filter as a JSON object, e.g. \'{"lang": "en"}\'',
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print machine-readable JSON on stdout, nothing else")
]


@dataclass(frozen=True)
class Connection:
    """Where a data command sends its requests (``--url`` or ``--home``) and who signs them."""

    url: str | None
    home: Path | None
    wallet: str | None
    wallet_path: Path | None


# --- servers, wallets and chains ---------------------------------------------------------------

ChainOption = Annotated[
    str | None,
    typer.Option(
        help="chain: local:PATH (a LocalChain file) or a Bittensor network, finney, test, "
        "local or ws://… [ENGRAM_CHAIN, default local:ENGRAM_HOME/chain.sqlite]",
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
WalletPathOption = Annotated[
    Path | None,
    typer.Option(
        help="wallets folder [ENGRAM_WALLET_PATH, default ~/.bittensor/wallets]",
        show_default=False,
    ),
]
ListenHostOption = Annotated[
    str | None, typer.Option(help="address to listen on [ENGRAM_HOST]", show_default=False)
]
LogLevelOption = Annotated[
    str | None,
    typer.Option(help="debug, info, warning or error [ENGRAM_LOG_LEVEL]", show_default=False),
]
ChainArgument = Annotated[
    str, typer.Argument(help="local:PATH, or a Bittensor network: finney, test, local, ws://…")
]
SubnetOption = Annotated[int, typer.Option(help="subnet")]
