"""The §7 scoring formula and its edges: pure functions, no I/O."""

from __future__ import annotations

import math

import pytest

from engram.validator.scoring import (
    MinerScore,
    ema,
    latency_score,
    normalise,
    proof_rate,
    recall_at_k,
    score,
    slashed,
)


def test_recall_at_k_counts_the_true_top_k_found() -> None:
    truth = [f"c{i}" for i in range(10)]
    assert recall_at_k(truth, truth) == 1.0
    assert recall_at_k(list(reversed(truth)), truth) == 1.0  # order inside the top-k is free
    assert recall_at_k([*truth[:7], "x", "y", "z"], truth) == pytest.approx(0.7)
    assert recall_at_k([], truth) == 0.0


def test_recall_at_k_looks_at_the_first_k_only() -> None:
    truth = [f"c{i}" for i in range(10)]
    returned = [f"x{i}" for i in range(10)] + truth
    assert recall_at_k(returned, truth) == 0.0
    assert recall_at_k(truth[:3], truth[:3]) == 1.0  # fewer than k records assigned


def test_recall_at_k_with_nothing_to_find_is_full() -> None:
    assert recall_at_k([], []) == 1.0


@pytest.mark.parametrize(
    ("ms", "expected"),
    [(0, 1.0), (50, 1.0), (100, 1.0), (200, 0.75), (300, 0.5), (400, 0.25), (500, 0.0), (9e9, 0.0)],
)
def test_latency_score_is_linear_between_100_and_500_ms(ms: float, expected: float) -> None:
    assert latency_score(ms) == pytest.approx(expected)


def test_latency_score_without_a_measurement_is_zero() -> None:
    assert latency_score(math.nan) == 0.0
    assert latency_score(math.inf) == 0.0


def test_proof_rate() -> None:
    assert proof_rate(3, 4) == 0.75
    assert proof_rate(0, 0) == 0.0  # nothing proven yet earns nothing
    assert proof_rate(7, 5) == 1.0  # never above 1


def test_score_weights_recall_latency_and_proofs() -> None:
    assert score(1.0, 50, 10, 10) == pytest.approx(1.0)
    assert score(0.0, 1000, 0, 0) == 0.0
    assert score(1.0, 300, 4, 4) == pytest.approx(0.5 + 0.3 * 0.5 + 0.2)
    assert score(0.8, 100, 3, 4) == pytest.approx(0.5 * 0.8 + 0.3 + 0.2 * 0.75)
    assert score(0.5, 500, 0, 0) == pytest.approx(0.25)


def test_slash_at_five_challenges_with_two_passed() -> None:
    assert slashed(2, 5)
    assert score(1.0, 50, 2, 5) == 0.0
    assert MinerScore(1, "hk", 1.0, 50, 2, 5).score == 0.0


def test_no_slash_before_five_challenges() -> None:
    assert not slashed(0, 4)
    assert score(1.0, 50, 0, 4) == pytest.approx(0.8)  # 0.5 recall + 0.3 latency, no proofs


def test_no_slash_at_half_passed() -> None:
    assert not slashed(3, 6)
    assert score(1.0, 50, 3, 6) == pytest.approx(0.5 + 0.3 + 0.2 * 0.5)


def test_ema_starts_from_zero_and_moves_by_alpha() -> None:
    assert ema(None, 1.0, 0.1) == pytest.approx(0.1)
    assert ema(0.0, 1.0, 0.1) == pytest.approx(0.1)
    assert ema(0.5, 1.0, 0.1) == pytest.approx(0.55)
    value = 0.0
    for _ in range(200):
        value = ema(value, 0.8, 0.1)
    assert value == pytest.approx(0.8, abs=1e-6)


def test_normalise_is_l1() -> None:
    weights = normalise([1.0, 3.0, 0.0])
    assert weights == pytest.approx([0.25, 0.75, 0.0])
    assert math.fsum(weights) == pytest.approx(1.0)


def test_normalise_all_zeros_stays_zeros() -> None:
    assert normalise([0.0, 0.0, 0.0]) == [0.0, 0.0, 0.0]
    assert normalise([]) == []


def test_normalise_ignores_negative_and_non_finite() -> None:
    assert normalise([-1.0, math.nan, math.inf, 2.0]) == [0.0, 0.0, 0.0, 1.0]


def test_miner_score_exposes_its_parts() -> None:
    s = MinerScore(3, "hk", recall=0.9, latency_ms=300, proof_passed=4, proof_issued=5)
    assert s.proof_rate == pytest.approx(0.8)
    assert not s.slashed
    assert s.score == pytest.approx(0.5 * 0.9 + 0.3 * 0.5 + 0.2 * 0.8)
