"""How Engram's processes start and stop, with real processes, real signals and real ports.

``engram localnet`` stops every child on SIGTERM, SIGHUP and Ctrl-C; its
children stop themselves if it is SIGKILLed; one runs per home; and a port in
use or out of range is refused, with exit code 4 or 2, before anything is
written to the chain. The same holds for a lone ``engram miner``. Only the
public Bittensor chain is replaced, by a LocalChain file.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engram.chain.keys import ensure_wallet, identity
from engram.chain.local import LocalChain
from engram.process import check_free
from tests.conftest import free_port
from tests.e2e.conftest import localnet_command, miner_env, start_localnet

pytestmark = pytest.mark.slow

EXIT_USAGE = 2
EXIT_BUSY = 4  # documented in engram/cli/__init__.py
ORPHAN_EXIT_S = 10.0  # children poll their parent every 0.5 s, then stop cleanly


def _ports() -> list[int]:
    return [free_port(), free_port(), free_port()]  # miner, gateway, validator


def _children(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    kids = psutil.Process(proc.pid).children(recursive=True)
    assert len(kids) == 3, kids  # one miner, the validator and the gateway
    return kids


def _gone_within(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The processes still alive after ``timeout_s`` (zombies count as gone)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _assert_ports_free(ports: list[int]) -> None:
    for port in ports:
        check_free("127.0.0.1", port)  # raises BusyError while anything listens there


def _run(command: list[str], model_home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=miner_env(model_home)
    )


@pytest.fixture
def kill_on_failure() -> Iterator[list[psutil.Process]]:
    """Processes a test started; whatever it left running is killed at the end."""
    started: list[psutil.Process] = []
    yield started
    for p in started:
        if p.is_running():
            p.kill()


def test_localnet_sigterm_stops_every_child_and_a_second_instance_is_refused(
    tmp_path: Path, model_home: Path, kill_on_failure: list[psutil.Process]
) -> None:
    home, ports = tmp_path / "localnet", _ports()
    proc = start_localnet(home, ports, model_home)
    kids = _children(proc)
    kill_on_failure.extend([psutil.Process(proc.pid), *kids])

    second = _run(localnet_command(home, _ports()), model_home)
    assert second.returncode == EXIT_BUSY, second.stdout + second.stderr
    assert f"already running (pid {proc.pid})" in second.stderr
    assert "Ctrl-C stops everything" not in second.stdout  # no ready table from the first one's
    assert all(k.is_running() for k in kids)  # the refused start touched nothing of the first

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopping localnet" in out
    assert _gone_within(kids, 1.0) == []  # stopped before the parent exited, not after
    _assert_ports_free(ports)


def test_localnet_sigkill_leaves_no_orphan_then_sighup_stops_a_restart(
    tmp_path: Path, model_home: Path, kill_on_failure: list[psutil.Process]
) -> None:
    home, ports = tmp_path / "localnet", _ports()
    proc = start_localnet(home, ports, model_home)
    kids = _children(proc)
    kill_on_failure.extend(kids)

    proc.kill()
    proc.communicate(timeout=10)
    started = time.monotonic()
    assert _gone_within(kids, ORPHAN_EXIT_S) == [], "children outlived a SIGKILLed localnet"
    orphaned_s = time.monotonic() - started
    _assert_ports_free(ports)
    miner_log = (home / "logs" / "miner-0.log").read_text()
    assert "miner stopped; store closed" in miner_log  # a clean stop, not a kill
    print(f"children of a SIGKILLed localnet exited within {orphaned_s:.1f}s")

    # The pid file the killed localnet left behind blocks nobody: the OS lock went with it.
    assert (home / "localnet.pid").read_text().strip() == str(proc.pid)
    proc = start_localnet(home, ports, model_home)
    kids = _children(proc)
    kill_on_failure.extend([psutil.Process(proc.pid), *kids])
    proc.send_signal(signal.SIGHUP)  # the terminal was closed
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGHUP, out
    assert _gone_within(kids, 1.0) == []
    _assert_ports_free(ports)
    assert (home / "localnet.pid").read_text() == ""


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--base-port", "99999"), ("--gateway-port", "-5"), ("--validator-port", "0")],
)
def test_localnet_port_out_of_range_is_a_usage_error(
    tmp_path: Path, model_home: Path, flag: str, value: str
) -> None:
    home = tmp_path / "localnet"
    command = localnet_command(home, _ports())
    command[command.index(flag) + 1] = value
    done = _run(command, model_home)
    assert done.returncode == EXIT_USAGE, done.stdout + done.stderr
    assert flag in done.stderr and "Traceback" not in done.stderr
    assert not home.exists()  # no chain, no wallets, nothing


def test_localnet_port_in_use_is_refused_before_the_chain(tmp_path: Path, model_home: Path) -> None:
    home, ports = tmp_path / "localnet", _ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        done = _run(localnet_command(home, ports), model_home)
    assert done.returncode == EXIT_BUSY, done.stdout + done.stderr
    assert f"gateway: port {ports[1]} on 127.0.0.1 is already in use" in done.stderr
    assert "Traceback" not in done.stderr and "chain " not in done.stderr
    assert not (home / "chain.sqlite").exists()  # nothing registered, nothing announced
    assert (home / "localnet.pid").read_text() == ""  # and the home is free again


@pytest.fixture
def registered_miner(tmp_path: Path) -> tuple[str, str, Path]:
    """A LocalChain with one registered miner hotkey: (chain URL, wallet spec, wallet folder)."""
    wallets = tmp_path / "wallets"
    chain = LocalChain.create(tmp_path / "chain.sqlite", 1)
    try:
        chain.register(1, ensure_wallet("test/miner", wallets))
    finally:
        chain.close()
    return f"local:{tmp_path / 'chain.sqlite'}", "test/miner", wallets


def _axon(chain_url: str, wallets: Path) -> tuple[str | None, int | None, int | None]:
    hotkey = identity(ensure_wallet("test/miner", wallets)).hotkey
    chain = LocalChain(chain_url.removeprefix("local:"))
    try:
        neuron = chain.metagraph(1).by_hotkey(hotkey)
    finally:
        chain.close()
    assert neuron is not None
    return neuron.ip, neuron.port, neuron.axon_block


@pytest.mark.parametrize("port", ["taken", "99999", "-5"])
def test_miner_that_cannot_listen_never_announces(
    tmp_path: Path, model_home: Path, registered_miner: tuple[str, str, Path], port: str
) -> None:
    chain_url, wallet, wallets = registered_miner
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        number = str(holder.getsockname()[1]) if port == "taken" else port
        done = _run(
            [
                sys.executable,
                "-m",
                "engram",
                "miner",
                "--chain",
                chain_url,
                "--wallet",
                wallet,
                "--wallet-path",
                str(wallets),
                "--host",
                "127.0.0.1",
                "--port",
                number,
                "--home",
                str(tmp_path / "miner"),
            ],
            model_home,
        )
    if port == "taken":
        assert done.returncode == EXIT_BUSY, done.stderr
        assert f"port {number} on 127.0.0.1 is already in use" in done.stderr
    else:
        assert done.returncode == EXIT_USAGE, done.stderr
        assert f"port {port} is out of range: use 1 to 65535" in done.stderr
    assert "Traceback" not in done.stderr
    assert _axon(chain_url, wallets) == (None, None, None)  # never listed as serving
    assert not (tmp_path / "miner").exists()  # and no store was opened
