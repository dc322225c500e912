"""The one exception tree of Engram.

Every error knows its stable wire ``code`` and its HTTP ``status`` so that the
server maps it to a response in one place and the SDK maps the response back to
the same class (:func:`error_from_wire`)::

    EngramError                      500 internal
    ├── InvalidRequestError          400 invalid_request
    │   ├── DimensionMismatchError   400 dimension_mismatch
    │   ├── InvalidCIDError          400 invalid_cid
    │   ├── InvalidFilterError       400 invalid_filter
    │   ├── ChallengeExpiredError    400 challenge_expired
    │   ├── ChainError               400 chain_error        (not registered, no permit, ...)
    │   ├── RouteNotFoundError       404 no_such_route      (a wrong URL, not a missing record)
    │   └── MethodNotAllowedError    405 method_not_allowed
    ├── UnauthorizedError            401 unauthorized
    ├── ForbiddenError               403 forbidden
    ├── NotFoundError                404 not_found
    ├── ConflictError                409 conflict           (e.g. updating a forgotten memory)
    │   └── BusyError                409 busy               (port in use, localnet already running)
    ├── NotAReplicaError             421 not_a_replica      (routing sends this CID elsewhere)
    ├── PayloadTooLargeError         413 payload_too_large
    ├── CIDMismatchError             422 cid_mismatch
    ├── SealError                    422 seal_failed        (wrong key, altered or moved record)
    ├── RateLimitedError             429 rate_limited
    ├── StorageError                 500 storage_error
    └── UpstreamError                502 upstream_error
        ├── UnavailableError         503 unavailable
        │   ├── EmbedderUnavailableError 503 embedder_unavailable
        │   ├── ChainUnavailableError    503 chain_unavailable
        │   └── QuorumError              503 quorum_not_met
        └── UpstreamTimeoutError     504 upstream_timeout
"""

from __future__ import annotations

from typing import ClassVar


class EngramError(Exception):
    """Base of every error Engram raises on purpose."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


class InvalidRequestError(EngramError):
    code = "invalid_request"
    status = 400


class DimensionMismatchError(InvalidRequestError):
    code = "dimension_mismatch"


class InvalidCIDError(InvalidRequestError):
    code = "invalid_cid"


class InvalidFilterError(InvalidRequestError):
    code = "invalid_filter"


class ChallengeExpiredError(InvalidRequestError):
    code = "challenge_expired"


class ChainError(InvalidRequestError):
    code = "chain_error"


class RouteNotFoundError(InvalidRequestError):
    code = "no_such_route"
    status = 404


class MethodNotAllowedError(InvalidRequestError):
    code = "method_not_allowed"
    status = 405


class UnauthorizedError(EngramError):
    code = "unauthorized"
    status = 401


class ForbiddenError(EngramError):
    code = "forbidden"
    status = 403


class NotFoundError(EngramError):
    code = "not_found"
    status = 404


class ConflictError(EngramError):
    """The request is well formed but the target's state forbids it."""

    code = "conflict"
    status = 409


class BusyError(ConflictError):
    """Another process holds what this one needs to start: a port, or a localnet's home."""

    code = "busy"


class NotAReplicaError(EngramError):
    code = "not_a_replica"
    status = 421


class PayloadTooLargeError(EngramError):
    code = "payload_too_large"
    status = 413


class CIDMismatchError(EngramError):
    code = "cid_mismatch"
    status = 422


class SealError(EngramError):
    code = "seal_failed"
    status = 422


class RateLimitedError(EngramError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageError(EngramError):
    code = "storage_error"
    status = 500


class UpstreamError(EngramError):
    code = "upstream_error"
    status = 502


class UnavailableError(UpstreamError):
    code = "unavailable"
    status = 503


class OverloadedError(UnavailableError):
    """The server has as many requests in hand as it serves at once: retry after a moment."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EmbedderUnavailableError(UnavailableError):
    code = "embedder_unavailable"


class ChainUnavailableError(UnavailableError):
    code = "chain_unavailable"


class QuorumError(UnavailableError):
    code = "quorum_not_met"


class UpstreamTimeoutError(UpstreamError):
    code = "upstream_timeout"
    status = 504


def _all_subclasses(cls: type[EngramError]) -> list[type[EngramError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[str, type[EngramError]] = {c.code: c for c in _all_subclasses(EngramError)}


def error_from_wire(status: int, body: object) -> EngramError:
    """Rebuild the exception a server raised from its JSON error body.

    Unknown codes fall back to the class whose status matches, so a newer
    server still yields the right family of exception.
    """
    message = f"HTTP {status}"
    code = None
    if isinstance(body, dict):
        message = str(body.get("error") or body.get("detail") or message)
        code = body.get("code")
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        by_status = [c for c in _BY_CODE.values() if c.status == status]
        cls = (
            min(by_status, key=lambda c: len(c.__mro__))
            if by_status
            else (InvalidRequestError if 400 <= status < 500 else EngramError)
        )
    return cls(message)
