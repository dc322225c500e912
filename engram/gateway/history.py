"""The dashboard's memory: a bounded ring of small snapshots of the subnet, newest last.

The chain keeps only the current weights and the validator only its own
view, so the gateway samples ``/api/network`` on a cadence and keeps the
last hour or so in memory, enough to draw scores and weights over time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

SAMPLE_INTERVAL_S = 5.0
SNAPSHOTS = 720  # an hour at one sample every 5 s
_FIELDS = ("score", "ema", "weight", "incentive")


def snapshot(summary: Mapping[str, Any], at: float | None = None) -> dict[str, Any]:
    """What the charts need from one ``/api/network`` answer: per miner uid, a few numbers."""
    return {
        "t": time.time() if at is None else at,
        "block": summary.get("block"),
        "miners": {
            str(n["uid"]): {k: n.get(k) for k in _FIELDS}
            for n in summary.get("neurons", [])
            if n.get("role") == "miner"
        },
    }


class History:
    """The last ``size`` snapshots; readers ask for those after a time they already have."""

    def __init__(self, size: int = SNAPSHOTS) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, summary: Mapping[str, Any], at: float | None = None) -> None:
        self._ring.append(snapshot(summary, at))

    def since(self, t: float = 0.0) -> list[dict[str, Any]]:
        return [s for s in self._ring if s["t"] > t]

    @property
    def size(self) -> int:
        """How many snapshots the ring keeps."""
        return self._ring.maxlen or 0

    def __len__(self) -> int:
        return len(self._ring)
