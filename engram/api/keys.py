"""A gateway's API-key calls: make, list, rotate and revoke keys (see
:mod:`engram.security.apikeys`).

They are answered by a gateway only (:mod:`engram.gateway.keys`), from its
key file rather than a node, so each call here is its wire format on both
sides and the rule of who may ask (:meth:`KeyCall.answer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from engram.api.calls import Call, Incoming, Route
from engram.api.exchange import HttpRequest, to_json
from engram.config import API_KEY_MAX_NAMESPACES
from engram.errors import ForbiddenError, UnauthorizedError
from engram.security.access import Caller
from engram.security.apikeys import ApiKey, ApiKeys, Scope, check_namespaces, parse_scopes
from engram.security.ratelimit import Budget

OwnerOf = Callable[[str], str | None]
"""The hotkey that owns a namespace, as the gateway can tell (``None``: public or unknown)."""


class KeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespaces: list[str] = Field(min_length=1, max_length=API_KEY_MAX_NAMESPACES)
    scopes: list[str] = Field(min_length=1, description="read, write and/or admin")
    label: str = Field(default="", max_length=200, description="a note for the owner")


class KeyInfo(BaseModel):
    """A key as listed: never its secret."""

    id: str
    owner: str
    namespaces: list[str]
    scopes: list[str]
    label: str
    created_at: float
    rotated_at: float | None = None
    revoked_at: float | None = None


class KeySecret(KeyInfo):
    api_key: str = Field(description="the whole key, shown this once: keep it secret")


class KeysResponse(BaseModel):
    keys: list[KeyInfo]


def _owner_of(caller: Caller | None) -> str:
    """The hotkey a key request acts for: its signer, or an admin key's owner."""
    if caller is not None and caller.api_key is not None:
        return caller.api_key.owner
    if caller is None or caller.hotkey is None:
        raise UnauthorizedError(
            "API keys are managed by the namespace owner's signed request (or an admin key)"
        )
    return caller.hotkey


def _may_manage(caller: Caller | None, key: ApiKey) -> None:
    """The key is the signer's, or within the admin key's namespaces and of the same owner."""
    owner = _owner_of(caller)
    admin = caller.api_key if caller is not None else None
    if key.owner != owner:
        raise ForbiddenError(f"API key {key.id} is not yours")
    if admin is not None:
        admin.require(key.namespaces, Scope.ADMIN)


class KeyCall(Call[Any]):
    """A key operation: answered from a gateway's key file, for a verified caller."""

    def answer(self, keys: ApiKeys, caller: Caller | None, owner_of: OwnerOf) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class CreateKey(KeyCall):
    """Make a key over namespaces the caller owns; the answer carries its secret, once."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", "/keys", Budget.INGEST, body=KeyCreateRequest, response=KeySecret),
    )
    namespaces: tuple[str, ...]
    scopes: tuple[str, ...]
    label: str = ""

    def request(self) -> HttpRequest:
        body = {"namespaces": list(self.namespaces), "scopes": list(self.scopes)}
        return HttpRequest("POST", "/keys", body=to_json({**body, "label": self.label}))

    def parse(self, body: Any) -> KeySecret:
        return KeySecret.model_validate(body)

    @classmethod
    def from_request(cls, incoming: Incoming) -> CreateKey:
        req: KeyCreateRequest = incoming.body
        return cls(tuple(req.namespaces), tuple(req.scopes), req.label)

    def answer(self, keys: ApiKeys, caller: Caller | None, owner_of: OwnerOf) -> dict[str, Any]:
        owner = _owner_of(caller)
        namespaces, scopes = check_namespaces(self.namespaces), parse_scopes(self.scopes)
        admin = caller.api_key if caller is not None else None
        if admin is not None:  # an admin key hands on at most what it has
            for scope in scopes:
                admin.require(namespaces, scope)
        else:
            for namespace in namespaces:
                found = owner_of(namespace)
                if found != owner:
                    raise ForbiddenError(
                        f"hotkey {owner} does not own namespace {namespace!r} as this gateway "
                        "can tell: claim it with a signed write or grant, and grant the "
                        "gateway's hotkey read (and write, for a write key) there first"
                    )
        key, secret = keys.create(owner, namespaces, scopes, self.label)
        return {**key.public(), "api_key": secret}


@dataclass(frozen=True)
class ListKeys(KeyCall):
    """The caller's keys (an admin key: those within its namespaces), revoked ones included."""

    routes: ClassVar[tuple[Route, ...]] = (Route("GET", "/keys", response=KeysResponse),)

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/keys")

    def parse(self, body: Any) -> list[KeyInfo]:
        return KeysResponse.model_validate(body).keys

    @classmethod
    def from_request(cls, incoming: Incoming) -> ListKeys:
        return cls()

    def answer(self, keys: ApiKeys, caller: Caller | None, owner_of: OwnerOf) -> dict[str, Any]:
        admin = caller.api_key if caller is not None else None
        owned = keys.owned_by(_owner_of(caller))
        if admin is not None:
            owned = [k for k in owned if all(admin.allows(n, Scope.ADMIN) for n in k.namespaces)]
        return {"keys": [k.public() for k in owned]}


