"""Signed requests: Bittensor's ``btauth/1`` headers over method, target, body hash and nonce.

The client side adds the headers to an outgoing ``httpx.Request`` (a fresh
nonce per attempt, so a retry is never a replay); the server side turns the
headers of a received request into a :class:`~engram.security.access.Caller`.
The convention, its payload and its replay window are the ``bittensor``
SDK's own (:mod:`bittensor.http_auth`), so any Bittensor client can sign for
Engram without Engram code.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from bittensor import http_auth
from bittensor.signing import resolve_signer

from engram.config import ON_BEHALF_PARAM
from engram.errors import InvalidRequestError, UnauthorizedError
from engram.security.access import ANONYMOUS, Caller, SignedRequest

Signer = Any  # a bittensor Wallet, a sp_core Keypair, or anything bittensor.resolve_signer takes
_SIGNATURE_HEADER = http_auth.HEADER_SIGNATURE.lower()
_HOTKEY_HEADER = http_auth.HEADER_HOTKEY.lower()
_AUTH_HEADER_PREFIX = "x-bittensor-"


def signature_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``btauth/1`` headers of a request, to relay it with its signature intact."""
    return {k: v for k, v in headers.items() if k.lower().startswith(_AUTH_HEADER_PREFIX)}


def signer_hotkey(signer: Signer) -> str:
    """The SS58 address a signer signs as; a clear error for something that cannot sign."""
    try:
        return resolve_signer(signer, role="hotkey").ss58_address
    except (TypeError, AttributeError) as exc:
        raise InvalidRequestError(
            f"cannot sign with {type(signer).__name__}: give a bittensor Wallet or a Keypair"
        ) from exc


def hotkey_signer(signer: Signer) -> Signer:
    """``signer``'s hotkey as a signer resolved once: signing with a bittensor Wallet itself
    reads and parses its hotkey file on every signature (a quarter of a busy gateway's time)."""
    signer_hotkey(signer)  # a clear error for something that cannot sign
    return resolve_signer(signer, role="hotkey")


def sign_request(request: httpx.Request, signer: Signer, receiver: str | None = None) -> None:
    """Add the auth headers for exactly this method, target (path and query) and body."""
    request.headers.update(
        http_auth.sign(
            signer,
            method=request.method,
            path=request.url.raw_path.decode("ascii"),
            body=request.content,
            receiver_ss58=receiver,
        )
    )


class HotkeyAuth(httpx.Auth):
    """httpx authentication that signs every request (and every retry) with one hotkey."""

    requires_request_body = True

    def __init__(self, signer: Signer, receiver: str | None = None) -> None:
        self.hotkey = signer_hotkey(signer)
        self.signer = hotkey_signer(signer)
        self.receiver = receiver

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sign_request(request, self.signer, self.receiver)
        yield request


def as_sent(caller: Caller, target: str) -> Caller:
    """A request a gateway signed with ``on_behalf=anonymous`` in its (signed) query is an
    unsigned user's: judged as anonymous, and paid for by the gateway."""
    if caller.signed and "anonymous" in parse_qs(urlsplit(target).query).get(ON_BEHALF_PARAM, []):
        return Caller(paid_by=caller.hotkey)
    return caller


def _nonce_ns(signed: SignedRequest) -> int:
    try:
        return int(httpx.Headers(signed.headers).get(http_auth.HEADER_NONCE, ""))
    except ValueError:
        raise UnauthorizedError(f"the proof has no {http_auth.HEADER_NONCE}") from None


def signed_at(signed: SignedRequest) -> float:
    """When ``signed`` was signed (its nonce, in seconds since the epoch), for a request whose
    signature was verified already."""
    return _nonce_ns(signed) / 1e9


def proven_caller(signed: SignedRequest) -> tuple[Caller, float]:
    """Who signed ``signed`` and when (seconds since the epoch), however long ago.

    A delete's signed request is kept as the proof that its signer asked for it and shown
    to replicas that missed it, so its age and the replay window do not apply here; the
    signature over method, target and body does. Its receiver binding is not checked
    either: the owner asked one replica, and the request proves the same to all of them.
    """
    nonce = _nonce_ns(signed)
    receiver = httpx.Headers(signed.headers).get(http_auth.HEADER_RECEIVER, "")
    try:
        verified = http_auth.verify(
            signed.headers,
            signed.body,
            method=signed.method,
            path=signed.target,
            self_hotkey_ss58=receiver,
            max_age=1.0,
            require_receiver=False,
            nonce_store=http_auth.InMemoryNonceStore(retention=4.0),
            now_ns=nonce,
        )
    except (ValueError, http_auth.AuthError) as exc:
        raise UnauthorizedError(f"the proof's signature is rejected: {exc}") from None
    return as_sent(Caller(hotkey=verified.hotkey_ss58), signed.target), nonce / 1e9


class Verifier:
    """Checks a node's incoming signatures; one nonce store per node rejects replays.

    Requests may be bound to this node's hotkey or to none (a gateway relays
    a user's signed request unchanged to every replica); one bound to another
    hotkey is refused.
    """

    def __init__(
        self,
        hotkey: str | None,
        max_age_s: float,
        validators: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.hotkey = hotkey
        self.max_age_s = max_age_s
        self.validators = validators
        window = max_age_s + http_auth.DEFAULT_ALLOWED_SKEW
        self._nonces = http_auth.InMemoryNonceStore(retention=window + 1.0)

    def caller(self, headers: Mapping[str, str], body: bytes, method: str, target: str) -> Caller:
        """The verified sender, or :data:`ANONYMOUS` for a request that carries no signature."""
        if _SIGNATURE_HEADER not in headers and _HOTKEY_HEADER not in headers:
            return ANONYMOUS
        try:
            verified = http_auth.verify(
                headers,
                body,
                method=method,
                path=target,
                self_hotkey_ss58=self.hotkey or "",
                max_age=self.max_age_s,
                require_receiver=False,
                nonce_store=self._nonces,
            )
        except http_auth.AuthError as exc:
            raise UnauthorizedError(f"signature rejected: {exc}") from None
        hotkey = verified.hotkey_ss58
        return Caller(hotkey=hotkey, validator=hotkey in self.validators())
