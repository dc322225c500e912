"""The validator against real miners: uvicorn servers on loopback ports, a real LocalChain file,
a real state database and real wallets.

Each test gets four fresh miners on a fresh chain, each announced once, as
miners are. The validator probes them (``GET /health``) and trusts an answer
for ``PROBE_INTERVAL_S``, so a stopped miner drops out of what it measures and
repairs within that, with no announcement involved. The miners embed with the
tiny hash embedder: the validator only sends raw vectors.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from bittensor.sp_core import Keypair
from fastapi import FastAPI, HTTPException

from engram._version import __version__
from engram.chain.base import Neuron
from engram.chain.keys import identity, new_wallet
from engram.chain.local import LocalChain
from engram.config import ChainParams, MinerConfig, NetworkConfig, ValidatorConfig
from engram.errors import ChainError
from engram.miner.app import create_miner_app
from engram.network.client import Network
from engram.network.routing import closest
from engram.records import IngestItem
from engram.security.signing import HotkeyAuth
from engram.validator import Validator
from engram.validator.state import MinerState, ValidatorState
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread, unit_vectors

T = TypeVar("T")
NETUID = 1
MIN_STAKE = 1_000.0
BLOCK_TIME_S = 0.2
PROBE_INTERVAL_S = 0.6  # within it the validator sees a miner stop answering /health
PROBE_TIMEOUT_S = 0.3
REQUEST_TIMEOUT_S = 1.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class MinerHandle:
    signer: Keypair
    home: Path
    http: ThreadedServer

    @property
    def hotkey(self) -> str:
        return self.signer.ss58_address

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def thread(self) -> threading.Thread:
        return self.http.thread

    def stop(self) -> None:
        self.http.stop()

    def cids(self, namespace: str, auth: httpx.Auth | None = None) -> set[str]:
        """What the miner holds in ``namespace``; a private one is listed by its owner only."""
        with httpx.Client(base_url=self.url, timeout=10, auth=auth) as http:
            body = http.get("/list", params={"namespace": namespace, "limit": 1000}).json()
        return {r["cid"] for r in body["records"]}


def _start_miner(home: Path, signer: Keypair) -> MinerHandle:
    port = free_port()
    app = create_miner_app(
        MinerConfig(home=home, port=port, reader_threads=4), embedder=HashEmbedder()
    )
    return MinerHandle(signer, home, serve_in_thread(app, port, f"miner-{signer.ss58_address}"))


@dataclass
class Cluster:
    root: Path
    chain: LocalChain
    miners: list[MinerHandle]
    validator_hotkey: str
    auth: httpx.Auth | None = None  # signs as the validator

    def config(self, **overrides: Any) -> ValidatorConfig:
        base = ValidatorConfig(
            chain=self.chain.url,
            netuid=NETUID,
            wallet="validator/default",
            wallet_path=self.root / "wallets",
            home=self.root / "validator",
            corpus_size=48,
            queries_per_miner=4,
            challenges_per_miner=5,
            audits_per_miner=2,
            request_timeout_s=REQUEST_TIMEOUT_S,
            challenge_deadline_s=REQUEST_TIMEOUT_S,
            probe_interval_s=PROBE_INTERVAL_S,
            probe_timeout_s=PROBE_TIMEOUT_S,
        )
        return replace(base, **overrides)

    def uid(self, miner: MinerHandle) -> int:
        neuron = self.chain.metagraph(NETUID).by_hotkey(miner.hotkey)
        assert neuron is not None
        return neuron.uid

    def serving(self) -> list[Neuron]:
        """The announced miners whose server still runs: what the validator routes over."""
        alive = {m.hotkey for m in self.miners if m.thread.is_alive()}
        return [n for n in self.chain.metagraph(NETUID).serving() if n.hotkey in alive]

    def kill(self, miner: MinerHandle) -> None:
        """Stop the server (its axon stays announced); once the validator's last answer from
        it is a probe interval old, the validator sees it gone."""
        miner.stop()
        time.sleep(PROBE_INTERVAL_S)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    params = ChainParams(block_time_s=BLOCK_TIME_S, min_validator_stake=MIN_STAKE)
    chain = LocalChain.create(tmp_path / "chain.sqlite", NETUID, params)
    wallet, _ = new_wallet("validator/default", tmp_path / "wallets")
    me = identity(wallet)
    chain.register(NETUID, wallet, stake=MIN_STAKE)
    miners = []
    for i in range(4):
        signer = Keypair.create_from_uri(f"//miner-{i}")
        chain.register(NETUID, signer, coldkey=f"miner-coldkey-{i}")
        miners.append(_start_miner(tmp_path / f"miner{i}", signer))
    for m in miners:  # once, as miners announce
        chain.serve_axon(NETUID, m.signer, "127.0.0.1", m.port)
    c = Cluster(tmp_path, chain, miners, me.hotkey)
    c.auth = HotkeyAuth(wallet)  # the validator's corpus namespace is private to its hotkey
    try:
        yield c
    finally:
        for m in miners:
            if m.thread.is_alive():
                m.stop()
        chain.close()


def _expected(cluster: Cluster, validator: Validator) -> dict[str, set[str]]:
    """hotkey → corpus CIDs routing gives it over the miners serving now."""
    serving = cluster.serving()
    out: dict[str, set[str]] = {n.hotkey: set() for n in serving}
    for cid in validator.corpus.cids:
        for n in closest(cid, serving, 3):
            out[n.hotkey].add(cid)
    return out


def test_validator_writes_the_corpus_to_exactly_its_routed_replicas(cluster: Cluster) -> None:
    async def body() -> None:
        async with Validator(cluster.config()) as v:
            assert v.namespace == "validator-" + cluster.validator_hotkey[:8]
            assert await v.write_corpus() == 48
            assert await v.write_corpus() == 0  # written once, not again
            expected = _expected(cluster, v)
            for m in cluster.miners:
                assert m.cids(v.namespace, cluster.auth) == expected[m.hotkey]
            assert v._state().unwritten() == set()

    run(body())


def test_honest_miners_score_full_recall_and_pass_every_challenge(cluster: Cluster) -> None:
    async def body() -> None:
        async with Validator(cluster.config()) as v:
            await v.write_corpus()
            proofs = await v.challenge_round()
            uids = {cluster.uid(m) for m in cluster.miners}
            assert set(proofs) == uids
            for passed, issued in proofs.values():
                assert issued == 7 and passed == issued  # 5 HMAC challenges + 2 audits
            scores = await v.score_round()
            assert set(scores) == uids
            for s in scores.values():
                assert s.recall >= 0.95
                assert 0 < s.latency_ms < 500
                assert s.proof_rate == 1.0
                assert s.score > 0.9
            states = v._state().miners()
            for uid, s in scores.items():
                assert states[uid].ema == pytest.approx(0.1 * s.score)
            summary = v.summary()
            assert set(summary["miners"]) == {str(u) for u in uids}
            assert summary["rounds"]["score"]["round"] == 1
            assert len(v._state().challenges(limit=1000)) == 28
            assert len(v._state().score_history()) == 4

    run(body())


def test_a_dead_or_hung_miner_is_not_measured_and_gets_no_weight(cluster: Cluster) -> None:
    black_hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # accepts, never answers
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(64)
    hung = Keypair.create_from_uri("//miner-hung")
    cluster.chain.register(NETUID, hung, coldkey="hung-coldkey")

    async def body() -> None:
        async with Validator(cluster.config()) as v:
            await v.write_corpus()
            await v.challenge_round()
            dead = cluster.miners[0]
            dead_uid = cluster.uid(dead)
            cluster.kill(dead)  # still announced: only its silence says it is gone
            cluster.chain.serve_axon(NETUID, hung, "127.0.0.1", black_hole.getsockname()[1])
            hung_uid = cluster.chain.metagraph(NETUID).by_hotkey(hung.ss58_address).uid  # type: ignore[union-attr]
            await v.repair_round()  # the dead miner's records onto the next closest

            started = time.monotonic()
            scores = await v.score_round()
            elapsed = time.monotonic() - started
            assert elapsed < PROBE_TIMEOUT_S + 1.0, f"the round took {elapsed:.2f}s"
            assert dead_uid not in scores and hung_uid not in scores
            for m in cluster.miners[1:]:
                assert scores[cluster.uid(m)].recall >= 0.95
                assert scores[cluster.uid(m)].score > 0.9

            proofs = await v.challenge_round()
            assert set(proofs) == {cluster.uid(m) for m in cluster.miners[1:]}
            assert all(passed == issued >= 5 for passed, issued in proofs.values())

            weights = await v.set_weights()
            assert weights[dead_uid] == 0.0 and weights[hung_uid] == 0.0
            assert all(weights[cluster.uid(m)] > 0 for m in cluster.miners[1:])

    try:
        run(body())
    finally:
        black_hole.close()


def _hollow_app(release: threading.Event) -> FastAPI:
    """A 'miner' that says it is ready on /health and answers nothing else (until released)."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "ready": True, "store": True, "model": True, "version": __version__}

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def hang(path: str) -> None:
        while not release.is_set():
            await asyncio.sleep(0.05)
        raise HTTPException(503, "released")

    return app


