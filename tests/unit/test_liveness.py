"""Liveness without heartbeats: a miner announces its axon once; "serving" is what probes see.

Real HTTP servers on 127.0.0.1 (miners, and a /health server on many ports whose
answers a test sets), a real LocalChain file, real keys and wallets. The public
Bittensor chain cannot be reached from here, so the SDK's ``Subtensor`` is
:class:`tests.subtensor_standin.SubtensorStandIn`, the one fake the suite allows;
the SDK's reads and intents run for real on top of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import bittensor as bt
import httpx
import pytest
import uvicorn
from bittensor.sp_core import Keypair
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engram._version import __version__
from engram.chain.base import Neuron
from engram.chain.keys import new_wallet
from engram.chain.local import LocalChain
from engram.chain.subtensor import SubtensorChain
from engram.cid import generate_cid
from engram.config import (
    MODEL_VERSION,
    ChainParams,
    MinerConfig,
    NetworkConfig,
    SubtensorConfig,
    ValidatorConfig,
    load_config,
)
from engram.errors import ChainUnavailableError, InvalidRequestError, UnavailableError
from engram.gateway.app import network_summary
from engram.miner.app import create_miner_app
from engram.miner.axon import Axon
from engram.network.client import Network
from engram.network.routing import RouteCheck, closest
from engram.network.survey import Liveness
from engram.records import Record
from engram.validator import Validator
from engram.validator.api import create_validator_app
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread
from tests.subtensor_standin import SubtensorStandIn, address

T = TypeVar("T")
NETUID = 450
FAST = SubtensorConfig(
    subtensor_timeout_s=2.0,
    subtensor_extrinsic_timeout_s=5.0,
    subtensor_retries=1,
    subtensor_backoff_s=0.01,
)
INTERVAL_S = 0.5  # the probe interval of these tests
TIMEOUT_S = 0.3  # their probe timeout


class Answers:
    """``GET /health`` on many loopback ports from one server; each port answers as told:
    ``ok`` (ready), ``starting`` (503, not ready) or ``silent`` (holds the request)."""

    def __init__(self, ports: int) -> None:
        self.sockets = []
        for _ in range(ports):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.listen(256)
            self.sockets.append(s)
        self.ports = [s.getsockname()[1] for s in self.sockets]
        self.mode = dict.fromkeys(self.ports, "ok")
        self.hits: Counter[int] = Counter()
        self._closing = False
        app = FastAPI()

        @app.get("/health")
        async def health(request: Request) -> Any:
            port = request.scope["server"][1]
            self.hits[port] += 1
            while self.mode[port] == "silent" and not self._closing:
                await asyncio.sleep(0.02)
            ready = self.mode[port] == "ok"
            body = {"status": "ok" if ready else "starting", "ready": ready, "store": True}
            return JSONResponse(
                {**body, "model": ready, "version": __version__}, 200 if ready else 503
            )

        config = uvicorn.Config(app, log_config=None, access_log=False, ws="none", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": self.sockets}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "the /health server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self._closing = True
        self.server.should_exit = True
        self.thread.join(15)
        for s in self.sockets:
            s.close()


@pytest.fixture
def answers() -> Iterator[Answers]:
    server = Answers(3)
    yield server
    server.stop()


def neuron(uid: int, port: int, hotkey: str | None = None) -> Neuron:
    return Neuron(
        uid=uid,
        hotkey=hotkey or f"hotkey-{uid}",
        coldkey="coldkey",
        stake=0.0,
        validator_permit=False,
        ip="127.0.0.1",
        port=port,
        axon_block=1,
    )


async def until(predicate: Callable[[], Awaitable[T]], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.02)


def uids(miners: list[Neuron]) -> list[int]:
    return [n.uid for n in miners]


# --- the prober -----------------------------------------------------------------------------------


def test_a_silent_miner_is_routed_around_within_one_interval_and_back_after(
    answers: Answers,
) -> None:
    miners = [neuron(i, port) for i, port in enumerate(answers.ports)]
    quiet = answers.ports[1]

    async def body() -> None:
        async with httpx.AsyncClient() as http:
            live = Liveness(http, interval_s=INTERVAL_S, timeout_s=TIMEOUT_S)
            assert uids(await live.serving(miners)) == [0, 1, 2]
            assert uids(await live.serving(miners)) == [0, 1, 2]  # trusted for the interval
            assert set(answers.hits.values()) == {1}

            answers.mode[quiet] = "silent"
            went_quiet = time.monotonic()
            assert 1 in uids(await live.serving(miners))  # not probed again yet
            await until(lambda: _without(live, miners, 1), INTERVAL_S + 0.5, "routing around")
            assert time.monotonic() - went_quiet <= INTERVAL_S + 0.2
            verdict = live.verdict(miners[1])
            assert verdict is not None and not verdict.up and "within" in live.why_not(miners[1])

            # Re-probing a miner believed down keeps nobody waiting.
            await asyncio.sleep(INTERVAL_S)
            began = time.monotonic()
            assert uids(await live.serving(miners)) == [0, 2]
            assert time.monotonic() - began < TIMEOUT_S / 2

            answers.mode[quiet] = "ok"
            came_back = time.monotonic()
            await until(lambda: _with(live, miners, 1), INTERVAL_S + 0.5, "routing back")
            assert time.monotonic() - came_back <= INTERVAL_S + 0.2
            await live.close()

    asyncio.run(body())


async def _without(live: Liveness, miners: list[Neuron], uid: int) -> bool:
    return uid not in uids(await live.serving(miners))


async def _with(live: Liveness, miners: list[Neuron], uid: int) -> bool:
    return uid in uids(await live.serving(miners))


def test_callers_share_each_probe_and_only_ready_miners_serve(answers: Answers) -> None:
    answers.mode[answers.ports[2]] = "starting"
    refused = neuron(3, free_port())  # nobody listens there
    never = Neuron(4, "never-announced", "coldkey", 0.0, False)
    miners = [*(neuron(i, port) for i, port in enumerate(answers.ports)), refused, never]

    async def body() -> None:
        async with httpx.AsyncClient() as http:
            live = Liveness(http, interval_s=30.0, timeout_s=TIMEOUT_S)
            results = await asyncio.gather(*(live.serving(miners) for _ in range(20)))
            assert all(uids(r) == [0, 1] for r in results)
            assert set(answers.hits.values()) == {1}  # one probe each, shared by 20 callers
            assert "not ready" in live.why_not(miners[2])
            assert live.why_not(refused) and live.why_not(never) == "not probed yet"

    asyncio.run(body())


def test_with_nobody_up_every_caller_asks_again(answers: Answers) -> None:
    miners = [neuron(0, answers.ports[0])]
    answers.mode[answers.ports[0]] = "starting"

    async def body() -> None:
        async with httpx.AsyncClient() as http:
            live = Liveness(http, interval_s=30.0, timeout_s=TIMEOUT_S)
            assert await live.serving(miners) == []
            assert answers.hits[answers.ports[0]] == 1  # one probe, not a second at once
            answers.mode[answers.ports[0]] = "ok"  # it finished starting
            # No one else to route to: asked again at once, not an interval later.
            assert uids(await live.serving(miners)) == [0]

    asyncio.run(body())


def test_a_probe_longer_than_its_interval_is_refused_with_what_to_fix() -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as http:
            with pytest.raises(InvalidRequestError, match="shorter than probe_interval_s"):
                Liveness(http, interval_s=1.0, timeout_s=1.0)

    asyncio.run(body())
    with pytest.raises(InvalidRequestError, match=r"probe_interval_s 0\.0 is out of range"):
        load_config(NetworkConfig, probe_interval_s=0.0)


# --- a subnet on a LocalChain -----------------------------------------------------------------


def _cid(text: str) -> str:
    return generate_cid(HashEmbedder().encode([text])[0], {}, MODEL_VERSION, text)


def _record(text: str) -> Record:
    vector = HashEmbedder().encode([text])[0]
    return Record(_cid(text), vector, {}, text)


def test_a_stopped_miner_is_routed_around_and_its_next_closest_accepts_the_write(
    tmp_path: Path,
) -> None:
    """Four miners on a LocalChain, each with its axon; nobody announces anything after start."""
    params = ChainParams(block_time_s=0.05, tempo=20, min_validator_stake=1.0)
    chain = LocalChain.create(tmp_path / "chain.sqlite", 1, params)
    servers: list[ThreadedServer] = []
    signers = [Keypair.create_from_uri(f"//live-{i}") for i in range(4)]
    for i, signer in enumerate(signers):
        uid = chain.register(1, signer, coldkey="owner")
        port = free_port()
        route = RouteCheck(signer.ss58_address)
        axon = Axon(
            chain,
            1,
            signer,
            uid,
            "127.0.0.1",
            port,
            0.05,
            route,
            probe_interval_s=INTERVAL_S,
            probe_timeout_s=TIMEOUT_S,
        )
        axon.announce()
        config = MinerConfig(home=tmp_path / f"miner-{i}", port=port, reader_threads=2)
        app = create_miner_app(config, embedder=HashEmbedder(), axon=axon)
        servers.append(serve_in_thread(app, port, f"miner-{i}"))
    graph = chain.metagraph(1)
    announced_at = {n.hotkey: n.axon_block for n in graph.neurons}
    # A record whose primary replica is the miner about to stop.
    text = next(f"record {i}" for i in range(1000) if _primary(f"record {i}", graph) == 0)
    victim = graph.neurons[0]
    settings = NetworkConfig(
        chain=chain.url, netuid=1, probe_interval_s=INTERVAL_S, probe_timeout_s=TIMEOUT_S
    )

    async def body() -> None:
        network = Network(chain, settings, embedder=HashEmbedder())
        try:
            assert len(await network.miners()) == 4
            servers[0].stop()
            stopped = time.monotonic()
            await until(lambda: _lacks(network, victim.hotkey), INTERVAL_S + 2, "routing around it")
            assert time.monotonic() - stopped <= INTERVAL_S + 1.0
            summary = await network_summary(network, None)
            flags = {n["uid"]: n["serving"] for n in summary["neurons"]}
            assert flags == {0: False, 1: True, 2: True, 3: True}

            [report] = await network.write([_record(text)])
            routed = closest(report.cid or "", graph.serving())
            assert victim.hotkey == routed[0].hotkey
            assert report.ok and sorted(report.acked) == sorted(n.hotkey for n in routed[1:4])
            assert report.failed == {}
        finally:
            await network.close()

    try:
        asyncio.run(body())
        graph = chain.metagraph(1)
        assert {n.hotkey: n.axon_block for n in graph.neurons} == announced_at  # none again
    finally:
        for server in servers[1:]:
            server.stop()
        chain.close()


def _primary(text: str, graph: Any) -> int:
    return closest(_cid(text), graph.serving(), 1)[0].uid


async def _lacks(network: Network, hotkey: str) -> bool:
    return hotkey not in {n.hotkey for n in await network.miners()}


def test_a_miner_announces_once_and_again_only_when_the_chain_lists_another_address(
    tmp_path: Path,
) -> None:
    params = ChainParams(block_time_s=0.02, tempo=20, min_validator_stake=1.0)
    chain = LocalChain.create(tmp_path / "chain.sqlite", 1, params)
    signer = Keypair.create_from_uri("//once")
    uid = chain.register(1, signer, coldkey="owner")
    axon = Axon(chain, 1, signer, uid, "127.0.0.1", 8091, 1.0, RouteCheck(signer.ss58_address))
    axon.announce()
    first = chain.metagraph(1).by_uid(uid)
    assert first is not None and first.axon_url == "http://127.0.0.1:8091"
    for _ in range(20):
        time.sleep(0.02)  # a block goes by
        axon.sync()
    again = chain.metagraph(1).by_uid(uid)
    assert again is not None and again.axon_block == first.axon_block
    assert axon.route.metagraph is not None and axon.route.metagraph.block > first.axon_block

    chain.serve_axon(1, signer, "127.0.0.1", 9999)  # the chain now lists another address
    axon.sync()
    moved_back = chain.metagraph(1).by_uid(uid)
    assert moved_back is not None and moved_back.axon_url == "http://127.0.0.1:8091"
    axon.sync()
    last = chain.metagraph(1).by_uid(uid)
    assert last is not None and last.axon_block == moved_back.axon_block  # and not again
    chain.close()


# --- Bittensor (the stand-in) -------------------------------------------------------------------


@pytest.fixture
def standin() -> SubtensorStandIn:
    return SubtensorStandIn("test")


def test_a_miner_keeps_serving_while_the_chain_is_unreachable(
    standin: SubtensorStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = new_wallet("owner/miner", tmp_path / "wallets")[0]
    standin.add_subnet(NETUID)
    standin.add_neuron(NETUID, wallet.hotkey.ss58_address, wallet.coldkeypub.ss58_address)
    standin.add_neuron(NETUID, address("validator"), stake_tao=5000.0, permit=True)
    chain = SubtensorChain("test", subtensor=standin, config=FAST)  # type: ignore[arg-type]
    port = free_port()
    route = RouteCheck(wallet.hotkey.ss58_address)
    axon = Axon(chain, NETUID, wallet, 0, "198.51.100.4", port, 0.05, route)
    axon.announce()
    config = MinerConfig(home=tmp_path / "miner", port=port, reader_threads=1)
    server = serve_in_thread(
        create_miner_app(config, embedder=HashEmbedder(), axon=axon), port, "miner"
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http, caplog.at_level(logging.INFO):
            assert http.get("/health").json()["chain"] == "ok"
            time.sleep(0.3)  # a few sync cycles
            standin.unreachable = True
            down = _poll(lambda: http.get("/health").json()["chain"], "unreachable since", 5)
            assert "could not read subnet 450" in down and "RpcConnectionError" in down
            stored = http.post("/IngestSynapse", json={"text": "written while the chain is away"})
            assert stored.status_code == 200, stored.text
            hits = http.post("/QuerySynapse", json={"query_text": "written while", "top_k": 1})
            assert hits.json()["results"][0]["cid"] == stored.json()["cid"]
            standin.unreachable = False
            _poll(lambda: http.get("/health").json()["chain"], "ok", 10)
        assert "chain test unreachable" in caplog.text and "still serving" in caplog.text
        assert "chain test reachable again" in caplog.text
        assert [e.function for e in standin.extrinsics] == ["serve_axon"]  # once, at start
    finally:
        server.stop()
        chain.close()


def _poll(read: Callable[[], str], prefix: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if value.startswith(prefix):
            return value
        assert time.monotonic() < deadline, f"still {value!r}, not {prefix!r}…"
        time.sleep(0.05)


@pytest.fixture
def two_miners(tmp_path: Path) -> Iterator[list[ThreadedServer]]:
    started = []
    for i in range(2):
        port = free_port()
        config = MinerConfig(home=tmp_path / f"miner-{i}", port=port, reader_threads=2)
        started.append(
            serve_in_thread(create_miner_app(config, embedder=HashEmbedder()), port, f"m{i}")
        )
    yield started
    for server in started:
        server.stop()


def test_a_validator_keeps_scoring_while_the_chain_is_unreachable_and_sets_weights_after(
    standin: SubtensorStandIn, tmp_path: Path, two_miners: list[ThreadedServer]
) -> None:
    wallets = tmp_path / "wallets"
    validator = new_wallet("owner/validator", wallets)[0]
    standin.add_subnet(NETUID, weights_rate_limit=0)
    standin.add_neuron(
        NETUID,
        validator.hotkey.ss58_address,
        validator.coldkeypub.ss58_address,
        stake_tao=10_000.0,
        permit=True,
    )
    for i, server in enumerate(two_miners):
        standin.add_neuron(NETUID, address(f"scored-{i}"), axon=("127.0.0.1", server.port))
    chain = SubtensorChain("test", subtensor=standin, config=FAST)  # type: ignore[arg-type]
    config = ValidatorConfig(
        chain="test",
        netuid=NETUID,
        wallet="owner/validator",
        wallet_path=wallets,
        home=tmp_path / "validator",
        corpus_size=16,
        queries_per_miner=2,
        challenges_per_miner=2,
        audits_per_miner=1,
        score_interval_s=0.2,
        challenge_interval_s=0.2,
        weights_interval_s=0.2,
        repair_interval_s=0.5,
        chain_retry_s=0.1,
        probe_interval_s=INTERVAL_S,
        probe_timeout_s=TIMEOUT_S,
        request_timeout_s=2.0,
        challenge_deadline_s=2.0,
    )

    def weights() -> int:
        return len(standin.calls("set_mechanism_weights"))

    async def body() -> None:
        v = Validator(config, chain=chain)
        port = free_port()
        status = serve_in_thread(create_validator_app(v), port, "validator-status")
        task = asyncio.create_task(v.run())
        try:
            async with httpx.AsyncClient(base_url=status.url, timeout=5) as http:

                async def health() -> dict[str, Any]:
                    return (await http.get("/health")).json()

                await until(lambda: _weights_set(weights), 20, "the first weights")
                assert (await health())["chain"] == "ok"

                standin.unreachable = True
                await until(lambda: _unreachable(health), 10, "/health to say so")
                await asyncio.sleep(0.2)  # a weights call already under way lands first
                set_before = weights()
                round_then = v.summary()["round"]
                await until(lambda: _rounds_past(v, round_then + 2), 20, "scoring to go on")
                scores = v.summary()["miners"]
                assert len(scores) == 2 and all(m["recall"] > 0.9 for m in scores.values())
                assert weights() == set_before  # nothing could be sent
                assert (await health())["ready"] is True

                standin.unreachable = False
                await until(lambda: _weights_set(lambda: weights() - set_before), 5, "weights")
                assert (await health())["chain"] == "ok"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            status.stop()
            await v.close()

    asyncio.run(body())
    [last] = standin.calls("set_mechanism_weights")[-1:]
    assert last.ok and sorted(last.params["dests"]) == [1, 2]


async def _weights_set(count: Callable[[], int]) -> bool:
    return count() > 0


async def _unreachable(health: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
    return str((await health())["chain"]).startswith("unreachable since")


async def _rounds_past(v: Validator, round_: int) -> bool:
    return v.summary()["round"] >= round_


def test_a_metagraph_of_256_neurons_routes_over_the_miners_that_answer(
    standin: SubtensorStandIn, tmp_path: Path
) -> None:
    server = Answers(240)
    try:
        validator = new_wallet("owner/validator", tmp_path / "wallets")[0]
        standin.add_subnet(NETUID)
        standin.add_neuron(NETUID, validator.hotkey.ss58_address, stake_tao=1e4, permit=True)
        for i in range(1, 256):
            port = server.ports[i - 1] if i <= len(server.ports) else free_port()  # refused
            standin.add_neuron(NETUID, address(f"m-{i}"), axon=("127.0.0.1", port))
        for port in server.ports[::9]:
            server.mode[port] = "starting"
        standin.state[NETUID].neurons[17].axon = None  # registered, never served
        chain = SubtensorChain("test", subtensor=standin, config=FAST)  # type: ignore[arg-type]
        answering = {
            n.hotkey
            for n in standin.state[NETUID].neurons[1:]
            if n.axon is not None and server.mode.get(n.axon["port"]) == "ok"
        }
        assert 200 < len(answering) < 240

        async def body() -> None:
            settings = NetworkConfig(
                chain="test", netuid=NETUID, probe_interval_s=60.0, probe_timeout_s=5.0
            )
            network = Network(chain, settings, embedder=HashEmbedder())
            try:
                assert {n.hotkey for n in await network.miners()} == answering
                for i in range(50):
                    cid = f"v1::{hashlib.sha256(str(i).encode()).hexdigest()}"
                    key = int.from_bytes(hashlib.sha256(cid.encode()).digest(), "big")
                    expected = sorted(
                        answering,
                        key=lambda h, key=key: (
                            int.from_bytes(hashlib.sha256(h.encode()).digest(), "big") ^ key
                        ),
                    )[:3]
                    assert [n.hotkey for n in await network.replicas(cid)] == expected
            finally:
                await network.close()

        asyncio.run(body())
        assert max(server.hits.values()) == 1  # every miner probed once for all of it
        chain.close()
    finally:
        server.stop()


def test_with_no_miner_answering_routing_says_why(answers: Answers, tmp_path: Path) -> None:
    params = ChainParams(block_time_s=1.0, min_validator_stake=1.0)
    chain = LocalChain.create(tmp_path / "chain.sqlite", 1, params)
    signer = Keypair.create_from_uri("//starting")
    chain.register(1, signer, coldkey="owner")
    chain.serve_axon(1, signer, "127.0.0.1", answers.ports[0])
    answers.mode[answers.ports[0]] = "starting"
    settings = NetworkConfig(chain=chain.url, netuid=1, probe_timeout_s=TIMEOUT_S)

    async def body() -> None:
        network = Network(chain, settings, embedder=HashEmbedder())
        try:
            with pytest.raises(UnavailableError, match=r"none of the 1 announced .*not ready"):
                await network.miners()
        finally:
            await network.close()

    asyncio.run(body())
    chain.close()


def test_weights_wait_for_an_unreachable_chain(standin: SubtensorStandIn, tmp_path: Path) -> None:
    wallets = tmp_path / "wallets"
    validator: bt.Wallet = new_wallet("owner/validator", wallets)[0]
    standin.add_subnet(NETUID)
    standin.add_neuron(
        NETUID, validator.hotkey.ss58_address, validator.coldkeypub.ss58_address, permit=True
    )
    chain = SubtensorChain("test", subtensor=standin, config=FAST)  # type: ignore[arg-type]
    config = ValidatorConfig(
        chain="test",
        netuid=NETUID,
        wallet="owner/validator",
        wallet_path=wallets,
        home=tmp_path / "validator",
        corpus_size=4,
    )

    async def body() -> None:
        async with Validator(config, chain=chain) as v:
            standin.unreachable = True
            with pytest.raises(ChainUnavailableError, match="weights wait for the chain"):
                await v.set_weights()
            assert v.health()["chain"].startswith("unreachable since")
            assert not standin.extrinsics

    asyncio.run(body())
