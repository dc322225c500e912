"""LocalChain: a whole chain in one SQLite file, shared by every local process.

Miners, validators, the gateway and the CLI each open the same file, so the
file must stay consistent under concurrent writers: WAL mode (readers never
block the writer), every write in a short ``BEGIN IMMEDIATE`` transaction (the
write lock is taken up front, so no transaction ever fails to upgrade), a
generous ``busy_timeout`` plus a few retries with backoff, and one connection
per thread.

Blocks follow the wall clock (``genesis_time`` and ``block_time_s`` are stored
in the file), so every process agrees on the block without a block producer.
Epochs are processed lazily: whichever call first notices that a tempo
boundary has passed runs consensus in a write transaction, and the others then
see it done.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import math
import operator
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from bittensor import Wallet

from engram import sqlite
from engram.chain.base import Metagraph, Neuron
from engram.chain.consensus import yuma
from engram.config import ChainParams
from engram.errors import ChainError, ChainUnavailableError, InvalidRequestError
from engram.security.signing import Signer, signer_hotkey

_BUSY_TIMEOUT_MS = 10_000
_ATTEMPTS = 5  # each waits up to busy_timeout, then backs off before the next
_BACKOFF_S = 0.05
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _baseline(conn: sqlite3.Connection) -> str | None:
    """Chain files from before recorded migrations hold the one schema there was."""
    tables = sqlite.tables(conn)
    if not tables:
        return None
    if "chain" not in tables:
        raise ChainUnavailableError(
            f"{conn.execute('PRAGMA database_list').fetchone()[2]} exists and is not an Engram "
            "chain file"
        )
    return "m001_chain"


_MIGRATIONS = sqlite.Migrations("chain", baseline=_baseline, error=ChainUnavailableError)


@_MIGRATIONS
def m001_chain(conn: sqlite3.Connection) -> None:
    """Chain settings, subnets, neurons, weights and processed epochs."""
    for statement in (
        "CREATE TABLE IF NOT EXISTS chain (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS subnets (
            netuid              INTEGER PRIMARY KEY,
            tempo               INTEGER NOT NULL,
            axon_ttl_blocks     INTEGER NOT NULL,
            max_uids            INTEGER NOT NULL,
            min_validator_stake REAL NOT NULL,
            emission_per_block  REAL NOT NULL,
            created_block       INTEGER NOT NULL,
            last_epoch_block    INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS neurons (
            netuid           INTEGER NOT NULL,
            uid              INTEGER NOT NULL,
            hotkey           TEXT NOT NULL,
            coldkey          TEXT NOT NULL,
            stake            REAL NOT NULL DEFAULT 0,
            ip               TEXT,
            port             INTEGER,
            axon_block       INTEGER,
            incentive        REAL NOT NULL DEFAULT 0,
            emission         REAL NOT NULL DEFAULT 0,
            registered_block INTEGER NOT NULL,
            PRIMARY KEY (netuid, uid),
            UNIQUE (netuid, hotkey)
        )""",
        """CREATE TABLE IF NOT EXISTS weights (
            netuid        INTEGER NOT NULL,
            validator_uid INTEGER NOT NULL,
            miner_uid     INTEGER NOT NULL,
            weight        REAL NOT NULL,
            block         INTEGER NOT NULL,
            PRIMARY KEY (netuid, validator_uid, miner_uid)
        )""",
        """CREATE TABLE IF NOT EXISTS epochs (
            netuid    INTEGER NOT NULL,
            block     INTEGER NOT NULL,
            uid       INTEGER NOT NULL,
            incentive REAL NOT NULL,
            emission  REAL NOT NULL,
            PRIMARY KEY (netuid, block, uid)
        )""",
        "CREATE INDEX IF NOT EXISTS epochs_by_block ON epochs(netuid, block)",
    ):
        conn.execute(statement)


T = TypeVar("T")


