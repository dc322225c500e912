"""Everything the validator must not forget, in one SQLite file (``<home>/validator.sqlite``).

The secret seed and the corpus, each miner's EMA and proof window, and the
history the dashboard charts (scores, challenges, weights, replica health). A
restarted validator reads it back and carries on: same corpus, same EMAs,
same windows. WAL mode, short transactions; SQLite errors become
:class:`~engram.errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from engram import sqlite
from engram.cid import generate_cid
from engram.errors import StorageError
from engram.records import Record

FILENAME = "validator.sqlite"
HISTORY_KEEP_S = 14 * 24 * 3600.0  # score / challenge / weight history older than this is pruned

T = TypeVar("T")


def _baseline(conn: sqlite3.Connection) -> str | None:
    """State files from before recorded migrations hold the one schema there was."""
    return "m001_validator_state" if "meta" in sqlite.tables(conn) else None


_MIGRATIONS = sqlite.Migrations("validator_state", baseline=_baseline)


@_MIGRATIONS
def m001_validator_state(conn: sqlite3.Connection) -> None:
    """The seed and corpus, miners' EMAs, and the challenge, score, weight and replica history."""
    for statement in (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS corpus (
            idx      INTEGER PRIMARY KEY,
            cid      TEXT NOT NULL UNIQUE,
            vector   BLOB NOT NULL,
            metadata TEXT NOT NULL,
            written  INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE IF NOT EXISTS miners (
            uid          INTEGER PRIMARY KEY,
            hotkey       TEXT NOT NULL,
            ema          REAL NOT NULL DEFAULT 0,
            recall       REAL,
            latency_ms   REAL,
            proof_passed INTEGER NOT NULL DEFAULT 0,
            proof_issued INTEGER NOT NULL DEFAULT 0,
            score        REAL,
            weight       REAL NOT NULL DEFAULT 0,
            updated_at   REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS challenges (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            uid        INTEGER NOT NULL,
            hotkey     TEXT NOT NULL,
            cid        TEXT,
            kind       TEXT NOT NULL CHECK (kind IN ('hmac', 'audit')),
            passed     INTEGER NOT NULL,
            latency_ms REAL,
            reason     TEXT,
            at         REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS challenges_by_miner ON challenges(uid, hotkey, id)",
        "CREATE INDEX IF NOT EXISTS challenges_by_cid ON challenges(cid, hotkey, id)",
        """CREATE TABLE IF NOT EXISTS scores (
            round      INTEGER NOT NULL,
            uid        INTEGER NOT NULL,
            hotkey     TEXT NOT NULL,
            recall     REAL NOT NULL,
            latency_ms REAL NOT NULL,
            proof_rate REAL NOT NULL,
            score      REAL NOT NULL,
            ema        REAL NOT NULL,
            at         REAL NOT NULL,
            PRIMARY KEY (round, uid)
        )""",
        """CREATE TABLE IF NOT EXISTS weights (
            block  INTEGER NOT NULL,
            uid    INTEGER NOT NULL,
            weight REAL NOT NULL,
            at     REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS weights_by_block ON weights(block)",
        """CREATE TABLE IF NOT EXISTS holdings (
            cid    TEXT NOT NULL,
            hotkey TEXT NOT NULL,
            at     REAL NOT NULL,
            PRIMARY KEY (cid, hotkey)
        )""",
        """CREATE TABLE IF NOT EXISTS replicas (
            cid        TEXT PRIMARY KEY,
            expected   INTEGER NOT NULL,
            confirmed  INTEGER NOT NULL,
            status     TEXT NOT NULL CHECK (status IN ('healthy', 'degraded', 'lost')),
            holders    TEXT NOT NULL,
            checked_at REAL NOT NULL
        )""",
    ):
        conn.execute(statement)


@dataclass(frozen=True)
class MinerState:
    """One uid as the validator last saw it."""

    uid: int
    hotkey: str
    ema: float = 0.0
    recall: float | None = None
    latency_ms: float | None = None
    proof_passed: int = 0
    proof_issued: int = 0
    score: float | None = None
    weight: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class ChallengeRecord:
    """One HMAC challenge or audit, as it goes into the history."""

    uid: int
    hotkey: str
    cid: str | None
    kind: str  # "hmac" | "audit"
    passed: bool
    latency_ms: float | None
    reason: str | None = None


@dataclass(frozen=True)
class ScoreRecord:
    uid: int
    hotkey: str
    recall: float
    latency_ms: float
    proof_rate: float
    score: float
    ema: float


@dataclass(frozen=True)
class ReplicaHealth:
    cid: str
    expected: int
    confirmed: int
    status: str  # "healthy" | "degraded" | "lost"
    holders: tuple[str, ...]


class ValidatorState:
    """The state database; one connection shared under a lock (the validator is one process)."""

    def __init__(self, home: Path, *, readonly: bool = False) -> None:
        self.path = Path(home).expanduser() / FILENAME
        self._lock = threading.RLock()
        try:
            if readonly:
                self._conn = sqlite.connect(self.path, mode="ro", wal=False, synchronous=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite.connect(self.path)
                _MIGRATIONS.apply(self._conn)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the validator state {self.path}: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"cannot create the validator state {self.path}: {exc}") from exc

    # --- plumbing ------------------------------------------------------------------------

    def _run(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self._lock:
            try:
                with sqlite.transaction(self._conn, write=write):
                    return fn(self._conn)
            except sqlite3.Error as exc:
                raise StorageError(f"validator state {self.path}: {exc}") from exc

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._run(fn, write=True)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._run(fn, write=False)

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __enter__(self) -> ValidatorState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta ----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._read(
            lambda c: c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])

    def set_meta(self, **values: Any) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()],
            )

        self._write(put)

    def seed(self, make: Callable[[], str]) -> str:
        """The corpus seed, created once with ``make`` and never replaced."""

        def get_or_create(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT value FROM meta WHERE key='seed'").fetchone()
            if row is not None:
                return str(row[0])
            value = make()
            conn.execute("INSERT INTO meta(key, value) VALUES ('seed', ?)", (value,))
            return value

        return self._write(get_or_create)

    def next_round(self) -> int:
        def bump(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT value FROM meta WHERE key='round'").fetchone()
            value = (int(row[0]) if row else 0) + 1
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('round', ?)", (value,))
            return value

        return self._write(bump)

    # --- corpus --------------------------------------------------------------------------

    def load_corpus(self, namespace: str) -> list[Record]:
        """The stored corpus in order; a row that no longer hashes to its CID is an error."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT idx, cid, vector, metadata FROM corpus ORDER BY idx"
            ).fetchall()
        )
        records = []
        for idx, cid, blob, meta in rows:
            vector = np.frombuffer(blob, dtype="<f4").copy()
            metadata = json.loads(meta)
            if generate_cid(vector, metadata) != cid:
                raise StorageError(f"corpus record {idx} in {self.path} does not hash to {cid}")
            records.append(Record(cid, vector, metadata, None, namespace))
        return records

    def add_corpus(self, records: Sequence[Record], start: int) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO corpus(idx, cid, vector, metadata) VALUES (?, ?, ?, ?)",
                [
                    (
                        start + i,
                        r.cid,
                        np.asarray(r.embedding, dtype="<f4").tobytes(),
                        json.dumps(r.metadata, sort_keys=True),
                    )
                    for i, r in enumerate(records)
                ],
            )

        self._write(put)

    def unwritten(self) -> set[str]:
        """Corpus CIDs not yet confirmed written to a quorum of their replicas."""
        return set(
            self._read(
                lambda c: [r[0] for r in c.execute("SELECT cid FROM corpus WHERE written=0")]
            )
        )

    def mark_written(self, cids: Iterable[str], written: bool = True) -> None:
        rows = [(int(written), cid) for cid in cids]
        self._write(lambda c: c.executemany("UPDATE corpus SET written=? WHERE cid=?", rows))

    # --- miners --------------------------------------------------------------------------

    def miners(self) -> dict[int, MinerState]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT uid, hotkey, ema, recall, latency_ms, proof_passed, proof_issued, score, "
                "weight, updated_at FROM miners ORDER BY uid"
            ).fetchall()
        )
        return {r[0]: MinerState(*r) for r in rows}

    def miner(self, uid: int) -> MinerState | None:
        return self.miners().get(uid)

    def save_miners(self, states: Iterable[MinerState]) -> None:
        rows = [
            (
                s.uid,
                s.hotkey,
                s.ema,
                s.recall,
                s.latency_ms,
                s.proof_passed,
                s.proof_issued,
                s.score,
                s.weight,
                s.updated_at or time.time(),
            )
            for s in states
        ]
        self._write(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO miners(uid, hotkey, ema, recall, latency_ms, "
                "proof_passed, proof_issued, score, weight, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        )

    # --- holdings: which miner took which corpus record ----------------------------------

    def add_holdings(self, pairs: Iterable[tuple[str, str]]) -> None:
        """(cid, hotkey) pairs a miner acknowledged or was seen holding; never forgotten, so a
        miner that drops a record it took is still challenged on it."""
        now = time.time()
        rows = [(cid, hotkey, now) for cid, hotkey in pairs]
        self._write(
            lambda c: c.executemany(
                "INSERT OR IGNORE INTO holdings(cid, hotkey, at) VALUES (?, ?, ?)", rows
            )
        )

    def holdings(self) -> dict[str, set[str]]:
        """hotkey → corpus CIDs it acknowledged or was seen holding."""
        out: dict[str, set[str]] = {}
        rows = self._read(lambda c: c.execute("SELECT cid, hotkey FROM holdings").fetchall())
        for cid, hotkey in rows:
            out.setdefault(hotkey, set()).add(cid)
        return out

    # --- challenges ----------------------------------------------------------------------

    def add_challenges(self, records: Iterable[ChallengeRecord], at: float | None = None) -> None:
        now = time.time() if at is None else at
        rows = [
            (r.uid, r.hotkey, r.cid, r.kind, int(r.passed), r.latency_ms, r.reason, now)
            for r in records
        ]
        self._write(
            lambda c: c.executemany(
                "INSERT INTO challenges(uid, hotkey, cid, kind, passed, latency_ms, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        )

    def proof_window(self, uid: int, hotkey: str, window: int) -> tuple[int, int]:
        """(passed, issued) over the last ``window`` challenges of this uid under this hotkey."""
        row = self._read(
            lambda c: c.execute(
                "SELECT coalesce(sum(passed), 0), count(*) FROM (SELECT passed FROM challenges "
                "WHERE uid=? AND hotkey=? ORDER BY id DESC LIMIT ?)",
                (uid, hotkey, max(0, window)),
            ).fetchone()
        )
        return int(row[0]), int(row[1])

    def challenges(self, uid: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest challenges first, JSON-ready (the dashboard's table)."""
        where, args = ("WHERE uid=?", (uid, limit)) if uid is not None else ("", (limit,))
        rows = self._read(
            lambda c: c.execute(
                "SELECT uid, hotkey, cid, kind, passed, latency_ms, reason, at FROM challenges "
                f"{where} ORDER BY id DESC LIMIT ?",
                args,
            ).fetchall()
        )
        keys = ("uid", "hotkey", "cid", "kind", "passed", "latency_ms", "reason", "at")
        return [{**dict(zip(keys, r, strict=True)), "passed": bool(r[4])} for r in rows]

    # --- scores and weights --------------------------------------------------------------

    def add_scores(self, round_: int, records: Iterable[ScoreRecord]) -> None:
        now = time.time()
        rows = [
            (round_, r.uid, r.hotkey, r.recall, r.latency_ms, r.proof_rate, r.score, r.ema, now)
            for r in records
        ]
        self._write(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO scores(round, uid, hotkey, recall, latency_ms, "
                "proof_rate, score, ema, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        )

    def score_history(self, uid: int | None = None, rounds: int = 100) -> list[dict[str, Any]]:
        """The last ``rounds`` scoring rounds, oldest first (the dashboard's charts)."""
        where, args = ("AND uid=?", (rounds, uid)) if uid is not None else ("", (rounds,))
        rows = self._read(
            lambda c: c.execute(
                "SELECT round, uid, hotkey, recall, latency_ms, proof_rate, score, ema, at "
                "FROM scores WHERE round > (SELECT coalesce(max(round), 0) FROM scores) - ? "
                f"{where} ORDER BY round, uid",
                args,
            ).fetchall()
        )
        keys = ("round", "uid", "hotkey", "recall", "latency_ms", "proof_rate", "score", "ema")
        return [dict(zip((*keys, "at"), r, strict=True)) for r in rows]

    def add_weights(self, block: int, weights: dict[int, float]) -> None:
        now = time.time()

        def put(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO weights(block, uid, weight, at) VALUES (?, ?, ?, ?)",
                [(block, uid, w, now) for uid, w in weights.items()],
            )
            conn.executemany(
                "UPDATE miners SET weight=? WHERE uid=?", [(w, uid) for uid, w in weights.items()]
            )

        self._write(put)

    def weight_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` set_weights calls, oldest first: ``{block, at, weights}``."""

        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            blocks = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT block FROM weights ORDER BY block DESC LIMIT ?", (limit,)
                )
            ]
            out: dict[int, dict[str, Any]] = {
                b: {"block": b, "weights": {}} for b in sorted(blocks)
            }
            if blocks:
                for block, uid, weight, at in conn.execute(
                    "SELECT block, uid, weight, at FROM weights WHERE block >= ? ORDER BY block, uid",
                    (min(blocks),),
                ):
                    out[block]["weights"][uid] = weight
                    out[block]["at"] = at
            return list(out.values())

        return self._read(query)

    # --- replica health ------------------------------------------------------------------

    def save_replicas(self, health: Iterable[ReplicaHealth]) -> None:
        now = time.time()
        rows = [
            (h.cid, h.expected, h.confirmed, h.status, json.dumps(list(h.holders)), now)
            for h in health
        ]
        self._write(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO replicas(cid, expected, confirmed, status, holders, "
                "checked_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        )

    def replica_counts(self) -> dict[str, int]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT r.status, count(*) FROM replicas r JOIN corpus USING (cid) "
                "GROUP BY r.status"
            ).fetchall()
        )
        counts = {"healthy": 0, "degraded": 0, "lost": 0}
        counts.update({status: n for status, n in rows})
        return counts

    def replicas(self) -> dict[str, ReplicaHealth]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT cid, expected, confirmed, status, holders FROM replicas"
            ).fetchall()
        )
        return {cid: ReplicaHealth(cid, e, n, s, tuple(json.loads(h))) for cid, e, n, s, h in rows}

    # --- housekeeping and the dashboard --------------------------------------------------

    def prune(self, keep_s: float = HISTORY_KEEP_S) -> None:
        """Drop history older than ``keep_s``; each uid keeps its latest challenges regardless."""
        cutoff = time.time() - keep_s

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM scores WHERE at < ?", (cutoff,))
            conn.execute("DELETE FROM weights WHERE at < ?", (cutoff,))
            conn.execute(
                "DELETE FROM challenges WHERE at < ? AND id NOT IN "
                "(SELECT max(id) FROM challenges GROUP BY uid, hotkey, cid)",
                (cutoff,),
            )

        self._write(delete)

    def summary(self) -> dict[str, Any]:
        """Per uid scores, replica health and round times: what ``/api/network`` shows."""
        miners = self.miners()
        rounds = {}
        for key in ("score", "challenge", "repair", "weights"):
            value = self.get_meta(f"last_{key}_round")
            rounds[key] = json.loads(value) if value else None
        repair = self.get_meta("last_repair")
        return {
            "hotkey": self.get_meta("hotkey"),
            "namespace": self.get_meta("namespace"),
            "round": int(self.get_meta("round") or 0),
            "miners": {
                str(uid): {
                    "uid": uid,
                    "hotkey": s.hotkey,
                    "recall": s.recall,
                    "latency_ms": s.latency_ms,
                    "proof_rate": (s.proof_passed / s.proof_issued) if s.proof_issued else None,
                    "proof_passed": s.proof_passed,
                    "proof_issued": s.proof_issued,
                    "score": s.score,
                    "ema": s.ema,
                    "weight": s.weight,
                    "updated_at": s.updated_at,
                }
                for uid, s in miners.items()
            },
            "replica_health": {
                **self.replica_counts(),
                **({"last_repair": json.loads(repair)} if repair else {}),
            },
            "rounds": rounds,
        }


def read_summary(home: Path) -> dict[str, Any]:
    """A validator's summary read from its state file, from another process (the gateway)."""
    with ValidatorState(home, readonly=True) as state:
        return state.summary()


__all__ = [
    "ChallengeRecord",
    "MinerState",
    "ReplicaHealth",
    "ScoreRecord",
    "ValidatorState",
    "read_summary",
]
