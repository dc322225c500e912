"""``engram memory`` against a real embedded store: the agent-memory API from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from engram.cli import app
from engram.embed import get_embedder

pytestmark = pytest.mark.slow

FULL_CID = re.compile(r"^v1::[0-9a-f]{64}$")
UNKNOWN = "v1::" + "0" * 64


def short(cid: str) -> str:
    return cid[:16] + "…"  # as the tables show a CID


@pytest.fixture(scope="module", autouse=True)
def _warm_embedder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Load the real model once for the module, with its cache in the session's ENGRAM_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENGRAM_HOME", str(tmp_path_factory.getbasetemp() / "engram-home"))
        get_embedder().encode(["warm up"])


@pytest.fixture(autouse=True)
def _no_node_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGRAM_URL", raising=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded store for the module; each test writes memories of its own topic."""
    return tmp_path_factory.mktemp("memory") / "store"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200"})


def mem(runner: CliRunner, home: Path, *args: str, code: int = 0) -> Result:
    """``engram memory ARGS --home HOME``, which must exit ``code`` without a traceback."""
    result = runner.invoke(app, ["memory", *args, "--home", str(home)])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def mem_json(runner: CliRunner, home: Path, *args: str) -> Any:
    return json.loads(mem(runner, home, *args, "--json").stdout)


def cids(memories: list[dict[str, Any]]) -> list[str]:
    return [m["cid"] for m in memories]


def one_error_line(result: Result) -> str:
    """The one red line an error prints: on stderr, nothing on stdout."""
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_cli_memory_help_lists_every_command(runner: CliRunner) -> None:
    out = runner.invoke(app, ["memory", "--help"]).stdout
    for command in (
        "store",
        "search",
        "context",
        "update",
        "versions",
        "get",
        "forget",
        "archive",
        "unarchive",
        "delete",
        "list",
        "links",
    ):
        assert re.search(rf"^\W*{command}\s+\S", out, re.MULTILINE), command


def test_cli_memory_lifecycle(runner: CliRunner, home: Path) -> None:
    def run(*args: str, code: int = 0) -> Result:
        return mem(runner, home, *args, code=code)

    def run_json(*args: str) -> Any:
        return mem_json(runner, home, *args)

    # Store, then the same content again: a duplicate, nothing stored.
    first = run(
        "store",
        "Alice prefers flat whites in the morning",
        "-c",
        "preference",
        "-t",
        "alice",
        "--tag",
        "coffee",
        "--source",
        "chat",
    )
    old = first.stdout.strip()
    assert FULL_CID.match(old) and first.stderr == ""
    again = run("store", "Alice prefers flat whites in the morning")
    assert again.stdout.strip() == old
    assert again.stderr.strip() == f"duplicate of {old}, nothing stored"
    dup = run_json("store", "Alice prefers flat whites in the morning")
    assert dup["duplicate_of"] == old and dup["tags"] == ["alice", "coffee"]

    # Search finds it: a table with its short CID, and JSON with its full one.
    table = run("search", "what coffee does Alice drink?", "-k", "3").stdout
    row = next(line for line in table.splitlines() if short(old) in line)
    assert re.search(r"\b\d\.\d{3}\b", row) and "active" in row and "preference" in row
    assert "Alice prefers flat whites" in row
    found = run_json("search", "what coffee does Alice drink?", "--limit", "3")
    assert found[0]["cid"] == old and found[0]["score"] is not None

    # Update: a new version, the old one superseded; versions oldest to newest.
    new = run("update", old, "Alice now drinks oat cortados", "-t", "alice").stdout.strip()
    assert FULL_CID.match(new) and new != old
    versions = run_json("versions", new)
    assert cids(versions) == [old, new]
    assert [v["state"] for v in versions] == ["superseded", "active"]
    assert versions[1]["supersedes"] == old and versions[1]["category"] == "preference"
    assert versions[1]["tags"] == ["alice"] and versions[1]["source"] == "chat"
    table = run("versions", old).stdout
    assert table.index(short(old)) < table.index(short(new))
    assert "superseded" in table
    assert {"cid": old, "type": "updates"} in run_json("links", new)
    assert {"cid": new, "type": "updated_by"} in run_json("links", old)
    assert old not in cids(run_json("search", "what coffee does Alice drink?"))

    # Archive: out of search, listed as archived; unarchive brings it back.
    assert run("archive", new).stdout.strip() == f"{new} is now archived"
    assert new not in cids(run_json("search", "what coffee does Alice drink?"))
    assert new not in cids(run_json("list"))
    assert new in cids(run_json("list", "--state", "archived"))
    assert "archived" in run("list", "--state", "archived").stdout
    assert run_json("unarchive", new)["state"] == "active"
    assert new in cids(run_json("list", "--tag", "alice"))

    # Forget: gone from every list but its own state's; its record stays until delete.
    assert run("forget", new).stdout.strip() == f"{new} is now forgotten"
    for state in ("active", "archived"):
        assert new not in cids(run_json("list", "--state", state))
    assert new not in cids(run_json("search", "oat cortados"))
    assert new in cids(run_json("list", "--state", "forgotten"))
    assert run_json("get", new)["state"] == "forgotten"
    assert "forgotten" in run("get", new).stdout

    # Delete erases the record; the memory is then unknown.
    assert run_json("delete", new) == {"cid": new, "namespace": "default", "deleted": True}
    assert "no memory" in one_error_line(run("get", new, code=1))


