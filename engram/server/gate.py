"""What a request passes before any work: its signature or API key, the node's policy and a
rate limit.

The miner and the gateway call :meth:`Gate.admit` at the top of every route
that touches records, and hand the resulting
:class:`~engram.security.access.Caller` to the library, which applies the
namespace rules.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from fastapi import Request

from engram.config import SecurityConfig
from engram.errors import InvalidRequestError, UnauthorizedError
from engram.security.access import Caller
from engram.security.apikeys import ApiKeys
from engram.security.ratelimit import Budget, RateLimiter
from engram.security.signing import Verifier, as_sent


def request_target(request: Request) -> str:
    """The path and query exactly as sent: what the client signed."""
    query = request.scope.get("query_string", b"")
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


class Gate:
    def __init__(
        self,
        config: SecurityConfig,
        require_signatures: bool,
        hotkey: str | None = None,
        validators: Callable[[], Collection[str]] = frozenset,
        keys: ApiKeys | None = None,
    ) -> None:
        self.config = config
        self.verifier = Verifier(hotkey, config.signature_max_age_s, validators)
        self.limiter = RateLimiter(config)
        self.require_signatures = require_signatures
        self.keys = keys  # a gateway's API keys; a node without them refuses bearer tokens

    async def admit(self, request: Request, budget: Budget, cost: float = 1.0) -> Caller:
        """The verified caller, once it may spend ``cost`` of ``budget``.

        A request a gateway signed with ``on_behalf=anonymous`` in its query is an unsigned
        user's: it is judged as anonymous, and spends the gateway's budget.
        """
        body = await request.body()
        caller = self.verifier.caller(
            request.headers, body, request.method, request_target(request)
        )
        bearer = _bearer(request)
        if bearer is not None:
            if caller.signed:
                raise InvalidRequestError(
                    "send a hotkey signature or an API key, not both: the key acts for its "
                    "owner, the signature for its signer"
                )
            if self.keys is None:
                raise UnauthorizedError(
                    "this node takes no API keys (a gateway does): sign the request with a "
                    "hotkey instead"
                )
            caller = Caller(api_key=self.keys.resolve(bearer))
        else:
            caller = as_sent(caller, request_target(request))
        if caller.hotkey is None and caller.api_key is None and self.require_signatures:
            raise UnauthorizedError(
                "this node accepts signed requests only: sign with a hotkey "
                "(EngramClient(url, wallet=...) or the bittensor http_auth headers)"
            )
        client_ip = request.client.host if request.client else "unknown"
        self.limiter.admit(budget, caller, client_ip, cost)
        return caller


def _bearer(request: Request) -> str | None:
    """The API key of an ``Authorization: Bearer`` header, if the request has one."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("use Authorization: Bearer <API key>")
    return token.strip()
