"""Shared fixtures: real SQLite stores in temporary directories, a tiny embedder for plumbing."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from engram.localnet import Localnet
from engram.store import Store

DIM = 384


def pytest_configure(config: pytest.Config) -> None:
    # Every test talks from one loopback address, far beyond one client's budget; the rate
    # limits have their own tests (tests/integration/test_security.py) with explicit settings.
    os.environ["ENGRAM_RATE_LIMITS"] = "0"


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = exitstatus


def pytest_unconfigure(config: pytest.Config) -> None:
    """End the run even when a test left a thread blocked.

    The interpreter waits for every non-daemon thread at exit, so one stuck
    thread turns a reported failure into a run that never ends.
    """
    deadline = time.monotonic() + 10
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for t in stuck:
        t.join(max(0.0, deadline - time.monotonic()))
    names = [t.name for t in stuck if t.is_alive()]
    if names:
        print(f"\nthreads still blocked after the run: {', '.join(names)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 0) or pytest.ExitCode.TESTS_FAILED)


@pytest.fixture(autouse=True)
def _engram_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the developer's ~/.engram; share one model cache across the session."""
    home = tmp_path_factory.getbasetemp() / "engram-home"
    monkeypatch.setenv("ENGRAM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class HashEmbedder:
    """Deterministic stand-in for plumbing tests that never look at meaning."""

    model_id = "test/hash-embedder"
    dim = DIM

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            rows.append(unit_vectors(1, seed=seed)[0])
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), DIM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ThreadedServer:
    """A real uvicorn server on 127.0.0.1 in a thread of the test process."""

    name: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), f"{self.name} did not stop"


def serve_in_thread(
    app: Any, port: int, name: str, ready_path: str | None = "/health"
) -> ThreadedServer:
    """Start ``app`` and wait until it listens and (``ready_path``) answers 200."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, ws="none"
        )
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    handle = ThreadedServer(name, port, server, thread)
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.01)
    if ready_path is not None:
        with httpx.Client(timeout=5) as http:
            while http.get(handle.url + ready_path).status_code != 200:
                assert time.monotonic() < deadline, f"{name} never said ready"
                time.sleep(0.02)
    return handle


def localnet_on_free_ports(home: Path, miners: int) -> Localnet:
    """A localnet plan whose miners, validator and gateway listen on free loopback ports."""
    return Localnet(
        home=home,
        miners=miners,
        miner_ports=[free_port() for _ in range(miners)],
        gateway_port=free_port(),
        validator_port=free_port(),
    )
