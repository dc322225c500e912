"""The validator: private ground truth, scoring, storage proofs, replica repair and weights.

``corpus`` (ground truth) · ``scoring`` (the §7 formula, pure) · ``challenges``
(HMAC challenges and audits) · ``repair`` (replica health) · ``state`` (the
SQLite file that survives restarts) · ``loop`` (:class:`Validator`, the rounds
and their timers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

from engram.config import ValidatorConfig
from engram.process import listen
from engram.validator.api import status_server
from engram.validator.loop import Validator

__all__ = ["Validator", "serve_validator"]

log = logging.getLogger("engram.validator")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _serve(config: ValidatorConfig, sock: socket.socket) -> None:
    validator = Validator(config)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        server = status_server(validator, config.host, config.port)
        serving = asyncio.create_task(server.serve([sock]), name="engram-validator-api")
        task = asyncio.create_task(validator.run(), name="engram-validator")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        task.cancel()
        server.should_exit = True
        await serving
        with contextlib.suppress(asyncio.CancelledError):
            await task  # re-raises a crash of the loop itself; a cancel is the normal stop
        log.info("validator stopping")
    finally:
        for sig in STOP_SIGNALS:
            asyncio.get_running_loop().remove_signal_handler(sig)
        await validator.close()
        log.info("validator stopped; state closed")


def serve_validator(config: ValidatorConfig) -> None:
    """Run the validator until SIGINT/SIGTERM/SIGHUP, then finish cleanly and close its state.

    The status API's port is taken first, so a taken port fails before anything starts.
    """
    from engram.server.app import configure_logging  # the server extra: only when serving

    configure_logging(config.log_level)
    with listen(config.host, config.port) as sock:
        asyncio.run(_serve(config, sock))
