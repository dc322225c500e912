"""XOR routing (DESIGN §6): which miners hold a CID.

``node_id = sha256(hotkey)``, ``key = sha256(cid)``, and the R serving miners
with the smallest ``node_id XOR key`` hold the CID, primary first. Every party
computes the same answer from the same metagraph, with no coordination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from engram.chain.base import Neuron

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
