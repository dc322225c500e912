"""Gateway API keys: an owner's signed request makes a key; the gateway acts for it under its own
hotkey, which the owner granted, and never beyond the key's namespaces and scopes. Anonymous
callers of a gateway that signs its calls stay anonymous at the miners.

Runs on test_network's in-process subnet (four real miners and a real gateway on loopback,
the tiny deterministic HashEmbedder, since only plumbing and permissions are looked at).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from bittensor.sp_core import Keypair
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult
from typer.testing import CliRunner

from engram.chain.keys import new_wallet
from engram.cli import app
from engram.config import GatewayConfig, SecurityConfig
from engram.errors import ForbiddenError, InvalidRequestError, RateLimitedError, UnauthorizedError
from engram.gateway.app import create_gateway_app
from engram.sdk.client import EngramClient
from engram.sdk.remote import RemoteNode
from engram.security.access import ANONYMOUS, Caller
from engram.security.ratelimit import Budget, RateLimiter
from engram.security.signing import HotkeyAuth
from tests.conftest import HashEmbedder, free_port, serve_in_thread
from tests.integration import test_gateway_relay, test_mcp, test_network

cluster = test_network.cluster
ALICE = Keypair.create_from_uri("//keys-alice")
BOB = Keypair.create_from_uri("//keys-bob")
NS, OTHER = "alice-agent", "alice-diary"


def _gateway(cluster: test_network.Cluster) -> tuple[str, str]:
    """A gateway with a hotkey of its own: its URL and hotkey."""
    wallets = cluster.root / "wallets"
    wallet, _ = new_wallet("gateway/default", wallets)
    port = free_port()
    config = GatewayConfig(
        chain=cluster.chain.url,
        netuid=test_network.NETUID,
        port=port,
        home=cluster.root / "gw",
        wallet="gateway/default",
        wallet_path=wallets,
    )
    gateway = serve_in_thread(create_gateway_app(config, embedder=HashEmbedder()), port, "gw")
    cluster.extra.append(gateway)
    return gateway.url, wallet.hotkey.ss58_address


@pytest.fixture
def gateway(cluster: test_network.Cluster) -> tuple[str, str]:
    """Alice owns two namespaces and delegated both to the gateway's hotkey."""
    url, hotkey = _gateway(cluster)
    for namespace in (NS, OTHER):
        with EngramClient(url, keypair=ALICE, namespace=namespace) as alice:
            alice.ingest(f"Alice's first note in {namespace}: the vault code is 4711.")
            alice.grant(hotkey, "read")
            alice.grant(hotkey, "write")
    return url, hotkey


def _secret_part(key: str) -> str:
    """The secret of ``ek_<id>_<secret>`` (it may itself hold underscores)."""
    return key.split("_", 2)[2]


