"""XOR routing (DESIGN §6): which miners hold a CID.

``node_id = sha256(hotkey)``, ``key = sha256(cid)``, and the R serving miners
with the smallest ``node_id XOR key`` hold the CID, primary first. Every party
computes the same answer from the same metagraph, with no coordination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from engram.chain.base import Metagraph, Neuron

REPLICAS = 3


def node_id(hotkey: str) -> int:
    return int.from_bytes(hashlib.sha256(hotkey.encode()).digest(), "big")


def key_id(cid: str) -> int:
    return int.from_bytes(hashlib.sha256(cid.encode()).digest(), "big")


def distance(hotkey: str, cid: str) -> int:
    return node_id(hotkey) ^ key_id(cid)


def closest(cid: str, miners: Iterable[Neuron], count: int | None = None) -> list[Neuron]:
    """``miners`` ordered by XOR distance to ``cid`` (ties by uid), the first ``count`` of them."""
    key = key_id(cid)
    ordered = sorted(miners, key=lambda n: (node_id(n.hotkey) ^ key, n.uid))
    return ordered if count is None else ordered[:count]


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

    def update(self, metagraph: Metagraph) -> None:
        self.metagraph = metagraph

    def replicas(self, cid: str) -> list[Neuron]:
        assert self.metagraph is not None
        return closest(cid, self.metagraph.serving(), self.r)

    def accepts(self, cid: str) -> bool:
        if self.metagraph is None:
            return True
        announced = [n for n in self.metagraph.neurons if n.axon_url is not None]
        return any(
            n.hotkey == self.hotkey
            for group in (self.metagraph.serving(), announced)
            for n in closest(cid, group, self.r)
        )