def _retry(path: Path, action: Callable[[], T]) -> T:
    """Run ``action``, retrying while SQLite reports busy; translate SQLite errors."""
    try:
        return sqlite.retry(action, attempts=_ATTEMPTS, backoff_s=_BACKOFF_S)
    except sqlite3.OperationalError as exc:
        raise ChainUnavailableError(f"the chain file {path} is unavailable: {exc}") from exc
    except sqlite3.Error as exc:
        raise ChainUnavailableError(f"the chain file {path} is unusable: {exc}") from exc


def _connect(path: Path, mode: Literal["rw", "rwc"]) -> sqlite3.Connection:
    return sqlite.connect(path, mode=mode, busy_timeout_ms=_BUSY_TIMEOUT_MS)


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
    with sqlite.transaction(conn, write=write):
        return fn(conn)


def _check_params(params: ChainParams) -> None:
    checks = [
        (math.isfinite(params.block_time_s) and params.block_time_s > 0, "block_time_s > 0"),
        (params.tempo >= 1, "tempo >= 1"),
        (params.axon_ttl_blocks >= 0, "axon_ttl_blocks >= 0"),
        (params.max_uids >= 1, "max_uids >= 1"),
        (
            math.isfinite(params.min_validator_stake) and params.min_validator_stake >= 0,
            "min_validator_stake >= 0",
        ),
        (
            math.isfinite(params.emission_per_block) and params.emission_per_block >= 0,
            "emission_per_block >= 0",
        ),
    ]
    for ok, rule in checks:
        if not ok:
            raise ChainError(f"invalid chain parameters {params}: need {rule}")


def _check_key(name: str, key: object) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ChainError(f"{name} must be a non-empty string")
    return key


def _hotkey(signer: Signer) -> str:
    """The SS58 hotkey a chain write is signed with."""
    if isinstance(signer, str):
        raise ChainError(
            "chain writes take a signer (a bittensor Wallet or Keypair), not an address string"
        )
    try:
        return signer_hotkey(signer)
    except InvalidRequestError as exc:
        raise ChainError(exc.message) from exc
    except OSError as exc:  # a Wallet whose hotkey file is missing or unreadable
        raise ChainError(f"cannot read the signer's hotkey: {exc}") from exc


def _coldkey(signer: Signer, coldkey: str | None) -> str:
    """A Wallet's own coldkeypub; otherwise (a bare Keypair) the ``coldkey`` given."""
    if isinstance(signer, Wallet) and signer.coldkeypub_file.exists_on_device():
        owner = signer.coldkeypub.ss58_address
        if coldkey is not None and coldkey != owner:
            raise ChainError(f"coldkey {coldkey} is not the wallet's coldkey {owner}")
        return owner
    if coldkey is None:
        raise ChainError("coldkey is required unless the signer is a Wallet with a coldkeypub")
    return _check_key("coldkey", coldkey)


def _check_amount(name: str, value: object, allow_negative: bool = False) -> float:
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ChainError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(amount) or (amount < 0 and not allow_negative):
        raise ChainError(f"{name} must be a finite number >= 0, got {value!r}")
    return amount


def _check_uid(value: object) -> int:
    if isinstance(value, bool):
        raise ChainError(f"uid must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ChainError(f"uid must be an integer, got {value!r}") from None


def _check_ip(ip: object) -> str:
    if isinstance(ip, str):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(ip))
        if _HOSTNAME.match(ip):
            return ip
    raise ChainError(f"ip must be an IP address or a host name, got {ip!r}")


