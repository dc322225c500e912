"""The CLI's one door into the SDK, so a move inside ``engram.sdk`` is a change here only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engram.cli._output import usage_error
from engram.cli.options import Connection
from engram.config import default_wallet_path, engram_url
from engram.sdk import FILE_BATCH_ITEMS, EngramClient, FileIngestReport

__all__ = ["FILE_BATCH_ITEMS", "FileIngestReport", "open_client"]


@contextmanager
def open_client(conn: Connection) -> Iterator[EngramClient]:
    """The one place that picks the mode: a node (``--url``/``ENGRAM_URL``) or the embedded store.

    An explicit ``--home`` outranks ``ENGRAM_URL``; ``--url`` with ``--home`` is a usage error.
    With ``--wallet`` every request is signed by that hotkey.
    """
    from engram.chain.keys import open_wallet

    url, home = conn.url, conn.home
    if url and home is not None:
        usage_error("give --url (a node) or --home (the embedded store), not both")
    if not url and home is None:
        url = engram_url()
    wallet_path = conn.wallet_path or default_wallet_path()
    signer = open_wallet(conn.wallet, wallet_path) if conn.wallet else None
    client = EngramClient(url, wallet=signer) if url else EngramClient(path=home, wallet=signer)
    with client:
        yield client
