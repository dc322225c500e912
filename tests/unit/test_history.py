"""The dashboard's ring of network snapshots."""

from __future__ import annotations

from engram.gateway.history import History, snapshot

SUMMARY = {
    "block": 42,
    "neurons": [
        {"uid": 0, "role": "validator", "score": None, "weight": None, "incentive": 0.0},
        {
            "uid": 1,
            "role": "miner",
            "serving": True,
            "score": 0.9,
            "ema": 0.5,
            "weight": 0.6,
            "incentive": 0.7,
        },
        {"uid": 2, "role": "miner", "score": None, "weight": None, "incentive": 0.0},
    ],
}


def test_history_snapshot_keeps_the_miners_numbers() -> None:
    snap = snapshot(SUMMARY, at=100.0)
    assert snap == {
        "t": 100.0,
        "block": 42,
        "scored_at": None,
        "miners": {
            "1": {
                "score": 0.9,
                "ema": 0.5,
                "weight": 0.6,
                "incentive": 0.7,
                "serving": True,
                "measured_at": None,
            },
            "2": {
                "score": None,
                "ema": None,
                "weight": None,
                "incentive": 0.0,
                "serving": False,
                "measured_at": None,
            },
        },
    }


def test_history_snapshot_keeps_when_each_miner_was_last_measured() -> None:
    """What tells a stale score from a fresh one: uid 1 was measured in the round that began
    at 200, uid 2 (down) last in an earlier one."""
    validator = {
        "rounds": {"score": {"at": 200.0, "round": 7}, "weights": None},
        "miners": {"1": {"updated_at": 201.5}, "2": {"updated_at": 150.0}},
    }
    snap = snapshot({**SUMMARY, "validator": validator}, at=210.0)
    assert snap["scored_at"] == 200.0
    assert snap["miners"]["1"]["measured_at"] == 201.5
    assert snap["miners"]["2"]["measured_at"] == 150.0
    assert snap["miners"]["2"]["serving"] is False
    broken = snapshot({**SUMMARY, "validator": {"error": "validator did not answer"}})
    assert broken["scored_at"] is None and broken["miners"]["1"]["measured_at"] is None


def test_history_is_bounded_and_read_after_a_time() -> None:
    ring = History(size=3)
    for t in range(5):
        ring.add(SUMMARY, at=float(t))
    assert len(ring) == 3 and ring.size == 3
    assert [s["t"] for s in ring.since()] == [2.0, 3.0, 4.0]
    assert [s["t"] for s in ring.since(3.0)] == [4.0]
    assert ring.since(4.0) == []
