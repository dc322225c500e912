"""``engram mcp`` end to end: real server processes, real MCP sessions, the real model.

Every behaviour test runs once per transport, stdio and streamable HTTP on a
loopback port, against one server process per transport (module-scoped) over
its own embedded store; each test writes memories of its own topic so they can
share it. A last test serves a real miner with ``--url`` and ``--wallet``.
The sessions live in an anyio blocking portal, so the tests themselves are
plain functions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, InitializeResult, TextResourceContents

from engram import EngramClient
from engram.chain.keys import new_wallet, open_wallet
from engram.config import MinerConfig
from engram.embed import get_embedder
from engram.errors import UnauthorizedError
from engram.memory.tokens import count_tokens
from engram.miner.app import create_miner_app
from tests.conftest import free_port, serve_in_thread

pytestmark = pytest.mark.slow

ENGRAM = Path(sys.executable).with_name("engram")
TOOLS = {
    "memory_store",
    "memory_search",
    "memory_context",
    "memory_update",
    "memory_versions",
    "memory_forget",
    "memory_archive",
    "memory_unarchive",
    "memory_list",
    "memory_links",
}
FULL_CID = re.compile(r"^v1::[0-9a-f]{64}$")
MISSING_CID = "v1::" + "0" * 64


# --- a session on a server process, driven from plain test functions --------------------------


class Mcp:
    """One initialized MCP client session, each call run on the portal's event loop."""

    def __init__(self, portal: BlockingPortal, session: ClientSession, init: InitializeResult):
        self.portal, self.session, self.init = portal, session, init

    def call(self, tool: str, **args: Any) -> CallToolResult:
        return self.portal.call(self.session.call_tool, tool, args)

    def ok(self, tool: str, **args: Any) -> Any:
        """The structured answer of a call that must succeed (a list's items, unwrapped)."""
        result = self.call(tool, **args)
        assert not result.is_error, (tool, args, result.content)
        out = result.structured_content
        assert out is not None
        # The same JSON reaches hosts that read only text: one block per memory of a list.
        texts = [json.loads(block.text) for block in result.content]  # type: ignore[union-attr]
        if set(out) == {"result"}:
            assert texts == out["result"]
            return out["result"]
        assert texts == [out]
        return out

    def error(self, tool: str, **args: Any) -> str:
        """The message of a call that must be a tool error (not a failed session)."""
        result = self.call(tool, **args)
        assert result.is_error, (tool, args, result.structured_content)
        assert len(result.content) == 1
        text = result.content[0].text  # type: ignore[union-attr]
        assert text.startswith(f"Error executing tool {tool}: "), text
        return text

    def read(self, cid: str) -> dict[str, Any]:
        """``engram://<cid>``, parsed."""
        result = self.portal.call(self.session.read_resource, f"engram://{cid}")
        (content,) = result.contents
        assert isinstance(content, TextResourceContents)
        assert content.mime_type == "application/json"
        return json.loads(content.text)


@asynccontextmanager
async def _session(
    transport: AbstractAsyncContextManager[Any],
) -> AsyncIterator[tuple[ClientSession, InitializeResult]]:
    async with transport as streams, ClientSession(streams[0], streams[1]) as session:
        yield session, await session.initialize()


@asynccontextmanager
async def _stdio(args: list[str], env: dict[str, str], log: Path) -> AsyncIterator[Any]:
    """``engram ARGS`` speaking MCP on its stdin/stdout, its stderr in ``log``."""
    params = StdioServerParameters(command=str(ENGRAM), args=args, env=env)
    with log.open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as streams:
            yield streams


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as p:
        yield p


def open_mcp(portal: BlockingPortal, transport: AbstractAsyncContextManager[Any]) -> Any:
    return portal.wrap_async_context_manager(_session(transport))