def test_a_miner_that_answers_only_health_fails_alone_within_one_deadline(
    cluster: Cluster,
) -> None:
    release = threading.Event()
    hollow = cluster.miners[0]

    async def body() -> None:
        async with Validator(cluster.config()) as v:
            await v.write_corpus()
            await v.challenge_round()
            uid = cluster.uid(hollow)
            hollow.stop()  # its port now answers /health and nothing else
            cluster.miners[0] = replace(
                hollow, http=serve_in_thread(_hollow_app(release), hollow.port, "hollow")
            )

            started = time.monotonic()
            scores = await v.score_round()
            elapsed = time.monotonic() - started
            assert elapsed < REQUEST_TIMEOUT_S + 1.0, f"the round took {elapsed:.2f}s"
            assert scores[uid].recall == 0 and scores[uid].latency_ms >= 500
            for m in cluster.miners[1:]:
                assert scores[cluster.uid(m)].recall >= 0.95
                assert scores[cluster.uid(m)].score > 0.9

            started = time.monotonic()
            proofs = await v.challenge_round()
            assert time.monotonic() - started < REQUEST_TIMEOUT_S + 1.0
            assert proofs[uid] == (0, 7)  # 5 HMAC + 2 audits, all failed
            for m in cluster.miners[1:]:
                passed, issued = proofs[cluster.uid(m)]
                assert passed == issued >= 5
            state = v._state().miners()[uid]
            assert (state.proof_passed, state.proof_issued) == (7, 14)  # half: not slashed yet
            assert state.ema > 0
            await v.challenge_round()
            states = v._state().miners()
            assert (states[uid].proof_passed, states[uid].proof_issued) == (7, 21)
            assert states[uid].ema == 0.0  # below half after ≥ 5 challenges: slashed
            assert states[cluster.uid(cluster.miners[1])].ema > 0

            weights = await v.set_weights()
            assert weights[uid] == 0.0

    try:
        run(body())
    finally:
        release.set()


