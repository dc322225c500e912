"""The CLI's one door into the SDK, so a move inside ``engram.sdk`` is a change here only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engram.cli._output import usage_error
from engram.cli.options import Connection
from engram.config import default_wallet_path, engram_url
from engram.sdk import FILE_BATCH_ITEMS, AsyncEngramClient, EngramClient, FileIngestReport

__all__ = ["FILE_BATCH_ITEMS", "FileIngestReport", "open_async_client", "open_client"]


def _where(conn: Connection) -> tuple[str | None, object]:
    """The node URL (or None: the embedded store) and the signer, as every command picks them."""
    from engram.chain.keys import open_wallet

    url, home = conn.url, conn.home
    if url and home is not None:
        usage_error("give --url (a node) or --home (the embedded store), not both")
    if not url and home is None:
        url = engram_url()
    wallet_path = conn.wallet_path or default_wallet_path()
    return url, open_wallet(conn.wallet, wallet_path) if conn.wallet else None


@contextmanager
def open_client(conn: Connection) -> Iterator[EngramClient]:
    """The one place that picks the mode: a node (``--url``/``ENGRAM_URL``) or the embedded store.

    An explicit ``--home`` outranks ``ENGRAM_URL``; ``--url`` with ``--home`` is a usage error.
    With ``--wallet`` every request is signed by that hotkey.
    """
    url, signer = _where(conn)
    client = (
        EngramClient(url, wallet=signer) if url else EngramClient(path=conn.home, wallet=signer)
    )
    with client:
        yield client


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
        return AsyncEngramClient(url, namespace=namespace, wallet=signer)
    return AsyncEngramClient(path=conn.home, namespace=namespace, wallet=signer)