# --- environment, model and servers ------------------------------------------------------------


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The servers' environment: the session's ENGRAM_HOME (its model cache), offline, and
    none of the developer's ENGRAM_* settings (ENGRAM_URL would turn --home off)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
    env.update(
        ENGRAM_HOME=str(tmp_path_factory.getbasetemp() / "engram-home"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


@pytest.fixture(scope="module", autouse=True)
def _warm_embedder(server_env: dict[str, str]) -> None:
    """Load the real model once here (the in-process miner's), which also caches its ONNX
    graph under ENGRAM_HOME for the server processes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENGRAM_HOME", server_env["ENGRAM_HOME"])
        get_embedder().encode(["warm up"])


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            alive = process.poll() is None and time.monotonic() < deadline
            assert alive, f"engram mcp --http never listened:\n{log.read_text()}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def http_server(
    tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> Iterator[str]:
    """``engram mcp --http`` as a real process on a free loopback port; its URL."""
    tmp = tmp_path_factory.mktemp("mcp-http")
    port, log = free_port(), tmp / "server.log"
    args = ["mcp", "--http", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--home", str(tmp / "store")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ENGRAM), *args], env=server_env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        _wait_for_port(process, port, log)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"engram mcp --http ignored SIGTERM:\n{log.read_text()}")
        # uvicorn shuts down gracefully and re-raises the signal, which ends the CLI as Ctrl-C
        # does: the store is closed and the exit is clean.
        assert code == 0, (code, log.read_text())


@pytest.fixture(scope="module", params=["stdio", "http"])
def mcp(
    request: pytest.FixtureRequest,
    portal: BlockingPortal,
    tmp_path_factory: pytest.TempPathFactory,
    server_env: dict[str, str],
) -> Iterator[Mcp]:
    """A session on ``engram mcp`` over one embedded store, per transport."""
    if request.param == "stdio":
        tmp = tmp_path_factory.mktemp("mcp-stdio")
        transport = _stdio(["mcp", "--home", str(tmp / "store")], server_env, tmp / "stderr.log")
    else:
        transport = streamable_http_client(request.getfixturevalue("http_server"))
    with open_mcp(portal, transport) as (session, init):
        yield Mcp(portal, session, init)


def cids(memories: list[dict[str, Any]]) -> list[str]:
    return [m["cid"] for m in memories]


# --- the tools -----------------------------------------------------------------------------


def test_mcp_lists_the_tools_and_the_resource(mcp: Mcp) -> None:
    assert mcp.init.server_info.name == "engram"
    assert "memory_store" in (mcp.init.instructions or "")
    tools = {t.name: t for t in mcp.portal.call(mcp.session.list_tools).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        schema = tool.input_schema
        assert schema["type"] == "object" and schema["properties"], tool.name
        assert tool.description, tool.name
    required = {name: set(t.input_schema.get("required", [])) for name, t in tools.items()}
    assert required["memory_store"] == {"content"}
    assert required["memory_search"] == {"query"}
    assert required["memory_context"] == {"query", "max_tokens"}
    assert required["memory_update"] == {"cid", "content"}
    assert required["memory_list"] == set()
    for name in (
        "memory_versions",
        "memory_forget",
        "memory_archive",
        "memory_unarchive",
        "memory_links",
    ):
        assert required[name] == {"cid"}, name
    assert tools["memory_search"].input_schema["properties"]["limit"]["type"] == "integer"
    templates = mcp.portal.call(mcp.session.list_resource_templates).resource_templates
    assert [t.uri_template for t in templates] == ["engram://{cid}"]


def test_mcp_store_then_search_finds_the_right_memory_first(mcp: Mcp) -> None:
    stored = [
        mcp.ok(
            "memory_store",
            content="Alice prefers flat whites in the morning.",
            category="preference",
            tags=["alice", "coffee"],
            importance=0.8,
            source="chat",
        ),
        mcp.ok("memory_store", content="The deploy pipeline runs on GitHub Actions every night."),
        mcp.ok("memory_store", content="Bob is allergic to peanuts.", category="health"),
    ]
    coffee, deploy, peanuts = stored
    for memory in stored:
        assert FULL_CID.match(memory["cid"]) and memory["state"] == "active"
        assert memory["duplicate_of"] is None
    assert coffee["content"] == "Alice prefers flat whites in the morning."
    assert (coffee["category"], coffee["tags"], coffee["importance"], coffee["source"]) == (
        "preference",
        ["alice", "coffee"],
        0.8,
        "chat",
    )
    assert deploy["importance"] == 0.5 and deploy["tags"] == []

    for query, best in [
        ("What coffee does Alice drink?", coffee),
        ("Which CI system deploys our code?", deploy),
        ("Does anyone have a food allergy?", peanuts),
    ]:
        found = mcp.ok("memory_search", query=query, limit=3)
        assert found and found[0]["cid"] == best["cid"], (query, found)
        assert found[0]["score"] is not None and found[0]["state"] == "active"
        assert len(found) <= 3

    only = mcp.ok("memory_search", query="Alice coffee", filters={"category": "health"}, limit=10)
    assert cids(only) == [peanuts["cid"]]

    again = mcp.ok("memory_store", content="Alice prefers flat whites in the morning.")
    assert again["cid"] == coffee["cid"] and again["duplicate_of"] == coffee["cid"]


def test_mcp_context_stays_within_its_budget_and_cites_what_it_shows(mcp: Mcp) -> None:
    facts = [
        "Project Orion ships its first release on the fifteenth of March.",
        "Project Orion's database is PostgreSQL sixteen running on two replicas.",
        "Project Orion's on-call engineer this week is Dana, reachable on the ops channel.",
        "Project Orion's budget for cloud hosting is four thousand dollars a month.",
    ]
    for fact in facts:
        mcp.ok("memory_store", content=fact, category="project", tags=["orion"])
    query = "What do we know about Project Orion?"

    big = mcp.ok("memory_context", query=query, max_tokens=400)
    for budget in (60, 400):
        ctx = mcp.ok("memory_context", query=query, max_tokens=budget)
        assert ctx["max_tokens"] == budget
        assert 0 < ctx["tokens"] <= budget
        assert count_tokens(ctx["context"]) <= budget
        assert ctx["cids"] and len(set(ctx["cids"])) == len(ctx["cids"])
        for cid in ctx["cids"]:
            assert mcp.read(cid)["content"] in ctx["context"], cid
        assert set(ctx["cids"]) <= set(big["cids"])
    assert sum(fact in big["context"] for fact in facts) == len(facts)

    small = mcp.ok("memory_context", query=query, max_tokens=60)
    assert len(small["cids"]) < len(big["cids"])
    tiny = mcp.ok("memory_context", query=query, max_tokens=3)  # no line fits
    assert tiny == {"context": "", "cids": [], "tokens": 0, "max_tokens": 3}


def test_mcp_update_keeps_versions_and_links_them(mcp: Mcp) -> None:
    old = mcp.ok(
        "memory_store",
        content="Erin's favourite tea is Earl Grey.",
        category="preference",
        tags=["erin"],
    )
    new = mcp.ok("memory_update", cid=old["cid"], content="Erin's favourite tea is now sencha.")
    assert new["cid"] != old["cid"] and new["supersedes"] == old["cid"]
    assert (new["category"], new["tags"], new["state"]) == ("preference", ["erin"], "active")

    for cid in (old["cid"], new["cid"]):
        versions = mcp.ok("memory_versions", cid=cid)
        assert cids(versions) == [old["cid"], new["cid"]]
        assert [v["state"] for v in versions] == ["superseded", "active"]
        assert [v["content"] for v in versions] == [old["content"], new["content"]]

    found = cids(mcp.ok("memory_search", query="What tea does Erin like?", limit=5))
    assert found[0] == new["cid"] and old["cid"] not in found
    assert mcp.read(old["cid"])["state"] == "superseded"

    assert {"cid": old["cid"], "type": "updates"} in mcp.ok("memory_links", cid=new["cid"])
    assert {"cid": new["cid"], "type": "updated_by"} in mcp.ok("memory_links", cid=old["cid"])

    stale = mcp.error("memory_update", cid=old["cid"], content="Erin drinks coffee.")
    assert "conflict" in stale and new["cid"] in stale  # names the version to update instead


def test_mcp_links_similar_memories(mcp: Mcp) -> None:
    first = mcp.ok("memory_store", content="Frank keeps bees in his garden in Leeds.")
    second = mcp.ok("memory_store", content="Frank's garden in Leeds has three beehives.")
    assert second["duplicate_of"] is None and first["cid"] in second["links"]
    assert {"cid": first["cid"], "type": "similar"} in mcp.ok("memory_links", cid=second["cid"])
    assert mcp.ok("memory_links", cid=mcp.ok("memory_store", content="Zebra stripes.")["cid"]) == []


def test_mcp_forget_removes_from_search_and_list(mcp: Mcp) -> None:
    keep = mcp.ok("memory_store", content="Grace's locker code is 4812.", tags=["grace"])
    gone = mcp.ok("memory_store", content="Grace's old phone number was 555-0199.", tags=["grace"])
    query = "Grace's phone number"
    assert gone["cid"] in cids(mcp.ok("memory_search", query=query))

    forgotten = mcp.ok("memory_forget", cid=gone["cid"])
    assert forgotten["cid"] == gone["cid"] and forgotten["state"] == "forgotten"
    assert gone["cid"] not in cids(mcp.ok("memory_search", query=query))
    assert cids(mcp.ok("memory_list", tags=["grace"])) == [keep["cid"]]
    assert cids(mcp.ok("memory_list", tags=["grace"], state="forgotten")) == [gone["cid"]]
    assert mcp.read(gone["cid"])["state"] == "forgotten"
    ctx = mcp.ok("memory_context", query=query, max_tokens=200)
    assert gone["cid"] not in ctx["cids"] and "555-0199" not in ctx["context"]


def test_mcp_archive_hides_from_search_but_lists(mcp: Mcp) -> None:
    memory = mcp.ok(
        "memory_store", content="Heidi's flight to Oslo leaves at 7:40.", tags=["heidi"]
    )
    archived = mcp.ok("memory_archive", cid=memory["cid"])
    assert archived["state"] == "archived"
    assert memory["cid"] not in cids(mcp.ok("memory_search", query="When is Heidi's flight?"))
    assert mcp.ok("memory_list", tags=["heidi"]) == []
    listed = mcp.ok("memory_list", tags=["heidi"], state="archived")
    assert cids(listed) == [memory["cid"]] and listed[0]["state"] == "archived"
    assert memory["cid"] in cids(mcp.ok("memory_list", tags=["heidi"], state="all"))
    assert mcp.ok("memory_unarchive", cid=memory["cid"])["state"] == "active"
    assert memory["cid"] in cids(mcp.ok("memory_search", query="When is Heidi's flight?"))


def test_mcp_list_filters_and_pages(mcp: Mcp) -> None:
    stored = [
        mcp.ok("memory_store", content=text, category="ivan", tags=[tag])
        for text, tag in [
            ("Ivan plays the cello on Tuesdays.", "music"),
            ("Ivan runs ten kilometres every Sunday.", "sport"),
            ("Ivan's sister lives in Lisbon.", "family"),
        ]
    ]
    assert cids(mcp.ok("memory_list", category="ivan")) == cids(stored)  # in the order stored
    assert cids(mcp.ok("memory_list", category="ivan", limit=1, offset=1)) == [stored[1]["cid"]]
    tagged = mcp.ok("memory_list", category="ivan", tags=["music", "family"])
    assert cids(tagged) == [stored[0]["cid"], stored[2]["cid"]]


def test_mcp_resource_is_the_memory(mcp: Mcp) -> None:
    memory = mcp.ok("memory_store", content="Judy's desk is on the third floor.", category="office")
    read = mcp.read(memory["cid"])
    assert read["cid"] == memory["cid"] and read["content"] == memory["content"]
    assert (read["category"], read["state"]) == ("office", "active")


def test_mcp_bad_arguments_are_tool_errors_and_the_server_keeps_answering(mcp: Mcp) -> None:
    cases: list[tuple[str, dict[str, Any], list[str]]] = [
        ("memory_store", {}, ["content", "required"]),
        ("memory_store", {"content": "   "}, ["invalid_request", "non-empty"]),
        ("memory_store", {"content": "x", "importance": 3}, ["importance", "[0, 1]"]),
        ("memory_context", {"query": "x", "max_tokens": 0}, ["invalid_request", "max_tokens"]),
        ("memory_search", {"query": "x", "limit": "many"}, ["limit", "integer"]),
        ("memory_search", {"query": "x", "limit": 0}, ["invalid_request", "limit"]),
        ("memory_search", {"query": "x", "filters": {"$nope": 1}}, ["invalid_filter"]),
        ("memory_list", {"state": "sleeping"}, ["invalid_request", "state"]),
        ("memory_versions", {"cid": "not-a-cid"}, ["invalid_cid", "not-a-cid"]),
    ]
    for tool in (
        "memory_versions",
        "memory_forget",
        "memory_archive",
        "memory_unarchive",
        "memory_links",
    ):
        cases.append((tool, {"cid": MISSING_CID}, ["not_found", MISSING_CID]))
    cases.append(("memory_update", {"cid": MISSING_CID, "content": "x"}, ["not_found"]))
    for tool, args, words in cases:
        message = mcp.error(tool, **args)
        for word in words:
            assert word in message, (tool, args, message)
        assert "Traceback" not in message
    unknown = mcp.call("memory_teleport", content="x")
    assert unknown.is_error and "memory_teleport" in unknown.content[0].text  # type: ignore[union-attr]

    after = mcp.ok("memory_store", content="Karl waters the office plants on Fridays.")
    assert cids(mcp.ok("memory_search", query="Who waters the plants?"))[0] == after["cid"]


def test_mcp_unknown_resource_is_an_error_and_the_server_keeps_answering(mcp: Mcp) -> None:
    with pytest.raises(MCPError):
        mcp.read(MISSING_CID)
    memory = mcp.ok("memory_store", content="Liam's badge number is 31337.")
    assert mcp.read(memory["cid"])["content"] == memory["content"]


def test_mcp_unknown_resource_says_why(mcp: Mcp) -> None:
    with pytest.raises(MCPError) as caught:
        mcp.read(MISSING_CID)
    assert "not_found" in str(caught.value)


# --- one node by URL, signed --------------------------------------------------------------------


def test_mcp_over_a_node_url_signed_by_a_wallet(
    portal: BlockingPortal, tmp_path: Path, server_env: dict[str, str]
) -> None:
    """``engram mcp --url`` on a real miner: memories land on the node, in a namespace the
    ``--wallet`` hotkey owns, which an unsigned client cannot read."""
    port = free_port()
    miner = serve_in_thread(
        create_miner_app(MinerConfig(home=tmp_path / "node", port=port)), port, "miner"
    )
    try:
        wallets = tmp_path / "wallets"
        new_wallet("agent/hot", wallets)
        args = ["mcp", "--url", miner.url, "--namespace", "agent-memories"]
        args += ["--wallet", "agent/hot", "--wallet-path", str(wallets)]
        with open_mcp(portal, _stdio(args, server_env, tmp_path / "stderr.log")) as (s, init):
            mcp = Mcp(portal, s, init)
            stored = mcp.ok("memory_store", content="Mia's anniversary is on June 3rd.")
            mcp.ok("memory_store", content="The office wifi password rotates monthly.")
            assert stored["namespace"] == "agent-memories"
            found = mcp.ok("memory_search", query="When is Mia's anniversary?")
            assert found[0]["cid"] == stored["cid"]
            read = mcp.read(stored["cid"])
            assert (read["content"], read["namespace"]) == (stored["content"], "agent-memories")

        signer = open_wallet("agent/hot", wallets)
        with EngramClient(miner.url, namespace="agent-memories", wallet=signer) as owner:
            listed = owner.memory.list()
            assert stored["cid"] in [m.cid for m in listed]
        stranger = EngramClient(miner.url, namespace="agent-memories")  # unsigned
        with stranger, pytest.raises(UnauthorizedError, match="private"):
            stranger.memory.list()
    finally:
        miner.stop()


def test_mcp_readme_config_starts_a_server_a_host_can_use(
    portal: BlockingPortal, tmp_path: Path, server_env: dict[str, str]
) -> None:
    """The README's MCP client config, as a host would run it: its command and args (the
    command by full path, as the README says when ``engram`` is not on the PATH)."""
    section = (Path(__file__).parents[2] / "README.md").read_text().split("## MCP server", 1)[1]
    config = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    server = config["mcpServers"]["engram"]
    assert server["command"] == "engram"
    home = tmp_path / "home"  # the host's default store, beside the session's model cache
    home.mkdir()
    (home / "models").symlink_to(Path(server_env["ENGRAM_HOME"]) / "models")
    env = {**server_env, "ENGRAM_HOME": str(home)}
    with open_mcp(portal, _stdio(server["args"], env, tmp_path / "stderr.log")) as (s, init):
        mcp = Mcp(portal, s, init)
        stored = mcp.ok("memory_store", content="Noah takes his coffee black.")
        assert stored["namespace"] == server["args"][server["args"].index("--namespace") + 1]
        assert (
            mcp.ok("memory_search", query="How does Noah drink coffee?")[0]["cid"]
            == (stored["cid"])
        )
