"""Helpers shared by the benchmarks: seeded data sets, exact ground truth, measurement.

Nothing here imports a vector database, so a benchmark can run each engine in
its own process and measure that process alone.
"""

from __future__ import annotations

import os
import platform
import random
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where benchmarks cache inputs and write outputs (gitignored)."""

err = Console(stderr=True)
"""Progress and log lines go to stderr; stdout is kept for the result tables."""


def progress() -> Progress:
    """A rich progress bar on stderr, with count, elapsed and remaining time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    return info


# --- data ---------------------------------------------------------------------------------


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def clustered_vectors(
    n: int, n_queries: int, dim: int = 384, clusters: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, queries, data cluster labels): unit vectors around ``clusters`` gaussian centres.

    Clusters differ in size (Dirichlet weights) and spread, as topics in real
    corpora do; the queries are fresh draws from the same mixture, so none is in
    the data.
    """
    rng = np.random.default_rng(seed)
    centres = normalize_rows(rng.standard_normal((clusters, dim)))
    weights = rng.dirichlet(np.full(clusters, 2.0))
    spread = rng.uniform(0.6, 1.2, clusters).astype(np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.choice(clusters, size=count, p=weights)
        noise = rng.standard_normal((count, dim), dtype=np.float32)
        noise *= (spread[labels] / np.sqrt(dim))[:, None]
        return normalize_rows(centres[labels] + noise), labels.astype(np.int64)

    data, labels = draw(n)
    queries, _ = draw(n_queries)
    return data, queries, labels


# fmt: off
_SUBJECTS = [
    "the validator", "a small miner", "my grandmother", "the committee", "an old lighthouse keeper",
    "the neural network", "every student", "the quiet librarian", "a hungry fox", "the city council",
    "our startup", "the orchestra", "a tired nurse", "the satellite", "the research team",
    "a retired astronaut", "the night-shift baker", "the school principal", "a curious toddler",
    "the mayor of the village", "a marine biologist", "the chess club", "an anxious investor",
    "the football coach", "a street musician", "the hospital board", "a freelance translator",
    "the museum curator", "an amateur astronomer", "the train conductor",
]
_VERBS = [
    "stores", "forgets", "explains", "repairs", "paints", "measures", "questions", "celebrates",
    "ignores", "translates", "simulates", "protects", "sells", "compresses", "predicts",
    "photographs", "memorises", "rebuilds", "audits", "describes", "borrows", "hides", "cooks",
    "debugs", "teaches",
]
_OBJECTS = [
    "the embeddings", "a broken bicycle", "the tax report", "ancient poems", "the weather forecast",
    "a chocolate cake", "the stock market", "its own memory", "the football match", "quantum states",
    "a lost passport", "the harbour lights", "the migration of birds", "a database index",
    "the election results", "a vintage typewriter", "the coral reef", "a medieval manuscript",
    "the subway map", "a jazz record", "the vaccine trial", "a mountain trail", "the bread recipe",
    "the solar panels", "a children's book", "the shipping schedule", "the river flood",
    "a stolen painting",
]
_TAILS = [
    "", "before sunrise", "without telling anyone", "for the third time this week", "in Lisbon",
    "with surprising accuracy", "because the deadline moved", "using only a pencil",
    "while it rained", "after the power cut", "near the old bridge", "at 3 a.m.", "in Nairobi",
    "during the winter holidays", "for a documentary", "on a crowded train", "in under an hour",
    "to impress the neighbours", "despite the noise", "with help from a stranger",
]
_TEMPLATES = [
    "{s} {v} {o} {t}.", "Yesterday {s} {v} {o} {t}.", "Why {s} {v} {o} {t} is unclear.",
    "Nobody expected that {s} {v} {o} {t}!", "Reportedly, {s} {v} {o} {t}.",
    "{s} {v} {o} {t}, again.", "Does it matter that {s} {v} {o} {t}?",
    "According to the newsletter, {s} {v} {o} {t}.",
]
# fmt: on


def make_sentences(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` distinct sentences (templates x subjects x verbs x objects x tails) and topic labels.

    The topic of a sentence is the index of its object, so records about the
    same thing share a ``cluster`` label. About 3.4 M combinations exist.
    """
    combos = len(_TEMPLATES) * len(_SUBJECTS) * len(_VERBS) * len(_OBJECTS) * len(_TAILS)
    if n > combos // 2:
        raise ValueError(f"at most {combos // 2} distinct sentences can be drawn, asked for {n}")
    rng = random.Random(seed)
    out: list[str] = []
    topics: list[int] = []
    seen: set[str] = set()
    while len(out) < n:
        o = rng.randrange(len(_OBJECTS))
        s = rng.choice(_TEMPLATES).format(
            s=rng.choice(_SUBJECTS), v=rng.choice(_VERBS), o=_OBJECTS[o], t=rng.choice(_TAILS)
        )
        s = " ".join(s.split()).replace(" .", ".").replace(" ,", ",").replace(" ?", "?")
        s = s.replace(" !", "!")
        s = s[0].upper() + s[1:]
        if s not in seen:
            seen.add(s)
            out.append(s)
            topics.append(o)
    return out, np.asarray(topics, dtype=np.int64)


def exact_top_k(
    data: np.ndarray,
    queries: np.ndarray,
    k: int,
    subset: np.ndarray | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """Indices (into ``data``) of each query's ``k`` best rows by inner product, best first.

    With ``subset`` (sorted row indices) only those rows compete: the filtered truth.
    """
    pool = data if subset is None else data[subset]
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ pool.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out[start : start + chunk] = top if subset is None else subset[top]
    return out


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """Mean share of each query's true top-k that was returned."""
    k = truth.shape[1]
    hits = sum(len(set(f[:k]) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


# --- measurement ----------------------------------------------------------------------------


def time_queries(
    fn: Callable[[np.ndarray], list[int]], queries: np.ndarray, warmup: int = 0
) -> tuple[np.ndarray, list[list[int]]]:
    """Run ``fn`` on each query in turn (after ``warmup`` untimed ones); (seconds each, results)."""
    import time

    for q in queries[:warmup]:
        fn(q)
    lat = np.empty(len(queries), dtype=np.float64)
    found: list[list[int]] = []
    clock = time.perf_counter
    for i, q in enumerate(queries):
        t0 = clock()
        ids = fn(q)
        lat[i] = clock() - t0
        found.append(ids)
    return lat, found


def latency_summary(lat: np.ndarray) -> dict[str, float]:
    """QPS of back-to-back queries and p50/p99 latency in milliseconds."""
    return {
        "qps": float(len(lat) / lat.sum()),
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "mean_ms": float(lat.mean() * 1e3),
    }


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (or of ``path`` itself when it is a file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_rss_bytes() -> int:
    """This process's peak resident set size since it started (or exec'd).

    On Linux this is ``VmHWM``: ``ru_maxrss`` survives ``exec``, so a child
    spawned by a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_bytes() -> int:
    """This process's current resident set size (psutil, else the peak as an upper bound)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return peak_rss_bytes()
