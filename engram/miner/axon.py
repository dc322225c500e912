"""A miner's place on a subnet: registered hotkey, announced axon, its view of routing."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from engram.chain import Chain, open_chain
from engram.chain.keys import identity, open_wallet
from engram.config import MinerConfig
from engram.errors import ChainError, EngramError
from engram.network.routing import RouteCheck
from engram.security.signing import Signer, signer_hotkey

log = logging.getLogger("engram.miner")
_MAX_BACKOFF_S = 60.0


@dataclass
class Axon:
    chain: Chain
    netuid: int
    signer: Signer  # the miner's wallet: a chain write is signed by the hotkey it is about
    uid: int
    ip: str
    port: int
    interval_s: float
    route: RouteCheck
    validators: frozenset[str] = frozenset()  # hotkeys with a permit: larger budgets, challenges
    hotkey: str = field(init=False)

    def __post_init__(self) -> None:
        self.hotkey = signer_hotkey(self.signer)

    def announce(self) -> None:
        """Re-announce the axon (the heartbeat routing looks at) and re-read the metagraph."""
        self.chain.serve_axon(self.netuid, self.signer, self.ip, self.port)
        graph = self.chain.metagraph(self.netuid)
        self.route.update(graph)
        self.validators = frozenset(n.hotkey for n in graph.neurons if n.validator_permit)

    async def keep_announced(self) -> None:
        """Every ``interval_s``; if the chain is unreachable, keep serving and retry with backoff."""
        delay = self.interval_s
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(self.announce)
                delay = self.interval_s
            except EngramError as exc:
                delay = min(max(delay, 1.0) * 2, _MAX_BACKOFF_S)
                log.warning(
                    "chain unreachable; still serving, retrying in %.0fs: %s", delay, exc.message
                )


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
    )
    axon.announce()
    return axon
