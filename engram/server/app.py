"""What every Engram HTTP server shares: errors, limits, metrics, logs and how it runs.

The miner and the gateway build their FastAPI apps with :func:`create_app`,
add their own routes and run them with :func:`serve_app`. Every
:class:`~engram.errors.EngramError` becomes ``{"error": message, "code": code}``
with its status here and nowhere else; anything unexpected becomes a logged 500
that leaks nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engram.config import Limits
from engram.errors import (
    EngramError,
    InvalidRequestError,
    MethodNotAllowedError,
    OverloadedError,
    PayloadTooLargeError,
    RateLimitedError,
    RouteNotFoundError,
    error_from_wire,
)

log = logging.getLogger("engram.server")

# Protocol fields a failed response still carries, so old clients find them.
_ERROR_DEFAULTS: dict[str, dict[str, Any]] = {
    "/IngestSynapse": {"cid": None},
    "/QuerySynapse": {"results": [], "latency_ms": 0.0},
    "/BatchIngestSynapse": {"cids": [], "errors": []},
}


def _error_body(path: str, error: EngramError) -> dict[str, Any]:
    """``{"error", "code"}`` plus the protocol fields this route's clients expect."""
    return {**_ERROR_DEFAULTS.get(path, {}), **error.to_wire()}


def error_response(request: Request, exc: EngramError) -> JSONResponse:
    headers = None
    if isinstance(exc, RateLimitedError | OverloadedError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return JSONResponse(_error_body(request.url.path, exc), status_code=exc.status, headers=headers)


M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the raw JSON body in one pass (pydantic's own parser, ~10x FastAPI's path)."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidRequestError(
            f"the request body must be JSON sent with Content-Type: application/json, "
            f"not {content_type!r}"
        )
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            detail = str(errors[0].get("ctx", {}).get("error", errors[0]["msg"]))
            hint = " (text must be valid Unicode: no lone surrogate escapes)"
            raise InvalidRequestError(
                f"the request body is not valid JSON: {detail}"
                + (hint if "escape" in detail else "")
            ) from exc
        raise RequestValidationError(errors) from exc


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for routes that parse with :func:`parse_body`.

    Nested models are inlined: the schema sits inside an operation, where
    pydantic's ``#/$defs/...`` references would point nowhere.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


def _describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:5]:
        if tuple(err.get("loc", ())) == ("body",) and err.get("type") in (
            "model_attributes_type",
            "dict_type",
        ):
            return "the request body must be a JSON object sent with Content-Type: application/json"
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)


class Metrics:
    """Prometheus metrics of one app, in a registry of its own (several apps per process in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "engram_http_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "engram_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    title: str, version: str, limits: Limits, max_in_flight: int | None = None, **kwargs: Any
) -> FastAPI:
    """A FastAPI app with Engram's error mapping, body limit, metrics and access log; with
    ``max_in_flight``, requests beyond that many at once are shed with a 503."""
    app = FastAPI(title=title, version=version, **kwargs)
    app.state.metrics = Metrics()
    app.state.limits = limits

    @app.exception_handler(EngramError)
    async def _engram_error(request: Request, exc: EngramError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, InvalidRequestError(_describe_validation(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            error: EngramError = RouteNotFoundError(f"no such route: {where} (see /docs)")
        elif exc.status_code == 405:
            error = MethodNotAllowedError(f"method not allowed: {where} (see /docs)")
        elif exc.status_code == 400 and "parsing the body" in str(exc.detail):
            error = InvalidRequestError(
                "the request body is not valid JSON: send UTF-8 JSON nested at most a few "
                "hundred levels deep, with Content-Type: application/json"
            )
        else:
            error = error_from_wire(exc.status_code, {"error": str(exc.detail)})
        return JSONResponse(
            _error_body(request.url.path, error),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {"error": "internal error; see the server log", "code": EngramError.code}
        return JSONResponse(body, status_code=500)

    app.add_middleware(
        _Edge,
        max_bytes=limits.max_body_bytes,
        metrics=app.state.metrics,
        max_in_flight=max_in_flight,
    )
    return app


class _Edge:
    """The outermost layer: load shedding, body limit, metrics and the access log, as plain
    ASGI.

    The whole body is read first (chunked ones too), so an over-long body gets
    the same 413 whether or not it declared its length. Plain ASGI rather than
    ``@app.middleware("http")``: that wrapper costs ~0.4 ms of CPU per request.
    Past ``max_in_flight`` requests at once, more get a 503 with Retry-After at
    once: a gateway that queued them would relay their signatures too late.
    """

    def __init__(
        self, app: Any, max_bytes: int, metrics: Metrics, max_in_flight: int | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        shed = (
            self.max_in_flight is not None
            and self.in_flight >= self.max_in_flight
            and scope["path"] not in _NEVER_SHED
        )
        self.in_flight += 1
        try:
            if shed:
                await self._overloaded(scope, receive, send_and_note)
            else:
                await self._limited(scope, receive, send_and_note)
        finally:
            self.in_flight -= 1
            elapsed = time.perf_counter() - started
            route = "/" + scope["path"].split("/")[1]
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                    },
                )

    async def _limited(self, scope: Any, receive: Any, send: Any) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        error = PayloadTooLargeError(f"request body is over the {self.max_bytes}-byte limit")
        await JSONResponse(_error_body(scope["path"], error), status_code=error.status)(
            scope, receive, send
        )

    async def _overloaded(self, scope: Any, receive: Any, send: Any) -> None:
        error = OverloadedError(
            f"this server is handling {self.max_in_flight} requests at once, its limit: "
            "retry in a second"
        )
        response = JSONResponse(
            _error_body(scope["path"], error),
            status_code=error.status,
            headers={"Retry-After": str(math.ceil(error.retry_after_s))},
        )
        await response(scope, receive, send)


_NEVER_SHED = frozenset({"/health", "/metrics"})  # a busy server still says how it is


def _replay(messages: list[Any], receive: Any) -> Any:
    pending = list(messages)

    async def replayed() -> Any:
        return pending.pop(0) if pending else await receive()

    return replayed


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: easy to grep, easy to ship."""

    _STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per outgoing request is noise


class Server(uvicorn.Server):
    """uvicorn that also stops cleanly on SIGHUP (a closed terminal) as on SIGINT and SIGTERM.

    uvicorn re-raises the signal that stopped it once it has shut down, so the
    process still ends the way that signal ends it.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = signal.signal(signal.SIGHUP, self.handle_exit)
            try:
                yield
            finally:
                signal.signal(signal.SIGHUP, previous)


def serve_app(app: Any, sock: socket.socket, **options: Any) -> None:
    """Serve ``app`` on ``sock``, already listening (:func:`engram.process.listen`), until a
    stop signal; in-flight requests finish and the app's lifespan closes what it opened."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, **options)
    Server(config).run(sockets=[sock])
