"""A server's audit log: every change asked of it, who asked, from where, and how it ended.

The miner and the gateway each keep one SQLite file (``<home>/audit.sqlite``,
``<home>/gateway-audit.sqlite``).
:class:`~engram.server.routes.NodeRoutes` appends one :class:`AuditEntry` per
request to a route that changes what a node holds (the routes that spend the
ingest budget), once it is answered, refused or failed: the verified hotkey
(or ``"anonymous"``), the method and route, the namespace and the CID the path
names, the time, the client's address, and the HTTP status and error code.
Nothing a request carries is kept beyond that: no body, no ``namespace_key``,
no signature header. The newest ``max_rows`` entries are kept; older ones are
deleted every so often, so the file stays bounded.

A namespace's owner reads its entries with ``GET /audit?namespace=NS``. A
gateway cannot ask the miners who owns a private namespace on a user's behalf
(it relays a signature only to the route it was made for), so it remembers who
first wrote each namespace through it (:meth:`AuditLog.claim`), mirroring the
miners' rule: the first signed write claims a namespace, an unsigned one
leaves it public. That is one small row per namespace written through the
gateway, never trimmed (a trimmed claim could be taken by the next writer).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from engram import sqlite
from engram.errors import InvalidRequestError

FILENAME = "audit.sqlite"  # a miner's, in its home
GATEWAY_FILENAME = "gateway-audit.sqlite"  # a gateway's, apart should it share a miner's home
ANONYMOUS = "anonymous"  # the actor of an unsigned (or unverifiable) request
MAX_PAGE = 1_000  # entries one GET /audit answers at most
_MAX_TEXT = 256  # a namespace or CID longer than any valid one is kept cut to this
_TRIM_EVERY = 1_000  # inserts between two trims (fewer when max_rows is small)

_MIGRATIONS = sqlite.Migrations("audit_log")


@_MIGRATIONS
def m001_audit_log(conn: sqlite3.Connection) -> None:
    """The entries, by namespace; and who first wrote each namespace (read on a gateway)."""
    conn.execute(
        """CREATE TABLE entries (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            at        REAL NOT NULL,
            actor     TEXT NOT NULL,
            method    TEXT NOT NULL,
            route     TEXT NOT NULL,
            namespace TEXT,
            cid       TEXT,
            client_ip TEXT,
            status    INTEGER NOT NULL,
            code      TEXT
        )"""
    )
    conn.execute("CREATE INDEX entries_by_namespace ON entries(namespace, id)")
    conn.execute("CREATE TABLE claims (namespace TEXT PRIMARY KEY, owner TEXT, at REAL NOT NULL)")


class AuditEntry(BaseModel):
    """One change asked of a node: who, what, when, from where, and how it ended."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = None  # set by the log; entries are numbered in the order they came
    at: float = Field(description="unix time the answer was given")
    actor: str = Field(description='the verified hotkey that signed the request, or "anonymous"')
    method: str
    route: str = Field(description="the route's path template, e.g. /records/{cid}")
    namespace: str | None = Field(
        default=None, description="the namespace changed (none when the request did not parse)"
    )
    cid: str | None = Field(default=None, description="the CID the route's path names")
    client_ip: str | None = None
    status: int = Field(description="the HTTP status answered")
    code: str | None = Field(
        default=None,
        description="the error code (see engram.errors); for a batch, the first of its failed "
        "items in this namespace",
    )


class AuditParams(BaseModel):
    """``GET /audit``'s query string."""

    model_config = ConfigDict(extra="ignore")

    namespace: str = Field(max_length=_MAX_TEXT)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
    before_id: int | None = Field(default=None, ge=1, description="entries older than this id")


class AuditResponse(BaseModel):
    namespace: str
    entries: list[AuditEntry] = Field(description="newest first")


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:_MAX_TEXT]


class AuditLog:
    """The entries in one SQLite file, the newest ``max_rows`` kept; safe from any thread.

    The file is opened on first use (or by :meth:`open`) and again after
    :meth:`close`, so a server opens it when it starts and closes it when it stops.
    """

    def __init__(self, path: Path, max_rows: int = 100_000) -> None:
        if max_rows < 1:
            raise InvalidRequestError(f"audit_max_rows must be at least 1, not {max_rows}")
        self.max_rows = max_rows
        self.trim_every = max(1, min(_TRIM_EVERY, max_rows // 10))
        self._since_trim = 0
        # a smaller bound than last time applies as soon as the file opens
        self._file = sqlite.SqliteFile(path, _MIGRATIONS, "the audit log", on_open=self._trim)
        self.path = self._file.path
        self._run = self._file.run

    def open(self) -> None:
        """Open (create, migrate and trim) the file now rather than on first use."""
        self._file.open()

    def close(self) -> None:
        self._file.close()

    # --- entries -------------------------------------------------------------------------

    def record(self, *entries: AuditEntry) -> None:
        """Append ``entries``; every ``trim_every`` of them, delete all but the newest
        ``max_rows``."""
        if not entries:
            return
        rows = [
            (
                e.at,
                e.actor,
                e.method,
                e.route,
                _cut(e.namespace),
                _cut(e.cid),
                e.client_ip,
                e.status,
                e.code,
            )
            for e in entries
        ]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO entries(at, actor, method, route, namespace, cid, client_ip, "
                "status, code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._since_trim += len(rows)
            if self._since_trim >= self.trim_every:
                self._trim(conn)

        self._run(insert, write=True)

    def _trim(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "DELETE FROM entries WHERE id < "
            "(SELECT id FROM entries ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self.max_rows - 1,),
        )
        self._since_trim = 0

    def entries(
        self, namespace: str, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEntry]:
        """A namespace's entries, newest first; ``before_id`` pages back past an entry."""

        def select(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
            return conn.execute(
                "SELECT id, at, actor, method, route, namespace, cid, client_ip, status, code "
                "FROM entries WHERE namespace = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (namespace, before_id if before_id is not None else 2**63 - 1, limit),
            ).fetchall()

        fields = list(AuditEntry.model_fields)
        return [
            AuditEntry.model_validate(dict(zip(fields, row, strict=True)))
            for row in self._run(select, write=False)
        ]

    def __len__(self) -> int:
        return int(
            self._run(lambda c: c.execute("SELECT COUNT(*) FROM entries").fetchone()[0], False)
        )

    # --- who first wrote a namespace (a gateway's view of ownership) ---------------------

    def claim(self, namespace: str, owner: str | None) -> None:
        """Note ``owner`` (``None``: nobody, the namespace is public) as the one who first
        wrote ``namespace``, unless someone already did."""
        self._run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO claims(namespace, owner, at) VALUES (?, ?, ?)",
                (_cut(namespace), owner, time.time()),
            ),
            write=True,
        )

    def claimant(self, namespace: str) -> str | None:
        """The hotkey that first wrote ``namespace`` (signed); ``None`` if it was unsigned or
        nothing was written there."""
        row = self._run(
            lambda c: c.execute(
                "SELECT owner FROM claims WHERE namespace = ?", (namespace,)
            ).fetchone(),
            write=False,
        )
        return None if row is None else row[0]

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
