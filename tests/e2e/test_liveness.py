"""A localnet miner that stops answering is routed around within one probe interval, with no
axon announcement involved, and routed to again once it answers.

Real processes on one LocalChain file (it stands in for the public Bittensor chain,
which cannot be reached from here): two miners, a validator and a gateway, the real
embedding model, and real signals: SIGSTOP leaves the miner's port open but silent,
as a hung or partitioned machine is.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from engram.chain.local import LocalChain
from engram.config import NetworkConfig
from engram.localnet import Localnet
from engram.network.client import Network
from tests.conftest import localnet_on_free_ports

pytestmark = pytest.mark.slow

POLL_S = 0.05


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Localnet]:
    with localnet_on_free_ports(tmp_path_factory.mktemp("liveness"), 2).running() as net:
        yield net


def _dashboard_serving(net: Localnet, url: str) -> bool | None:
    neurons = httpx.get(net.gateway_url + "/api/network", timeout=10).json()["neurons"]
    return next((n["serving"] for n in neurons if n["axon"] == url), None)


def test_a_silent_miner_is_routed_around_within_one_probe_interval_and_back_after(
    net: Localnet,
) -> None:
    chain = LocalChain(net.home / "chain.sqlite")
    config = NetworkConfig(chain=net.chain_url, netuid=net.netuid)  # the default probe settings
    one_interval = config.probe_interval_s
    announced = {n.hotkey: n.axon_block for n in chain.metagraph(net.netuid).serving()}
    child = next(c for c in net.children if c.name == "miner-0")
    victim = next(n for n in chain.metagraph(net.netuid).serving() if n.axon_url == child.url)
    with httpx.Client(base_url=net.gateway_url, timeout=30) as gateway:
        stored = gateway.post("/IngestSynapse", json={"text": "kept while a miner is silent"})
        assert stored.status_code == 200, stored.text

    async def serving(network: Network) -> set[str]:
        return {n.hotkey for n in await network.miners()}

    async def body() -> tuple[float, float]:
        network = Network(chain, config)
        try:
            assert await serving(network) == set(announced)
            os.kill(child.process.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            while victim.hotkey in await serving(network):
                assert time.monotonic() - stopped < 3 * one_interval, "never routed around"
                await asyncio.sleep(POLL_S)
            around = time.monotonic() - stopped

            # The gateway routes around it too (its dashboard says so), and reads stay quick.
            deadline = time.monotonic() + 3 * one_interval
            while _dashboard_serving(net, child.url) is not False:
                assert time.monotonic() < deadline, "the dashboard still shows it serving"
                await asyncio.sleep(POLL_S)
            began = time.monotonic()
            hits = httpx.post(
                net.gateway_url + "/QuerySynapse",
                json={"query_text": "kept while a miner is silent", "top_k": 1},
                timeout=30,
            ).json()["results"]
            assert hits[0]["cid"] == stored.json()["cid"]
            assert time.monotonic() - began < config.read_deadline_s  # nobody waited on it

            os.kill(child.process.pid, signal.SIGCONT)
            resumed = time.monotonic()
            while victim.hotkey not in await serving(network):
                assert time.monotonic() - resumed < 3 * one_interval, "never routed to again"
                await asyncio.sleep(POLL_S)
            back = time.monotonic() - resumed
            deadline = time.monotonic() + 3 * one_interval
            while _dashboard_serving(net, child.url) is not True:
                assert time.monotonic() < deadline, "the dashboard never showed it back"
                await asyncio.sleep(POLL_S)
            return around, back
        finally:
            os.kill(child.process.pid, signal.SIGCONT)
            await network.close()

    try:
        around, back = asyncio.run(body())
        # No announcement was involved: every axon is as it was announced at start.
        graph = chain.metagraph(net.netuid)
        assert {n.hotkey: n.axon_block for n in graph.serving()} == announced
    finally:
        chain.close()
    print(f"routed around after {around:.2f}s, routed to again after {back:.2f}s")
    assert around <= one_interval + 0.5  # the poll's own step and scheduling on a busy machine
    assert back <= 2 * one_interval  # a resumed miner first works through what queued up
