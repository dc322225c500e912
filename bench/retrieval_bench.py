"""Retrieval quality of ``search`` on the LoCoMo development split, and its latency at 100k records.

Run: ``python bench/retrieval_bench.py [--data DIR] [--latency-n 100000] [--quick]
[--skip-latency] [--json out.json]``

Quality follows the data README's scoring exactly: one namespace per
conversation, every turn one record whose text is ``"<speaker>: <text>"`` (plus
``" [shares a photo: <blip_caption>]"``) with metadata ``dia_id``, ``session``,
``date`` and ``speaker``, ingested with the real embedding model through
``EngramClient.batch_ingest`` into an embedded store; every question of
categories 1-4 with evidence is asked with ``client.search(question, top_k=25)``
and scored on the first 5 / 10 / 25 results: recall@k = |evidence ∩ dia_ids| /
|evidence| and hit@k (at least one evidence turn found), averaged over questions.

Each configuration is one mode (vector / keyword / hybrid) with one search
setting: the fusion method, the channel weights, the candidate depth (the
``search_*`` fields of ``StoreConfig``) and whether the keyword query drops
English stop words. The text index stems words (SQLite's Porter tokenizer)
in every configuration. Settings apply at query time, so every configuration runs
over the same store. Nothing here knows anything about individual questions.

Latency: ``--latency-n`` synthetic records (generated sentences with clustered
random unit vectors, stored as text + embedding so no model runs at ingest) in
one namespace, indexed; then ``--latency-queries`` generated sentences are
searched per mode with the default settings (top_k=10), after a warm-up. The
times are end to end through the embedded client, so vector and hybrid include
embedding the query text (reported on its own as ``embed``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import engram  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    clustered_vectors,
    err,
    latency_summary,
    machine_info,
    make_sentences,
    progress,
    write_json,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo-dev"
KS = (5, 10, 25)
CATEGORIES = (1, 2, 3, 4)
clock = time.perf_counter


@dataclasses.dataclass(frozen=True)
class Setting:
    """One configuration: a mode, ``StoreConfig`` search overrides and the keyword-query rule."""

    name: str
    mode: str
    idea: str
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    stop_words: bool | None = None  # None: the library default

    def describe(self) -> str:
        parts = [f"{k.removeprefix('search_')}={v}" for k, v in self.config.items()]
        if self.stop_words is not None:
            parts.append(f"stop_words={'on' if self.stop_words else 'off'}")
        return ", ".join(parts) or "defaults"

    def query_options(self) -> dict[str, bool]:
        return {} if self.stop_words is None else {"stop_words": self.stop_words}


def settings() -> list[Setting]:
    """The configurations measured: the channels alone, the two fusions, then each idea."""
    out = [
        Setting("vector", "vector", "channel"),
        Setting("keyword (all words)", "keyword", "channel", stop_words=False),
        Setting("keyword (stop words dropped)", "keyword", "stop words", stop_words=True),
        Setting(
            "hybrid relative 0.5/0.5, all words",
            "hybrid",
            "fusion",
            {"search_fusion": "relative"},
            stop_words=False,
        ),
        Setting(
            "hybrid rrf 0.5/0.5, all words",
            "hybrid",
            "fusion",
            {"search_fusion": "rrf"},
            stop_words=False,
        ),
        Setting(
            "hybrid relative 0.5/0.5, stop words dropped",
            "hybrid",
            "stop words",
            {"search_fusion": "relative"},
            stop_words=True,
        ),
        Setting(
            "hybrid rrf 0.5/0.5, stop words dropped",
            "hybrid",
            "stop words",
            {"search_fusion": "rrf"},
            stop_words=True,
        ),
    ]
    for fusion in ("relative", "rrf"):
        for vw in (0.3, 0.4, 0.6, 0.7):
            out.append(
                Setting(
                    f"hybrid {fusion} {vw:.1f}/{1 - vw:.1f}, stop words dropped",
                    "hybrid",
                    "weights",
                    {
                        "search_fusion": fusion,
                        "search_vector_weight": vw,
                        "search_keyword_weight": round(1 - vw, 2),
                    },
                    stop_words=True,
                )
            )
    for depth in (25, 100, 200):
        out.append(
            Setting(
                f"hybrid relative 0.5/0.5, stop words dropped, {depth} candidates",
                "hybrid",
                "candidates",
                {"search_fusion": "relative", "search_candidates": depth},
                stop_words=True,
            )
        )
    for vw in (0.4, 0.5, 0.6):
        out.append(
            Setting(
                f"hybrid dbsf {vw:.1f}/{1 - vw:.1f}, stop words dropped",
                "hybrid",
                "dbsf",
                {
                    "search_fusion": "dbsf",
                    "search_vector_weight": vw,
                    "search_keyword_weight": round(1 - vw, 2),
                },
                stop_words=True,
            )
        )
    # Every idea above is measured without the neighbour lift, so each is seen alone.
    out = [
        dataclasses.replace(x, config={**x.config, "search_neighbour_weight": 0.0})
        if x.mode == "hybrid"
        else x
        for x in out
    ]
    for vw, nw in (
        (0.5, 0.1),
        (0.5, 0.2),
        (0.5, 0.3),
        (0.5, 0.4),
        (0.5, 0.5),
        (0.4, 0.2),
        (0.4, 0.3),
    ):
        out.append(
            Setting(
                f"hybrid relative {vw:.1f}/{1 - vw:.1f}, stop words dropped, neighbours {nw}",
                "hybrid",
                "neighbours",
                {
                    "search_fusion": "relative",
                    "search_vector_weight": vw,
                    "search_keyword_weight": round(1 - vw, 2),
                    "search_neighbour_weight": nw,
                },
                stop_words=True,
            )
        )
    out.append(Setting("hybrid (library defaults)", "hybrid", "default"))
    return out


# --- data ---------------------------------------------------------------------------------


def load_split(data: Path) -> list[dict[str, Any]]:
    """Each conversation: its namespace, turn items and scored questions."""
    convs = []
    for path in sorted(data.glob("*.json")):
        raw = json.loads(path.read_text())
        conv = raw.get("conversation", raw)
        items = []
        n = 1
        while f"session_{n}" in conv:
            date = conv.get(f"session_{n}_date_time", "")
            for turn in conv[f"session_{n}"]:
                text = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += f" [shares a photo: {turn['blip_caption']}]"
                meta = {
                    "dia_id": turn["dia_id"],
                    "session": n,
                    "date": date,
                    "speaker": turn["speaker"],
                }
                items.append({"text": text, "metadata": meta})
            n += 1
        questions = [
            {"question": q["question"], "evidence": list(q["evidence"]), "category": q["category"]}
            for q in raw["qa"]
            if q.get("category") in CATEGORIES and q.get("evidence")
        ]
        convs.append({"namespace": f"locomo-{path.stem}", "items": items, "questions": questions})
    return convs


# --- switching settings over one open store -----------------------------------------------


@contextmanager
def applied(client: Any, setting: Setting) -> Iterator[None]:
    """``setting`` in force on the embedded store behind ``client``, restored afterwards.

    The ``StoreConfig`` search fields are read at every query, so replacing the
    store's config is the same as opening it with that config. The stop-word
    rule is an argument of ``keyword_query``; the engine calls it with the
    default, so a non-default rule is put in its place for the duration.
    """
    import engram.store.engine as engine
    from engram.store import fusion

    store = client._transport.node.store
    before_config, before_query = store.config, engine.keyword_query
    store.config = dataclasses.replace(store.config, **setting.config)
    options = setting.query_options()
    if options:

        def query(text: str) -> str | None:
            return fusion.keyword_query(text, **options)

        engine.keyword_query = query
    try:
        yield
    finally:
        store.config, engine.keyword_query = before_config, before_query


# --- quality ------------------------------------------------------------------------------


def score(results: list[list[str]], questions: list[dict[str, Any]]) -> dict[str, float]:
    """Mean recall@k and hit@k over the questions (``results``: dia_ids best first)."""
    out: dict[str, float] = {}
    for k in KS:
        recalls, hits = [], []
        for found, q in zip(results, questions, strict=True):
            top = set(found[:k])
            ev = q["evidence"]
            got = sum(1 for e in ev if e in top)
            recalls.append(got / len(ev))
            hits.append(1.0 if got else 0.0)
        out[f"recall@{k}"] = float(np.mean(recalls))
        out[f"hit@{k}"] = float(np.mean(hits))
    return out


def run_quality(data: Path, work: Path, only: str | None = None) -> dict[str, Any]:
    from engram import EngramClient
    from engram.embed import get_embedder

    convs = load_split(data)
    n_items = sum(len(c["items"]) for c in convs)
    n_q = sum(len(c["questions"]) for c in convs)
    err.print(f"{len(convs)} conversations, {n_items} turns, {n_q} questions")
    embedder = get_embedder()
    client = EngramClient(path=work / "locomo", embedder=embedder)
    t0 = clock()
    for c in convs:
        res = client.batch_ingest(c["items"], namespace=c["namespace"])
        if res.failed:
            raise RuntimeError(f"{c['namespace']}: {res.failed[:3]}")
    ingest_s = clock() - t0
    client._transport.node.store.flush()

    questions = [(c["namespace"], q) for c in convs for q in c["questions"]]
    chosen = [s for s in settings() if only is None or only in s.name]
    rows = []
    with progress() as bar:
        task = bar.add_task("configurations", total=len(chosen))
        for setting in chosen:
            found: list[list[str]] = []
            lat = []
            with applied(client, setting):
                for ns, q in questions:
                    a = clock()
                    hits = client.search(q["question"], top_k=25, namespace=ns, mode=setting.mode)
                    lat.append(clock() - a)
                    found.append([h.metadata.get("dia_id") for h in hits])
            metrics = score(found, [q for _, q in questions])
            per_category = {
                str(cat): score(
                    [f for f, (_, q) in zip(found, questions, strict=True) if q["category"] == cat],
                    [q for _, q in questions if q["category"] == cat],
                )["recall@10"]
                for cat in CATEGORIES
            }
            rows.append(
                {
                    "name": setting.name,
                    "mode": setting.mode,
                    "idea": setting.idea,
                    "settings": setting.describe(),
                    **metrics,
                    "recall@10_by_category": per_category,
                    "mean_ms": float(np.mean(lat) * 1e3),
                }
            )
            bar.advance(task)
    client.close()
    return {
        "conversations": len(convs),
        "records": n_items,
        "questions": n_q,
        "ingest_seconds": ingest_s,
        "configurations": rows,
    }


# --- latency ------------------------------------------------------------------------------


def run_latency(n: int, n_queries: int, work: Path) -> dict[str, Any]:
    from engram import EngramClient
    from engram.embed import get_embedder

    embedder = get_embedder()
    texts, _ = make_sentences(n + n_queries, seed=7)
    queries = texts[n:]
    texts = texts[:n]
    vectors, _, _ = clustered_vectors(n, 1, seed=7)
    client = EngramClient(path=work / "synthetic", embedder=embedder)
    batch = 5_000
    t0 = clock()
    with progress() as bar:
        task = bar.add_task(f"ingest {n} synthetic records", total=n)
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            items = [
                {"embedding": vectors[i], "text": texts[i], "metadata": {"row": i}}
                for i in range(start, stop)
            ]
            res = client.batch_ingest(items)
            if res.failed:
                raise RuntimeError(f"synthetic ingest failed: {res.failed[:3]}")
            bar.advance(task, stop - start)
    client._transport.node.store.flush()
    ingest_s = clock() - t0

    def timed(fn: Callable[[str], Any]) -> dict[str, float]:
        for q in queries[:20]:
            fn(q)
        lat = np.empty(len(queries))
        for i, q in enumerate(queries):
            a = clock()
            fn(q)
            lat[i] = clock() - a
        return latency_summary(lat)

    out: dict[str, Any] = {"records": n, "queries": len(queries), "ingest_seconds": ingest_s}
    out["embed"] = timed(lambda q: embedder.encode([q]))
    for mode in ("vector", "keyword", "hybrid"):
        out[mode] = timed(lambda q, m=mode: client.search(q, top_k=10, mode=m))
    client.close()
    return out


# --- report -------------------------------------------------------------------------------


def print_report(report: dict[str, Any], console: Console) -> None:
    q = report.get("quality")
    if q:
        table = Table(
            title=f"search on LoCoMo dev ({q['questions']} questions, {q['records']} turns, "
            f"{q['conversations']} namespaces)"
        )
        for col in ("configuration", "idea", "R@5", "R@10", "R@25", "hit@5", "hit@10", "hit@25"):
            table.add_column(col, justify="left" if col in ("configuration", "idea") else "right")
        for r in q["configurations"]:
            table.add_row(
                r["name"],
                r["idea"],
                *(f"{r[f'recall@{k}']:.3f}" for k in KS),
                *(f"{r[f'hit@{k}']:.3f}" for k in KS),
            )
        console.print(table)
    lat = report.get("latency")
    if lat:
        table = Table(
            title=f"search latency, {lat['records']} records, {lat['queries']} queries, top_k=10"
        )
        for col in ("mode", "p50 ms", "p99 ms", "QPS"):
            table.add_column(col, justify="left" if col == "mode" else "right")
        for mode in ("vector", "keyword", "hybrid", "embed"):
            s = lat[mode]
            table.add_row(
                mode if mode != "embed" else "(query embedding alone)",
                f"{s['p50_ms']:.2f}",
                f"{s['p99_ms']:.2f}",
                f"{s['qps']:.0f}",
            )
        console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the LoCoMo dev split")
    ap.add_argument("--latency-n", type=int, default=100_000, help="records in the latency store")
    ap.add_argument("--latency-queries", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="latency on 20k records, 200 queries")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--only", help="only the configurations whose name contains this")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args()
    if args.quick:
        args.latency_n, args.latency_queries = 20_000, 200

    from engram.config import StoreConfig

    defaults = StoreConfig()
    report: dict[str, Any] = {
        "benchmark": "retrieval",
        "machine": machine_info(),
        "defaults": {
            f.name: getattr(defaults, f.name)
            for f in dataclasses.fields(defaults)
            if f.name.startswith("search_")
        },
    }
    work = Path(tempfile.mkdtemp(prefix="engram-retrieval-"))
    try:
        if not args.skip_quality:
            report["quality"] = run_quality(args.data, work, args.only)
        if not args.skip_latency:
            report["latency"] = run_latency(args.latency_n, args.latency_queries, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_report(report, Console())
    if args.json:
        write_json(args.json, report)
        err.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
