"""A whole subnet on one machine: LocalChain, wallets, N miners, a validator and a gateway.

Everything lives under one folder (chain file, wallets, each miner's store,
the validator's state, logs), so a second start resumes where the first
stopped. Cadences are seconds, not minutes, so scores and weights move while
you watch.

One localnet runs per folder (a pid lock, ``localnet.pid``), and its ports are
checked before anything is written to the chain. Each child watches its
parent and stops itself if the localnet dies without stopping it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from engram.chain.keys import ensure_wallet, identity
from engram.chain.local import LocalChain
from engram.config import PORT_RANGE, ChainParams
from engram.errors import EngramError, InvalidRequestError, UnavailableError
from engram.process import PidLock, check_free

WALLET = "localnet"
VALIDATOR_STAKE = 10_000.0
# Half-second blocks and an epoch every 10 s; whether a miner serves is probed, not timed out.
FAST_CHAIN = ChainParams(block_time_s=0.5, tempo=20, min_validator_stake=1_000.0)
FAST_MINER_SYNC_S = 1.0
FAST_VALIDATOR = {
    "ENGRAM_SCORE_INTERVAL_S": "4",
    "ENGRAM_CHALLENGE_INTERVAL_S": "4",
    "ENGRAM_WEIGHTS_INTERVAL_S": "6",
    "ENGRAM_REPAIR_INTERVAL_S": "5",
    "ENGRAM_CORPUS_SIZE": "128",
}
READY_TIMEOUT_S = 180.0  # the first start may export the embedding model to ONNX
STOP_TIMEOUT_S = 15.0
PID_FILE = "localnet.pid"


@dataclass
class Child:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    args: list[str]
    env: dict[str, str]

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Until it exits; SIGKILL if it has not within ``timeout_s``."""
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Localnet:
    """The plan of a local subnet, and its running processes once started."""

    home: Path
    miners: int = 3
    miner_ports: list[int] = field(default_factory=list)
    gateway_port: int = 8090
    validator_port: int = 8089
    netuid: int = 1
    host: str = "127.0.0.1"
    children: list[Child] = field(default_factory=list)
    lock: PidLock = field(init=False)

    def __post_init__(self) -> None:
        if self.miners < 1:
            raise ValueError("a localnet needs at least one miner")
        if not self.miner_ports:
            self.miner_ports = [8091 + i for i in range(self.miners)]
        if len(self.miner_ports) != self.miners:
            raise ValueError(f"{self.miners} miners need {self.miners} ports")
        low, high = PORT_RANGE
        bad = [p for p in self.ports.values() if not low <= p <= high]
        if bad:
            raise InvalidRequestError(
                f"port {bad[0]} is out of range: every port of a localnet must be {low} to {high}"
            )
        if len(set(self.ports.values())) < len(self.ports):
            raise InvalidRequestError(
                "the miners, the validator and the gateway need different ports; got "
                + ", ".join(f"{name} {port}" for name, port in self.ports.items())
            )
        self.lock = PidLock(self.home / PID_FILE, "localnet")

    @property
    def ports(self) -> dict[str, int]:
        """Every port the localnet listens on, by the child that listens."""
        return {
            **{f"miner-{i}": port for i, port in enumerate(self.miner_ports)},
            "validator": self.validator_port,
            "gateway": self.gateway_port,
        }

    @property
    def chain_url(self) -> str:
        return f"local:{self.home / 'chain.sqlite'}"

    @property
    def wallet_path(self) -> Path:
        return self.home / "wallets"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def validator_url(self) -> str:
        return f"http://{self.host}:{self.validator_port}"

    def miner_wallet(self, i: int) -> str:
        return f"{WALLET}/miner-{i}"

    @property
    def gateway_wallet(self) -> str:
        return f"{WALLET}/gateway"

    @property
    def gateway_hotkey(self) -> str:
        """The gateway's hotkey (its wallet made on first use), which the miners budget as a
        gateway's."""
        return identity(ensure_wallet(self.gateway_wallet, self.wallet_path)).hotkey

    def prepare(self) -> dict[str, str]:
        """Create (or reopen) the chain and wallets and register every neuron; hotkeys by name.

        First it takes the home's lock and checks every port is free, so a second
        localnet on this home, or a port in use, fails before the chain is touched.
        """
        self.lock.acquire()
        try:
            for name, port in self.ports.items():
                try:
                    check_free(self.host, port)
                except EngramError as exc:
                    raise type(exc)(f"{name}: {exc.message}") from exc
            return self._register()
        except BaseException:
            self.lock.release()
            raise

    def _register(self) -> dict[str, str]:
        chain = LocalChain.create(
            self.home / "chain.sqlite", self.netuid, FAST_CHAIN, exist_ok=True
        )
        try:
            hotkeys: dict[str, str] = {}
            for spec in [f"{WALLET}/validator"] + [
                self.miner_wallet(i) for i in range(self.miners)
            ]:
                wallet = ensure_wallet(spec, self.wallet_path)
                ident = identity(wallet)
                uid = chain.register(self.netuid, wallet)
                if spec.endswith("/validator"):
                    stake = chain.metagraph(self.netuid).by_uid(uid)
                    if stake is not None and stake.stake < VALIDATOR_STAKE:
                        chain.add_stake(self.netuid, ident.hotkey, VALIDATOR_STAKE - stake.stake)
                hotkeys[spec] = ident.hotkey
            # The gateway is no neuron: its hotkey signs its calls and acts for API keys.
            hotkeys[self.gateway_wallet] = self.gateway_hotkey
            return hotkeys
        finally:
            chain.close()

    def _spawn(self, name: str, url: str, args: list[str], env: dict[str, str]) -> Child:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "engram", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1",
                    "ENGRAM_PARENT_PID": str(os.getpid()),  # it stops itself if we die
                    **env,
                },
                start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
            )
        child = Child(name, url, process, log, args, env)
        self.children.append(child)
        return child

    def restart(self, name: str) -> Child:
        """Stop one child and start it again with the same arguments and data."""
        old = next(c for c in self.children if c.name == name)
        old.terminate()
        old.wait()
        self.children.remove(old)
        return self._spawn(old.name, old.url, old.args, old.env)

    def start(self) -> None:
        """Start the miners, the validator and the gateway as child processes."""
        common = ["--chain", self.chain_url, "--netuid", str(self.netuid)]
        wallets = ["--wallet-path", str(self.wallet_path)]
        for i, port in enumerate(self.miner_ports):
            self._spawn(
                f"miner-{i}",
                f"http://{self.host}:{port}",
                [
                    "miner",
                    *common,
                    *wallets,
                    "--wallet",
                    self.miner_wallet(i),
                    "--host",
                    self.host,
                    "--port",
                    str(port),
                    "--external-ip",
                    self.host,
                    "--home",
                    str(self.home / f"miner-{i}"),
                    "--sync-interval-s",
                    str(FAST_MINER_SYNC_S),
                ],
                {"ENGRAM_GATEWAY_HOTKEYS": self.gateway_hotkey},
            )
        self._spawn(
            "validator",
            self.validator_url,
            [
                "validator",
                *common,
                *wallets,
                "--wallet",
                f"{WALLET}/validator",
                "--home",
                str(self.home / "validator"),
                "--host",
                self.host,
                "--port",
                str(self.validator_port),
            ],
            FAST_VALIDATOR,
        )
        self._spawn(
            "gateway",
            self.gateway_url,
            [
                "gateway",
                *common,
                *wallets,
                "--wallet",
                self.gateway_wallet,
                "--host",
                self.host,
                "--port",
                str(self.gateway_port),
                "--validator-url",
                self.validator_url,
            ],
            {"ENGRAM_METAGRAPH_TTL_S": "1"},
        )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every child answers /health; a child that exits is an error naming its log."""
        deadline = time.monotonic() + timeout_s
        pending = list(self.children)
        with httpx.Client(timeout=2.0) as http:
            while pending:
                for child in list(pending):
                    if child.process.poll() is not None:
                        raise UnavailableError(
                            f"{child.name} exited with status {child.process.returncode}; "
                            f"see {child.log}"
                        )
                    try:
                        if http.get(child.url + "/health").status_code == 200:
                            pending.remove(child)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    names = ", ".join(c.name for c in pending)
                    raise UnavailableError(f"{names} not ready after {timeout_s:.0f}s")
                time.sleep(0.25)

    @contextmanager
    def running(self) -> Iterator[Localnet]:
        """Prepared, started and ready inside the block; every child stopped after it."""
        self.prepare()
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every child (gateway first, miners last), SIGKILL what is left, free the home."""
        for child in reversed(self.children):
            child.terminate()
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            child.wait(max(0.1, deadline - time.monotonic()))
        self.children.clear()
        self.lock.release()
