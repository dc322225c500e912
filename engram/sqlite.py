"""SQLite plumbing shared by the store, the LocalChain file, the validator state and the
servers' own small files (:class:`SqliteFile`).

One way to open a connection (autocommit, explicit transactions, the pragmas
each database asks for), one transaction context, one retry on "database is
locked", and named, recorded migrations in the manner of sqlite-utils: each
migration is a function with a name, the names applied are kept in a table,
and pending ones run in declaration order, once. A database made before
migrations were recorded is mapped onto them by a ``baseline`` function that
inspects what is already there.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal, TypeVar

from engram.errors import EngramError, InvalidRequestError, StorageError

T = TypeVar("T")
Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS_TABLE = "_engram_migrations"
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA", "0", "1", "2", "3")


def connect(
    path: str | Path,
    *,
    mode: Literal["ro", "rw", "rwc"] = "rwc",
    busy_timeout_ms: int = 10_000,
    wal: bool = True,
    synchronous: str | None = "NORMAL",
    cache_size_kib: int | None = None,
) -> sqlite3.Connection:
    """A connection any thread may use, in autocommit mode: transactions are explicit ``BEGIN``s.

    ``busy_timeout`` is set first, because switching to WAL may itself wait for
    another process. The switch is also retried: when several connections open a
    new file at once, SQLite may answer "locked" at once, without waiting, to some
    of them. ``mode`` is SQLite's URI mode (``ro`` opens without creating or
    writing).
    """
    if synchronous is not None and synchronous.upper() not in _SYNCHRONOUS:
        raise InvalidRequestError(
            f"invalid SQLite synchronous mode {synchronous!r}: use OFF, NORMAL, FULL or EXTRA"
        )
    conn = sqlite3.connect(
        f"{Path(path).resolve().as_uri()}?mode={mode}",
        uri=True,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if wal:
            retry(lambda: conn.execute("PRAGMA journal_mode=WAL"), attempts=8, backoff_s=0.01)
        if synchronous is not None:
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if cache_size_kib is not None:
            conn.execute(f"PRAGMA cache_size={-int(cache_size_kib)}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction: committed on success, rolled back on any error.

    A write takes the write lock up front (``BEGIN IMMEDIATE``), so it never
    fails halfway when upgrading a read lock; a read is a deferred ``BEGIN``,
    one consistent snapshot that never blocks a writer under WAL.
    """
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite gave up waiting for another connection's lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return True
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def retry(action: Callable[[], T], *, attempts: int = 5, backoff_s: float = 0.05) -> T:
    """``action()``, run again while SQLite reports busy or locked; the last error propagates.

    Each attempt already waits up to the connection's busy timeout; between
    attempts the wait doubles, with jitter so competing processes spread out.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(attempts - 1):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            time.sleep(backoff_s * 2**attempt * (0.5 + random.random()))
    return action()


def tables(conn: sqlite3.Connection) -> set[str]:
    """The database's own tables, the migrations record aside (what a ``baseline`` looks at)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name != ?", (MIGRATIONS_TABLE,)
    )
    return {r[0] for r in rows}