class LocalChain:
    """The :class:`~engram.chain.base.Chain` of one SQLite file (``local:PATH``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.url = f"local:{self.path}"
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        if not self.path.is_file():
            raise ChainUnavailableError(
                f"no chain at {self.path}: create it with `engram chain create {self.url}`"
            )
        try:
            settings = self._open()
        except BaseException:
            self.close()
            raise
        self.genesis_time = float(settings["genesis_time"])
        self.block_time_s = float(settings["block_time_s"])

    def _open(self) -> dict[str, str]:
        """Check the file is a chain, bring its schema up to date, and read its settings."""
        if "chain" not in self._read(sqlite.tables):  # never add tables to a foreign file
            raise ChainUnavailableError(f"{self.path} is not an Engram chain file")
        _retry(self.path, lambda: _MIGRATIONS.apply(self._conn()))
        settings = self._read(lambda conn: dict(conn.execute("SELECT key, value FROM chain")))
        if "genesis_time" not in settings or "block_time_s" not in settings:
            raise ChainUnavailableError(f"{self.path} is not an Engram chain file")
        return settings

    @classmethod
    def create(
        cls,
        path: str | Path,
        netuid: int = 1,
        params: ChainParams | None = None,
        exist_ok: bool = False,
    ) -> LocalChain:
        """Create the chain file (if needed) and subnet ``netuid`` on it.

        ``block_time_s`` belongs to the chain, not the subnet: it is fixed by
        the call that creates the file, and later subnets share it. With
        ``exist_ok`` an existing subnet is opened as it is (its parameters are
        not changed); without it, an existing subnet is a :class:`ChainError`.
        """
        params = params or ChainParams()
        _check_params(params)
        netuid = _check_uid(netuid)
        if netuid < 0:
            raise ChainError(f"netuid must be >= 0, got {netuid}")
        path = Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChainUnavailableError(f"cannot create the chain file {path}: {exc}") from exc

        def build(conn: sqlite3.Connection) -> None:
            now = time.time()
            for key, value in (
                ("genesis_time", repr(now)),
                ("block_time_s", repr(float(params.block_time_s))),
            ):
                conn.execute("INSERT OR IGNORE INTO chain(key, value) VALUES (?, ?)", (key, value))
            settings = dict(conn.execute("SELECT key, value FROM chain").fetchall())
            genesis, block_time = float(settings["genesis_time"]), float(settings["block_time_s"])
            block = max(0, int((now - genesis) / block_time))
            if conn.execute("SELECT 1 FROM subnets WHERE netuid=?", (netuid,)).fetchone():
                if not exist_ok:
                    raise ChainError(f"subnet {netuid} already exists on local:{path}")
                return
            conn.execute(
                "INSERT INTO subnets(netuid, tempo, axon_ttl_blocks, max_uids, "
                "min_validator_stake, emission_per_block, created_block, last_epoch_block) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    netuid,
                    int(params.tempo),
                    int(params.axon_ttl_blocks),
                    int(params.max_uids),
                    float(params.min_validator_stake),
                    float(params.emission_per_block),
                    block,
                    block // int(params.tempo) * int(params.tempo),
                ),
            )

        def run() -> None:
            conn = _connect(path, "rwc")
            try:
                _MIGRATIONS.apply(conn)  # the baseline refuses a file that is not a chain
                _transaction(conn, build, write=True)
            finally:
                conn.close()

        _retry(path, run)
        return cls(path)

    # --- connections and transactions ----------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise ChainUnavailableError(f"the chain {self.url} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, "rw")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A consistent snapshot: one deferred transaction, which never takes the write lock."""
        return _retry(self.path, lambda: _transaction(self._conn(), fn, write=False))

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return _retry(self.path, lambda: _transaction(self._conn(), fn, write=True))

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> LocalChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalChain({str(self.path)!r})"

    # --- blocks and epochs ---------------------------------------------------------------

    def _now(self) -> int:
        return max(0, int((time.time() - self.genesis_time) / self.block_time_s))

    def block(self) -> int:
        block = self._now()
        self._tick(block, None)
        return block

    def _tick(self, block: int, netuid: int | None) -> None:
        """Process the latest epoch boundary of each due subnet; raise on an unknown netuid."""

        def due(conn: sqlite3.Connection) -> list[tuple[int, int, int]]:
            if netuid is None:
                return conn.execute(
                    "SELECT netuid, tempo, last_epoch_block FROM subnets"
                ).fetchall()
            return conn.execute(
                "SELECT netuid, tempo, last_epoch_block FROM subnets WHERE netuid=?", (netuid,)
            ).fetchall()

        rows = self._read(due)
        if netuid is not None and not rows:
            self._unknown_netuid(netuid)
        for n, tempo, last_epoch in rows:
            boundary = block // tempo * tempo
            if boundary > last_epoch:
                self._write(functools.partial(self._run_epoch, netuid=n, boundary=boundary))

    def _unknown_netuid(self, netuid: int) -> None:
        known = self.netuids()
        raise ChainError(
            f"subnet {netuid} does not exist on {self.url} (subnets: {known or 'none'}); "
            f"create it with `engram chain create {self.url}`"
        )

    def _run_epoch(self, conn: sqlite3.Connection, netuid: int, boundary: int) -> None:
        """Turn the validators' latest weights into incentive and emission (once per boundary).

        Only validators with a permit that have a non-zero opinion count: one that
        never set weights, or set all zeros, abstains instead of pulling every
        miner's consensus down to zero. Skipped boundaries are not replayed.
        """
        tempo, min_stake, per_block, last_epoch = conn.execute(
            "SELECT tempo, min_validator_stake, emission_per_block, last_epoch_block "
            "FROM subnets WHERE netuid=?",
            (netuid,),
        ).fetchone()
        if last_epoch >= boundary:  # another process got here first
            return
        neurons = conn.execute(
            "SELECT uid, stake FROM neurons WHERE netuid=? ORDER BY uid", (netuid,)
        ).fetchall()
        n_uids = neurons[-1][0] + 1 if neurons else 0
        stake_of = {uid: stake for uid, stake in neurons}
        opinions: dict[int, np.ndarray] = {}
        for validator, miner, weight in conn.execute(
            "SELECT validator_uid, miner_uid, weight FROM weights WHERE netuid=?", (netuid,)
        ):
            if stake_of.get(validator, -1.0) >= min_stake and miner < n_uids:
                opinions.setdefault(validator, np.zeros(n_uids))[miner] = weight
        voters = sorted(v for v, row in opinions.items() if row.sum() > 0)
        if voters:
            incentive = yuma(
                np.array([stake_of[v] for v in voters]), np.stack([opinions[v] for v in voters])
            )
        else:
            incentive = np.zeros(n_uids)
        emission = incentive * per_block * tempo
        rows = [(float(incentive[uid]), float(emission[uid]), netuid, uid) for uid, _ in neurons]
        conn.executemany(
            "UPDATE neurons SET incentive=?, emission=? WHERE netuid=? AND uid=?", rows
        )
        conn.executemany(
            "INSERT OR REPLACE INTO epochs(incentive, emission, netuid, block, uid) "
            "VALUES (?, ?, ?, ?, ?)",
            [(i, e, n, boundary, uid) for i, e, n, uid in rows],
        )
        conn.execute("UPDATE subnets SET last_epoch_block=? WHERE netuid=?", (boundary, netuid))

    # --- the Chain interface -------------------------------------------------------------

    def register(
        self, netuid: int, signer: Signer, stake: float = 0.0, *, coldkey: str | None = None
    ) -> int:
        """Register the signer's hotkey and return its uid; registering again returns the same uid.

        The owning coldkey is a Wallet's coldkeypub, or ``coldkey`` for a bare
        Keypair. ``stake`` is only the initial stake: a repeated registration
        leaves it as it is (use :meth:`add_stake`), so a restarting process
        cannot reset it.
        """
        hotkey = _hotkey(signer)
        coldkey = _coldkey(signer, coldkey)
        amount = _check_amount("stake", stake)
        block = self._now()
        self._tick(block, netuid)

        def existing(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT uid, coldkey FROM neurons WHERE netuid=? AND hotkey=?", (netuid, hotkey)
            ).fetchone()
            if row is None:
                return None
            if row[1] != coldkey:
                raise ChainError(
                    f"hotkey {hotkey} is registered on subnet {netuid} with another coldkey"
                )
            return int(row[0])

        uid = self._read(existing)
        if uid is not None:
            return uid

        def insert(conn: sqlite3.Connection) -> int:
            uid = existing(conn)
            if uid is not None:
                return uid
            (max_uids,) = conn.execute(
                "SELECT max_uids FROM subnets WHERE netuid=?", (netuid,)
            ).fetchone()
            taken = {
                r[0] for r in conn.execute("SELECT uid FROM neurons WHERE netuid=?", (netuid,))
            }
            if len(taken) >= max_uids:
                raise ChainError(f"subnet {netuid} is full: all {max_uids} uids are registered")
            uid = next(u for u in range(max_uids) if u not in taken)
            conn.execute(
                "INSERT INTO neurons(netuid, uid, hotkey, coldkey, stake, registered_block) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (netuid, uid, hotkey, coldkey, amount, block),
            )
            return uid

        return self._write(insert)

    def add_stake(self, netuid: int, hotkey: str, amount: float) -> float:
        """Add (or, negative, remove) stake; returns the new stake. LocalChain only."""
        hotkey = _check_key("hotkey", hotkey)
        delta = _check_amount("amount", amount, allow_negative=True)
        self._tick(self._now(), netuid)

        def update(conn: sqlite3.Connection) -> float:
            row = conn.execute(
                "SELECT stake FROM neurons WHERE netuid=? AND hotkey=?", (netuid, hotkey)
            ).fetchone()
            if row is None:
                raise ChainError(f"hotkey {hotkey} is not registered on subnet {netuid}")
            new = row[0] + delta
            if new < 0:
                raise ChainError(f"hotkey {hotkey} has only {row[0]} stake to remove")
            conn.execute(
                "UPDATE neurons SET stake=? WHERE netuid=? AND hotkey=?", (new, netuid, hotkey)
            )
            return float(new)

        return self._write(update)

    def serve_axon(self, netuid: int, signer: Signer, ip: str, port: int) -> None:
        """Announce where the signer's hotkey serves (a miner does once, and when it moves)."""
        hotkey = _hotkey(signer)
        ip = _check_ip(ip)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ChainError(f"port must be an integer in 1..65535, got {port!r}")
        block = self._now()
        self._tick(block, netuid)

        def update(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE neurons SET ip=?, port=?, axon_block=? WHERE netuid=? AND hotkey=?",
                (ip, port, block, netuid, hotkey),
            )
            if cursor.rowcount == 0:
                raise ChainError(
                    f"hotkey {hotkey} is not registered on subnet {netuid}; register it first"
                )

        self._write(update)

    def set_weights(
        self,
        netuid: int,
        signer: Signer,
        uids: Sequence[int],
        weights: Sequence[float],
        *,
        version_key: int,
    ) -> None:
        """Replace the signing validator's weights; they count from the next epoch.

        Stored L1-normalised; all zeros (or no uids) means no opinion. A
        LocalChain subnet sets no minimum weights version, so any
        ``version_key`` >= 0 is accepted.
        """
        hotkey = _hotkey(signer)
        if isinstance(version_key, bool) or not isinstance(version_key, int) or version_key < 0:
            raise ChainError(f"version_key must be an integer >= 0, got {version_key!r}")
        uid_list = [_check_uid(u) for u in uids]
        values = [_check_amount("weight", w) for w in weights]
        if len(uid_list) != len(values):
            raise ChainError(f"{len(uid_list)} uids but {len(values)} weights")
        if len(set(uid_list)) != len(uid_list):
            raise ChainError("uids must not repeat")
        total = math.fsum(values)
        normalised = [v / total for v in values] if total > 0 else [0.0] * len(values)
        block = self._now()
        self._tick(block, netuid)

        def replace(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT n.uid, n.stake, s.min_validator_stake FROM neurons n "
                "JOIN subnets s ON s.netuid = n.netuid WHERE n.netuid=? AND n.hotkey=?",
                (netuid, hotkey),
            ).fetchone()
            if row is None:
                raise ChainError(f"hotkey {hotkey} is not registered on subnet {netuid}")
            validator, stake, min_stake = row
            if stake < min_stake:
                raise ChainError(
                    f"hotkey {hotkey} has no validator permit on subnet {netuid}: "
                    f"stake {stake} < {min_stake}"
                )
            known = {
                r[0] for r in conn.execute("SELECT uid FROM neurons WHERE netuid=?", (netuid,))
            }
            unknown = sorted(set(uid_list) - known)
            if unknown:
                raise ChainError(f"uids {unknown} are not registered on subnet {netuid}")
            conn.execute(
                "DELETE FROM weights WHERE netuid=? AND validator_uid=?", (netuid, validator)
            )
            conn.executemany(
                "INSERT INTO weights(netuid, validator_uid, miner_uid, weight, block) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (netuid, validator, u, w, block)
                    for u, w in zip(uid_list, normalised, strict=True)
                ],
            )

        self._write(replace)

    def metagraph(self, netuid: int) -> Metagraph:
        block = self._now()
        self._tick(block, netuid)

        def snapshot(conn: sqlite3.Connection) -> Metagraph:
            subnet = conn.execute(
                "SELECT tempo, min_validator_stake FROM subnets WHERE netuid=?",
                (netuid,),
            ).fetchone()
            if subnet is None:  # subnets are never deleted, and _tick checked it
                raise ChainError(f"subnet {netuid} does not exist on {self.url}")
            tempo, min_stake = subnet
            neurons = tuple(
                Neuron(
                    uid=uid,
                    hotkey=hk,
                    coldkey=ck,
                    stake=stake,
                    validator_permit=stake >= min_stake,
                    ip=ip,
                    port=port,
                    axon_block=axon_block,
                    incentive=incentive,
                    emission=emission,
                    registered_block=registered,
                )
                for uid, hk, ck, stake, ip, port, axon_block, incentive, emission, registered in (
                    conn.execute(
                        "SELECT uid, hotkey, coldkey, stake, ip, port, axon_block, incentive, "
                        "emission, registered_block FROM neurons WHERE netuid=? ORDER BY uid",
                        (netuid,),
                    )
                )
            )
            weights: dict[int, dict[int, float]] = {}
            for validator, miner, weight in conn.execute(
                "SELECT validator_uid, miner_uid, weight FROM weights WHERE netuid=? "
                "ORDER BY validator_uid, miner_uid",
                (netuid,),
            ):
                weights.setdefault(validator, {})[miner] = weight
            return Metagraph(
                netuid=netuid,
                block=block,
                neurons=neurons,
                tempo=tempo,
                weights=weights,
            )

        return self._read(snapshot)

    # --- read helpers (CLI, dashboard) ---------------------------------------------------

    def netuids(self) -> list[int]:
        return self._read(
            lambda conn: [r[0] for r in conn.execute("SELECT netuid FROM subnets ORDER BY netuid")]
        )

    def params(self, netuid: int) -> ChainParams:
        """The hyperparameters subnet ``netuid`` was created with."""
        row = self._read(
            lambda conn: conn.execute(
                "SELECT tempo, axon_ttl_blocks, max_uids, min_validator_stake, emission_per_block "
                "FROM subnets WHERE netuid=?",
                (netuid,),
            ).fetchone()
        )
        if row is None:
            self._unknown_netuid(netuid)
        tempo, ttl, max_uids, min_stake, per_block = row
        return ChainParams(
            block_time_s=self.block_time_s,
            tempo=tempo,
            axon_ttl_blocks=ttl,
            max_uids=max_uids,
            min_validator_stake=min_stake,
            emission_per_block=per_block,
        )

    def epochs(self, netuid: int, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` processed epochs, oldest first, JSON-ready.

        Each is ``{"block": int, "neurons": [{"uid", "incentive", "emission"}, ...]}``.
        """
        self._tick(self._now(), netuid)
        limit = max(0, int(limit))

        def history(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            blocks = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT block FROM epochs WHERE netuid=? ORDER BY block DESC LIMIT ?",
                    (netuid, limit),
                )
            ]
            if not blocks:
                return []
            out: dict[int, list[dict[str, Any]]] = {b: [] for b in sorted(blocks)}
            for block, uid, incentive, emission in conn.execute(
                "SELECT block, uid, incentive, emission FROM epochs "
                "WHERE netuid=? AND block>=? ORDER BY block, uid",
                (netuid, min(blocks)),
            ):
                out[block].append({"uid": uid, "incentive": incentive, "emission": emission})
            return [{"block": b, "neurons": neurons} for b, neurons in out.items()]

        return self._read(history)
