"""What the CLI does with a home: reads never invent a store, and the model is exported once.

Real stores on disk, the real embedding model, and real ``engram`` processes
where the model cache is what is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engram.cli import app
from engram.config import model_cache_dir
from engram.embed import get_embedder
from engram.store import Store

pytestmark = pytest.mark.slow

A_CID = "v1::" + "0" * 64
READS = [
    ["query", "anything"],
    ["search", "anything"],
    ["get", A_CID],
    ["status"],
    ["memory", "search", "anything"],
    ["memory", "context", "anything", "--max-tokens", "100"],
    ["memory", "get", A_CID],
    ["memory", "versions", A_CID],
    ["memory", "list"],
    ["memory", "links", A_CID],
]


@pytest.fixture(autouse=True)
def _no_node_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGRAM_URL", raising=False)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200"})


@pytest.mark.parametrize("args", READS, ids=lambda a: " ".join(a[:2]))
def test_a_read_on_a_home_without_a_store_says_so_and_creates_nothing(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    home = tmp_path / "typo"
    result = runner.invoke(app, [*args, "--home", str(home)])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: store not found: {home} holds no Engram store")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not home.exists()


def test_a_read_under_an_engram_home_without_a_store_says_so(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGRAM_HOME", str(tmp_path / "unset"))
    result = runner.invoke(app, ["query", "anything", "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "ENGRAM_HOME" in result.stderr and not (tmp_path / "unset").exists()


def test_a_write_still_creates_the_store_and_reads_then_work(
    runner: CliRunner, tmp_path: Path
) -> None:
    home, lines = tmp_path / "new", tmp_path / "vectors.jsonl"
    lines.write_text(json.dumps({"embedding": [1.0] + [0.0] * 383}) + "\n")
    written = runner.invoke(app, ["ingest", "--file", str(lines), "--home", str(home), "--json"])
    assert written.exit_code == 0, written.output
    assert Store.exists(home)
    status = runner.invoke(app, ["status", "--home", str(home), "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["records"] == 1


def test_model_cache_dir_is_per_user_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGRAM_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/someone")
    assert model_cache_dir() == Path("/var/cache/someone/engram")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert model_cache_dir() == Path.home() / ".cache" / "engram"
    monkeypatch.setenv("ENGRAM_MODEL_CACHE", "~/models")
    assert model_cache_dir() == Path.home() / "models"


def _snapshot(directory: Path) -> dict[str, float]:
    """Every entry under ``directory`` (itself included) with its mtime: an export changes it."""
    entries = {".": directory.stat().st_mtime_ns}
    entries.update(
        {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")}
    )
    return entries


def test_two_homes_share_one_model_export(tmp_path: Path) -> None:
    """The second (and first) home embed with the machine's cached ONNX graph; neither exports.

    The cache is a copy of this machine's, so nothing else touches it while it is measured.
    """
    get_embedder().encode(["warm up"])  # makes sure this machine's cache holds the export
    cache = tmp_path / "cache"
    shutil.copytree(model_cache_dir(), cache, ignore=shutil.ignore_patterns(".tmp-*", ".export*"))
    assert list(cache.glob("*/model.onnx")), "the default embedder did not use the ONNX cache"
    before = _snapshot(cache)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
    env.update(ENGRAM_MODEL_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    took = []
    for name in ("first", "second"):
        home = tmp_path / name
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "engram", "ingest", f"a note in the {name} home"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "ENGRAM_HOME": str(home)},
        )
        took.append(time.monotonic() - started)
        assert done.returncode == 0, done.stderr
        assert Store.exists(home) and not (home / "models").exists()
        assert _snapshot(cache) == before, f"the {name} home exported the model again"
    print(f"first command in each of two new homes: {took[0]:.1f}s, {took[1]:.1f}s")
