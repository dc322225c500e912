"""SQLite, the source of truth: records, their text (FTS5) and the index checkpoints.

One writer connection guarded by a lock and one reader connection per thread;
WAL mode lets readers run while a write commits. A write is acknowledged only
after its transaction commits, which is what survives ``kill -9``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engram import sqlite
from engram.errors import StorageError
from engram.records import Record

_LEGACY_VERSIONS = {1: "m001_records", 2: "m002_record_fields", 3: "m003_writers_and_owners"}


def _baseline(conn: sqlite3.Connection) -> str | None:
    """Before migrations were recorded, ``settings.schema_version`` said how far a store was."""
    if "records" not in sqlite.tables(conn):
        return None
    row = conn.execute("SELECT value FROM settings WHERE key='schema_version'").fetchone()
    # That code wrote the version right after creating its tables: no row is its newest schema.
    version = int(row[0]) if row else 3
    if version not in _LEGACY_VERSIONS:
        raise StorageError(f"unknown store schema {version}; upgrade engram-subnet")
    return _LEGACY_VERSIONS[version]


_MIGRATIONS = sqlite.Migrations("store", baseline=_baseline)


# The first three tolerate tables the unrecorded code may already have created (it ran
# its whole schema before upgrading the version), hence IF NOT EXISTS and the column check.
@_MIGRATIONS
def m001_records(conn: sqlite3.Connection) -> None:
    """The records, their full text (FTS5) and the index checkpoints."""
    for statement in (
        "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS records (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace     TEXT NOT NULL,
            cid           TEXT NOT NULL,
            embedding     BLOB NOT NULL,
            metadata      TEXT NOT NULL,
            text          TEXT,
            model_version TEXT NOT NULL,
            created_at    REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS records_namespace_cid ON records(namespace, cid)",
        "CREATE INDEX IF NOT EXISTS records_namespace_id ON records(namespace, id)",
        """CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(
            text, content='records', content_rowid='id'
        )""",
        """CREATE TRIGGER IF NOT EXISTS records_fts_insert AFTER INSERT ON records
        WHEN new.text IS NOT NULL BEGIN
            INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
        END""",
        """CREATE TRIGGER IF NOT EXISTS records_fts_delete AFTER DELETE ON records
        WHEN old.text IS NOT NULL BEGIN
            INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
        """CREATE TABLE IF NOT EXISTS index_checkpoints (
            namespace    TEXT PRIMARY KEY,
            file         TEXT NOT NULL,
            indexed_upto INTEGER NOT NULL,
            params       TEXT NOT NULL
        )""",
    ):
        conn.execute(statement)


@_MIGRATIONS
def m002_record_fields(conn: sqlite3.Connection) -> None:
    """Index metadata fields so filters are lookups; built from the records already stored."""
    for statement in (
        """CREATE TABLE IF NOT EXISTS record_fields (
            id        INTEGER NOT NULL,
            namespace TEXT NOT NULL,
            key       TEXT NOT NULL,
            kind      TEXT NOT NULL,
            value
        )""",
        "CREATE INDEX IF NOT EXISTS record_fields_lookup ON record_fields(namespace, key, value)",
        "CREATE INDEX IF NOT EXISTS record_fields_id ON record_fields(id)",
        """CREATE TRIGGER IF NOT EXISTS record_fields_insert AFTER INSERT ON records BEGIN
            INSERT INTO record_fields(id, namespace, key, kind, value)
            SELECT new.id, new.namespace, key, type, atom FROM json_each(new.metadata);
        END""",
        """CREATE TRIGGER IF NOT EXISTS record_fields_delete AFTER DELETE ON records BEGIN
            DELETE FROM record_fields WHERE id = old.id;
        END""",
        "DELETE FROM record_fields",
        "INSERT INTO record_fields(id, namespace, key, kind, value) "
        "SELECT r.id, r.namespace, j.key, j.type, j.atom FROM records r, json_each(r.metadata) j",
    ):
        conn.execute(statement)


