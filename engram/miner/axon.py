"""A miner's place on a subnet: registered hotkey, announced axon, its view of routing.

The axon is announced once, at start, and again only when the chain lists
another address for it: on Bittensor ``serve_axon`` is rate-limited, and
whether a miner serves is what clients observe by probing it, not how recently
it announced. The metagraph is still re-read every ``interval_s`` for routing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from engram._version import __version__
from engram.chain import Chain, open_chain
from engram.chain.base import Neuron
from engram.chain.keys import identity, open_wallet
from engram.chain.watch import ChainWatch
from engram.config import MinerConfig
from engram.errors import ChainError, EngramError
from engram.network.routing import RouteCheck
from engram.network.survey import Liveness, check_probe_settings
from engram.security.signing import Signer, signer_hotkey

log = logging.getLogger("engram.miner")
_MAX_BACKOFF_S = 60.0


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:  # a host name (LocalChain keeps them as given)
        return a == b


@dataclass
class Axon:
    chain: Chain
    netuid: int
    signer: Signer  # the miner's wallet: a chain write is signed by the hotkey it is about
    uid: int
    ip: str
    port: int
    interval_s: float  # how often the metagraph is re-read
    route: RouteCheck
    validators: frozenset[str] = frozenset()  # hotkeys with a permit: larger budgets, challenges
    probe_interval_s: float = MinerConfig.probe_interval_s
    probe_timeout_s: float = MinerConfig.probe_timeout_s
    hotkey: str = field(init=False)
    watch: ChainWatch = field(init=False)
    _liveness: Liveness | None = field(init=False, default=None)
    _loop: asyncio.AbstractEventLoop | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        check_probe_settings(self.probe_interval_s, self.probe_timeout_s)
        self.hotkey = signer_hotkey(self.signer)
        self.watch = ChainWatch(self.chain.url, "still serving on the last metagraph")
        self.route.answering = self.answering

    def announce(self) -> None:
        """Announce the axon (at start) and read the metagraph."""
        self.chain.serve_axon(self.netuid, self.signer, self.ip, self.port)
        self.sync()

    def sync(self) -> None:
        """Re-read the metagraph for routing; announce the axon only if the chain lists
        another address for it (it moved, or the chain lost it)."""
        graph = self.chain.metagraph(self.netuid)
        me = graph.by_hotkey(self.hotkey)
        if me is None:
            if self.route.metagraph is None or self.route.metagraph.by_hotkey(self.hotkey):
                log.warning(
                    "hotkey %s is not registered on subnet %d of %s any more; still serving",
                    self.hotkey,
                    self.netuid,
                    self.chain.url,
                )
        elif me.port != self.port or me.ip is None or not _same_host(me.ip, self.ip):
            log.info(
                "the chain lists this miner's axon at %s, not %s:%d: announcing it",
                me.axon_url or "no address",
                self.ip,
                self.port,
            )
            self.chain.serve_axon(self.netuid, self.signer, self.ip, self.port)
        self.route.update(graph)
        self.validators = frozenset(n.hotkey for n in graph.neurons if n.validator_permit)
        self.watch.ok()

    def answering(self, miners: Sequence[Neuron]) -> set[str]:
        """Which of ``miners`` answer their health probe (for :class:`RouteCheck`, called from
        a worker thread while the miner serves; before that, all are taken to answer)."""
        loop, liveness = self._loop, self._liveness
        if loop is None or liveness is None:
            return {n.hotkey for n in miners}
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # a worker thread, as when the node stores a write
            on_loop = False
        if on_loop:  # a probe cannot be waited for on its own loop: what is known so far
            return {n.hotkey for n in miners if (v := liveness.verdict(n)) is None or v.up}
        future = asyncio.run_coroutine_threadsafe(liveness.serving(miners), loop)
        try:
            return {n.hotkey for n in future.result(liveness.timeout_s + 5.0)}
        except TimeoutError:
            future.cancel()
            return {n.hotkey for n in miners}

    async def keep_synced(self) -> None:
        """:meth:`sync` every ``interval_s``; while the chain is unreachable, keep serving on
        the last metagraph and retry with backoff. Meanwhile :meth:`answering` probes peers
        on this loop."""
        self._loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(headers={"user-agent": f"engram/{__version__}"}) as http:
            self._liveness = Liveness(
                http, interval_s=self.probe_interval_s, timeout_s=self.probe_timeout_s
            )
            try:
                await self._sync_forever()
            finally:
                liveness, self._liveness, self._loop = self._liveness, None, None
                await liveness.close()

    async def _sync_forever(self) -> None:
        delay = self.interval_s
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(self.sync)
                delay = self.interval_s
            except EngramError as exc:
                self.watch.failed(exc)
                delay = min(max(delay, 1.0) * 2, _MAX_BACKOFF_S)
                log.debug("next chain sync in %.0fs", delay)
            except Exception:  # a bug must not end the sync while the miner serves on
                log.exception("chain sync failed")
                delay = min(max(delay, 1.0) * 2, _MAX_BACKOFF_S)


def join_subnet(config: MinerConfig) -> Axon:
    """Check the hotkey is registered and announce the axon; fails fast with what to do."""
    assert config.chain is not None
    wallet = open_wallet(config.wallet, config.wallet_path)
    hotkey = identity(wallet).hotkey
    chain = open_chain(config.chain)
    neuron = chain.metagraph(config.netuid).by_hotkey(hotkey)
    if neuron is None:
        chain.close()
        raise ChainError(
            f"hotkey {hotkey} ({config.wallet}) is not registered on subnet {config.netuid} of "
            f"{config.chain}; register it with `engram chain register {config.chain} "
            f"--netuid {config.netuid} --wallet {config.wallet}`"
        )
    axon = Axon(
        chain,
        config.netuid,
        wallet,
        neuron.uid,
        config.external_ip,
        config.port,
        config.sync_interval_s,
        RouteCheck(hotkey),
        probe_interval_s=config.probe_interval_s,
        probe_timeout_s=config.probe_timeout_s,
    )
    axon.announce()
    return axon