class Migrations:
    """The ordered, named migrations of one kind of database.

    Register each with the instance as a decorator; the function's name is the
    migration's name, recorded in :data:`MIGRATIONS_TABLE` once it has run.
    Migrations run inside one write transaction, so they must not call
    ``executescript`` (it commits). ``baseline`` inspects a database that has
    no record yet and returns the name of the last migration its tables
    already reflect (``None`` for a new database); it may raise for a file
    that is not this kind of database. ``error`` is what a database recording
    migrations this code does not know (a newer Engram's) raises.
    """

    def __init__(
        self,
        name: str,
        *,
        baseline: Callable[[sqlite3.Connection], str | None] | None = None,
        error: type[EngramError] = StorageError,
    ) -> None:
        self.name = name
        self._baseline = baseline
        self._error = error
        self._migrations: dict[str, Migration] = {}

    def __call__(self, fn: Migration) -> Migration:
        if fn.__name__ in self._migrations:
            raise ValueError(f"migration {fn.__name__!r} is already in {self.name!r}")
        self._migrations[fn.__name__] = fn
        return fn

    @property
    def names(self) -> list[str]:
        return list(self._migrations)

    def applied(self, conn: sqlite3.Connection) -> list[str]:
        """The recorded migrations, oldest first; empty before any was recorded."""
        if not _has_table(conn, MIGRATIONS_TABLE):
            return []
        rows = conn.execute(
            f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set=? ORDER BY rowid",
            (self.name,),
        )
        return [r[0] for r in rows]

    def apply(self, conn: sqlite3.Connection) -> list[str]:
        """Run the pending migrations in order; returns the names run (baselined ones excluded).

        An up-to-date database costs a read and never takes the write lock;
        otherwise everything, including the baseline, happens in one write
        transaction, re-checked under the lock, so concurrent openers agree.
        """
        if not self._pending(conn):
            return []
        ran: list[str] = []
        with transaction(conn, write=True):
            if not _has_table(conn, MIGRATIONS_TABLE):
                conn.execute(
                    f"CREATE TABLE {MIGRATIONS_TABLE} ("
                    "migration_set TEXT NOT NULL, name TEXT NOT NULL, applied_at REAL NOT NULL, "
                    "PRIMARY KEY (migration_set, name))"
                )
            if not self.applied(conn):
                self._record(conn, self._baselined(conn))
            for name in self._pending(conn):
                self._migrations[name](conn)
                self._record(conn, [name])
                ran.append(name)
        return ran

    def _pending(self, conn: sqlite3.Connection) -> list[str]:
        applied = self.applied(conn)
        unknown = [n for n in applied if n not in self._migrations]
        if unknown:
            file = conn.execute("PRAGMA database_list").fetchone()[2]
            raise self._error(
                f"{file} was written by a newer Engram ({self.name} migrations "
                f"{', '.join(unknown)} are unknown here); upgrade engram-subnet"
            )
        done = set(applied)
        return [n for n in self._migrations if n not in done]

    def _baselined(self, conn: sqlite3.Connection) -> list[str]:
        last = self._baseline(conn) if self._baseline is not None else None
        if last is None:
            return []
        names = self.names
        if last not in names:
            raise ValueError(f"baseline {last!r} is not a migration of {self.name!r}")
        return names[: names.index(last) + 1]

    def _record(self, conn: sqlite3.Connection, names: list[str]) -> None:
        now = time.time()
        conn.executemany(
            f"INSERT INTO {MIGRATIONS_TABLE}(migration_set, name, applied_at) VALUES (?, ?, ?)",
            [(self.name, n, now) for n in names],
        )


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return row.fetchone() is not None


class SqliteFile:
    """One small SQLite file a server keeps beside its data (the audit log, the API keys):
    opened on first use or by :meth:`open`, migrated then, used from any thread under one lock,
    and opened again after :meth:`close`."""

    def __init__(
        self,
        path: Path,
        migrations: Migrations,
        what: str,
        on_open: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.migrations = migrations
        self.what = what  # named in errors: "the audit log"
        self.on_open = on_open  # run in a write transaction once the file is migrated
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (create and migrate) the file now rather than on first use."""
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn: sqlite3.Connection | None = None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = connect(self.path)
                self.migrations.apply(conn)
                if self.on_open is not None:
                    with transaction(conn):
                        self.on_open(conn)
            except (OSError, sqlite3.Error) as exc:
                if conn is not None:
                    conn.close()
                raise StorageError(f"cannot open {self.what} {self.path}: {exc}") from exc
            self._conn = conn
        return self._conn

    def run(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        """``fn(connection)`` in one transaction; SQLite's errors become StorageError."""
        with self._lock:
            try:
                conn = self._connection()
                with transaction(conn, write=write):
                    return fn(conn)
            except sqlite3.Error as exc:
                raise StorageError(f"{self.what} {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
