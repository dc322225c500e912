"""What a request passes before any work: its signature, the node's policy and a rate limit.

The miner and the gateway call :meth:`Gate.admit` at the top of every route
that touches records, and hand the resulting
:class:`~engram.security.access.Caller` to the library, which applies the
namespace rules.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from fastapi import Request

from engram.config import SecurityConfig
from engram.errors import UnauthorizedError
from engram.security.access import Caller
from engram.security.ratelimit import Budget, RateLimiter
from engram.security.signing import Verifier


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
    ) -> None:
        self.config = config
        self.verifier = Verifier(hotkey, config.signature_max_age_s, validators)
        self.limiter = RateLimiter(config)
        self.require_signatures = require_signatures

    async def admit(self, request: Request, budget: Budget, cost: float = 1.0) -> Caller:
        """The verified caller, once it may spend ``cost`` of ``budget``."""
        body = await request.body()
        caller = self.verifier.caller(
            request.headers, body, request.method, request_target(request)
        )
        if not caller.signed and self.require_signatures:
            raise UnauthorizedError(
                "this node accepts signed requests only: sign with a hotkey "
                "(EngramClient(url, wallet=...) or the bittensor http_auth headers)"
            )
        client_ip = request.client.host if request.client else "unknown"
        self.limiter.admit(budget, caller, client_ip, cost)
        return caller
