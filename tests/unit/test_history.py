"""The dashboard's ring of network snapshots."""

from __future__ import annotations

from engram.gateway.history import History, snapshot

SUMMARY = {
    "block": 42,
    "neurons": [
        {"uid": 0, "role": "validator", "score": None, "weight": None, "incentive": 0.0},
        {"uid": 1, "role": "miner", "score": 0.9, "ema": 0.5, "weight": 0.6, "incentive": 0.7},
        {"uid": 2, "role": "miner", "score": None, "weight": None, "incentive": 0.0},
    ],
}


def test_history_snapshot_keeps_the_miners_numbers() -> None:
    snap = snapshot(SUMMARY, at=100.0)
    assert snap == {
        "t": 100.0,
        "block": 42,
        "miners": {
            "1": {"score": 0.9, "ema": 0.5, "weight": 0.6, "incentive": 0.7},
            "2": {"score": None, "ema": None, "weight": None, "incentive": 0.0},
        },
    }


def test_history_is_bounded_and_read_after_a_time() -> None:
    ring = History(size=3)
    for t in range(5):
        ring.add(SUMMARY, at=float(t))
    assert len(ring) == 3 and ring.size == 3
    assert [s["t"] for s in ring.since()] == [2.0, 3.0, 4.0]
    assert [s["t"] for s in ring.since(3.0)] == [4.0]
    assert ring.since(4.0) == []
