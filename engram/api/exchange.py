"""Sending one call to one node over HTTP: retries, backoff, error mapping, sync/async runners.

A :class:`~engram.api.calls.Call` describes a request and parses its answer;
:func:`exchange` turns it into :class:`HttpRequest` and :class:`Sleep` steps
(retrying connection errors and 5xx with exponential backoff) and the reply
into the result or the server's typed exception. Transports only perform the
steps: :func:`run_sync` and :func:`run_async` drive the same plan from the
sync and async twins, and :func:`call_node` from the network and validator.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from engram.config import ClientConfig
from engram.errors import (
    InvalidRequestError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from engram.security.signing import Signer, sign_request

if TYPE_CHECKING:
    from engram.api.calls import Call

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")
_JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)  # a list value repeats the name
    body: bytes | None = None  # JSON, already encoded


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    retry_after_s: float | None = None  # a 429's Retry-After, in seconds


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: the usual backoff applies


@dataclass(frozen=True)
class Sleep:
    seconds: float


def to_json(doc: Any) -> bytes:
    """Compact UTF-8 JSON for a request body; NaN and lone surrogates are the caller's error."""
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:  # NaN, a lone surrogate: nothing a node could read
        raise InvalidRequestError(f"cannot send this as JSON: {exc}") from exc


_RETRYABLE_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def retryable_status(status: int) -> bool:
    """5xx may pass (a restart, an overloaded node); 4xx will not, so it is never retried."""
    return status >= 500 and status not in (501, 505)


def backoff_delay(config: ClientConfig, retry: int) -> float:
    """Seconds before retry number ``retry`` (1-based): ``backoff_s``, doubled each time."""
    return config.backoff_s * 2 ** (retry - 1)


def transport_error(
    exc: BaseException, request: HttpRequest, url: str, config: ClientConfig, attempts: int
) -> UpstreamError:
    """An httpx failure as Engram's exception; the caller raises it ``from`` the original."""
    where = f"{request.method} {url}{request.path}"
    tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"{where} got no answer within {config.timeout_s}s ({tries})")
    return UnavailableError(f"cannot reach the node: {where} failed ({tries}): {exc!r}")


def _decode(reply: HttpReply) -> Any:
    """The reply's JSON; an error page that is not JSON keeps a readable snippet."""
    try:
        body = json.loads(reply.body) if reply.body else {}
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    if 200 <= reply.status < 300:
        raise UpstreamError(f"the node answered HTTP {reply.status} with a body that is not JSON")
    snippet = reply.body[:200].decode("utf-8", "replace").strip()
    return {"error": f"HTTP {reply.status}: {snippet}" if snippet else f"HTTP {reply.status}"}


def exchange(
    call: Call[T], url: str, config: ClientConfig
) -> Generator[HttpRequest | Sleep, HttpReply | Exception | None, T]:
    """Send ``call``, retrying connection errors and 5xx with exponential backoff, and a 429
    after its ``Retry-After`` (at most ``max_retry_after_s``).

    Retrying a write is safe: a record's CID is the hash of its content and
    storing a CID twice changes nothing, so an ingest the server did apply
    before the connection broke is not stored twice.
    """
    request = call.request()
    attempts = config.retries + 1
    wait = 0.0
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            yield Sleep(wait)
        wait = backoff_delay(config, attempt)
        reply = yield request
        last = attempt == attempts
        if isinstance(reply, Exception):
            if last or not isinstance(reply, _RETRYABLE_EXCEPTIONS):
                raise transport_error(reply, request, url, config, attempt) from reply
            continue
        assert reply is not None
        if 200 <= reply.status < 300 or reply.status in call.accepts:
            body = _decode(reply)
            try:
                return call.parse(body)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise UpstreamError(
                    f"the node's answer to {request.method} {request.path} is malformed: {exc!r}"
                ) from exc
        overloaded = reply.status == 503 and reply.retry_after_s is not None
        if (reply.status == 429 or overloaded) and not last:
            # rate limited or overloaded: wait as long as the node says
            wait = min(reply.retry_after_s or wait, config.max_retry_after_s)
            continue
        if last or not retryable_status(reply.status):
            return call.failure(reply.status, _decode(reply), retried=attempt > 1)
    raise AssertionError("unreachable: the last attempt returns or raises")


def run_sync(steps: Generator[S, R, T], perform: Callable[[S], R]) -> T:
    """Perform each step a plan yields and send the answer back; the plan's value is returned."""
    try:
        step = next(steps)
        while True:
            step = steps.send(perform(step))
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


async def run_async(steps: Generator[S, R, T], perform: Callable[[S], Awaitable[R]]) -> T:
    """:func:`run_sync` with an awaited ``perform``."""
    try:
        step = next(steps)
        while True:
            step = steps.send(await perform(step))
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


async def perform_async(
    http: httpx.AsyncClient,
    step: HttpRequest | Sleep,
    base_url: str = "",
    timeout_s: float | None = None,
    signer: Signer | None = None,
    receiver: str | None = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> HttpReply | Exception | None:
    """One step of :func:`exchange` on an async client (its own timeout unless ``timeout_s``
    is given), signed for ``receiver`` when a ``signer`` is given; ``query`` is added to the
    step's own query string before signing."""
    if isinstance(step, Sleep):
        await asyncio.sleep(step.seconds)
        return None
    request = http.build_request(
        step.method,
        base_url + step.path,
        params=step.params or None,  # None keeps a query already in the path
        content=step.body,
        headers={**(_JSON_HEADERS if step.body is not None else {}), **(headers or {})},
        timeout=http.timeout if timeout_s is None else timeout_s,
    )
    if query:
        request.url = request.url.copy_merge_params(query)
    if signer is not None:
        sign_request(request, signer, receiver)
    try:
        response = await http.send(request)
    except httpx.TransportError as exc:
        return exc
    return HttpReply(response.status_code, response.content, _retry_after(response))


def perform_sync(http: httpx.Client, step: HttpRequest | Sleep) -> HttpReply | Exception | None:
    """:func:`perform_async` on a sync client (which signs through its own ``auth``)."""
    if isinstance(step, Sleep):
        time.sleep(step.seconds)
        return None
    try:
        response = http.request(
            step.method,
            step.path,
            params=step.params,
            content=step.body,
            headers=_JSON_HEADERS if step.body is not None else None,
        )
    except httpx.TransportError as exc:
        return exc  # exchange decides: retry, or raise it as Engram's error
    return HttpReply(response.status_code, response.content, _retry_after(response))


async def call_node(
    http: httpx.AsyncClient,
    url: str,
    call: Call[T],
    config: ClientConfig,
    deadline_s: float | None = None,
    *,
    signer: Signer | None = None,
    receiver: str | None = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> T:
    """Send ``call`` to the node at ``url``; past ``deadline_s`` it is an UpstreamTimeoutError.

    With a ``signer`` every attempt is signed afresh, bound to the node's hotkey ``receiver``.
    The network client, the gateway and the validator reach miners through this function.
    """

    async def perform(step: HttpRequest | Sleep) -> HttpReply | Exception | None:
        return await perform_async(
            http, step, url, config.timeout_s, signer, receiver, headers, query
        )

    try:
        return await asyncio.wait_for(run_async(exchange(call, url, config), perform), deadline_s)
    except TimeoutError as exc:
        raise UpstreamTimeoutError(f"{url} did not answer within {deadline_s}s") from exc
