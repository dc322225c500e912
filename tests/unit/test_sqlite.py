"""engram.sqlite: connections, transactions, retries and named migrations, on real SQLite files.

The last sections open files laid out as the code before recorded migrations
left them (a version number in a settings table) with the store, the chain and
the validator state, and check that nothing is lost on the way up.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bittensor.sp_core import Keypair

from engram import sqlite
from engram.chain.local import LocalChain
from engram.config import SPEC_VERSION, ChainParams
from engram.errors import ChainUnavailableError, InvalidRequestError, StorageError
from engram.records import Record
from engram.store.db import Checkpoint, Database
from engram.validator.state import MinerState, ValidatorState

STORE_MIGRATIONS = [
    "m001_records",
    "m002_record_fields",
    "m003_writers_and_owners",
    "m004_namespace_keys",
    "m005_stemmed_text",
    "m006_memory_states_and_list_items",
    "m007_namespace_dims",
    "m008_index_segments",
    "m009_deletions",
]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite.connect(tmp_path / "db.sqlite")
    yield c
    c.close()


def _demo(
    ran: list[str],
    count: int = 3,
    baseline: Callable[[sqlite3.Connection], str | None] | None = None,
) -> sqlite.Migrations:
    """``count`` migrations that each create a table and note that they ran."""
    migrations = sqlite.Migrations("demo", baseline=baseline)
    for i in range(1, count + 1):

        def step(conn: sqlite3.Connection, i: int = i) -> None:
            conn.execute(f"CREATE TABLE t{i} (x)")
            ran.append(f"m{i}")

        step.__name__ = f"m{i}"
        migrations(step)
    return migrations


def _execute(path: Path, *statements: str) -> list[Any]:
    """Run statements on a plain connection, as another program would; the last one's rows."""
    with closing(sqlite3.connect(path)) as c, c:
        rows: list[Any] = []
        for statement in statements:
            rows = c.execute(statement).fetchall()
        return rows


def _recorded(path: Path) -> list[tuple[str, str]]:
    return _execute(
        path, f"SELECT migration_set, name FROM {sqlite.MIGRATIONS_TABLE} ORDER BY rowid"
    )


def _forget_migrations(path: Path, settings: str, version: int) -> None:
    """Make a file look as the code before recorded migrations left it."""
    _execute(
        path,
        f"DROP TABLE {sqlite.MIGRATIONS_TABLE}",
        f"INSERT INTO {settings}(key, value) VALUES ('schema_version', '{version}')",
    )


# --- connections and transactions --------------------------------------------------------


def test_connect_sets_the_pragmas_asked_for(tmp_path: Path) -> None:
    conn = sqlite.connect(
        tmp_path / "a.sqlite", busy_timeout_ms=1234, synchronous="full", cache_size_kib=4096
    )
    pragma = {
        name: conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "synchronous", "busy_timeout", "cache_size")
    }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": 1234,
        "cache_size": -4096,
    }
    assert conn.isolation_level is None
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    readonly = sqlite.connect(tmp_path / "a.sqlite", mode="ro", wal=False, synchronous=None)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        readonly.execute("INSERT INTO t VALUES (1)")
    readonly.close()
    with pytest.raises(sqlite3.OperationalError):
        sqlite.connect(tmp_path / "missing.sqlite", mode="rw")
    with pytest.raises(InvalidRequestError, match="synchronous"):
        sqlite.connect(tmp_path / "a.sqlite", synchronous="NORMAL; DROP TABLE t")


def test_transaction_commits_or_rolls_back(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE t (x)")
    with sqlite.transaction(conn) as c:
        c.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), sqlite.transaction(conn) as c:
        c.execute("INSERT INTO t VALUES (2)")
        raise ZeroDivisionError
    assert not conn.in_transaction
    with sqlite.transaction(conn, write=False) as c:
        assert c.execute("SELECT x FROM t").fetchall() == [(1,)]


# --- retries -----------------------------------------------------------------------------


