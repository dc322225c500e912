"""A gateway's API keys: what lets an agent without a hotkey act for a namespace's owner.

A namespace's owner makes a key with a signed request and gives it to an
agent, which sends it as ``Authorization: Bearer <key>``. The key names the
namespaces it opens and its scopes there:

* ``read``: search, query, get, list, count, context;
* ``write``: ingest, update, delete, lifecycle changes;
* ``admin``: make, list, rotate and revoke keys over (some of) its namespaces,
  and read their audit log.

The gateway does what a key allows under its own hotkey, which the owner has
granted ``read`` and/or ``write`` on the namespace (a delegation the miners
check like any grant): a key can never do more than the owner delegated, nor
more than its scopes. A key is ``ek_<id>_<secret>``: the id names it in the
audit log and in the key listing, the secret is 32 random bytes kept only as
its SHA-256 (a random secret needs no slow hash), so the file holds nothing
that opens a namespace. Every request looks the key up, so a revoked or
rotated key is refused on the next one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from engram import sqlite
from engram.config import API_KEY_MAX_NAMESPACES
from engram.errors import ForbiddenError, InvalidRequestError, NotFoundError, UnauthorizedError

FILENAME = "gateway-keys.sqlite"  # in the gateway's home
PREFIX = "ek_"
_ID_BYTES = 6
_SECRET_BYTES = 32

_MIGRATIONS = sqlite.Migrations("api_keys")


@_MIGRATIONS
def m001_api_keys(conn: sqlite3.Connection) -> None:
    """The keys by id, with the hash of their current secret."""
    conn.execute(
        """CREATE TABLE keys (
            id          TEXT PRIMARY KEY,
            owner       TEXT NOT NULL,
            secret_hash BLOB NOT NULL,
            namespaces  TEXT NOT NULL,
            scopes      TEXT NOT NULL,
            label       TEXT NOT NULL,
            created_at  REAL NOT NULL,
            rotated_at  REAL,
            revoked_at  REAL
        )"""
    )
    conn.execute("CREATE INDEX keys_by_owner ON keys(owner)")


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """A key as the gateway knows it: never its secret."""

    id: str
    owner: str  # the hotkey it acts for
    namespaces: tuple[str, ...]
    scopes: frozenset[Scope]
    label: str
    created_at: float
    rotated_at: float | None = None
    revoked_at: float | None = None

    @property
    def actor(self) -> str:
        """How the audit log names the key's requests."""
        return f"key:{self.id}"

    def allows(self, namespace: str, scope: Scope) -> bool:
        return self.revoked_at is None and namespace in self.namespaces and scope in self.scopes

    def require(self, namespaces: Iterable[str], scope: Scope) -> None:
        """Refuse with what the key lacks, naming neither its secret nor other namespaces."""
        for namespace in namespaces:
            if namespace not in self.namespaces:
                raise ForbiddenError(
                    f"API key {self.id} does not open namespace {namespace!r}; its owner can "
                    "make a key that does"
                )
            if scope not in self.scopes:
                raise ForbiddenError(
                    f"API key {self.id} may not {scope.value} in namespace {namespace!r} (its "
                    f"scopes: {', '.join(sorted(self.scopes))})"
                )

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "owner": self.owner,
            "namespaces": list(self.namespaces),
            "scopes": sorted(self.scopes),
            "label": self.label,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
            "revoked_at": self.revoked_at,
        }


def parse_scopes(scopes: Iterable[str]) -> frozenset[Scope]:
    """Scope names as a set; a 400 naming the valid ones for anything else."""
    parsed = set()
    for name in scopes:
        try:
            parsed.add(Scope(name))
        except ValueError:
            raise InvalidRequestError(
                f"unknown API key scope {name!r}: use read, write or admin"
            ) from None
    if not parsed:
        raise InvalidRequestError("an API key needs at least one scope: read, write or admin")
    return frozenset(parsed)


