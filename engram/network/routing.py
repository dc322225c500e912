"""XOR routing (docs/architecture.md, "Routing and replication"): which miners hold a CID.

``node_id = sha256(hotkey)``, ``key = sha256(cid)``, and the R serving miners
with the smallest ``node_id XOR key`` hold the CID, primary first. Every party
computes the same answer from the same metagraph, with no coordination.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
from collections.abc import Iterable, Sequence

from engram.chain.base import Metagraph, Neuron

REPLICAS = 3


@functools.lru_cache(maxsize=65_536)  # hotkeys are few and long-lived; CIDs are not
def node_id(hotkey: str) -> int:
    return int.from_bytes(hashlib.sha256(hotkey.encode()).digest(), "big")


def key_id(cid: str) -> int:
    return int.from_bytes(hashlib.sha256(cid.encode()).digest(), "big")


def distance(hotkey: str, cid: str) -> int:
    return node_id(hotkey) ^ key_id(cid)


def closest(cid: str, miners: Iterable[Neuron], count: int | None = None) -> list[Neuron]:
    """``miners`` ordered by XOR distance to ``cid`` (ties by uid), the first ``count`` of them."""
    key = key_id(cid)

    def order(n: Neuron) -> tuple[int, int]:
        return node_id(n.hotkey) ^ key, n.uid

    return sorted(miners, key=order) if count is None else heapq.nsmallest(count, miners, order)


def replicas(cid: str, miners: Sequence[Neuron], r: int = REPLICAS) -> list[Neuron]:
    """The R miners that hold ``cid``, primary first."""
    return closest(cid, miners, r)


class RouteCheck:
    """Whether this miner is one of a CID's replicas, by the latest metagraph it has seen.

    A miner accepts a write when routing over the serving miners names it, or
    routing over every announced miner does (a client with a slightly older
    view, or a repair that moved a record off a miner whose heartbeat just
    expired). Before the first metagraph arrives it cannot judge, and accepts.
    """

    def __init__(self, hotkey: str, r: int = REPLICAS) -> None:
        self.hotkey = hotkey
        self.r = r
        self.metagraph: Metagraph | None = None
        self._groups: tuple[list[Neuron], list[Neuron]] = ([], [])

    def update(self, metagraph: Metagraph) -> None:
        self.metagraph = metagraph
        # Both groups change only with the metagraph, not with each write.
        self._groups = (
            metagraph.serving(),
            [n for n in metagraph.neurons if n.axon_url is not None],
        )

    def replicas(self, cid: str) -> list[Neuron]:
        assert self.metagraph is not None
        return closest(cid, self._groups[0], self.r)

    def accepts(self, cid: str) -> bool:
        if self.metagraph is None:
            return True
        return any(
            n.hotkey == self.hotkey for group in self._groups for n in closest(cid, group, self.r)
        )