def test_cli_memory_context(runner: CliRunner, home: Path) -> None:
    stored = {
        mem(runner, home, "store", text, "-c", "drink").stdout.strip()
        for text in ("Bob drinks jasmine tea every afternoon", "Bob dislikes coffee")
    }
    result = mem(runner, home, "context", "what does Bob drink?", "--max-tokens", "30")
    block = result.stdout.strip()
    assert block.startswith("- [") and "Bob" in block and "(drink)" in block
    assert re.search(r"^\d+ memor(y|ies), \d+ of 30 tokens$", result.stderr, re.MULTILINE)

    packed = mem_json(runner, home, "context", "what does Bob drink?", "--max-tokens", "30")
    assert set(packed) == {"context", "cids", "tokens", "max_tokens"}
    assert 0 < packed["tokens"] <= 30 and packed["max_tokens"] == 30
    assert packed["cids"] and set(packed["cids"]) <= stored
    assert all(cid in result.stderr for cid in packed["cids"])
    assert packed["context"] == block


def test_cli_memory_list_filters_namespace_and_ttl(runner: CliRunner, home: Path) -> None:
    task = mem(
        runner,
        home,
        "store",
        "Renew the TLS certificate before Friday",
        "-c",
        "task",
        "-t",
        "ops",
        "-n",
        "agent",
    ).stdout.strip()
    assert cids(mem_json(runner, home, "list", "-n", "agent", "-t", "ops", "-t", "x")) == [task]
    assert task not in cids(mem_json(runner, home, "list", "--state", "all"))  # default namespace
    assert mem_json(runner, home, "list", "-n", "agent", "--category", "other") == []
    assert "no memories" in mem(runner, home, "list", "-n", "agent", "-c", "other").stdout
    assert mem_json(runner, home, "list", "-n", "agent", "--offset", "1") == []
    table = mem(runner, home, "list", "-n", "agent").stdout
    assert short(task) in table and "ops" in table and "Renew the TLS" in table

    brief = mem(
        runner, home, "store", "The build server reboots at noon", "--ttl", "0.001", "-n", "agent"
    ).stdout.strip()
    assert brief in cids(mem_json(runner, home, "list", "-n", "agent", "--state", "expired"))
    assert brief not in cids(mem_json(runner, home, "search", "build server", "-n", "agent"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["store", ""], "memory content must be non-empty text", id="empty"),
        pytest.param(
            ["store", "x", "--importance", "2"], "importance must be a number in [0, 1]", id="imp"
        ),
        pytest.param(["store", "x", "--ttl", "-5"], "ttl_s must be a positive number", id="ttl"),
        pytest.param(
            ["context", "x", "--max-tokens", "0"],
            "max_tokens must be a positive integer",
            id="max-tokens-0",
        ),
        pytest.param(["get", UNKNOWN], f"no memory {UNKNOWN}", id="get-unknown"),
        pytest.param(["versions", UNKNOWN], f"no memory {UNKNOWN}", id="versions-unknown"),
        pytest.param(["update", UNKNOWN, "new"], f"no memory {UNKNOWN}", id="update-unknown"),
        pytest.param(["forget", UNKNOWN], f"no memory {UNKNOWN}", id="forget-unknown"),
        pytest.param(["delete", UNKNOWN], f"no memory {UNKNOWN}", id="delete-unknown"),
        pytest.param(["links", "not-a-cid"], "'not-a-cid' is not a CID", id="bad-cid"),
        pytest.param(
            ["list", "--state", "bogus"], "state must be all or one of active", id="bad-state"
        ),
    ],
)
def test_cli_memory_bad_input_is_one_line(
    runner: CliRunner, home: Path, args: list[str], message: str
) -> None:
    line = one_error_line(mem(runner, home, *args, code=1))
    assert line.startswith(f"error: {message}"), line


def test_cli_memory_bad_filter_is_a_usage_error(runner: CliRunner, home: Path) -> None:
    line = one_error_line(mem(runner, home, "search", "x", "--filter", "[1]", "--json", code=2))
    assert "--filter must be a JSON object" in line


def test_cli_memory_update_of_a_forgotten_or_superseded_memory(
    runner: CliRunner, home: Path
) -> None:
    gone = mem(runner, home, "store", "Carol's locker code is 4312").stdout.strip()
    mem(runner, home, "forget", gone)
    line = one_error_line(mem(runner, home, "update", gone, "Carol's code is 9999", code=1))
    assert line == f"error: memory {gone} is forgotten: store the content as a new memory"
    assert "cannot be archived" in one_error_line(mem(runner, home, "archive", gone, code=1))

    old = mem(runner, home, "store", "Dave parks on level three").stdout.strip()
    new = mem(runner, home, "update", old, "Dave parks on level five").stdout.strip()
    line = one_error_line(mem(runner, home, "update", old, "Dave parks outside", code=1))
    assert line == f"error: memory {old} was already updated: update its newest version {new}"
