"""The ``engram`` CLI against a real embedded store (and, when the SDK speaks HTTP, a real miner)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engram import EngramClient
from engram.chain.keys import new_wallet
from engram.cli import app
from engram.embed import get_embedder

pytestmark = pytest.mark.slow

DOCS = [
    ("The cat sat on the warm mat by the fire", {"lang": "en", "topic": "pets"}),
    ("Stock markets fell sharply after the rate decision", {"lang": "en", "topic": "finance"}),
    ("Le chat dort sur le canapé", {"lang": "fr", "topic": "pets"}),
]
SHORT_CID = re.compile(r"v1::[0-9a-f]{12}…")
FULL_CID = re.compile(r"^v1::[0-9a-f]{64}$")


@pytest.fixture(scope="module", autouse=True)
def _warm_embedder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Load the real model once for the module (its ONNX export is cached per machine)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENGRAM_HOME", str(tmp_path_factory.getbasetemp() / "engram-home"))
        get_embedder().encode(["warm up"])


@pytest.fixture(autouse=True)
def _no_node_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGRAM_URL", raising=False)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def cids(home: Path) -> list[str]:
    """The three DOCS stored in ``home`` through the SDK."""
    with EngramClient(path=home) as client:
        return [client.ingest(text, metadata=meta) for text, meta in DOCS]


def run(runner: CliRunner, *args: str, code: int = 0):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def test_cli_help_lists_every_command(runner: CliRunner) -> None:
    out = run(runner, "--help").stdout
    for command in ("ingest", "query", "get", "delete", "status", "miner"):
        assert re.search(rf"^\W*{command}\s+\S", out, re.MULTILINE), command


def test_cli_ingest_prints_cid_and_stores_text(runner: CliRunner, home: Path) -> None:
    cid = run(runner, "ingest", "A short note about gardening", "--home", str(home)).stdout.strip()
    assert FULL_CID.match(cid)
    with EngramClient(path=home) as client:
        record = client.get(cid)
    assert record is not None and record.text == "A short note about gardening"


def test_cli_ingest_uses_engram_home_by_default(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGRAM_HOME", str(tmp_path / "env-home"))
    out = json.loads(run(runner, "ingest", "stored under ENGRAM_HOME", "--json").stdout)
    status = json.loads(run(runner, "status", "--json").stdout)
    assert status["path"] == str(tmp_path / "env-home")
    assert status["records"] == 1
    assert FULL_CID.match(out["cid"]) and out["namespace"] == "default"


def test_cli_ingest_metadata_values_are_json_when_they_parse(runner: CliRunner, home: Path) -> None:
    args = ["-m", "n=3", "-m", "ratio=0.5", "-m", "ok=true", "-m", "gone=null"]
    args += ["-m", "tags=[1, 2]", "-m", "name=alice", "-m", "odd=NaN", "-m", "eq=a=b"]
    cid = run(runner, "ingest", "metadata test", *args, "--home", str(home)).stdout.strip()
    record = json.loads(run(runner, "get", cid, "--home", str(home), "--json").stdout)
    assert record["metadata"] == {
        "n": 3,
        "ratio": 0.5,
        "ok": True,
        "gone": None,
        "tags": [1, 2],
        "name": "alice",
        "odd": "NaN",
        "eq": "a=b",
    }


def test_cli_ingest_bad_metadata_is_a_usage_error(runner: CliRunner, home: Path) -> None:
    result = run(runner, "ingest", "x", "-m", "novalue", "--home", str(home), code=2)
    assert "key=value" in result.stderr


def test_cli_ingest_needs_text_or_file(runner: CliRunner, home: Path) -> None:
    assert "exactly one" in run(runner, "ingest", "--home", str(home), code=2).stderr


def test_cli_ingest_namespace(runner: CliRunner, home: Path) -> None:
    cid = run(runner, "ingest", "in a namespace", "-n", "notes", "--home", str(home)).stdout.strip()
    run(runner, "get", cid, "--home", str(home), code=1)
    shown = json.loads(run(runner, "get", cid, "-n", "notes", "--home", str(home), "--json").stdout)
    assert shown["namespace"] == "notes"


def test_cli_ingest_file_reports_bad_lines(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"text": "first good line"}\n'
        "this is not json\n"
        '{"text": "second good line", "metadata": {"k": 1}}\n'
        '{"nope": 1}\n'
    )
    result = run(runner, "ingest", "--file", str(corpus), "--home", str(home), code=1)
    assert "ingested 2" in result.stdout and "2 failed" in result.stdout
    assert "line 2: not valid JSON" in result.stderr
    assert "line 4:" in result.stderr

    as_json = run(runner, "ingest", "-f", str(corpus), "--home", str(home), "--json", code=1)
    report = json.loads(as_json.stdout)
    assert report["ingested"] == 2 and report["failed"] == 2
    assert [e["line"] for e in report["errors"]] == [2, 4]
    assert all(FULL_CID.match(c) for c in report["cids"])
    assert as_json.stderr == ""  # no progress bar in --json mode


def test_cli_ingest_file_all_good_exits_0(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "ok.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(5)))
    result = run(runner, "ingest", "--file", str(corpus), "--home", str(home))
    assert "ingested 5" in result.stdout and "0 failed" in result.stdout


def test_cli_query_prints_a_table(runner: CliRunner, home: Path, cids: list[str]) -> None:
    long_text = "Kittens and cats love to nap " + "in sunny spots all afternoon long " * 5
    run(runner, "ingest", long_text, "--home", str(home))
    out = run(runner, "query", "a sleeping cat", "-k", "3", "--home", str(home)).stdout
    rows = [line for line in out.splitlines() if SHORT_CID.search(line)]
    assert len(rows) == 3
    assert re.search(r"\b0\.\d{3}\b", rows[0])
    assert "Kittens and cats love to nap" in out and long_text.strip() not in out
    assert "…" in rows[0] or "…" in rows[1]
    assert cids[0] not in out  # CIDs are shortened in the table


def test_cli_query_json_is_ranked_by_meaning(
    runner: CliRunner, home: Path, cids: list[str]
) -> None:
    out = run(runner, "query", "feline resting on a rug", "--home", str(home), "--json").stdout
    results = json.loads(out)
    assert [r["cid"] for r in results][:1] == [cids[0]]
    assert results == sorted(results, key=lambda r: -r["score"])
    assert set(results[0]) >= {"cid", "score", "metadata", "text"}


def test_cli_query_filter(runner: CliRunner, home: Path, cids: list[str]) -> None:
    out = run(
        runner, "query", "cat", "--filter", '{"topic": "pets"}', "--home", str(home), "--json"
    ).stdout
    assert {r["cid"] for r in json.loads(out)} == {cids[0], cids[2]}


@pytest.mark.parametrize("bad", ["{lang: en}", "[1, 2]", "NaN"])
def test_cli_query_bad_filter_exits_2(runner: CliRunner, home: Path, bad: str) -> None:
    result = run(runner, "query", "cat", "--filter", bad, "--home", str(home), "--json", code=2)
    assert "--filter" in result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_query_and_search_take_a_beam_width(
    runner: CliRunner, home: Path, cids: list[str]
) -> None:
    query = ["query", "feline resting on a rug", "--ef", "300", "--home", str(home), "--json"]
    assert json.loads(run(runner, *query).stdout)[0]["cid"] == cids[0]
    search = ["search", "feline resting", "--mode", "vector", "--ef", "300", "--home", str(home)]
    assert json.loads(run(runner, *search, "--json").stdout)[0]["cid"] == cids[0]
    result = run(runner, "query", "cat", "--ef", "0", "--home", str(home), code=1)
    assert "ef" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_get_shows_the_record(runner: CliRunner, home: Path, cids: list[str]) -> None:
    out = run(runner, "get", cids[1], "--home", str(home)).stdout
    assert cids[1] in out and "384" in out and "finance" in out and "Stock markets" in out

    record = json.loads(run(runner, "get", cids[1], "--home", str(home), "--json").stdout)
    assert record["cid"] == cids[1] and record["namespace"] == "default"
    assert len(record["embedding"]) == 384
    assert record["metadata"] == DOCS[1][1] and record["text"] == DOCS[1][0]


def test_cli_get_unknown_exits_1(runner: CliRunner, home: Path, cids: list[str]) -> None:
    result = run(runner, "get", "v1::" + "0" * 64, "--home", str(home), "--json", code=1)
    assert "not found" in result.stderr and result.stdout == ""


def test_cli_delete(runner: CliRunner, home: Path, cids: list[str]) -> None:
    assert "deleted" in run(runner, "delete", cids[0], "--home", str(home)).stdout
    run(runner, "get", cids[0], "--home", str(home), code=1)
    again = run(runner, "delete", cids[0], "--home", str(home), code=1)
    assert again.stderr.startswith("error:") and len(again.stderr.strip().splitlines()) == 1


def test_cli_status(runner: CliRunner, home: Path, cids: list[str]) -> None:
    out = run(runner, "status", "--home", str(home)).stdout
    assert "embedded" in out and "records" in out and str(home) in out
    stats = json.loads(run(runner, "status", "--home", str(home), "--json").stdout)
    assert stats["mode"] == "embedded" and stats["records"] == len(cids)


def test_cli_engram_error_is_one_red_line(runner: CliRunner, home: Path, cids: list[str]) -> None:
    result = run(runner, "query", "cat", "-n", "bad namespace!", "--home", str(home), code=1)
    assert result.stderr.startswith("error: namespace")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_ctrl_c_exits_130_quietly(
    runner: CliRunner, home: Path, cids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(EngramClient, "query", interrupted)
    result = run(runner, "query", "cat", "--home", str(home), code=130)
    assert result.output == ""


def test_cli_home_outranks_engram_url(
    runner: CliRunner, home: Path, cids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGRAM_URL", "http://127.0.0.1:9")
    stats = json.loads(run(runner, "status", "--home", str(home), "--json").stdout)
    assert stats["mode"] == "embedded"


def test_cli_url_and_home_together_exit_2(runner: CliRunner, home: Path) -> None:
    result = run(runner, "status", "--url", "http://127.0.0.1:9", "--home", str(home), code=2)
    assert "not both" in result.stderr


# --- against a node over HTTP -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def node_url(tmp_path: Path) -> Iterator[str]:
    """A real miner on a loopback port, in this process, over its own store."""
    import uvicorn

    from engram.config import MinerConfig
    from engram.miner.app import create_miner_app

    port = _free_port()
    miner_app = create_miner_app(MinerConfig(home=tmp_path / "node", port=port))
    server = uvicorn.Server(
        uvicorn.Config(miner_app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "miner did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_cli_against_a_node(
    runner: CliRunner, node_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_wallet("me/hot", tmp_path / "wallets")
    signed = ["--wallet", "me/hot", "--wallet-path", str(tmp_path / "wallets")]
    cid = run(
        runner, "ingest", "The cat sat on the mat", "-m", "n=1", "--url", node_url, *signed
    ).stdout
    cid = cid.strip()
    assert FULL_CID.match(cid)
    results = json.loads(run(runner, "query", "a cat", "--url", node_url, "--json").stdout)
    assert results[0]["cid"] == cid and results[0]["metadata"] == {"n": 1}
    record = json.loads(run(runner, "get", cid, "--url", node_url, "--json").stdout)
    assert record["text"] == "The cat sat on the mat" and len(record["embedding"]) == 384

    monkeypatch.setenv("ENGRAM_URL", node_url)  # the same commands through the variable
    assert run(runner, "status", "--json").stdout.strip().startswith("{")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "dogs bark"}\nnot json\n')
    report = json.loads(run(runner, "ingest", "-f", str(corpus), "--json", code=1).stdout)
    assert report["ingested"] == 1 and [e["line"] for e in report["errors"]] == [2]
    assert "sign" in run(runner, "delete", cid, code=1).stderr  # only its writer may delete it
    run(runner, "delete", cid, *signed)
    assert "not found" in run(runner, "get", cid, code=1).stderr

    # A private namespace, shared with a second hotkey and taken back.
    run(runner, "ingest", "my secret plan", "--namespace", "mine", *signed)
    friend = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
    out = json.loads(run(runner, "grant", friend, "-n", "mine", *signed, "--json").stdout)
    assert out["grants"] == [{"hotkey": friend, "permission": "read"}]
    assert "private" in run(runner, "query", "plan", "-n", "mine", code=1).stderr
    out = json.loads(run(runner, "revoke", friend, "-n", "mine", *signed, "--json").stdout)
    assert out["grants"] == []