@_MIGRATIONS
def m003_writers_and_owners(conn: sqlite3.Connection) -> None:
    """Who signed each write (older records keep NULL: permanent), namespace owners and grants."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
    if "writer" not in columns:
        conn.execute("ALTER TABLE records ADD COLUMN writer TEXT")
    conn.execute(
        """CREATE TABLE IF NOT EXISTS namespace_owners (
            namespace TEXT PRIMARY KEY,
            owner     TEXT NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS namespace_grants (
            namespace  TEXT NOT NULL,
            hotkey     TEXT NOT NULL,
            permission TEXT NOT NULL,
            PRIMARY KEY (namespace, hotkey, permission)
        )"""
    )


@_MIGRATIONS
def m004_namespace_keys(conn: sqlite3.Connection) -> None:
    """A slow, salted hash of each namespace's legacy key, so the key itself is never stored."""
    conn.execute(
        "CREATE TABLE namespace_keys "
        "(namespace TEXT PRIMARY KEY, key_hash BLOB NOT NULL, created_at REAL NOT NULL)"
    )


@_MIGRATIONS
def m005_stemmed_text(conn: sqlite3.Connection) -> None:
    """Full text indexed by word stem (SQLite's Porter tokenizer), so "painted" finds
    "painting": rebuilt from the records' text."""
    conn.execute("DROP TABLE IF EXISTS records_fts")
    conn.execute(
        "CREATE VIRTUAL TABLE records_fts USING fts5("
        "text, content='records', content_rowid='id', tokenize='porter unicode61')"
    )
    conn.execute("INSERT INTO records_fts(records_fts) VALUES ('rebuild')")


@_MIGRATIONS
def m006_memory_states_and_list_items(conn: sqlite3.Connection) -> None:
    """Each memory's lifecycle state and FSRS card (kept beside the record, whose CID covers
    its content); and the items of top-level metadata lists indexed under their key, so
    ``{"tags": "work"}`` finds a record tagged ``["work", "home"]``."""
    for statement in (
        """CREATE TABLE IF NOT EXISTS memory_states (
            namespace  TEXT NOT NULL,
            cid        TEXT NOT NULL,
            state      TEXT NOT NULL,
            card       TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (namespace, cid)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER IF NOT EXISTS record_fields_list_items AFTER INSERT ON records BEGIN
            INSERT INTO record_fields(id, namespace, key, kind, value)
            SELECT new.id, new.namespace, f.key, i.type, i.atom
            FROM json_each(new.metadata) f, json_each(CASE f.type WHEN 'array' THEN f.value ELSE '[]' END) i
            WHERE f.type = 'array' AND i.type NOT IN ('array', 'object');
        END""",
        """INSERT INTO record_fields(id, namespace, key, kind, value)
            SELECT r.id, r.namespace, f.key, i.type, i.atom
            FROM records r, json_each(r.metadata) f,
                json_each(CASE f.type WHEN 'array' THEN f.value ELSE '[]' END) i
            WHERE f.type = 'array' AND i.type NOT IN ('array', 'object')""",
    ):
        conn.execute(statement)


@_MIGRATIONS
def m007_namespace_dims(conn: sqlite3.Connection) -> None:
    """Each namespace's embedding dimension, fixed by its first write."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS namespace_dims (namespace TEXT PRIMARY KEY, dim INTEGER NOT NULL)"
    )
    conn.execute(
        "INSERT OR IGNORE INTO namespace_dims(namespace, dim) "
        "SELECT namespace, length(embedding) / 4 FROM records GROUP BY namespace"
    )


@_MIGRATIONS
def m008_index_segments(conn: sqlite3.Connection) -> None:
    """An index is a list of segment files (``file`` stays the last one), and the calibration
    of its default search beam."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(index_checkpoints)")}
    for column in ("files", "tuning"):
        if column not in columns:
            conn.execute(f"ALTER TABLE index_checkpoints ADD COLUMN {column} TEXT")


@_MIGRATIONS
def m009_deletions(conn: sqlite3.Connection) -> None:
    """Deleted records' tombstones, with the signed request that proves who asked, so a replica
    that missed a delete can be told of it later (``seq`` orders them for readers)."""
    conn.execute(
        """CREATE TABLE IF NOT EXISTS deletions (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace  TEXT NOT NULL,
            cid        TEXT NOT NULL,
            deleted_at REAL NOT NULL,
            proof      TEXT
        )"""
    )
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS deletions_record ON deletions(namespace, cid)")
    conn.execute("CREATE INDEX IF NOT EXISTS deletions_age ON deletions(deleted_at)")


