"""Who may do what in a namespace: owners, grants and writers (DESIGN §8).

A namespace nobody has claimed is public: anyone reads it, anyone writes it,
and a record there can be deleted only by the hotkey that signed its write.
The first signed write to an empty namespace (any but ``default``) makes the
signer its owner; from then on only the owner and the hotkeys it granted
``read`` or ``write`` may touch it. Ownership lives in each store's own
SQLite file, so the embedded store, a miner and every replica enforce it
alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bittensor.sp_core import ss58_decode

from engram.config import DEFAULT_NAMESPACE
from engram.errors import (
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from engram.store.db import Database


class Permission(StrEnum):
    READ = "read"
    WRITE = "write"  # write and delete; reading needs its own grant


@dataclass(frozen=True)
class Caller:
    """Who is asking: a verified hotkey, nobody (unsigned), or the store's own operator."""

    hotkey: str | None = None
    validator: bool = False  # holds a validator permit on the subnet
    operator: bool = False  # the process that owns the files (embedded use, with no wallet)

    @property
    def signed(self) -> bool:
        return self.hotkey is not None


ANONYMOUS = Caller()
OPERATOR = Caller(operator=True)


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

    def __init__(self, db: Database) -> None:
        self.db = db

    def owner(self, namespace: str) -> str | None:
        return self.db.owner(namespace)

    def private(self) -> set[str]:
        return self.db.owned()

    def can(self, caller: Caller, namespace: str, permission: Permission) -> bool:
        if caller.operator:
            return True
        owner = self.db.owner(namespace)
        if owner is None:
            return True
        if caller.hotkey is None:
            return False
        return caller.hotkey == owner or self.db.has_grant(namespace, caller.hotkey, permission)

    def require(self, caller: Caller, namespace: str, permission: Permission) -> None:
        if self.can(caller, namespace, permission):
            return
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
        claimable = caller.hotkey is not None and namespace != DEFAULT_NAMESPACE
        if claimable and self.db.owner(namespace) is None:
            self.db.claim(namespace, caller.hotkey)  # type: ignore[arg-type]
        self.require(caller, namespace, Permission.WRITE)

    def admit_delete(self, caller: Caller, namespace: str, cid: str) -> None:
        """Private: owner or write grantee. Public: only the hotkey that wrote the record."""
        private = self.db.owner(namespace) is not None
        if private:
            self.require(caller, namespace, Permission.WRITE)
        exists, writer = self.db.writer(namespace, cid)
        if not exists:
            raise NotFoundError(f"no record {cid} in namespace {namespace}")
        if caller.operator or private:
            return
        if writer is None:
            raise ForbiddenError(
                f"{cid} was written without a signature: public records are permanent"
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
        owner = self.db.owner(namespace)
        if owner is None:
            return {"namespace": namespace, "owner": None, "private": False, "grants": []}
        if not caller.operator and caller.hotkey != owner:
            self.require(caller, namespace, Permission.READ)
            return {"namespace": namespace, "owner": owner, "private": True, "grants": []}
        grants = [{"hotkey": h, "permission": p} for h, p in self.db.grants(namespace)]
        return {"namespace": namespace, "owner": owner, "private": True, "grants": grants}
