"""Hybrid search's pure parts: the keyword query and fusing ranked channels into one ranking.

Each channel (``vector``: cosine over embeddings, ``keyword``: BM25 over text)
hands in its hits best first as ``(row id, score)``. Two fusions:

* ``relative`` — each channel's scores min-max normalised to [0, 1] over its
  own hits, then weighted and summed (Weaviate's relativeScoreFusion): a hit far
  ahead in one channel keeps its lead;
* ``rrf`` — reciprocal rank, ``Σ weight / (60 + rank)``: only ranks count.

Every fused hit says what each channel contributed (its rank there, from 1,
and its raw score), so a caller can see why it ranks where it does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engram.errors import InvalidRequestError

FUSIONS = ("relative", "rrf")
RRF_K = 60
_TOKEN = re.compile(r"\w+", re.UNICODE)


def keyword_query(text: str) -> str | None:
    """An FTS5 query with OR semantics over the words of ``text``; ``None`` if it has none.

    Every word is quoted, so nothing the user types is read as FTS syntax
    (``"``, ``*``, ``NEAR``, ``-``, ``:``, ``AND``...).
    """
    words = dict.fromkeys(w.lower() for w in _TOKEN.findall(text))
    return " OR ".join(f'"{w}"' for w in words) or None


@dataclass(frozen=True)
class Fused:
    """One hit after fusion: its row, fused score, and per channel ``(rank, score)``."""

    row: int
    score: float
    channels: dict[str, tuple[int, float]] = field(default_factory=dict)


def fuse(
    channels: Mapping[str, Sequence[tuple[int, float]]],
    weights: Mapping[str, float],
    method: str = "relative",
) -> list[Fused]:
    """One ranking from several, best first; ties broken by row id for a stable order."""
    if method not in FUSIONS:
        raise InvalidRequestError(f"fusion must be one of {', '.join(FUSIONS)}, got {method!r}")
    seen: dict[int, dict[str, tuple[int, float]]] = {}
    fused: dict[int, float] = {}
    for name, hits in channels.items():
        if not hits:
            continue
        weight = weights.get(name, 1.0)
        scores = [s for _, s in hits]
        low, high = min(scores), max(scores)
        for rank, (row, score) in enumerate(hits, start=1):
            if method == "rrf":
                part = weight / (RRF_K + rank)
            else:
                part = weight * ((score - low) / (high - low) if high > low else 1.0)
            fused[row] = fused.get(row, 0.0) + part
            seen.setdefault(row, {})[name] = (rank, score)
    order = sorted(fused, key=lambda row: (-fused[row], row))
    return [Fused(row, fused[row], seen[row]) for row in order]