def test_set_weights_lands_on_the_chain(cluster: Cluster) -> None:
    async def body() -> dict[int, float]:
        async with Validator(cluster.config()) as v:
            await v.write_corpus()
            await v.challenge_round()
            await v.score_round()
            weights = await v.set_weights()
            history = v._state().weight_history()
            assert len(history) == 1 and history[0]["weights"] == weights
            assert v.summary()["miners"][str(cluster.uid(cluster.miners[0]))]["weight"] > 0
            return weights

    weights = run(body())
    graph = cluster.chain.metagraph(NETUID)
    me = graph.by_hotkey(cluster.validator_hotkey)
    assert me is not None and me.uid not in weights
    on_chain = graph.weights[me.uid]
    miner_uids = {cluster.uid(m) for m in cluster.miners}
    assert {u for u, w in on_chain.items() if w > 0} == miner_uids
    assert sum(on_chain.values()) == pytest.approx(1.0)
    for uid in miner_uids:
        assert on_chain[uid] == pytest.approx(weights[uid], rel=1e-6)


def test_a_restarted_validator_resumes_its_corpus_emas_and_history(cluster: Cluster) -> None:
    config = cluster.config()

    async def first() -> tuple[list[str], dict[int, MinerState]]:
        async with Validator(config) as v:
            await v.write_corpus()
            await v.challenge_round()
            await v.score_round()
            return v.corpus.cids, v._state().miners()

    async def second() -> None:
        async with Validator(config) as v:
            assert v.corpus.cids == cids  # the same seed: not re-seeded
            assert v._state().unwritten() == set()  # and not written again
            assert v._state().miners() == before
            scores = await v.score_round()
            after = v._state().miners()
            for uid, s in scores.items():
                assert after[uid].ema == pytest.approx(0.1 * s.score + 0.9 * before[uid].ema)
                assert after[uid].proof_issued == 7  # the proof window survived too
            assert v.summary()["round"] == 2
            assert {r["round"] for r in v._state().score_history()} == {1, 2}

    cids, before = run(first())
    run(second())


def test_a_uid_with_a_new_hotkey_starts_from_zero(cluster: Cluster) -> None:
    async def body() -> None:
        async with Validator(cluster.config()) as v:
            await v.write_corpus()
            uid = cluster.uid(cluster.miners[0])
            v._state().save_miners([MinerState(uid, "the-previous-owner", ema=0.9, weight=0.5)])
            scores = await v.score_round()
            state = v._state().miners()[uid]
            assert state.hotkey == cluster.miners[0].hotkey
            assert state.ema == pytest.approx(0.1 * scores[uid].score)

    run(body())


