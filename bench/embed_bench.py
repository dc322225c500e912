"""Embedder throughput per backend and batch size, and how far each strays from torch.

Run: ``python bench/embed_bench.py [--n 2000] [--batch-sizes 32 64 128] [--json out.json]``

The sentences are generated (seeded, all distinct, 3 to ~60 words) so the run
needs no data set; the torch backend at batch size 64 is the reference that
every row's deviation (max of 1 - cosine over all sentences) is measured against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import engram  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engram.embed import BACKENDS, DEFAULT_BACKEND, MiniLMEmbedder
from engram.errors import EmbedderUnavailableError

# fmt: off
_SUBJECTS = [
    "the validator", "a small miner", "my grandmother", "the committee", "an old lighthouse keeper",
    "the neural network", "every student", "the quiet librarian", "a hungry fox", "the city council",
    "our startup", "the orchestra", "a tired nurse", "the satellite", "this recipe",
]
_VERBS = [
    "stores", "forgets", "explains", "repairs", "paints", "measures", "questions", "celebrates",
    "ignores", "translates", "simulates", "protects", "sells", "compresses", "predicts",
]
_OBJECTS = [
    "the embeddings", "a broken bicycle", "the tax report", "ancient poems", "the weather",
    "a chocolate cake", "the stock market", "its own memory", "the football match", "quantum states",
    "a lost passport", "the harbour lights", "the migration of birds", "a database index",
]
_TAILS = [
    "before sunrise", "without telling anyone", "for the third time this week", "in Lisbon",
    "with surprising accuracy", "because the deadline moved", "using only a pencil",
    "while it rained", "after the power cut", "near the old bridge", "at 3 a.m.",
]
# fmt: on
_FILLER_TEXT = (
    "and then it considered whether the result was worth the effort given the cost of "
    "electricity the opinions of neighbours and the long history of similar experiments"
)


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """Distinct, varied sentences: short ones, long ones, numbers, punctuation."""
    rng = random.Random(seed)
    filler = _FILLER_TEXT.split()
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        if rng.random() < 0.7:
            s += " " + rng.choice(_TAILS)
        if rng.random() < 0.35:
            s += " " + " ".join(filler[: rng.randint(3, len(filler))])
        if rng.random() < 0.5:
            s += f" (case {rng.randint(0, 10**6)})"
        s = s[0].upper() + s[1:] + rng.choice([".", "!", "?", "..."])
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _time_encode(
    emb: MiniLMEmbedder, texts: list[str], batch_size: int
) -> tuple[float, float, np.ndarray]:
    t0, c0 = time.perf_counter(), time.process_time()
    vecs = emb.encode(texts, batch_size=batch_size)
    return time.perf_counter() - t0, time.process_time() - c0, vecs


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64, so float32 rounding of the norms doesn't pose as disagreement."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2000, help="number of distinct sentences")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument(
        "--repeat", type=int, default=3, help="rounds over all cells; each cell's fastest counts"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    texts = make_sentences(args.n)
    load_before = os.getloadavg()
    embedders: dict[str, MiniLMEmbedder] = {}
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(["torch", *args.backends]):
        try:
            t0 = time.perf_counter()
            embedders[name] = MiniLMEmbedder(name)
            print(f"loaded {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        except EmbedderUnavailableError as exc:
            skipped[name] = str(exc)
            print(f"skipping {name}: {exc}", file=sys.stderr)
    if "torch" not in embedders:
        print("the torch reference is unavailable; nothing to compare against", file=sys.stderr)
        return 1
    for emb in embedders.values():  # warm-up: first calls allocate and JIT-plan
        emb.encode(texts[:64], batch_size=32)

    reference = embedders["torch"].encode(texts, batch_size=64)
    cells = [(name, bs) for name in args.backends if name in embedders for bs in args.batch_sizes]
    best: dict[tuple[str, int], tuple[float, float]] = {}
    deviation: dict[tuple[str, int], tuple[float, float]] = {}
    # Rounds interleave the cells so a burst of load elsewhere on the machine
    # hits every cell alike instead of sinking one of them.
    for _ in range(args.repeat):
        for cell in cells:
            seconds, cpu_s, vecs = _time_encode(embedders[cell[0]], texts, cell[1])
            best[cell] = min(best.get(cell, (float("inf"), 0.0)), (seconds, cpu_s))
            cos = _cosine_rows(vecs, reference)
            deviation[cell] = (float(np.max(1.0 - cos)), float(np.max(np.abs(vecs - reference))))
    rows: list[dict[str, Any]] = [
        {
            "backend": name,
            "batch_size": bs,
            "sentences_per_s": round(len(texts) / best[name, bs][0], 1),
            "seconds": round(best[name, bs][0], 3),
            "cpu_seconds": round(best[name, bs][1], 3),
            "max_cosine_deviation_vs_torch": deviation[name, bs][0],
            "max_abs_diff_vs_torch": deviation[name, bs][1],
        }
        for name, bs in cells
    ]

    header = (
        f"{'backend':<8} {'batch':>5} {'sent/s':>9} {'sent/cpu-s':>10} {'max 1-cos vs torch':>19}"
    )
    load_after = os.getloadavg()
    print(
        f"{len(texts)} sentences, default backend: {DEFAULT_BACKEND}, "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['backend']:<8} {r['batch_size']:>5} {r['sentences_per_s']:>9.1f} "
            f"{len(texts) / r['cpu_seconds']:>10.1f} {r['max_cosine_deviation_vs_torch']:>19.2e}"
        )
    if args.json:
        import torch

        report = {
            "n": len(texts),
            "reference": "torch, batch_size=64",
            "default_backend": DEFAULT_BACKEND,
            "skipped": skipped,
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "loadavg_1min_before": load_before[0],
                "loadavg_1min_after": load_after[0],
            },
            "results": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