def check_namespaces(namespaces: Collection[str]) -> tuple[str, ...]:
    if not namespaces:
        raise InvalidRequestError("an API key opens at least one namespace: name it")
    if len(namespaces) > API_KEY_MAX_NAMESPACES:
        raise InvalidRequestError(
            f"an API key opens at most {API_KEY_MAX_NAMESPACES} namespaces, not {len(namespaces)}"
        )
    return tuple(dict.fromkeys(namespaces))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _split(key: str) -> tuple[str, str]:
    """``ek_<id>_<secret>`` as (id, secret); a 401 for anything else."""
    head, _, secret = key.removeprefix(PREFIX).partition("_")
    if not key.startswith(PREFIX) or not head or not secret:
        raise UnauthorizedError("malformed API key: Engram's keys look like ek_<id>_<secret>")
    return head, secret


class ApiKeys:
    """The keys of one gateway, in one SQLite file; safe from any thread."""

    def __init__(self, path: Path) -> None:
        self._file = sqlite.SqliteFile(path, _MIGRATIONS, "the API key file")

    def open(self) -> None:
        self._file.open()

    def close(self) -> None:
        self._file.close()

    def create(
        self, owner: str, namespaces: Collection[str], scopes: Iterable[str], label: str = ""
    ) -> tuple[ApiKey, str]:
        """A new key for ``owner`` and its whole secret, which is shown this once."""
        key_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        key = ApiKey(
            key_id,
            owner,
            check_namespaces(namespaces),
            parse_scopes(scopes),
            label,
            time.time(),
        )
        self._file.run(
            lambda c: c.execute(
                "INSERT INTO keys(id, owner, secret_hash, namespaces, scopes, label, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.id,
                    owner,
                    _digest(secret),
                    json.dumps(list(key.namespaces)),
                    json.dumps(sorted(key.scopes)),
                    label,
                    key.created_at,
                ),
            ),
            write=True,
        )
        return key, f"{PREFIX}{key_id}_{secret}"

    def resolve(self, key: str) -> ApiKey:
        """The live key a bearer token is, or a 401 that never repeats the token."""
        key_id, secret = _split(key)
        row = self._file.run(
            lambda c: c.execute(
                f"SELECT {_COLUMNS}, secret_hash FROM keys WHERE id = ?", (key_id,)
            ).fetchone(),
            write=False,
        )
        if row is None or not hmac.compare_digest(bytes(row[-1]), _digest(secret)):
            raise UnauthorizedError(f"API key {key_id} is not valid (unknown, or rotated)")
        found = _key(row[:-1])
        if found.revoked_at is not None:
            raise UnauthorizedError(f"API key {key_id} was revoked")
        return found

    def get(self, key_id: str) -> ApiKey:
        row = self._file.run(
            lambda c: c.execute(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,)).fetchone(),
            write=False,
        )
        if row is None:
            raise NotFoundError(f"no API key {key_id!r}")
        return _key(row)

    def owned_by(self, owner: str) -> list[ApiKey]:
        """``owner``'s keys, revoked ones included, oldest first."""
        rows = self._file.run(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM keys WHERE owner = ? ORDER BY created_at", (owner,)
            ).fetchall(),
            write=False,
        )
        return [_key(r) for r in rows]

    def rotate(self, key_id: str) -> tuple[ApiKey, str]:
        """A new secret for the key (same id, namespaces and scopes); the old one stops now."""
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        now = time.time()

        def update(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE keys SET secret_hash = ?, rotated_at = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (_digest(secret), now, key_id),
            ).rowcount

        if not self._file.run(update, write=True):
            self.get(key_id)  # a 404 for an unknown key
            raise InvalidRequestError(f"API key {key_id} is revoked: make a new one")
        return self.get(key_id), f"{PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        """Refuse the key from the next request on; revoking twice changes nothing."""
        self.get(key_id)
        self._file.run(
            lambda c: c.execute(
                "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            ),
            write=True,
        )
        return self.get(key_id)


_COLUMNS = "id, owner, namespaces, scopes, label, created_at, rotated_at, revoked_at"


def _key(row: tuple[object, ...]) -> ApiKey:
    key_id, owner, namespaces, scopes, label, created, rotated, revoked = row
    return ApiKey(
        str(key_id),
        str(owner),
        tuple(json.loads(str(namespaces))),
        frozenset(Scope(s) for s in json.loads(str(scopes))),
        str(label),
        float(created),  # type: ignore[arg-type]
        None if rotated is None else float(rotated),  # type: ignore[arg-type]
        None if revoked is None else float(revoked),  # type: ignore[arg-type]
    )
