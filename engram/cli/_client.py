"""The CLI's one door into the SDK, so a move inside ``engram.sdk`` is a change here only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from pathlib import Path

from engram.cli._output import usage_error
from engram.cli.options import Connection
from engram.config import default_wallet_path, engram_home, engram_url
from engram.errors import NotFoundError
from engram.sdk import FILE_BATCH_ITEMS, AsyncEngramClient, EngramClient, FileIngestReport

__all__ = [
    "FILE_BATCH_ITEMS",
    "FileIngestReport",
    "open_async_client",
    "open_client",
    "open_reader",
]


API_KEY: ContextVar[str | None] = ContextVar("engram_cli_api_key", default=None)
"""The ``--api-key`` the ``engram`` callback was given, for the command that runs next."""


def _where(conn: Connection) -> tuple[str | None, object]:
    """The node URL (or None: the embedded store) and the signer, as every command picks them."""
    from engram.chain.keys import open_wallet

    url, home = conn.url, conn.home
    if url and home is not None:
        usage_error("give --url (a node) or --home (the embedded store), not both")
    if not url and home is None:
        url = engram_url()
    if _api_key() is not None and not url:
        usage_error("--api-key is a gateway's: give the gateway with --url (or ENGRAM_URL)")
    wallet_path = conn.wallet_path or default_wallet_path()
    return url, open_wallet(conn.wallet, wallet_path) if conn.wallet else None


def _api_key() -> str | None:
    """``engram --api-key``, given before the command (the SDK reads ENGRAM_API_KEY itself)."""
    return API_KEY.get()


def _require_store(home: Path) -> None:
    """A read from a home that holds no store is a mistake (a typo in --home, an unset
    ENGRAM_HOME): say so, rather than create an empty store and answer "no results"."""
    from engram.store import Store

    if not Store.exists(home):
        raise NotFoundError(
            f"store not found: {home} holds no Engram store (nothing has been written there); "
            "check --home or ENGRAM_HOME, or give --url for a node"
        )


@contextmanager
def open_client(conn: Connection, *, read_only: bool = False) -> Iterator[EngramClient]:
    """The one place that picks the mode: a node (``--url``/``ENGRAM_URL``) or the embedded store.

    An explicit ``--home`` outranks ``ENGRAM_URL``; ``--url`` with ``--home`` is a usage error.
    With ``--wallet`` every request is signed by that hotkey. A ``read_only`` command on a
    home without a store raises :class:`NotFoundError`; a write creates the store.
    """
    url, signer = _where(conn)
    if not url and read_only:
        _require_store(conn.home or engram_home())
    client = (
        EngramClient(url, wallet=signer, api_key=_api_key())
        if url
        else EngramClient(path=conn.home, wallet=signer)
    )
    with client:
        yield client


def open_reader(conn: Connection) -> AbstractContextManager[EngramClient]:
    """:func:`open_client` for a command that only reads: a home without a store is an error."""
    return open_client(conn, read_only=True)


def open_async_client(
    conn: Connection,
    namespace: str | None = None,
    chain: str | None = None,
    netuid: int | None = None,
) -> AsyncEngramClient:
    """:func:`open_client`'s async twin for long-running servers, which also reach the whole
    network with ``chain`` (a usage error beside ``--url`` or ``--home``)."""
    if chain is not None:
        if conn.url or conn.home is not None:
            usage_error("give --chain (the network), --url (a node) or --home, not several")
        _, signer = _where(Connection(None, None, conn.wallet, conn.wallet_path))
        return AsyncEngramClient.from_network(chain, netuid, namespace=namespace, wallet=signer)
    url, signer = _where(conn)
    if url:
        return AsyncEngramClient(url, namespace=namespace, wallet=signer, api_key=_api_key())
    return AsyncEngramClient(path=conn.home, namespace=namespace, wallet=signer)
