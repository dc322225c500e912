"""What every Engram HTTP server shares: errors, limits, metrics and logs.

The miner and the gateway build their FastAPI apps with :func:`create_app` and
add their own routes. Every :class:`~engram.errors.EngramError` becomes
``{"error": message, "code": code}`` with its status here and nowhere else;
anything unexpected becomes a logged 500 that leaks nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

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
from starlette.exceptions import HTTPException as StarletteHTTPException

from engram.config import Limits
from engram.errors import EngramError, InvalidRequestError, PayloadTooLargeError

log = logging.getLogger("engram.server")

# Protocol fields a failed response still carries, so old clients find them.
_ERROR_DEFAULTS: dict[str, dict[str, Any]] = {
    "/IngestSynapse": {"cid": None},
    "/QuerySynapse": {"results": [], "latency_ms": 0.0},
    "/BatchIngestSynapse": {"cids": [], "errors": []},
}


def error_response(request: Request, exc: EngramError) -> JSONResponse:
    body = {**_ERROR_DEFAULTS.get(request.url.path, {}), **exc.to_wire()}
    return JSONResponse(body, status_code=exc.status)


def _describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:5]:
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


def create_app(title: str, version: str, limits: Limits, **kwargs: Any) -> FastAPI:
    """A FastAPI app with Engram's error mapping, body limit, metrics and access log."""
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
        error = EngramError(str(exc.detail))
        body = {
            "error": str(exc.detail),
            "code": "not_found" if exc.status_code == 404 else error.code,
        }
        if exc.status_code == 405:
            body["code"] = "method_not_allowed"
        return JSONResponse(
            body, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {"error": "internal error; see the server log", "code": EngramError.code}
        return JSONResponse(body, status_code=500)

    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)

    @app.middleware("http")
    async def _limits_and_metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        route = "/" + request.url.path.split("/")[1]
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit():
            response: Response = error_response(
                request, InvalidRequestError("invalid Content-Length")
            )
        elif int(declared) > limits.max_body_bytes:
            response = error_response(request, _too_large(limits))
        else:
            response = await call_next(request)
        elapsed = time.perf_counter() - started
        metrics: Metrics = app.state.metrics
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(elapsed)
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.url.path,
                "status": response.status_code,
                "ms": round(elapsed * 1000, 3),
            },
        )
        return response

    return app


def _too_large(limits: Limits) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body is over the {limits.max_body_bytes}-byte limit")


class _BodyLimit:
    """Stops reading a body (chunked ones too) once it passes the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise PayloadTooLargeError(f"request body is over the {self.max_bytes}-byte limit")
            return message

        await self.app(scope, limited_receive, send)


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
