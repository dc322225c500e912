"""A writer process for the crash test: prints each CID once ``put`` has acknowledged it."""

from __future__ import annotations

import sys

import numpy as np

from engram.config import EMBEDDING_DIM, StoreConfig
from engram.store import Store


def main(path: str, seed: int) -> None:
    # Small batches and frequent checkpoints, so a kill lands in every phase.
    config = StoreConfig(index_batch_rows=300, checkpoint_interval_s=0.1)
    store = Store(path, config)
    rng = np.random.default_rng(seed)
    batch_no = 0
    while True:
        vecs = rng.standard_normal((100, EMBEDDING_DIM)).astype(np.float32)
        records = [
            store.record(v, {"seed": seed, "batch": batch_no, "i": i}, f"s{seed} b{batch_no} i{i}")
            for i, v in enumerate(vecs)
        ]
        cids = store.put(records)
        sys.stdout.write("".join(c + "\n" for c in cids))
        sys.stdout.flush()
        batch_no += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
