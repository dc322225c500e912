"""``client.keys``: a gateway's API keys (see :mod:`engram.security.apikeys`), sync and async.

Each method sends its call (:mod:`engram.api.keys`) to the gateway the client
talks to, signed by the client's wallet (the namespace owner) or carrying an
admin API key. Only a gateway answers them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engram.api.keys import (
    CreateKey,
    CurrentKey,
    KeyInfo,
    KeySecret,
    ListKeys,
    RevokeKey,
    RotateKey,
)
from engram.errors import InvalidRequestError


def _names(value: Sequence[str] | str, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not all(isinstance(v, str) for v in value):
        raise InvalidRequestError(f"{what} must be strings")
    return tuple(value)


class KeysClient:
    """API keys of the gateway an :class:`~engram.sdk.client.EngramClient` talks to."""

    def __init__(self, run: Callable[[Any], Any]) -> None:
        self._run = run

    def create(
        self,
        namespaces: Sequence[str] | str,
        scopes: Sequence[str] | str = ("read",),
        label: str = "",
    ) -> KeySecret:
        """A new key over namespaces you own; its ``api_key`` is shown this once."""
        call = CreateKey(_names(namespaces, "namespaces"), _names(scopes, "scopes"), label)
        result: KeySecret = self._run(call)
        return result

    def list(self) -> list[KeyInfo]:
        """Your keys, revoked ones included (never their secrets)."""
        result: list[KeyInfo] = self._run(ListKeys())
        return result

    def current(self) -> KeyInfo:
        """The API key this client acts with (a 401 once it is revoked)."""
        result: KeyInfo = self._run(CurrentKey())
        return result

    def rotate(self, key_id: str) -> KeySecret:
        """A new secret for the key; the old one is refused from the next request on."""
        result: KeySecret = self._run(RotateKey(key_id))
        return result

    def revoke(self, key_id: str) -> KeyInfo:
        """Refuse the key from the next request on."""
        result: KeyInfo = self._run(RevokeKey(key_id))
        return result


class AsyncKeysClient:
    """:class:`KeysClient` for :class:`~engram.sdk.async_client.AsyncEngramClient`."""

    def __init__(self, run: Callable[[Any], Awaitable[Any]]) -> None:
        self._run = run

    async def create(
        self,
        namespaces: Sequence[str] | str,
        scopes: Sequence[str] | str = ("read",),
        label: str = "",
    ) -> KeySecret:
        call = CreateKey(_names(namespaces, "namespaces"), _names(scopes, "scopes"), label)
        result: KeySecret = await self._run(call)
        return result

    async def list(self) -> list[KeyInfo]:
        result: list[KeyInfo] = await self._run(ListKeys())
        return result

    async def current(self) -> KeyInfo:
        result: KeyInfo = await self._run(CurrentKey())
        return result

    async def rotate(self, key_id: str) -> KeySecret:
        result: KeySecret = await self._run(RotateKey(key_id))
        return result

    async def revoke(self, key_id: str) -> KeyInfo:
        result: KeyInfo = await self._run(RevokeKey(key_id))
        return result
