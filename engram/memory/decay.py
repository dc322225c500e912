"""Memory strength over time: FSRS-6 retrievability, from the ``fsrs`` package.

A memory is scheduled like a flash card: storing it is its first review, every
recall (a search or context that returns it) another one, each rated *Good*.
Retrievability — the modelled chance it is still remembered — fades between
recalls, more slowly the more often it was recalled.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fsrs import Card, Rating, Scheduler

_SCHEDULER = Scheduler(enable_fuzzing=False)  # deterministic: replicas compute the same card


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _card(card_json: str | None, created_at: float) -> Card:
    if card_json:
        return Card.from_json(card_json)
    card, _ = _SCHEDULER.review_card(Card(card_id=0), Rating.Good, _when(created_at))
    return card


def retrievability(card_json: str | None, created_at: float, now: float) -> float:
    """The chance, in [0, 1], that the memory is still remembered at ``now``."""
    return float(_SCHEDULER.get_card_retrievability(_card(card_json, created_at), _when(now)))


def review(card_json: str | None, created_at: float, now: float) -> str:
    """The card after a recall at ``now``, as JSON."""
    card, _ = _SCHEDULER.review_card(_card(card_json, created_at), Rating.Good, _when(now))
    return card.to_json()


def strength(importance: float, recall: float) -> float:
    """What ranking weighs: retrievability, with importance as its floor."""
    return importance + (1.0 - importance) * recall
