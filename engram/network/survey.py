"""What a subnet's miners say right now: each one's health, stats and latency.

``engram status --live`` shows it beside the metagraph, and
``EngramClient.from_subnet`` checks that the best miners answer before it hands
out a client, as the original SDK did. :class:`Liveness` keeps these answers for
a probe interval and is what "serving" means to routing, the validator and the
dashboard: a miner announces its axon once, so whether it still serves is
observed, not read from the chain. Every probe has one short deadline, so a dead
miner costs that deadline and nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from engram._version import __version__
from engram.api.calls import Health, Stats
from engram.api.exchange import call_node
from engram.chain.base import Chain, Metagraph, Neuron
from engram.config import ClientConfig
from engram.errors import EngramError, InvalidRequestError, UnavailableError

if TYPE_CHECKING:  # the network client routes with Liveness: no import cycle at run time
    from engram.network.client import Network


@dataclass(frozen=True)
class MinerProbe:
    """One miner's answers: ``/health`` (and its latency) and ``/stats``, or why it gave none."""

    neuron: Neuron
    latency_ms: float | None = None  # of /health, as measured here
    health: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.health is not None and bool(self.health.get("ready"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "latency_ms": self.latency_ms,
            "health": self.health,
            "stats": self.stats,
            "error": self.error,
        }


def best_first(miners: Iterable[Neuron]) -> list[Neuron]:
    """Highest incentive first, then stake, then the lowest uid."""
    return sorted(miners, key=lambda n: (-n.incentive, -n.stake, n.uid))


async def _probe(
    http: httpx.AsyncClient, neuron: Neuron, timeout_s: float, stats: bool
) -> MinerProbe:
    url = neuron.axon_url
    if url is None:
        return MinerProbe(neuron, error="no axon announced")
    config = ClientConfig(timeout_s=timeout_s, retries=0, backoff_s=0)
    began = time.perf_counter()
    try:
        health = await call_node(http, url, Health(), config, deadline_s=timeout_s)
    except EngramError as exc:
        return MinerProbe(neuron, error=exc.message)
    latency_ms = round((time.perf_counter() - began) * 1000, 1)
    numbers = None
    if stats:
        try:
            numbers = await call_node(http, url, Stats(), config, deadline_s=timeout_s)
        except EngramError as exc:
            return MinerProbe(neuron, latency_ms, health, error=f"/stats: {exc.message}")
    return MinerProbe(neuron, latency_ms, health, numbers)


async def probe_miners(
    miners: Sequence[Neuron], timeout_s: float, *, stats: bool = True
) -> list[MinerProbe]:
    """Every miner's ``/health`` (and ``/stats``) at once, each within ``timeout_s``."""
    async with httpx.AsyncClient(headers={"user-agent": f"engram/{__version__}"}) as http:
        return list(await asyncio.gather(*(_probe(http, n, timeout_s, stats) for n in miners)))


async def check_top_miners(network: Network, top_n: int, timeout_s: float) -> list[MinerProbe]:
    """The ``top_n`` best announced miners' health; UnavailableError when none is ready."""
    config = network.config
    announced = (await network.metagraph()).serving()
    if not announced:
        raise UnavailableError(
            f"no miner has announced an axon on subnet {config.netuid} of {network.chain.url}"
        )
    miners = best_first(announced)[: max(1, top_n)]
    probes = await probe_miners(miners, timeout_s, stats=False)
    if not any(p.ready for p in probes):
        failures = "; ".join(f"uid {p.neuron.uid}: {p.error or 'not ready'}" for p in probes)
        raise UnavailableError(
            f"none of the {len(probes)} best miners of subnet {config.netuid} on "
            f"{network.chain.url} answered /health within {timeout_s:g}s ({failures})"
        )
    return probes


def check_probe_settings(interval_s: float, timeout_s: float) -> None:
    """A probe must end within its interval, or the interval could not be kept."""
    if not 0 < timeout_s < interval_s:
        raise InvalidRequestError(
            f"probe_timeout_s ({timeout_s:g}) must be > 0 and shorter than probe_interval_s "
            f"({interval_s:g})"
        )


@dataclass(frozen=True)
class Verdict:
    """One miner's latest probe: whether it answered ready, and when (``time.monotonic``)."""

    up: bool
    at: float
    error: str | None = None


class Liveness:
    """Which announced miners serve, as this process observes them.

    A miner serves while it answers ``GET /health`` ready within ``timeout_s``.
    An answer (or silence) is trusted for ``interval_s - timeout_s``, so that,
    with the probe's own deadline, a change is seen within ``interval_s``: once
    an answer is that old, the next caller starts a new probe in the background
    and goes on with what is known, so no request waits on a probe (under load a
    gateway whose every request waited for the miners' /health answered a tenth
    as fast). A miner probed for the first time is waited for; when none is up,
    all are probed again at once and waited for. Concurrent callers share each
    probe. Use it from one event loop (the one ``http`` belongs to).
    """

    def __init__(self, http: httpx.AsyncClient, *, interval_s: float, timeout_s: float) -> None:
        check_probe_settings(interval_s, timeout_s)
        self.http = http
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._fresh_s = interval_s - timeout_s
        self._verdicts: dict[tuple[str, str], Verdict] = {}
        self._probing: dict[tuple[str, str], asyncio.Task[None]] = {}

    @staticmethod
    def _key(miner: Neuron) -> tuple[str, str]:
        return miner.hotkey, str(miner.axon_url)  # a miner that moved is a new one to probe

    def verdict(self, miner: Neuron) -> Verdict | None:
        """The latest probe of ``miner`` at its current address, if any."""
        return self._verdicts.get(self._key(miner))

    async def serving(self, miners: Iterable[Neuron]) -> list[Neuron]:
        """The ``miners`` (those with an axon) that answered their latest probe, in order."""
        announced = [n for n in miners if n.axon_url is not None]
        now = time.monotonic()
        waited: list[asyncio.Task[None]] = []
        probed: set[tuple[str, str]] = set()  # answered just now, for this caller
        for n in announced:
            known = self.verdict(n)
            if known is not None and now - known.at < self._fresh_s:
                continue
            probe = self._probe(n)  # a known miner is probed again behind the caller's back
            if known is None:
                waited.append(probe)
                probed.add(self._key(n))
        if waited:
            await asyncio.wait(waited)  # never cancels a probe another caller shares
        up = [n for n in announced if self._up(n)]
        again = [self._probe(n) for n in announced if self._key(n) not in probed] if not up else []
        if again:  # nobody to route to: worth asking the others again, now
            await asyncio.wait(again)
            up = [n for n in announced if self._up(n)]
        return up

    def why_not(self, miner: Neuron) -> str:
        """Why ``miner`` is not serving, as its latest probe found."""
        known = self.verdict(miner)
        if known is None:
            return "not probed yet"
        return known.error or "not ready"

    async def close(self) -> None:
        """Stop the probes under way (their miners stay as last observed)."""
        tasks = list(self._probing.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _up(self, miner: Neuron) -> bool:
        known = self.verdict(miner)
        return known is not None and known.up

    def _probe(self, miner: Neuron) -> asyncio.Task[None]:
        key = self._key(miner)
        task = self._probing.get(key)
        if task is None:
            task = asyncio.create_task(self._check(miner), name=f"engram-probe-{miner.uid}")
            self._probing[key] = task
            task.add_done_callback(lambda _: self._probing.pop(key, None))
        return task

    async def _check(self, miner: Neuron) -> None:
        try:
            probe = await _probe(self.http, miner, self.timeout_s, stats=False)
        except (httpx.HTTPError, ValueError) as exc:  # what call_node does not map: down too
            probe = MinerProbe(miner, error=repr(exc))
        error = probe.error or (None if probe.ready else "answered /health, not ready")
        self._verdicts[self._key(miner)] = Verdict(probe.ready, time.monotonic(), error)


@dataclass(frozen=True)
class LiveStatus:
    """A subnet's metagraph with the probe of each miner with an announced axon (by uid)."""

    chain: str
    metagraph: Metagraph
    probes: dict[int, MinerProbe]

    def to_dict(self) -> dict[str, Any]:
        graph = self.metagraph
        announced = {n.uid for n in graph.serving()}
        return {
            "chain": self.chain,
            "netuid": graph.netuid,
            "block": graph.block,
            "neurons": len(graph.neurons),
            "announced": len(announced),  # with an axon on chain
            "ready": sum(p.ready for p in self.probes.values()),  # serving: answered the probe
            "miners": [
                {
                    "uid": n.uid,
                    "hotkey": n.hotkey,
                    "coldkey": n.coldkey,
                    "stake": n.stake,
                    "validator_permit": n.validator_permit,
                    "incentive": n.incentive,
                    "emission": n.emission,
                    "axon": n.axon_url,
                    "announced": n.uid in announced,
                    "probe": self.probes[n.uid].to_dict() if n.uid in self.probes else None,
                }
                for n in graph.neurons
            ],
        }


def live_status(chain: Chain, netuid: int, timeout_s: float) -> LiveStatus:
    """Read the subnet and probe each miner with an announced axon (blocking)."""
    graph = chain.metagraph(netuid)
    probes = asyncio.run(probe_miners(graph.serving(), timeout_s))
    return LiveStatus(chain.url, graph, {p.neuron.uid: p for p in probes})
