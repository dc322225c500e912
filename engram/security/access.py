"""Who may do what in a namespace: owners, grants and writers (docs/architecture.md, "Security").

A namespace nobody has claimed is public: anyone reads it, anyone writes it,
and a record there can be deleted only by the hotkey that signed its write.
The first signed write to an empty namespace (any but ``default``) makes the
signer its owner; from then on only the owner and the hotkeys it granted
``read`` or ``write`` may touch it. Ownership lives in each store's own
SQLite file, so the embedded store, a miner and every replica enforce it
alike.

The original network's clients guard a namespace with a shared secret
instead (``namespace_key``): the first write to an empty namespace with a key
ties the namespace to it, and from then on every request to it needs that
key. Only a slow salted hash of the key is stored (PBKDF2-SHA256). It is the
weaker, legacy scheme: the key travels with each request (use HTTPS), anyone
who has it may do anything there, and it cannot be revoked per user. Hotkey
signatures are the scheme to use; the key exists so those clients keep working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from bittensor.sp_core import ss58_decode

from engram.config import DEFAULT_NAMESPACE, NAMESPACE_KEY_MIN_CHARS, NAMESPACE_KEY_PBKDF2_ROUNDS
from engram.errors import (
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from engram.store.db import Database

if TYPE_CHECKING:
    from engram.security.apikeys import ApiKey


class Permission(StrEnum):
    READ = "read"
    WRITE = "write"  # write and delete; reading needs its own grant


@dataclass(frozen=True)
class SignedRequest:
    """A request exactly as its signer sent it: what a gateway relays to the miners, so they
    verify the signer themselves (``target`` is the path and query that were signed)."""

    method: str
    target: str
    body: bytes
    headers: Mapping[str, str]  # the signature headers

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def to_json(self) -> str:
        """The request as JSON text: what a node keeps as the proof of a delete."""
        doc = {
            "method": self.method,
            "target": self.target,
            "body": base64.b64encode(self.body).decode("ascii"),
            "headers": dict(self.headers),
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SignedRequest:
        """The inverse of :meth:`to_json`; a 400 for anything else."""
        try:
            doc = json.loads(text)
            headers = doc["headers"]
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise TypeError("headers must map strings to strings")
            return cls(
                str(doc["method"]),
                str(doc["target"]),
                base64.b64decode(doc["body"], validate=True),
                headers,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidRequestError(f"not a signed request: {exc}") from None


@dataclass(frozen=True)
class Caller:
    """Who is asking: a verified hotkey, nobody (unsigned), or the store's own operator."""

    hotkey: str | None = None
    validator: bool = False  # holds a validator permit on the subnet
    operator: bool = False  # the process that owns the files (embedded use, with no wallet)
    namespace_key: str | None = None  # a legacy shared secret sent with the request
    signed_request: SignedRequest | None = None  # as signed: relayed, or a delete's proof
    api_key: ApiKey | None = None  # on a gateway: the bearer key it acts for (under its hotkey)
    paid_by: str | None = None  # the gateway hotkey that signed an anonymous caller's request

    @property
    def budget_id(self) -> str | None:
        """Whose rate-limit bucket the request spends (``None``: the client's IP's)."""
        if self.hotkey is not None:
            return self.hotkey
        if self.api_key is not None:
            return self.api_key.actor
        return self.paid_by

    @property
    def signed(self) -> bool:
        return self.hotkey is not None


ANONYMOUS = Caller()
OPERATOR = Caller(operator=True)

_KEY_CACHE = 4_096  # verified (namespace, key) digests kept, so a key costs PBKDF2 once


def hash_namespace_key(namespace: str, key: str, salt: bytes | None = None) -> bytes:
    """``rounds (4 bytes) || salt (16) || PBKDF2-SHA256(key, namespace || salt)``."""
    salt = os.urandom(16) if salt is None else salt
    rounds = NAMESPACE_KEY_PBKDF2_ROUNDS
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), namespace.encode() + salt, rounds)
    return struct.pack(">I", rounds) + salt + digest


def _key_matches(namespace: str, key: str, stored: bytes) -> bool:
    (rounds,) = struct.unpack(">I", stored[:4])
    salt, digest = stored[4:20], stored[20:]
    given = hashlib.pbkdf2_hmac("sha256", key.encode(), namespace.encode() + salt, rounds)
    return hmac.compare_digest(given, digest)


def check_hotkey(hotkey: Any) -> str:
    """An SS58 address, or a 400 that says what one looks like."""
    try:
        if not isinstance(hotkey, str):
            raise ValueError(type(hotkey).__name__)
        ss58_decode(hotkey)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(
            f"{hotkey!r} is not an SS58 hotkey address (like 5GrwvaEF5zXb26Fz9rcQpDWS...)"
        ) from exc
    return hotkey


