"""XOR routing (docs/architecture.md, "Routing and replication"): which miners hold a CID.

``node_id = sha256(hotkey)``, ``key = sha256(cid)``, and the R serving miners
(announced on chain and answering their health probes, see
:class:`engram.network.survey.Liveness`) with the smallest ``node_id XOR key``
hold the CID, primary first. Every party computes the same answer from the same
metagraph and the same view of who answers, with no coordination.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
from collections.abc import Callable, Collection, Iterable, Sequence

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


Answering = Callable[[Sequence[Neuron]], Collection[str]]
"""Which of the given miners answer now, as hotkeys (a miner's own probes of its peers)."""


class RouteCheck:
    """Whether this miner is one of a CID's replicas, by the latest metagraph it has seen.

    Clients route over the announced miners that answer their probes, so a CID
    comes here either because this miner is among its R closest announced
    miners, or because enough of the closer ones do not answer; ``answering``
    (set by the miner's axon) checks those, so a write is accepted exactly when
    routing around the silent ones names this miner. Before the first metagraph
    arrives it cannot judge, and accepts.
    """

    def __init__(self, hotkey: str, r: int = REPLICAS, answering: Answering | None = None) -> None:
        self.hotkey = hotkey
        self.r = r
        self.answering = answering
        self.metagraph: Metagraph | None = None
        self._announced: list[Neuron] = []
        self._mine: list[Neuron] = []  # this hotkey's neurons (one, bar a re-registration)

    def update(self, metagraph: Metagraph) -> None:
        self.metagraph = metagraph
        # Both change only with the metagraph, not with each write.
        self._announced = metagraph.serving()
        self._mine = [n for n in self._announced if n.hotkey == self.hotkey]

    def replicas(self, cid: str) -> list[Neuron]:
        """The CID's R closest announced miners (those it goes to while all answer)."""
        assert self.metagraph is not None
        return closest(cid, self._announced, self.r)

    def accepts(self, cid: str) -> bool:
        if self.metagraph is None:
            return True
        if not self._mine:
            return False
        key = key_id(cid)

        def order(n: Neuron) -> tuple[int, int]:
            return node_id(n.hotkey) ^ key, n.uid

        mine = min(order(n) for n in self._mine)
        closer = [n for n in self._announced if order(n) < mine]
        if len(closer) < self.r:
            return True
        return self.answering is not None and len(self.answering(closer)) < self.r
