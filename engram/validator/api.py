"""The validator's small status API: its scores and replica health, for gateways and people."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from engram._version import __version__
from engram.config import Limits
from engram.server.app import create_app
from engram.validator.loop import Validator


def create_validator_app(validator: Validator) -> FastAPI:
    app = create_app("Engram validator", __version__, Limits())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return validator.health()

    @app.get("/api/scores")
    async def scores() -> dict[str, Any]:
        return validator.summary()

    return app


class StatusServer(uvicorn.Server):
    """uvicorn without its own signal handling: the validator's loop owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def status_server(validator: Validator, host: str, port: int) -> StatusServer:
    config = uvicorn.Config(
        create_validator_app(validator), host=host, port=port, log_config=None, access_log=False
    )
    return StatusServer(config)