class NamespaceAccess:
    """The ownership rules, checked against one store's database before every operation."""

    def __init__(self, db: Database, unsigned_public_deletes: bool = False) -> None:
        self.db = db
        self.unsigned_public_deletes = unsigned_public_deletes
        self._verified: dict[bytes, None] = {}  # insertion-ordered: the oldest is evicted first
        self._verified_lock = threading.Lock()

    def owner(self, namespace: str) -> str | None:
        return self.db.owner(namespace)

    def private(self) -> set[str]:
        return self.db.owned() | self.db.keyed_namespaces()

    def _key_opens(self, caller: Caller, namespace: str, stored: bytes) -> bool:
        key = caller.namespace_key
        if key is None:
            return False
        memo = hashlib.sha256(b"\0".join((namespace.encode(), key.encode(), stored))).digest()
        with self._verified_lock:
            if memo in self._verified:
                return True
        if not _key_matches(namespace, key, stored):
            return False
        with self._verified_lock:
            self._verified[memo] = None
            if len(self._verified) > _KEY_CACHE:
                del self._verified[next(iter(self._verified))]
        return True

    def can(self, caller: Caller, namespace: str, permission: Permission) -> bool:
        if caller.operator:
            return True
        owner, stored = self.db.guard(namespace)
        if stored is not None:
            return self._key_opens(caller, namespace, stored)
        if owner is None:
            return True
        if caller.hotkey is None:
            return False
        return caller.hotkey == owner or self.db.has_grant(namespace, caller.hotkey, permission)

    def require(self, caller: Caller, namespace: str, permission: Permission) -> None:
        if self.can(caller, namespace, permission):
            return
        if self.db.namespace_key_hash(namespace) is not None:
            if caller.namespace_key is None:
                raise UnauthorizedError(
                    f"namespace {namespace!r} is guarded by a namespace_key: send it"
                )
            raise ForbiddenError(f"wrong namespace_key for namespace {namespace!r}")
        if caller.hotkey is None:
            raise UnauthorizedError(
                f"namespace {namespace!r} is private: sign the request with its owner's "
                f"hotkey or one granted {permission.value}"
            )
        raise ForbiddenError(
            f"hotkey {caller.hotkey} may not {permission.value} namespace {namespace!r}; "
            f"ask its owner for a {permission.value} grant"
        )

    def admit_write(self, caller: Caller, namespace: str) -> None:
        """Allow a write, claiming the namespace for a signed caller when nobody wrote there."""
        if caller.operator:
            return
        if caller.namespace_key is not None and caller.hotkey is None:
            self._claim_with_key(caller.namespace_key, namespace)
        claimable = caller.hotkey is not None and namespace != DEFAULT_NAMESPACE
        if claimable and self.db.owner(namespace) is None:
            self.db.claim(namespace, caller.hotkey)  # type: ignore[arg-type]
        self.require(caller, namespace, Permission.WRITE)

    def _claim_with_key(self, key: str, namespace: str) -> None:
        """Tie an empty, unowned namespace to ``key``; a public one refuses to be keyed."""
        if self.db.guard(namespace) != (None, None):
            return
        if namespace == DEFAULT_NAMESPACE or self.db.count(namespace):
            raise ForbiddenError(
                f"namespace {namespace!r} is public (it already holds records written without "
                "a key): a namespace_key can guard only a new namespace; choose another name"
            )
        if len(key) < NAMESPACE_KEY_MIN_CHARS:
            raise InvalidRequestError(
                f"a namespace_key must be at least {NAMESPACE_KEY_MIN_CHARS} characters"
            )
        self.db.set_namespace_key_hash(namespace, hash_namespace_key(namespace, key))

    def admit_delete(self, caller: Caller, namespace: str, cid: str) -> None:
        """Private: owner or write grantee. Public: only the hotkey that wrote the record."""
        private = self.db.guard(namespace) != (None, None)
        if private:
            self.require(caller, namespace, Permission.WRITE)
        exists, writer = self.db.writer(namespace, cid)
        if not exists:
            raise NotFoundError(f"no record {cid} in namespace {namespace}")
        if caller.operator or private:
            return
        if writer is None:
            if self.unsigned_public_deletes:
                return
            raise ForbiddenError(
                f"{cid} was written without a signature: public records are permanent "
                "(a node may allow such deletes with unsigned_public_deletes, as the original "
                "network did)"
            )
        if caller.hotkey is None:
            raise UnauthorizedError(
                f"only the hotkey that wrote {cid} may delete it: sign the request with it"
            )
        if caller.hotkey != writer:
            raise ForbiddenError(f"only the hotkey that wrote {cid} may delete it")

    def set_grant(
        self, caller: Caller, namespace: str, hotkey: str, permission: Permission, granted: bool
    ) -> None:
        """Grant or revoke; a signed owner's first grant claims an empty namespace."""
        check_hotkey(hotkey)
        if self.db.namespace_key_hash(namespace) is not None:
            raise InvalidRequestError(
                f"namespace {namespace!r} is guarded by a namespace_key: anyone with the key "
                "has access; grants apply to namespaces owned by a hotkey"
            )
        if caller.hotkey is None and not caller.operator:
            raise UnauthorizedError("grants are signed by the namespace's owner")
        owner = self.db.owner(namespace)
        if owner is None and caller.hotkey is not None and namespace != DEFAULT_NAMESPACE:
            owner = self.db.claim(namespace, caller.hotkey)
        if owner is None:
            raise InvalidRequestError(
                f"namespace {namespace!r} is public (written unsigned, or the default one): "
                "grants apply to a namespace first written with a signature"
            )
        if not caller.operator and caller.hotkey != owner:
            raise ForbiddenError(f"only the owner of namespace {namespace!r} may change its grants")
        self.db.set_grant(namespace, hotkey, permission.value, granted)

    def describe(self, caller: Caller, namespace: str) -> dict[str, Any]:
        """Owner and grants; a private namespace's grants are shown to its owner only."""
        owner, key_hash = self.db.guard(namespace)
        if owner is None:
            keyed = key_hash is not None
            if keyed:
                self.require(caller, namespace, Permission.READ)
            return {"namespace": namespace, "owner": None, "private": keyed, "grants": []}
        if not caller.operator and caller.hotkey != owner:
            self.require(caller, namespace, Permission.READ)
            return {"namespace": namespace, "owner": owner, "private": True, "grants": []}
        grants = [{"hotkey": h, "permission": p} for h, p in self.db.grants(namespace)]
        return {"namespace": namespace, "owner": owner, "private": True, "grants": grants}
