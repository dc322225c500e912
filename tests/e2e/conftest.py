"""Real miner processes on loopback ports: started, polled on /health, killed with real signals.

Every miner started here is torn down (SIGTERM, wait, SIGKILL) whatever the
test does, and its log is attached to the report of any test that fails while
it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

READY_TIMEOUT_S = 90.0  # the miner loads the real embedding model (and may export it to ONNX)
STOP_TIMEOUT_S = 20.0
_LOG_TAIL_CHARS = 60_000

_MINERS: list[MinerProcess] = []  # every miner of this session, newest last
_STARTED_BEFORE = pytest.StashKey[int]()


def miner_env(model_home: Path) -> dict[str, str]:
    """The environment of a child process: no stray ``ENGRAM_*`` settings, offline model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
    env.update(
        ENGRAM_HOME=str(model_home),  # never the developer's ~/.engram; data goes to --home
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class MinerProcess:
    """One ``python -m engram miner`` process and what a test needs to talk to it."""

    home: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    signals_sent: list[str] = field(default_factory=list)
    not_ready_answers: list[tuple[int, str]] = field(default_factory=list)  # /health before 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll GET /health until 200; fail with the log if the process dies or never gets there."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"miner exited with {self.proc.returncode} before it was ready:\n"
                        + self.log()[-_LOG_TAIL_CHARS:]
                    )
                try:
                    r = client.get(self.url + "/health")
                    if r.status_code == 200:
                        return
                    last = f"{r.status_code} {r.text}"
                    self.not_ready_answers.append((r.status_code, r.text))
                except httpx.TransportError as exc:
                    last = repr(exc)
                time.sleep(0.1)
        raise AssertionError(
            f"miner not ready after {timeout_s}s (last /health: {last}):\n"
            + self.log()[-_LOG_TAIL_CHARS:]
        )

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.proc.poll() is None:
            self.signals_sent.append("SIGTERM")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signals_sent.append("SIGKILL")
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_miner(
    home: Path,
    log_path: Path,
    model_home: Path,
    *,
    wait: bool = True,
    env: Mapping[str, str] | None = None,
) -> MinerProcess:
    """Start a miner on a free port over ``home``; by default wait until /health says ready.
    ``env`` adds settings (``ENGRAM_RATE_LIMITS=false`` for a suite that hammers it)."""
    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engram",
                "miner",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--home",
                str(home),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**miner_env(model_home), **(env or {})},
        )
    miner = MinerProcess(home, port, log_path, proc)
    _MINERS.append(miner)
    if wait:
        try:
            miner.wait_ready()
        except BaseException:
            miner.terminate()
            raise
    return miner


LOCALNET_READY = "Ctrl-C stops everything"  # the last line `engram localnet` prints when ready


def localnet_command(home: Path, ports: list[int]) -> list[str]:
    """``engram localnet`` with one miner over ``home``; ``ports``: miner, gateway, validator."""
    return [
        sys.executable,
        "-m",
        "engram",
        "localnet",
        "--miners",
        "1",
        "--home",
        str(home),
        "--base-port",
        str(ports[0]),
        "--gateway-port",
        str(ports[1]),
        "--validator-port",
        str(ports[2]),
    ]


def start_localnet(home: Path, ports: list[int], model_home: Path) -> subprocess.Popen[str]:
    """Start ``engram localnet`` (one miner) and return once it says it is ready."""
    proc = subprocess.Popen(
        localnet_command(home, ports),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=miner_env(model_home),
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if LOCALNET_READY in line:
            return proc
    proc.kill()
    raise AssertionError("localnet never got ready:\n" + "".join(lines))


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's ENGRAM_HOME (as tests/conftest.py sets it) for child processes."""
    path = tmp_path_factory.getbasetemp() / "engram-home"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def miner(tmp_path_factory: pytest.TempPathFactory, model_home: Path) -> Iterator[MinerProcess]:
    """One real miner shared by a module's tests (tests use their own namespaces)."""
    root = tmp_path_factory.mktemp("miner")
    m = start_miner(root / "home", root / "miner.log", model_home)
    try:
        yield m
    finally:
        m.terminate()


@pytest.fixture
def spawn_miner(tmp_path: Path, model_home: Path) -> Iterator[Callable[..., MinerProcess]]:
    """Start miners of this test (``spawn_miner(home)``); all are torn down at the end."""
    started: list[MinerProcess] = []

    def spawn(home: Path | None = None, *, wait: bool = True) -> MinerProcess:
        n = len(started)
        m = start_miner(
            home or tmp_path / "home", tmp_path / f"miner-{n}.log", model_home, wait=wait
        )
        started.append(m)
        return m

    try:
        yield spawn
    finally:
        for m in started:
            m.terminate()


@pytest.fixture(autouse=True)
def _note_miners(request: pytest.FixtureRequest) -> None:
    request.node.stash[_STARTED_BEFORE] = len(_MINERS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log of every miner the failed test could have talked to."""
    report = yield
    if report.failed:
        first_new = item.stash.get(_STARTED_BEFORE, len(_MINERS))
        for i, m in enumerate(_MINERS):
            if i >= first_new or m.proc.poll() is None:
                state = "running" if m.proc.poll() is None else f"exit {m.proc.returncode}"
                report.sections.append(
                    (f"miner log {m.url} ({state}) {m.log_path}", m.log()[-_LOG_TAIL_CHARS:])
                )
    return report
