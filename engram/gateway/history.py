"""The dashboard's memory: a bounded ring of small snapshots of the subnet, newest last.

The chain keeps only the current weights and the validator only its own
view, so the gateway samples ``/api/network`` on a cadence and keeps the
last hour or so in memory, enough to draw scores and weights over time.

A snapshot keeps, beside each miner's numbers, the facts that tell a fresh
measurement from a stale one: whether the miner was serving, when the
validator last measured it and when the validator's last score round began.
A miner left out of that round (it stopped serving) still carries its last
scores; the pages show those as the last ones seen, not as current.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

SAMPLE_INTERVAL_S = 5.0
SNAPSHOTS = 720  # an hour at one sample every 5 s
_FIELDS = ("score", "ema", "weight", "incentive")


def _validator(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    """The validator's own view inside a summary; empty when none answered."""
    validator = summary.get("validator")
    return validator if isinstance(validator, Mapping) else {}


def _scored_at(summary: Mapping[str, Any]) -> float | None:
    """When the validator's last score round began (its clock), if it has scored at all."""
    rounds = _validator(summary).get("rounds") or {}
    score = rounds.get("score") or {}
    at = score.get("at")
    return float(at) if isinstance(at, int | float) else None


def _measured_at(summary: Mapping[str, Any], uid: int | str) -> float | None:
    """When the validator last measured miner ``uid`` (its clock), if ever."""
    miner = (_validator(summary).get("miners") or {}).get(str(uid)) or {}
    at = miner.get("updated_at")
    return float(at) if isinstance(at, int | float) else None


def snapshot(summary: Mapping[str, Any], at: float | None = None) -> dict[str, Any]:
    """What the charts need from one ``/api/network`` answer: per miner uid, a few numbers
    and whether they were measured in the validator's last round."""
    return {
        "t": time.time() if at is None else at,
        "block": summary.get("block"),
        "scored_at": _scored_at(summary),
        "miners": {
            str(n["uid"]): {
                **{k: n.get(k) for k in _FIELDS},
                "serving": bool(n.get("serving")),
                "measured_at": _measured_at(summary, n["uid"]),
            }
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