def test_a_locked_database_is_retried_until_the_lock_goes(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite"
    holder = sqlite.connect(path)
    holder.execute("CREATE TABLE t (x)")
    waiter = sqlite.connect(path, busy_timeout_ms=0)  # every attempt fails at once while locked
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    attempts = 0

    def write() -> None:
        nonlocal attempts
        attempts += 1
        with sqlite.transaction(waiter):
            waiter.execute("INSERT INTO t VALUES (1)")

    try:
        sqlite.retry(write, attempts=10, backoff_s=0.05)
    finally:
        release.join()
    assert attempts > 1
    assert waiter.execute("SELECT count(*) FROM t").fetchone() == (1,)
    holder.close()
    waiter.close()


def test_retry_gives_up_after_its_attempts_and_never_retries_other_errors(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.sqlite"
    holder = sqlite.connect(path)
    holder.execute("CREATE TABLE t (x)")
    waiter = sqlite.connect(path, busy_timeout_ms=0)
    holder.execute("BEGIN IMMEDIATE")
    calls: list[str] = []

    def write() -> None:
        calls.append("write")
        waiter.execute("BEGIN IMMEDIATE")

    with pytest.raises(sqlite3.OperationalError) as raised:
        sqlite.retry(write, attempts=3, backoff_s=0.001)
    assert sqlite.is_busy(raised.value)
    assert len(calls) == 3

    def broken() -> None:
        calls.append("broken")
        waiter.execute("SELECT * FROM no_such_table")

    with pytest.raises(sqlite3.OperationalError, match="no such table") as raised:
        sqlite.retry(broken, attempts=3, backoff_s=0.001)
    assert not sqlite.is_busy(raised.value)
    assert calls.count("broken") == 1
    holder.execute("ROLLBACK")
    holder.close()
    waiter.close()


# --- named migrations --------------------------------------------------------------------


def test_migrations_run_once_in_order_and_are_recorded(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    ran: list[str] = []
    migrations = _demo(ran)
    assert migrations.names == ["m1", "m2", "m3"]
    assert migrations.applied(conn) == []
    assert migrations.apply(conn) == ["m1", "m2", "m3"]
    assert ran == ["m1", "m2", "m3"]
    assert migrations.apply(conn) == []
    assert ran == ["m1", "m2", "m3"]
    assert _recorded(tmp_path / "db.sqlite") == [("demo", "m1"), ("demo", "m2"), ("demo", "m3")]
    newer = _demo(ran, count=4)  # the next release adds one
    assert newer.apply(conn) == ["m4"]
    assert ran == ["m1", "m2", "m3", "m4"]
    assert newer.applied(conn) == ["m1", "m2", "m3", "m4"]
    assert sqlite.tables(conn) == {"t1", "t2", "t3", "t4"}


def test_a_failing_migration_leaves_nothing_behind(conn: sqlite3.Connection) -> None:
    migrations = sqlite.Migrations("demo")

    @migrations
    def m1(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE t (x)")

    @migrations
    def m2(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(sqlite3.OperationalError):
        migrations.apply(conn)
    assert sqlite.tables(conn) == set()
    assert migrations.applied(conn) == []


def test_concurrent_openers_run_each_migration_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    migrations = sqlite.Migrations("demo")

    @migrations
    def m1(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE runs (name TEXT)")
        c.execute("INSERT INTO runs VALUES ('m1')")

    @migrations
    def m2(c: sqlite3.Connection) -> None:
        time.sleep(0.05)  # a slow step: the others must wait for it, not repeat it
        c.execute("INSERT INTO runs VALUES ('m2')")

    ran: list[list[str]] = []

    def open_and_migrate() -> None:
        with closing(sqlite.connect(path)) as conn:
            ran.append(migrations.apply(conn))

    assert _at_once(open_and_migrate) == []
    assert sorted(ran) == [[], [], [], ["m1", "m2"]]
    assert _execute(path, "SELECT name FROM runs ORDER BY rowid") == [("m1",), ("m2",)]


def test_connections_opened_at_once_on_a_new_file_all_succeed(tmp_path: Path) -> None:
    # SQLite may answer "locked" at once, without its busy handler, to some of several
    # connections switching a new file to WAL together; connect() waits it out.
    for round_ in range(150):
        path = tmp_path / f"new-{round_}.sqlite"
        assert _at_once(lambda path=path: sqlite.connect(path).close()) == []


def _at_once(action: Callable[[], None], threads: int = 4) -> list[BaseException]:
    """Run ``action`` in ``threads`` threads released together; what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads, timeout=30)  # one that fails must not hang the others

    def run() -> None:
        try:
            start.wait()
            action()
        except BaseException as exc:  # surfaced in the test's thread
            start.abort()
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def test_an_up_to_date_database_needs_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite"
    ran: list[str] = []
    migrations = _demo(ran)
    writer = sqlite.connect(path)
    migrations.apply(writer)
    writer.execute("BEGIN IMMEDIATE")  # another process is writing
    reader = sqlite.connect(path, busy_timeout_ms=0)
    assert migrations.apply(reader) == []
    writer.execute("ROLLBACK")
    writer.close()
    reader.close()


def test_a_baseline_maps_an_unrecorded_database_onto_the_migrations(
    conn: sqlite3.Connection,
) -> None:
    conn.execute("CREATE TABLE t1 (x)")
    conn.execute("CREATE TABLE t2 (x)")
    ran: list[str] = []
    seen: list[set[str]] = []

    def baseline(c: sqlite3.Connection) -> str | None:
        seen.append(sqlite.tables(c))
        return "m2" if "t2" in seen[-1] else None

    migrations = _demo(ran, baseline=baseline)
    assert migrations.apply(conn) == ["m3"]
    assert ran == ["m3"]
    assert seen == [{"t1", "t2"}]  # the record's own table is not the database's
    assert migrations.applied(conn) == ["m1", "m2", "m3"]


def test_unknown_recorded_migrations_mean_a_newer_engram(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    _demo([], count=3).apply(conn)
    with pytest.raises(StorageError, match=r"newer Engram \(demo migrations m3 are unknown"):
        _demo([], count=2).apply(conn)
    strict = sqlite.Migrations("demo", error=ChainUnavailableError)
    with pytest.raises(ChainUnavailableError, match=r"db\.sqlite was written by a newer Engram"):
        strict.apply(conn)


def test_sets_share_a_file_and_names_are_unique(conn: sqlite3.Connection) -> None:
    first = _demo([])
    first.apply(conn)
    other = sqlite.Migrations("other")

    @other
    def m1(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE o (x)")

    assert other.apply(conn) == ["m1"]
    assert first.applied(conn) == ["m1", "m2", "m3"]
    with pytest.raises(ValueError, match="already"):
        other(m1)


# --- the store -----------------------------------------------------------------------------

# A store as schema 1 (the first release) laid it out and filled it.
_STORE_V1 = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE records (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace     TEXT NOT NULL,
    cid           TEXT NOT NULL,
    embedding     BLOB NOT NULL,
    metadata      TEXT NOT NULL,
    text          TEXT,
    model_version TEXT NOT NULL,
    created_at    REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE UNIQUE INDEX records_namespace_cid ON records(namespace, cid);
CREATE INDEX records_namespace_id ON records(namespace, id);
CREATE VIRTUAL TABLE records_fts USING fts5(text, content='records', content_rowid='id');
CREATE TRIGGER records_fts_insert AFTER INSERT ON records
WHEN new.text IS NOT NULL BEGIN
    INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER records_fts_delete AFTER DELETE ON records
WHEN old.text IS NOT NULL BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE index_checkpoints (
    namespace    TEXT PRIMARY KEY,
    file         TEXT NOT NULL,
    indexed_upto INTEGER NOT NULL,
    params       TEXT NOT NULL
);
INSERT INTO settings(key, value) VALUES ('schema_version', '1');
INSERT INTO records(namespace, cid, embedding, metadata, text, model_version) VALUES
    ('default', 'v1::aa', zeroblob(16), '{"lang":"en","n":1}', 'the first words', 'v1'),
    ('default', 'v1::bb', zeroblob(16), '{"lang":"fr","n":2}', NULL, 'v1'),
    ('notes', 'v1::aa', zeroblob(16), '{}', 'other words', 'v1');
INSERT INTO index_checkpoints VALUES ('default', 'default.faiss', 2, '{"m":16}');
"""


def test_a_schema_1_store_is_upgraded_without_loss(tmp_path: Path) -> None:
    path = tmp_path / "engram.db"
    with closing(sqlite3.connect(path)) as old:
        old.executescript(_STORE_V1)
    db = Database(path)
    try:
        assert db.count() == 3
        assert db.namespaces() == {"default": 2, "notes": 1}
        assert db.checkpoint("default") == Checkpoint(["default.faiss"], 2, {"m": 16})
        assert db.keyword_ids("default", "first", 5)[0][0] == 1
        assert db.writer("default", "v1::aa") == (True, None)  # older records: no writer
        fields = db.reader.execute(
            "SELECT id, key, value FROM record_fields ORDER BY id, key"
        ).fetchall()
        assert fields == [(1, "lang", "en"), (1, "n", 1), (2, "lang", "fr"), (2, "n", 2)]
        assert db.claim("fresh", "5Owner") == "5Owner"
        db.set_namespace_key_hash("default", b"hash")
        assert db.namespace_key_hash("default") == b"hash"
    finally:
        db.close()
    assert _recorded(path) == [("store", name) for name in STORE_MIGRATIONS]


@pytest.mark.parametrize("version", [2, 3])
def test_a_store_of_the_previous_code_keeps_its_records(tmp_path: Path, version: int) -> None:
    path = tmp_path / "engram.db"
    record = Record("v1::cc", np.ones(4, dtype=np.float32), {"k": "v"}, "kept", "default")
    db = Database(path)
    with db.transaction() as conn:
        db.insert(conn, [record], writer="5Writer")
    db.set_grant("default", "5Friend", "read", True)
    db.close()
    _forget_migrations(path, "settings", version)
    _execute(  # new in this code
        path,
        "DROP TABLE namespace_keys",
        "DROP TABLE memory_states",
        "DROP TRIGGER record_fields_list_items",
        "DROP TABLE namespace_dims",
        "ALTER TABLE index_checkpoints DROP COLUMN files",
        "ALTER TABLE index_checkpoints DROP COLUMN tuning",
    )
    if version == 2:  # what schema 2 did not have yet
        _execute(
            path,
            "DROP TABLE namespace_grants",
            "DROP TABLE namespace_owners",
            "ALTER TABLE records DROP COLUMN writer",
        )
    db = Database(path)
    try:
        got = db.get("default", "v1::cc")
        assert got is not None and got.text == "kept" and got.metadata == {"k": "v"}
        np.testing.assert_array_equal(got.embedding, record.embedding)
        assert db.writer("default", "v1::cc") == (True, "5Writer" if version == 3 else None)
        assert db.grants("default") == ([("5Friend", "read")] if version == 3 else [])
        assert db.namespace_key_hash("default") is None
    finally:
        db.close()
    assert _recorded(path) == [("store", name) for name in STORE_MIGRATIONS]


def test_a_namespace_key_hash_is_set_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "engram.db")
    try:
        assert db.namespace_key_hash("ns") is None
        db.set_namespace_key_hash("ns", b"\x00first")
        db.set_namespace_key_hash("ns", b"second")  # the first key set stays
        assert db.namespace_key_hash("ns") == b"\x00first"
        assert db.namespace_key_hash("other") is None
    finally:
        db.close()


def test_a_store_from_a_newer_engram_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "engram.db"
    Database(path).close()
    _execute(path, f"INSERT INTO {sqlite.MIGRATIONS_TABLE} VALUES ('store', 'm999_future', 0)")
    with pytest.raises(StorageError, match="newer Engram"):
        Database(path)


# --- the chain and the validator state -----------------------------------------------------


def test_a_chain_file_of_the_previous_code_is_upgraded_without_loss(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    miner, validator = Keypair.create_from_uri("//miner"), Keypair.create_from_uri("//val")
    params = ChainParams(block_time_s=0.05, min_validator_stake=10.0)
    with LocalChain.create(path, params=params) as chain:
        uid = chain.register(1, miner, coldkey="5Cold")
        chain.register(1, validator, stake=10.0, coldkey="5Cold")
        chain.set_weights(1, validator, [uid], [1.0], version_key=SPEC_VERSION)
        genesis = chain.genesis_time
    _forget_migrations(path, "chain", 1)

    with LocalChain(path) as chain:
        assert chain.genesis_time == genesis
        graph = chain.metagraph(1)
        assert [n.hotkey for n in graph.neurons] == [miner.ss58_address, validator.ss58_address]
        assert graph.weights == {1: {uid: 1.0}}
    assert _recorded(path) == [("chain", "m001_chain")]
    LocalChain.create(path, netuid=2, params=params).close()  # creating beside it still works
    assert _recorded(path) == [("chain", "m001_chain")]


def test_a_chain_file_from_a_newer_engram_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    LocalChain.create(path).close()
    _execute(path, f"INSERT INTO {sqlite.MIGRATIONS_TABLE} VALUES ('chain', 'm002_future', 0)")
    with pytest.raises(ChainUnavailableError, match="newer Engram"):
        LocalChain(path)


def test_a_validator_state_of_the_previous_code_is_upgraded_without_loss(
    tmp_path: Path,
) -> None:
    with ValidatorState(tmp_path) as state:
        seed = state.seed(lambda: "the-seed")
        state.save_miners([MinerState(3, "5Miner", ema=0.5, weight=0.25, updated_at=1.0)])
    _forget_migrations(tmp_path / "validator.sqlite", "meta", 1)

    with ValidatorState(tmp_path, readonly=True) as readonly:  # the gateway, before any upgrade
        assert readonly.get_meta("seed") == seed
    with ValidatorState(tmp_path) as state:
        assert state.seed(lambda: "another") == seed
        assert state.miners() == {3: MinerState(3, "5Miner", ema=0.5, weight=0.25, updated_at=1.0)}
    assert _recorded(tmp_path / "validator.sqlite") == [("validator_state", "m001_validator_state")]
