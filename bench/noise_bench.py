"""What noise on stored embeddings costs in recall, and how much of the text it hides.

Run: ``python bench/noise_bench.py [--n 4000] [--queries 400] [--sigmas 0 0.05 ...]
[--repeats 3] [--json PATH]``

The corpus is real prose that needs no download: the first paragraphs of the
docstrings in this Python's standard library (read with ``ast``, nothing is
imported), 40-300 characters, distinct, shuffled with a fixed seed. ``--n`` of
them are stored and ``--queries`` others are the queries; all are embedded with
the canonical all-MiniLM-L6-v2.

For each sigma every stored vector goes through
:func:`engram.security.sealing.add_noise` (seeded); the queries stay clean and
search is exact (brute force), so the numbers measure the noise, not HNSW:

* recall@10: share of each query's true top 10 (exact, over the clean vectors)
  that its top 10 over the noisy vectors finds;
* cosine: mean cosine between a noisy vector and its clean one, next to the
  expected ``1 / sqrt(1 + sigma**2)``;
* re-id@1 / re-id@10: share of noisy vectors whose own text is the nearest (is
  among the 10 nearest) of all corpus texts. This models an attacker who holds
  the model and a list of candidate texts that contains the true one; chance is
  1/n (10/n). It is a rough indicator, not a privacy bound.

Each sigma is averaged over ``--repeats`` noise draws.
"""

from __future__ import annotations

import argparse
import ast
import math
import random
import sys
import sysconfig
import time
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
    RESULTS_DIR,
    err,
    exact_top_k,
    machine_info,
    progress,
    recall_at_k,
    write_json,
)

from engram.embed import get_embedder
from engram.security.sealing import add_noise

K = 10
DEFAULT_SIGMAS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages"}
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def docstring_paragraphs(min_chars: int = 40, max_chars: int = 300) -> list[str]:
    """Distinct first paragraphs of the standard library's docstrings, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):  # templates and deliberately broken files
            continue
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, _DOC_NODES) else None
            if doc:
                para = " ".join(doc.split("\n\n")[0].split())
                if min_chars <= len(para) <= max_chars:
                    found.add(para)
    return sorted(found)


def embed(texts: list[str], batch: int = 256) -> tuple[np.ndarray, float]:
    """(unit vectors, seconds) of ``texts`` with the canonical embedder."""
    embedder = get_embedder()
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("embed", total=len(texts))
        for start in range(0, len(texts), batch):
            chunk = texts[start : start + batch]
            out[start : start + len(chunk)] = embedder.encode(chunk)
            bar.advance(task, len(chunk))
    return out, time.perf_counter() - t0


def measure(
    clean: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    """One noise draw at ``sigma``: recall@10, mean cosine to the clean vectors, re-id rates."""
    noisy = np.stack([add_noise(v, sigma, rng) for v in clean])
    found = exact_top_k(noisy, queries, K)
    nearest = exact_top_k(clean, noisy, K)
    own = np.arange(len(clean))[:, None]
    return {
        "recall": recall_at_k(found.tolist(), truth),
        "cosine": float(np.mean(np.sum(noisy.astype(np.float64) * clean, axis=1))),
        "reid1": float(np.mean(nearest[:, 0] == own[:, 0])),
        "reid10": float(np.mean(np.any(nearest == own, axis=1))),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=4000, help="stored texts")
    ap.add_argument("--queries", type=int, default=400, help="query texts (not stored)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=DEFAULT_SIGMAS)
    ap.add_argument("--repeats", type=int, default=3, help="noise draws per sigma")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "noise_bench.json", help="write results here"
    )
    args = ap.parse_args(argv)
    started = time.perf_counter()

    paragraphs = docstring_paragraphs()
    if args.n + args.queries > len(paragraphs):
        err.print(
            f"only {len(paragraphs)} docstring paragraphs here; ask for fewer than "
            f"--n {args.n} + --queries {args.queries}"
        )
        return 1
    random.Random(args.seed).shuffle(paragraphs)
    stored_texts = paragraphs[: args.n]
    query_texts = paragraphs[args.n : args.n + args.queries]
    err.print(f"{len(paragraphs)} docstring paragraphs; loading the embedder ...")
    vectors, embed_s = embed(stored_texts + query_texts)
    clean, queries = vectors[: args.n], vectors[args.n :]
    truth = exact_top_k(clean, queries, K)

    rows: list[dict[str, Any]] = []
    with progress() as bar:
        task = bar.add_task("noise sweep", total=len(args.sigmas) * args.repeats)
        for i, sigma in enumerate(args.sigmas):
            draws = []
            for r in range(args.repeats):
                draws.append(
                    measure(clean, queries, truth, sigma, np.random.default_rng([args.seed, i, r]))
                )
                bar.advance(task)
            recalls = [d["recall"] for d in draws]
            rows.append(
                {
                    "sigma": sigma,
                    "recall_at_10": float(np.mean(recalls)),
                    "recall_at_10_std": float(np.std(recalls)),
                    "mean_cosine": float(np.mean([d["cosine"] for d in draws])),
                    "expected_cosine": 1 / math.sqrt(1 + sigma**2),
                    "reid_at_1": float(np.mean([d["reid1"] for d in draws])),
                    "reid_at_10": float(np.mean([d["reid10"] for d in draws])),
                }
            )

    table = Table()
    for name in ("sigma", "recall@10", "cos(noisy, clean)", "1/sqrt(1+s^2)", "re-id@1", "re-id@10"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            f"{r['sigma']:.2f}",
            f"{r['recall_at_10']:.3f}",
            f"{r['mean_cosine']:.3f}",
            f"{r['expected_cosine']:.3f}",
            f"{r['reid_at_1']:.3f}",
            f"{r['reid_at_10']:.3f}",
        )
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=120)
    console.print(
        f"noise on {args.n} stored docstring embeddings; {args.queries} clean queries; "
        f"exact search; mean of {args.repeats} draws per sigma"
    )
    console.print(table)
    console.print(f"re-id by chance: {1 / args.n:.4f} (@1), {K / args.n:.4f} (@10)")

    embedder = get_embedder()
    report = {
        "corpus": {
            "source": f"first docstring paragraphs of the Python {sys.version.split()[0]} stdlib",
            "paragraphs_available": len(paragraphs),
            "stored": args.n,
            "queries": args.queries,
            "mean_chars": round(float(np.mean([len(t) for t in stored_texts])), 1),
            "seed": args.seed,
        },
        "model": embedder.model_id,
        "embedder": repr(embedder),
        "search": "exact inner product (brute force)",
        "k": K,
        "repeats": args.repeats,
        "embed_seconds": round(embed_s, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "machine": machine_info(),
        "results": rows,
    }
    write_json(args.json, report)
    err.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