@dataclass(frozen=True)
class RotateKey(KeyCall):
    """A new secret for a key; the old secret is refused from the next request on."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", "/keys/{key_id}/rotate", Budget.INGEST, response=KeySecret),
    )
    key_id: str

    def request(self) -> HttpRequest:
        return HttpRequest("POST", f"/keys/{quote(self.key_id, safe='')}/rotate")

    def parse(self, body: Any) -> KeySecret:
        return KeySecret.model_validate(body)

    @classmethod
    def from_request(cls, incoming: Incoming) -> RotateKey:
        return cls(incoming.path["key_id"])

    def answer(self, keys: ApiKeys, caller: Caller | None, owner_of: OwnerOf) -> dict[str, Any]:
        _may_manage(caller, keys.get(self.key_id))
        key, secret = keys.rotate(self.key_id)
        return {**key.public(), "api_key": secret}


@dataclass(frozen=True)
class RevokeKey(KeyCall):
    """Refuse a key from the next request on."""

    routes: ClassVar[tuple[Route, ...]] = (
        Route("DELETE", "/keys/{key_id}", Budget.INGEST, response=KeyInfo),
    )
    key_id: str

    def request(self) -> HttpRequest:
        return HttpRequest("DELETE", f"/keys/{quote(self.key_id, safe='')}")

    def parse(self, body: Any) -> KeyInfo:
        return KeyInfo.model_validate(body)

    @classmethod
    def from_request(cls, incoming: Incoming) -> RevokeKey:
        return cls(incoming.path["key_id"])

    def answer(self, keys: ApiKeys, caller: Caller | None, owner_of: OwnerOf) -> dict[str, Any]:
        _may_manage(caller, keys.get(self.key_id))
        return keys.revoke(self.key_id).public()


@dataclass(frozen=True)
class CurrentKey(KeyCall):
    """The API key the request carries: how a service in front of a gateway checks one."""

    routes: ClassVar[tuple[Route, ...]] = (Route("GET", "/keys/current", response=KeyInfo),)

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/keys/current")

    def parse(self, body: Any) -> KeyInfo:
        return KeyInfo.model_validate(body)

    @classmethod
    def from_request(cls, incoming: Incoming) -> CurrentKey:
        return cls()

    def answer(self, keys: ApiKeys, caller: Caller | None, owner_of: OwnerOf) -> dict[str, Any]:
        if caller is None or caller.api_key is None:
            raise UnauthorizedError("send the API key to check as Authorization: Bearer <key>")
        return caller.api_key.public()


KEY_CALLS: tuple[type[KeyCall], ...] = (CreateKey, ListKeys, CurrentKey, RotateKey, RevokeKey)