_RECORD_COLUMNS = "id, cid, embedding, metadata, text, namespace, model_version, writer"


def row_to_record(row: Sequence[Any]) -> Record:
    return Record(
        cid=row[1],
        embedding=np.frombuffer(row[2], dtype="<f4"),
        metadata=json.loads(row[3]),
        text=row[4],
        namespace=row[5],
        model_version=row[6],
        writer=row[7],
    )


@dataclass(frozen=True)
class Checkpoint:
    """A namespace's index on disk: its segment files (oldest first), the highest row id
    they cover, the build parameters and the calibration of its default search beam."""

    files: list[str]
    upto: int
    params: dict[str, Any]
    tuning: dict[str, Any] | None = None


@dataclass(frozen=True)
class Deletion:
    """A record's tombstone: when it was deleted (the signer's clock, when signed) and the
    signed request that asked for it (JSON, ``None`` when it was not signed)."""

    seq: int
    namespace: str
    cid: str
    deleted_at: float
    proof: str | None = None


class Database:
    """The SQLite file of one store."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.write_lock = threading.RLock()
        try:
            self._writer = self._connect()
            _MIGRATIONS.apply(self._writer)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the store database {path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        return sqlite.connect(self.path, synchronous=self._synchronous, cache_size_kib=65536)

    @property
    def reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the single writer; commits on success, rolls back on error."""
        with self.write_lock, sqlite.transaction(self._writer) as conn:
            yield conn

    # --- records -------------------------------------------------------------------------

    def insert(
        self, conn: sqlite3.Connection, records: Sequence[Record], writer: str | None = None
    ) -> list[int | None]:
        """Insert records; returns each new row id, or None where the CID was already stored.
        Each is written by ``writer``, or by its own :attr:`Record.writer` where it has one.

        Runs inside the writer's transaction: new rows get consecutive ids after
        the table's sequence, so one ``executemany`` can insert them all.
        """
        seen = self._stored_cids(conn, records)
        ids: list[int | None] = []
        fresh: list[Record] = []
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='records'").fetchone()
        next_id = (row[0] if row else 0) + 1
        for r in records:
            key = (r.namespace, r.cid)
            if key in seen:
                ids.append(None)
                continue
            seen.add(key)
            fresh.append(r)
            ids.append(next_id)
            next_id += 1
        conn.executemany(
            "INSERT INTO records(namespace, cid, embedding, metadata, text, model_version, writer) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.namespace,
                    r.cid,
                    r.embedding.tobytes(),
                    json.dumps(r.metadata, separators=(",", ":")),
                    r.text,
                    r.model_version,
                    r.writer or writer,
                )
                for r in fresh
            ],
        )
        conn.executemany(  # written again: the earlier delete no longer holds
            "DELETE FROM deletions WHERE namespace=? AND cid=?",
            [(r.namespace, r.cid) for r in fresh],
        )
        if fresh:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='records'").fetchone()
            if row[0] != next_id - 1:  # never expected: ids must be what we handed out
                raise StorageError("row ids were not assigned consecutively; nothing was stored")
        return ids

    def _stored_cids(
        self, conn: sqlite3.Connection, records: Sequence[Record]
    ) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        by_namespace: dict[str, list[str]] = {}
        for r in records:
            by_namespace.setdefault(r.namespace, []).append(r.cid)
        for namespace, cids in by_namespace.items():
            for start in range(0, len(cids), 900):
                chunk = cids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT cid FROM records WHERE namespace=? AND cid IN ({marks})",
                    (namespace, *chunk),
                )
                found.update((namespace, cid) for (cid,) in rows)
        return found

    def delete(
        self,
        conn: sqlite3.Connection,
        namespace: str,
        cid: str,
        written_before: float | None = None,
    ) -> int | None:
        """Delete the row (only a copy written before ``written_before``, when given)."""
        row = conn.execute(
            "DELETE FROM records WHERE namespace=? AND cid=? AND created_at < ? RETURNING id",
            (namespace, cid, math.inf if written_before is None else written_before),
        ).fetchone()
        if row is not None:
            conn.execute("DELETE FROM memory_states WHERE namespace=? AND cid=?", (namespace, cid))
        return row[0] if row else None

    # --- tombstones ----------------------------------------------------------------------

    def record_deletion(
        self,
        conn: sqlite3.Connection,
        namespace: str,
        cid: str,
        deleted_at: float,
        proof: str | None,
        expire_before: float,
    ) -> None:
        """Keep a tombstone (a newer one replaces an older one, under a new ``seq``, so readers
        see it again), and drop those older than ``expire_before``."""
        conn.execute("DELETE FROM deletions WHERE deleted_at < ?", (expire_before,))
        key = (namespace, cid)
        row = conn.execute(
            "SELECT deleted_at FROM deletions WHERE namespace=? AND cid=?", key
        ).fetchone()
        if row is not None and row[0] >= deleted_at:
            return
        conn.execute("DELETE FROM deletions WHERE namespace=? AND cid=?", key)
        conn.execute(
            "INSERT INTO deletions(namespace, cid, deleted_at, proof) VALUES (?, ?, ?, ?)",
            (*key, deleted_at, proof),
        )

    def deletions(self, after: int, limit: int) -> list[Deletion]:
        """The tombstones with a proof (other replicas can check those), in the order they
        were kept, from ``seq`` ``after`` on."""
        rows = self.reader.execute(
            "SELECT seq, namespace, cid, deleted_at, proof FROM deletions "
            "WHERE seq > ? AND proof IS NOT NULL ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [Deletion(*row) for row in rows]

    def deleted(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """When each of these (namespace, CID) was deleted, for those with a tombstone."""
        found: dict[tuple[str, str], float] = {}
        for namespace, cid in keys:
            row = self.reader.execute(
                "SELECT deleted_at FROM deletions WHERE namespace=? AND cid=?", (namespace, cid)
            ).fetchone()
            if row is not None:
                found[(namespace, cid)] = row[0]
        return found

    def get(self, namespace: str, cid: str) -> Record | None:
        row = self.reader.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE namespace=? AND cid=?", (namespace, cid)
        ).fetchone()
        return row_to_record(row) if row else None

    def find_cid(self, cid: str) -> list[Record]:
        """The records with this CID in every namespace, oldest first (audits name no namespace)."""
        rows = self.reader.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE cid=? ORDER BY id", (cid,)
        ).fetchall()
        return [row_to_record(row) for row in rows]

    def writer(self, namespace: str, cid: str) -> tuple[bool, str | None]:
        """(whether the record exists, the hotkey that wrote it or None)."""
        row = self.reader.execute(
            "SELECT writer FROM records WHERE namespace=? AND cid=?", (namespace, cid)
        ).fetchone()
        return (row is not None, row[0] if row else None)

    def page(
        self,
        namespace: str,
        limit: int,
        offset: int,
        select: tuple[str, list[Any]] | None = None,
    ) -> list[Record]:
        """Records in insertion order; ``select`` is a compiled filter (matching ids only)."""
        where, params = "namespace=?", [namespace]
        if select is not None:
            where += f" AND id IN ({select[0]})"
            params += select[1]
        rows = self.reader.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ).fetchall()
        return [row_to_record(r) for r in rows]

    def count(self, namespace: str | None = None) -> int:
        if namespace is None:
            return self.reader.execute("SELECT count(*) FROM records").fetchone()[0]
        return self.reader.execute(
            "SELECT count(*) FROM records WHERE namespace=?", (namespace,)
        ).fetchone()[0]

    def namespaces(self) -> dict[str, int]:
        rows = self.reader.execute(
            "SELECT namespace, count(*) FROM records GROUP BY namespace ORDER BY namespace"
        ).fetchall()
        return dict(rows)

    def all_cids(self) -> list[str]:
        return [r[0] for r in self.reader.execute("SELECT DISTINCT cid FROM records")]

    def hits(
        self, ids: Sequence[int], with_embedding: bool = False
    ) -> dict[int, tuple[str, str, str | None, bytes | None]]:
        """cid, metadata JSON, text and (on request) embedding of the given row ids, by id."""
        marks = ",".join("?" * len(ids))
        embedding = "embedding" if with_embedding else "NULL"
        rows = self.reader.execute(
            f"SELECT id, cid, metadata, text, {embedding} FROM records WHERE id IN ({marks})",
            tuple(ids),
        )
        return {r[0]: r[1:] for r in rows}

    def live_ids(self, namespace: str, upto: int | None = None) -> np.ndarray:
        sql = "SELECT id FROM records WHERE namespace=?"
        args: tuple[Any, ...] = (namespace,)
        if upto is not None:
            sql += " AND id<=?"
            args += (upto,)
        rows = self.reader.execute(sql + " ORDER BY id", args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors(
        self, namespace: str, after_id: int = 0, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 matrix) of the namespace's rows after ``after_id`` (or of ``ids``)."""
        if ids is None:
            cur = self.reader.execute(
                "SELECT id, embedding FROM records WHERE namespace=? AND id>? ORDER BY id",
                (namespace, after_id),
            )
            rows = cur.fetchall()
        else:
            rows = []
            for start in range(0, len(ids), 900):
                chunk = [int(i) for i in ids[start : start + 900]]
                marks = ",".join("?" * len(chunk))
                rows.extend(
                    self.reader.execute(
                        f"SELECT id, embedding FROM records WHERE id IN ({marks})", chunk
                    ).fetchall()
                )
        if not rows:
            return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        out_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        return out_ids, matrix

    def filter_ids(self, select: str, params: Sequence[Any]) -> np.ndarray:
        """Sorted ids from a compiled filter (:func:`engram.store.filters.compile_filter`)."""
        rows = self.reader.execute(f"SELECT id FROM ({select}) ORDER BY id", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def keyword_ids(
        self,
        namespace: str,
        query: str,
        limit: int,
        select: tuple[str, list[Any]] | None = None,
    ) -> list[tuple[int, float]]:
        """BM25 hits best first as ``(id, score)`` (higher is better), only ids ``select``
        (a compiled filter) allows."""
        where, params = "records_fts MATCH ? AND records.namespace=?", [query, namespace]
        if select is not None:
            where += f" AND records.id IN ({select[0]})"
            params += select[1]
        rows = self.reader.execute(
            "SELECT records.id, bm25(records_fts) FROM records_fts "
            "JOIN records ON records.id = records_fts.rowid "
            f"WHERE {where} ORDER BY bm25(records_fts) LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [(r[0], -r[1]) for r in rows]

    def dims(self) -> dict[str, int]:
        return dict(self.reader.execute("SELECT namespace, dim FROM namespace_dims").fetchall())

    def fix_dim(self, conn: sqlite3.Connection, namespace: str, dim: int) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO namespace_dims(namespace, dim) VALUES (?, ?)", (namespace, dim)
        )

    # --- memory lifecycle ----------------------------------------------------------------

    def memory_states(
        self, namespace: str, cids: Sequence[str]
    ) -> dict[str, tuple[str, str | None, float]]:
        """(state, FSRS card JSON, when it changed) of the given CIDs that have any."""
        out: dict[str, tuple[str, str | None, float]] = {}
        for start in range(0, len(cids), 900):
            chunk = list(cids[start : start + 900])
            marks = ",".join("?" * len(chunk))
            rows = self.reader.execute(
                "SELECT cid, state, card, updated_at FROM memory_states "
                f"WHERE namespace=? AND cid IN ({marks})",
                (namespace, *chunk),
            )
            out.update({r[0]: (r[1], r[2], r[3]) for r in rows})
        return out

    def set_memory_state(
        self, namespace: str, cid: str, state: str, card: str | None, updated_at: float
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO memory_states(namespace, cid, state, card, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(namespace, cid) DO UPDATE SET "
                "state=excluded.state, card=excluded.card, updated_at=excluded.updated_at",
                (namespace, cid, state, card, updated_at),
            )

    # --- namespace owners and grants ------------------------------------------------------

    def owner(self, namespace: str) -> str | None:
        row = self.reader.execute(
            "SELECT owner FROM namespace_owners WHERE namespace=?", (namespace,)
        ).fetchone()
        return row[0] if row else None

    def owned(self) -> set[str]:
        return {r[0] for r in self.reader.execute("SELECT namespace FROM namespace_owners")}

    def claim(self, namespace: str, hotkey: str) -> str | None:
        """Make ``hotkey`` the owner of a namespace nobody has written to; returns the owner."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO namespace_owners(namespace, owner) SELECT ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM records WHERE namespace=?) "
                "ON CONFLICT(namespace) DO NOTHING",
                (namespace, hotkey, namespace),
            )
            row = conn.execute(
                "SELECT owner FROM namespace_owners WHERE namespace=?", (namespace,)
            ).fetchone()
        return row[0] if row else None

    def grants(self, namespace: str) -> list[tuple[str, str]]:
        """(hotkey, permission) pairs, sorted."""
        return self.reader.execute(
            "SELECT hotkey, permission FROM namespace_grants WHERE namespace=? "
            "ORDER BY hotkey, permission",
            (namespace,),
        ).fetchall()

    def has_grant(self, namespace: str, hotkey: str, permission: str) -> bool:
        return (
            self.reader.execute(
                "SELECT 1 FROM namespace_grants WHERE namespace=? AND hotkey=? AND permission=?",
                (namespace, hotkey, permission),
            ).fetchone()
            is not None
        )

    def set_grant(self, namespace: str, hotkey: str, permission: str, granted: bool) -> None:
        with self.transaction() as conn:
            if granted:
                conn.execute(
                    "INSERT OR IGNORE INTO namespace_grants(namespace, hotkey, permission) "
                    "VALUES (?, ?, ?)",
                    (namespace, hotkey, permission),
                )
            else:
                conn.execute(
                    "DELETE FROM namespace_grants WHERE namespace=? AND hotkey=? AND permission=?",
                    (namespace, hotkey, permission),
                )

    # --- legacy namespace keys ------------------------------------------------------------

    def namespace_key_hash(self, namespace: str) -> bytes | None:
        """The stored hash of the namespace's legacy key, or None when none was set."""
        row = self.reader.execute(
            "SELECT key_hash FROM namespace_keys WHERE namespace=?", (namespace,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def guard(self, namespace: str) -> tuple[str | None, bytes | None]:
        """The namespace's owner and legacy key hash, in one read: every access check needs both."""
        owner, key_hash = self.reader.execute(
            "SELECT (SELECT owner FROM namespace_owners WHERE namespace=?1), "
            "(SELECT key_hash FROM namespace_keys WHERE namespace=?1)",
            (namespace,),
        ).fetchone()
        return owner, None if key_hash is None else bytes(key_hash)

    def keyed_namespaces(self) -> set[str]:
        return {r[0] for r in self.reader.execute("SELECT namespace FROM namespace_keys")}

    def set_namespace_key_hash(self, namespace: str, key_hash: bytes) -> None:
        """Store the hash unless the namespace already has one: the first key set stays."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO namespace_keys(namespace, key_hash, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(namespace) DO NOTHING",
                (namespace, bytes(key_hash), time.time()),
            )

    # --- index checkpoints ---------------------------------------------------------------

    def checkpoint(self, namespace: str) -> Checkpoint | None:
        row = self.reader.execute(
            "SELECT file, files, indexed_upto, params, tuning FROM index_checkpoints "
            "WHERE namespace=?",
            (namespace,),
        ).fetchone()
        if row is None:
            return None
        files = json.loads(row[1]) if row[1] is not None else [row[0]]
        tuning = json.loads(row[4]) if row[4] else None
        return Checkpoint(files, row[2], json.loads(row[3]), tuning)

    def set_checkpoint(self, namespace: str, checkpoint: Checkpoint) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO index_checkpoints(namespace, file, files, indexed_upto, params, tuning) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(namespace) DO UPDATE SET "
                "file=excluded.file, files=excluded.files, indexed_upto=excluded.indexed_upto, "
                "params=excluded.params, tuning=excluded.tuning",
                (
                    namespace,
                    checkpoint.files[-1] if checkpoint.files else "",
                    json.dumps(checkpoint.files),
                    checkpoint.upto,
                    json.dumps(checkpoint.params, sort_keys=True),
                    None if checkpoint.tuning is None else json.dumps(checkpoint.tuning),
                ),
            )

    def index_files(self) -> set[str]:
        """Every index file a checkpoint refers to."""
        found: set[str] = set()
        for file, files in self.reader.execute("SELECT file, files FROM index_checkpoints"):
            found.update(json.loads(files) if files is not None else [file])
        return found

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self.write_lock:
            self._writer.close()