def test_repair_moves_a_dead_miners_records_to_the_next_closest(cluster: Cluster) -> None:
    vectors = unit_vectors(30, seed=11)
    others = [
        IngestItem(embedding=v.tolist(), metadata={"n": i}, namespace="builder-docs")
        for i, v in enumerate(vectors)
    ]

    async def body() -> None:
        async with Validator(cluster.config()) as v:
            await v.write_corpus()
            # Someone else's records, written through the network like any client would.
            client = Network(cluster.chain, NetworkConfig(chain=cluster.chain.url, netuid=NETUID))
            try:
                written = await client.ingest(others)
            finally:
                await client.close()
            assert all(r.ok for r in written)
            report = await v.repair_round()
            assert (report.healthy, report.degraded, report.lost) == (48, 0, 0)
            assert report.repaired == 0 and report.foreign_repaired == 0

            dead = cluster.miners[0]
            cluster.kill(dead)
            report = await v.repair_round()
            assert report.degraded > 0 and report.lost == 0
            assert report.repaired == report.degraded  # one copy per record that lost one
            assert report.foreign_repaired > 0 and report.unverified == 0
            health = v.summary()["replica_health"]  # found degraded, left healthy
            assert health["healthy"] == 48 and health["last_repair"]["degraded"] > 0

            expected = _expected(cluster, v)
            assert dead.hotkey not in expected
            for m in cluster.miners[1:]:
                assert expected[m.hotkey] <= m.cids(v.namespace, cluster.auth)
            live = cluster.serving()
            for r in written:
                assert r.cid is not None
                for n in closest(r.cid, live, 3):
                    holder = next(m for m in cluster.miners if m.hotkey == n.hotkey)
                    assert r.cid in holder.cids("builder-docs")

            report = await v.repair_round()
            assert (report.healthy, report.degraded, report.lost) == (48, 0, 0)
            assert report.repaired == 0 and report.foreign_repaired == 0
            assert v.summary()["replica_health"]["healthy"] == 48

    run(body())


def test_an_unregistered_or_unstaked_validator_is_refused_clearly(cluster: Cluster) -> None:
    wallets = cluster.root / "wallets"
    new_wallet("stranger/default", wallets)
    with pytest.raises(ChainError, match="not registered"):
        Validator(cluster.config(wallet="stranger/default"))
    poor, _ = new_wallet("poor/default", wallets)
    cluster.chain.register(NETUID, poor, stake=1.0)
    with pytest.raises(ChainError, match="no validator permit"):
        Validator(cluster.config(wallet="poor/default", home=cluster.root / "poor"))


def test_run_drives_every_cadence_until_cancelled(cluster: Cluster) -> None:
    config = cluster.config(
        score_interval_s=0.2,
        challenge_interval_s=0.2,
        weights_interval_s=0.2,
        repair_interval_s=0.2,
    )

    async def body() -> None:
        async with Validator(config) as v:
            task = asyncio.create_task(v.run())
            deadline = time.monotonic() + 15
            while not all(v.summary()["rounds"].values()) or v.summary()["round"] < 2:
                assert not task.done(), task
                assert time.monotonic() < deadline, v.summary()["rounds"]
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            summary = v.summary()
            assert summary["replica_health"]["healthy"] == 48
            assert all(m["weight"] > 0 for m in summary["miners"].values())

    run(body())
    graph = cluster.chain.metagraph(NETUID)
    me = graph.by_hotkey(cluster.validator_hotkey)
    assert me is not None and sum(graph.weights[me.uid].values()) == pytest.approx(1.0)


def test_serve_validator_stops_cleanly_on_sigterm(cluster: Cluster) -> None:
    port = free_port()
    config = cluster.config(
        score_interval_s=0.2, challenge_interval_s=0.2, weights_interval_s=0.2, port=port
    )
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from engram.config import ValidatorConfig\n"
        "from engram.validator import serve_validator\n"
        "doc = json.loads(sys.argv[1])\n"
        "for key in ('wallet_path', 'home'):\n"
        "    doc[key] = Path(doc[key])\n"
        "serve_validator(ValidatorConfig(**doc))\n"
    )
    doc = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    log_path = cluster.root / "validator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(doc)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        me = None
        while True:
            graph = cluster.chain.metagraph(NETUID)
            me = graph.by_hotkey(cluster.validator_hotkey)
            if me is not None and graph.weights.get(me.uid):
                break
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        scores = httpx.get(f"http://127.0.0.1:{port}/api/scores", timeout=5).json()
        assert set(scores["miners"]) == {str(cluster.uid(m)) for m in cluster.miners}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logged = log_path.read_text()
    assert "validator stopped" in logged and "Traceback" not in logged
    with ValidatorState(config.home) as state:  # closed cleanly, readable, history kept
        assert state.miners() and state.get_meta("last_weights_round")
