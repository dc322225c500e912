"""A cheating miner that keeps only embedding hashes is caught: weight 0, below every honest miner.

Three honest miners run in this process as real uvicorn servers (with the
tiny hash embedder: the validator only sends vectors); the cheater
(``tests/e2e/cheater.py``) is a real subprocess that registers itself on the
same LocalChain file and keeps its axon announced. A real validator writes
its corpus to all four, runs a few challenge and scoring rounds, and sets
weights on the chain.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from engram.chain.keys import identity, new_wallet
from engram.chain.local import LocalChain
from engram.config import ChainParams, MinerConfig, ValidatorConfig
from engram.miner.app import create_miner_app
from engram.validator import Validator
from tests.conftest import HashEmbedder, free_port
from tests.e2e.conftest import MinerProcess, miner_env

pytestmark = pytest.mark.slow

CHEATER = Path(__file__).with_name("cheater.py")
REPO = Path(__file__).parents[2]
NETUID = 1
MIN_STAKE = 1_000.0
ROUNDS = 3
HONEST = 3
HMAC_CHALLENGES, AUDITS = 5, 2


@dataclass
class HonestMiner:
    hotkey: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def _start_honest(home: Path, hotkey: str) -> HonestMiner:
    """A real miner app on a uvicorn server in a thread; returns once /health is 200."""
    port = free_port()
    app = create_miner_app(
        MinerConfig(home=home, port=port, reader_threads=4), embedder=HashEmbedder()
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, ws="none"
        )
    )
    thread = threading.Thread(target=server.run, name=f"miner-{hotkey[:8]}", daemon=True)
    thread.start()
    miner = HonestMiner(hotkey, port, server, thread)
    deadline = time.monotonic() + 15
    with httpx.Client(timeout=5) as http:
        while True:
            assert thread.is_alive() and time.monotonic() < deadline, "honest miner never ready"
            if server.started and http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return miner
            time.sleep(0.02)


def _wait_serving(chain: LocalChain, hotkey: str, cheater: MinerProcess) -> None:
    deadline = time.monotonic() + 15
    while not any(n.hotkey == hotkey for n in chain.metagraph(NETUID).serving()):
        assert cheater.proc.poll() is None, "the cheater exited:\n" + cheater.log()
        assert time.monotonic() < deadline, (
            "the cheater never announced its axon:\n" + cheater.log()
        )
        time.sleep(0.1)


def test_a_hash_only_cheater_gets_zero_weight_and_every_honest_miner_more(tmp_path: Path) -> None:
    started_at = time.monotonic()
    chain = LocalChain.create(
        tmp_path / "chain.sqlite",
        NETUID,
        ChainParams(
            block_time_s=0.2, tempo=10, axon_ttl_blocks=1_000, min_validator_stake=MIN_STAKE
        ),
    )
    wallets = tmp_path / "wallets"
    stops: list[Callable[[], Any]] = [chain.close]
    cheater: MinerProcess | None = None
    try:
        keys = {
            name: new_wallet(f"{name}/default", wallets)[0]
            for name in ("honest0", "honest1", "honest2", "cheater", "validator")
        }
        ids = {name: identity(wallet) for name, wallet in keys.items()}
        honest: list[HonestMiner] = []
        for i in range(HONEST):
            wallet, me = keys[f"honest{i}"], ids[f"honest{i}"]
            chain.register(NETUID, wallet)
            miner = _start_honest(tmp_path / f"honest{i}", me.hotkey)
            stops.insert(0, miner.stop)
            chain.serve_axon(NETUID, wallet, "127.0.0.1", miner.port)
            honest.append(miner)

        port = free_port()
        log_path = tmp_path / "cheater.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(CHEATER),
                    "--port",
                    str(port),
                    "--chain-path",
                    str(chain.path),
                    "--netuid",
                    str(NETUID),
                    "--wallet",
                    "cheater/default",
                    "--wallet-path",
                    str(wallets),
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**miner_env(tmp_path / "engram-home"), "PYTHONPATH": str(REPO)},
            )
        cheater = MinerProcess(tmp_path / "cheater", port, log_path, proc)
        cheater.wait_ready(timeout_s=30)
        _wait_serving(chain, ids["cheater"].hotkey, cheater)

        chain.register(NETUID, keys["validator"], stake=MIN_STAKE)
        graph = chain.metagraph(NETUID)
        uid = {name: graph.by_hotkey(i.hotkey).uid for name, i in ids.items()}  # type: ignore[union-attr]
        honest_uids = [uid[f"honest{i}"] for i in range(HONEST)]
        cheater_uid = uid["cheater"]
        config = ValidatorConfig(
            chain=chain.url,
            netuid=NETUID,
            wallet="validator/default",
            wallet_path=wallets,
            home=tmp_path / "validator",
            corpus_size=64,
            queries_per_miner=4,
            challenges_per_miner=HMAC_CHALLENGES,
            audits_per_miner=AUDITS,
            request_timeout_s=2,
            challenge_deadline_s=2,
        )

        async def drive() -> tuple[list[dict[int, tuple[int, int]]], dict[str, Any]]:
            async with Validator(config) as v:
                # The corpus goes out first: the cheater acknowledges its share like anyone.
                assert await v.write_corpus() == 64
                proofs = []
                for _ in range(ROUNDS):
                    proofs.append(await v.challenge_round())
                    await v.score_round()
                await v.set_weights()
                return proofs, v.summary()

        proofs, summary = asyncio.run(drive())
        print("validator summary:", json.dumps(summary["miners"], indent=1))

        # Every round, the cheater fails every HMAC challenge and every audit ...
        for by_uid in proofs:
            assert by_uid[cheater_uid] == (0, HMAC_CHALLENGES + AUDITS)
            for u in honest_uids:
                assert by_uid[u] == (HMAC_CHALLENGES + AUDITS,) * 2
        # ... and its random answers miss most of the true neighbours.
        miners = summary["miners"]
        bad = miners[str(cheater_uid)]
        assert bad["proof_rate"] < 0.5
        assert bad["ema"] == 0.0
        for u in honest_uids:
            good = miners[str(u)]
            assert good["proof_rate"] == 1.0
            assert good["recall"] >= 0.9
            assert bad["recall"] < 0.5 and bad["recall"] <= good["recall"] - 0.4

        # The weights on chain: 0 for the cheater, more for every honest miner.
        on_chain = chain.metagraph(NETUID).weights[uid["validator"]]
        print("weights on chain:", on_chain)
        assert on_chain[cheater_uid] == 0.0
        for u in honest_uids:
            assert on_chain[u] > on_chain[cheater_uid]
        assert sum(on_chain.values()) == pytest.approx(1.0)
        assert time.monotonic() - started_at < 60
    finally:
        if cheater is not None:
            code = cheater.terminate()
            print(f"cheater exited with {code}; its log:\n{cheater.log()}")
        for stop in stops:
            stop()