def test_keys_act_within_their_namespaces_and_scopes(
    cluster: test_network.Cluster, gateway: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, gateway_hotkey = gateway
    assert httpx.get(f"{url}/health").json()["hotkey"] == gateway_hotkey  # what owners grant
    caplog.set_level(logging.DEBUG)
    with EngramClient(url, keypair=ALICE) as alice:
        reader = alice.keys.create([NS], ["read"], label="search bot")
        writer = alice.keys.create(NS, ["read", "write"])
    secrets = [reader.api_key, writer.api_key]
    assert reader.api_key.startswith("ek_") and reader.scopes == ["read"]

    with EngramClient(url, api_key=reader.api_key, namespace=NS) as bot:
        assert "4711" in bot.query("vault code", top_k=1)[0].text
        with pytest.raises(ForbiddenError, match="may not write"):
            bot.ingest("a read key writes nothing")
        with pytest.raises(ForbiddenError, match="does not open namespace"):
            bot.query("vault code", namespace=OTHER)  # the gateway may read it; the key may not
        with pytest.raises(ForbiddenError):
            bot.grant(BOB.ss58_address, "read")

    with EngramClient(url, api_key=writer.api_key, namespace=NS) as agent:
        cid = agent.ingest("The agent noted: lunch with Bob on Friday.")
        assert agent.get(cid) is not None
        agent.memory.store("Alice prefers tea to coffee.", category="preference")
        assert agent.memory.search("what does alice drink")[0].content.startswith("Alice prefers")
        agent.delete(cid)
        assert agent.get(cid) is None
    for hotkey in cluster.routed(cid):  # alice stays the owner on every replica
        node = RemoteNode(cluster.miners[hotkey].url, signer=ALICE)
        assert node.describe_namespace(NS)["owner"] == ALICE.ss58_address
        node.close()

    with EngramClient(url, keypair=ALICE) as alice:
        alice.keys.revoke(reader.id)  # refused from the next request on
        rotated = alice.keys.rotate(writer.id)
        listed = {k.id: k for k in alice.keys.list()}
        assert listed[reader.id].revoked_at is not None and listed[writer.id].rotated_at
        assert all(not hasattr(k, "api_key") for k in listed.values())
    with (
        EngramClient(url, api_key=reader.api_key, namespace=NS) as bot,
        pytest.raises(UnauthorizedError, match="revoked"),
    ):
        bot.query("vault code")
    with (
        EngramClient(url, api_key=writer.api_key, namespace=NS) as agent,
        pytest.raises(UnauthorizedError, match="not valid"),
    ):
        agent.query("vault code")
    with EngramClient(url, api_key=rotated.api_key, namespace=NS) as agent:
        assert agent.query("vault code", top_k=1)
    secrets.append(rotated.api_key)

    with httpx.Client(base_url=url, auth=HotkeyAuth(ALICE)) as http:
        answer = http.get("/audit", params={"namespace": NS})
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entries"]
    done = {(e["actor"], e["method"], e["route"]) for e in entries if e["status"] == 200}
    key = f"key:{writer.id}"
    assert {(key, "POST", "/IngestSynapse"), (key, "POST", "/memory/store")} <= done
    assert any(a == key and m == "DELETE" for a, m, _ in done)
    assert {
        (ALICE.ss58_address, "POST", "/keys"),
        (ALICE.ss58_address, "DELETE", "/keys/{key_id}"),
        (ALICE.ss58_address, "POST", "/keys/{key_id}/rotate"),
    } <= done
    logged = caplog.text + repr(entries)
    for secret in secrets:  # neither the whole key nor its secret part is ever written down
        assert secret not in logged and _secret_part(secret) not in logged
    for path in (cluster.root / "gw").iterdir():
        if path.is_file():
            assert not any(_secret_part(s).encode() in path.read_bytes() for s in secrets)


def test_only_the_owner_makes_keys(gateway: tuple[str, str]) -> None:
    url, _ = gateway
    with EngramClient(url, keypair=BOB) as bob, pytest.raises(ForbiddenError, match="does not own"):
        bob.keys.create([NS], ["read"])
    with EngramClient(url) as stranger, pytest.raises(UnauthorizedError):
        stranger.keys.create([NS], ["read"])
    with EngramClient(url, keypair=ALICE) as alice:
        with pytest.raises(InvalidRequestError, match="scope"):
            alice.keys.create([NS], ["sudo"])
        admin = alice.keys.create([NS], ["admin", "read"])
    with EngramClient(url, api_key=admin.api_key) as manager:
        narrower = manager.keys.create([NS], ["read"])
        assert narrower.owner == ALICE.ss58_address
        with pytest.raises(ForbiddenError):
            manager.keys.create([NS], ["write"])  # more than it has
        with pytest.raises(ForbiddenError):
            manager.keys.create([OTHER], ["read"])
        assert {k.id for k in manager.keys.list()} == {admin.id, narrower.id}
        manager.keys.revoke(narrower.id)
    with EngramClient(url, api_key=narrower.api_key) as bot, pytest.raises(UnauthorizedError):
        bot.query("vault code", namespace=NS)


def test_anonymous_callers_never_borrow_the_gateways_grants(
    cluster: test_network.Cluster, gateway: tuple[str, str]
) -> None:
    url, _ = gateway
    with EngramClient(url, namespace=NS) as stranger:
        with pytest.raises((UnauthorizedError, ForbiddenError)):
            stranger.query("vault code")
        with pytest.raises((UnauthorizedError, ForbiddenError)):
            stranger.ingest("a stranger's note")
    with EngramClient(url, namespace="open-notes") as stranger:
        cid = stranger.ingest("anyone may write here")
    for hotkey in cluster.routed(cid):  # written as nobody's: the namespace stays public
        node = RemoteNode(cluster.miners[hotkey].url)
        assert node.describe_namespace("open-notes")["owner"] is None
        node.close()
    with EngramClient(url, namespace="open-notes") as stranger:
        assert stranger.get(cid) is not None


def test_a_miner_refuses_api_keys(cluster: test_network.Cluster) -> None:
    miner = next(iter(cluster.miners.values()))
    with httpx.Client(base_url=miner.url) as http:
        answer = http.post(
            "/QuerySynapse",
            json={"query_text": "x"},
            headers={"authorization": "Bearer ek_abc_def"},
        )
    assert answer.status_code == 401 and "gateway" in answer.json()["error"]
    with pytest.raises(InvalidRequestError, match="not both"):
        EngramClient(miner.url, keypair=ALICE, api_key="ek_abc_def")
    with pytest.raises(InvalidRequestError, match="url"):
        EngramClient(path=cluster.root / "embedded", api_key="ek_abc_def")


def test_known_gateways_get_larger_budgets() -> None:
    """A gateway's signed calls for anonymous users spend its own bucket, scaled for a gateway."""
    gateway = Keypair.create_from_uri("//keys-gateway").ss58_address
    limits = SecurityConfig(
        query_per_s=1.0, query_burst=2.0, gateway_hotkeys=f" {gateway} ,", gateway_factor=5.0
    )
    limiter = RateLimiter(limits)
    for _ in range(10):  # 2 x 5 tokens
        limiter.admit(Budget.QUERY, Caller(paid_by=gateway), "10.0.0.1")
    with pytest.raises(RateLimitedError):
        limiter.admit(Budget.QUERY, Caller(paid_by=gateway), "10.0.0.1")
    for _ in range(2):  # the same IP, unsigned: a bucket of its own, at the anonymous size
        limiter.admit(Budget.QUERY, ANONYMOUS, "10.0.0.1")
    with pytest.raises(RateLimitedError):
        limiter.admit(Budget.QUERY, ANONYMOUS, "10.0.0.1")


def test_a_gateway_without_a_hotkey_makes_no_keys(cluster: test_network.Cluster) -> None:
    url = test_gateway_relay._gateway(cluster)
    with (
        EngramClient(url, keypair=ALICE) as alice,
        pytest.raises(ForbiddenError, match="no hotkey"),
    ):
        alice.keys.create([NS], ["read"])
    with (
        EngramClient(url, api_key="ek_abc_def") as bot,
        pytest.raises(UnauthorizedError, match="takes no API keys"),
    ):
        bot.query("anything")


def test_the_cli_makes_keys_and_acts_with_them(
    cluster: test_network.Cluster, gateway: tuple[str, str]
) -> None:
    url, gateway_hotkey = gateway
    wallets = cluster.root / "wallets"
    carol, _ = new_wallet("carol/default", wallets)
    with EngramClient(url, wallet=carol, namespace="carol-notes") as client:
        client.ingest("Carol keeps her bike in the shed behind the house.")
        client.grant(gateway_hotkey, "read")
    runner = CliRunner()
    signed = ["--url", url, "--wallet", "carol/default", "--wallet-path", str(wallets)]
    made = runner.invoke(app, ["keys", "create", "carol-notes", "-s", "read", *signed, "--json"])
    assert made.exit_code == 0, made.output
    key = json.loads(made.stdout)
    as_key = ["--api-key", key["api_key"]]
    found = runner.invoke(
        app, [*as_key, "query", "where is the bike", "-n", "carol-notes", "--url", url, "--json"]
    )
    assert found.exit_code == 0, found.output
    assert "shed" in json.loads(found.stdout)[0]["text"]
    listed = runner.invoke(app, ["keys", "list", *signed, "--json"])
    assert [k["id"] for k in json.loads(listed.stdout)] == [key["id"]]
    assert key["api_key"] not in listed.stdout
    embedded = runner.invoke(app, [*as_key, "query", "bike", "--home", "x"])
    assert embedded.exit_code == 2 and "--url" in embedded.output
    revoked = runner.invoke(app, ["keys", "revoke", key["id"], *signed])
    assert revoked.exit_code == 0, revoked.output
    refused = runner.invoke(app, [*as_key, "query", "bike", "-n", "carol-notes", "--url", url])
    assert refused.exit_code == 1 and "revoked" in refused.output


def test_an_mcp_server_over_http_acts_with_each_callers_key(
    cluster: test_network.Cluster, gateway: tuple[str, str], tmp_path: Path
) -> None:
    """``engram mcp --http --url GATEWAY --api-keys`` as a real process, real MCP sessions."""
    url, _ = gateway
    with EngramClient(url, keypair=ALICE) as alice:
        writer = alice.keys.create([NS], ["read", "write"])
        reader = alice.keys.create([NS], ["read"])
    port, log = free_port(), tmp_path / "mcp.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
    args = ["mcp", "--http", "--port", str(port), "--url", url, "--api-keys", "-n", NS]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(test_mcp.ENGRAM), *args], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    mcp_url = f"http://127.0.0.1:{port}/mcp"

    async def session(key: str | None, tool: str, **arguments: Any) -> CallToolResult:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            streamable_http_client(mcp_url, http_client=http) as streams,
            ClientSession(streams[0], streams[1]) as mcp,
        ):
            await mcp.initialize()
            return await mcp.call_tool(tool, arguments)

    try:
        test_mcp._wait_for_port(process, port, log)
        stored = anyio.run(
            functools.partial(
                session, writer.api_key, "memory_store", content="Alice's cat is called Miso."
            )
        )
        assert not stored.is_error, stored.content
        found = anyio.run(
            functools.partial(session, reader.api_key, "memory_search", query="cat's name")
        )
        assert not found.is_error and "Miso" in str(found.structured_content)
        refused = anyio.run(
            functools.partial(session, reader.api_key, "memory_store", content="read only")
        )
        assert refused.is_error and "may not write" in str(refused.content)
        with EngramClient(url, keypair=ALICE) as alice:
            alice.keys.revoke(reader.id)
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        for key in (None, "ek_nope_nope", reader.api_key):  # none, wrong, revoked: no session
            headers = {"authorization": f"Bearer {key}"} if key else {}
            answer = httpx.post(mcp_url, json=hello, headers=headers)
            assert answer.status_code == 401, (key, answer.text)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()
