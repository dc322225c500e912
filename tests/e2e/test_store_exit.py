"""A program that ends while the store's indexer is busy: a clean exit, and a SIGKILL.

Real processes on real store directories. The exit case makes the interpreter's
shutdown long (a large heap to free), as a big program's is: that is when a
background thread inside FAISS used to abort the process with
"terminate called without an active exception".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engram.config import StoreConfig
from engram.store import Store
from tests.conftest import unit_vectors

ROOT = Path(__file__).resolve().parents[2]
ROWS = 20_000

_EXIT_WHILE_INDEXING = """
import sys
import numpy as np
from engram.store import Store

heap = [[i] for i in range(10_000_000)]  # a big program's heap: a long shutdown frees it
store = Store(sys.argv[1])  # every row pending, as after a crash
store.search(np.ones(384, np.float32), top_k=3)  # loads the namespace: the indexer starts
print("pending", store.stats()["default"]["pending"], flush=True)
"""

_KILLED_AFTER_A_CHECKPOINT = """
import sys, time
from engram.config import StoreConfig
from engram.store import Store
from tests.conftest import unit_vectors

config = StoreConfig(index_batch_rows=500, checkpoint_rows=2_000, index_step_s=0.05)
store = Store(sys.argv[1], config)
store.put([store.record(v) for v in unit_vectors(int(sys.argv[2]), seed=9)])
while (checkpoint := store.db.checkpoint("default")) is None or checkpoint.upto < 2_000:
    time.sleep(0.02)
print(checkpoint.upto, flush=True)
time.sleep(60)
"""


def _run(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


@pytest.fixture
def unindexed(tmp_path: Path) -> Path:
    """A store of 20k rows that were never indexed."""
    path = tmp_path / "unindexed"
    with Store(path, StoreConfig(index_batch_rows=10**9)) as store:
        for start in range(0, ROWS, 5_000):
            vecs = unit_vectors(5_000, seed=start)
            store.put([store.record(v) for v in vecs])
    return path


def test_store_exit_while_indexing_is_clean(unindexed: Path) -> None:
    """Before the fix this aborted (exit status -6) on every run."""
    done = _run(_EXIT_WHILE_INDEXING, str(unindexed))
    assert done.returncode == 0, done.stderr[-2_000:]
    assert "terminate called" not in done.stderr
    assert done.stdout.startswith("pending")
    with Store(unindexed, StoreConfig(index_batch_rows=10**9)) as store:
        assert store.count() == ROWS


def test_store_reopen_after_sigkill_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    rows = 10_000
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_AFTER_A_CHECKPOINT, str(tmp_path), str(rows)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip().isdigit(), proc.stderr.read() if proc.stderr else ""
            checkpointed = int(line)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
    started = time.monotonic()
    with Store(tmp_path, StoreConfig(index_batch_rows=10**9)) as store:  # no more indexing
        vecs = unit_vectors(rows, seed=9)
        assert store.search(vecs[rows - 1], top_k=1)[0].score == pytest.approx(1.0, abs=1e-5)
        stats = store.stats()["default"]
        assert store.count() == rows
        assert stats["indexed"] >= checkpointed > 0
        assert stats["pending"] == rows - stats["indexed"] < rows
        hits = store.search(vecs[17], top_k=1)  # a row from the checkpointed index
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert np.isfinite(hits[0].score)
    assert time.monotonic() - started < 30
