"""Hybrid search's pure parts: the keyword query and fusing ranked channels into one ranking.

Each channel (``vector``: cosine over embeddings, ``keyword``: BM25 over text)
hands in its hits best first as ``(row id, score)``. Two fusions:

* ``relative`` — each channel's scores min-max normalised to [0, 1] over its
  own hits, then weighted and summed (Weaviate's relativeScoreFusion): a hit far
  ahead in one channel keeps its lead;
* ``rrf`` — reciprocal rank, ``Σ weight / (60 + rank)``: only ranks count;
* ``dbsf`` — as ``relative``, but each channel's scores are scaled between
  mean ± 3 standard deviations of its hits (Qdrant's distribution-based fusion).

On the LoCoMo development split (``bench/retrieval_bench.py``) ``relative``
beats ``rrf`` by about 0.1 recall@10 and ``dbsf`` by about 0.04, and lifting
each hit by its neighbours (:func:`with_neighbours`: the records written just
before and after it, as in a conversation the turns around a match) adds 0.04.

Every fused hit says what each channel contributed (its rank there, from 1,
and its raw score), so a caller can see why it ranks where it does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engram.errors import InvalidRequestError

FUSIONS = ("relative", "rrf", "dbsf")
RRF_K = 60
_TOKEN = re.compile(r"\w+", re.UNICODE)


# English function words (the common NLTK / Snowball list, lower case, apostrophes split
# off as the tokenizer splits them: "didn't" is "didn" + "t"). Under OR semantics a natural
# question's "what", "did", "the" match almost every record and swamp the words that matter.
# fmt: off
STOP_WORDS = frozenset((
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any",
    "are", "aren", "as", "at", "be", "because", "been", "before", "being", "below",
    "between", "both", "but", "by", "can", "couldn", "d", "did", "didn", "do", "does",
    "doesn", "doing", "don", "down", "during", "each", "few", "for", "from", "further",
    "had", "hadn", "has", "hasn", "have", "haven", "having", "he", "her", "here", "hers",
    "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "isn", "it",
    "its", "itself", "just", "ll", "m", "ma", "me", "mightn", "more", "most", "mustn", "my",
    "myself", "needn", "no", "nor", "not", "now", "o", "of", "off", "on", "once", "only",
    "or", "other", "our", "ours", "ourselves", "out", "over", "own", "re", "s", "same",
    "shan", "she", "should", "shouldn", "so", "some", "such", "t", "than", "that", "the",
    "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "ve", "very", "was", "wasn",
    "we", "were", "weren", "what", "when", "where", "which", "while", "who", "whom", "why",
    "will", "with", "won", "wouldn", "y", "you", "your", "yours", "yourself", "yourselves",
))
# fmt: on


def keyword_query(text: str, stop_words: bool = True) -> str | None:
    """An FTS5 query with OR semantics over the words of ``text``; ``None`` if it has none.

    Every word is quoted, so nothing the user types is read as FTS syntax
    (``"``, ``*``, ``NEAR``, ``-``, ``:``, ``AND``...). With ``stop_words``
    (the default) English function words (:data:`STOP_WORDS`) are dropped,
    unless the text has no other word: "what did she do" still searches. The
    index stems words (SQLite's Porter tokenizer), and so does the query, so
    "painted" also finds "painting".
    """
    words = list(dict.fromkeys(w.lower() for w in _TOKEN.findall(text)))
    if stop_words:
        words = [w for w in words if w not in STOP_WORDS] or words
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
        if method == "dbsf":
            mean = sum(scores) / len(scores)
            spread = 3 * (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
            low, high = mean - spread, mean + spread
        else:
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


def with_neighbours(fused: Sequence[Fused], weight: float) -> list[Fused]:
    """Each hit gains ``weight`` times the best fused score of the hits written just before
    and after it (row ids one apart), then the ranking is sorted again."""
    score = {f.row: f.score for f in fused}
    lifted = [
        Fused(
            f.row,
            f.score + weight * max(score.get(f.row - 1, 0.0), score.get(f.row + 1, 0.0)),
            f.channels,
        )
        for f in fused
    ]
    return sorted(lifted, key=lambda f: (-f.score, f.row))
