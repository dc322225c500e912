"""A gateway acts for the hotkey that signed a request: it relays the signed bytes to the
replicas, which check the signer themselves, so ownership, grants and private reads work
through a gateway exactly as on a miner.

Runs on test_network's in-process subnet (four real miners and a real gateway on loopback,
the tiny deterministic HashEmbedder, since only plumbing and permissions are looked at).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import bittensor as bt
import httpx
import pytest
from bittensor.sp_core import Keypair
from typer.testing import CliRunner

from engram.cli import app
from engram.config import GatewayConfig
from engram.errors import EngramError, ForbiddenError, UnauthorizedError
from engram.gateway.app import create_gateway_app
from engram.sdk.client import EngramClient
from engram.sdk.remote import RemoteNode
from engram.security.signing import HotkeyAuth
from tests.conftest import HashEmbedder, free_port, serve_in_thread
from tests.integration import test_network

cluster = test_network.cluster
ALICE = Keypair.create_from_uri("//relay-alice")
BOB = Keypair.create_from_uri("//relay-bob")
NS = "alice-agent"
README = (Path(__file__).parents[2] / "README.md").read_text()


def _gateway(cluster: test_network.Cluster) -> str:
    port = free_port()
    config = GatewayConfig(
        chain=cluster.chain.url, netuid=test_network.NETUID, port=port, home=cluster.root / "gw"
    )
    gateway = serve_in_thread(create_gateway_app(config, embedder=HashEmbedder()), port, "gw")
    cluster.extra.append(gateway)
    return gateway.url


def _refused(action: Callable[[], Any]) -> None:
    with pytest.raises((UnauthorizedError, ForbiddenError)):
        action()


def test_a_signed_write_through_the_gateway_keeps_its_signer(
    cluster: test_network.Cluster,
) -> None:
    url = _gateway(cluster)
    with EngramClient(url, keypair=ALICE, namespace=NS) as alice:
        cid = alice.ingest("Alice's private note: the vault code is 4711.", {"k": 1})
        replicas = cluster.routed(cid)
        for hotkey in replicas:  # every replica learnt that alice is the owner
            node = RemoteNode(cluster.miners[hotkey].url, signer=ALICE)
            info = node.describe_namespace(NS)
            node.close()
            assert info["owner"] == ALICE.ss58_address and info["private"], hotkey
        assert alice.query("vault code", top_k=1)[0].cid == cid
        assert alice.search("vault", top_k=1, mode="keyword")[0].cid == cid
        assert alice.get(cid) is not None and [r.cid for r in alice.list()] == [cid]
        assert alice.namespace_info(NS)["owner"] == ALICE.ss58_address

    with (
        EngramClient(url, namespace=NS) as stranger,
        EngramClient(url, keypair=BOB, namespace=NS) as bob,
    ):
        for who in (stranger, bob):
            _refused(lambda who=who: who.query("vault code"))
            _refused(lambda who=who: who.search("vault", mode="keyword"))
            _refused(lambda who=who: who.list())
            _refused(lambda who=who: who.get(cid))
            _refused(lambda who=who: who.delete(cid))
            _refused(lambda who=who: who.ingest("bob was here"))
    for hotkey in replicas:  # directly on a replica, unsigned: nothing either
        with EngramClient(cluster.miners[hotkey].url, namespace=NS) as direct:
            _refused(lambda direct=direct: direct.query("vault code"))
            _refused(lambda direct=direct: direct.list())

    with EngramClient(url, keypair=ALICE, namespace=NS) as alice:
        alice.grant(BOB.ss58_address, "read")  # through the gateway, to every miner
        with EngramClient(url, keypair=BOB, namespace=NS) as bob:
            assert bob.query("vault code", top_k=1)[0].cid == cid
            _refused(lambda: bob.ingest("bob may only read"))
        alice.revoke(BOB.ss58_address, "read")
        with EngramClient(url, keypair=BOB, namespace=NS) as bob:
            _refused(lambda: bob.query("vault code"))
        alice.delete(cid)
        assert alice.get(cid) is None


def test_a_replayed_or_altered_request_through_the_gateway_stores_nothing(
    cluster: test_network.Cluster,
) -> None:
    url = _gateway(cluster)
    body = {"text": "signed once", "namespace": NS}
    with httpx.Client(base_url=url, timeout=30) as http:
        request = http.build_request("POST", "/IngestSynapse", json=body)
        signed = next(HotkeyAuth(ALICE).auth_flow(request))
        first = http.send(signed)
        assert first.status_code == 200, first.text
        again = http.send(signed)  # the same bytes, the same nonce
        assert again.status_code == 401 and "signature" in again.json()["error"]
        altered = http.build_request(
            "POST", "/IngestSynapse", json={**body, "text": "altered"}, headers=signed.headers
        )
        altered.headers["content-length"] = str(len(altered.content))
        answer = http.send(altered)
        assert answer.status_code == 401, answer.text
    with EngramClient(url, keypair=ALICE, namespace=NS) as alice:
        assert [r.text for r in alice.list()] == ["signed once"]


def test_signed_memories_through_the_gateway_stay_private(cluster: test_network.Cluster) -> None:
    """client.memory composes its calls from signed node operations, which the gateway
    relays: the namespace is alice's, the memory API works, and a stranger sees nothing."""
    url = _gateway(cluster)
    with EngramClient(url, keypair=ALICE, namespace=NS) as alice:
        memory = alice.memory.store("Alice is allergic to penicillin.", category="health")
        assert [m.cid for m in alice.memory.search("penicillin allergy")] == [memory.cid]
        assert alice.memory.archive(memory.cid).state == "archived"
        assert alice.memory.search("penicillin allergy") == []
    with EngramClient(url, namespace=NS) as stranger, pytest.raises(EngramError):
        stranger.memory.list(state="all")
    with httpx.Client(base_url=url, timeout=30) as http:  # the memory routes, unsigned
        answer = http.get("/memory/list", params={"namespace": NS, "state": "all"})
        assert answer.status_code in (401, 403), answer.text


def _private_memory_example() -> str:
    section = README.split("## Private memory", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_private_memory_example_runs_against_a_gateway(
    cluster: test_network.Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a new user runs it, twice: the wallet made by the command it names, the seal key
    under ``~``, a signed and sealed write through the gateway that makes alice the owner
    on every replica, and a grant through the gateway."""
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.engram of a new user
    # bittensor fixes its default wallet folder when imported: point both at this test's.
    wallets = str(tmp_path / ".bittensor" / "wallets")
    made = CliRunner().invoke(
        app, ["wallet", "new", "--name", "alice", "--hotkey", "default", "--path", wallets]
    )
    assert made.exit_code == 0, made.output
    code = _private_memory_example().replace("http://127.0.0.1:8090", _gateway(cluster))
    wallet = 'bt.Wallet(name="alice", hotkey="default")'
    assert wallet in code
    code = code.replace(wallet, f'bt.Wallet(name="alice", hotkey="default", path={wallets!r})')
    for _ in range(2):  # a second run reuses the key and the namespace
        exec(compile(code, "README.md", "exec"), {})
    alice = bt.Wallet(name="alice", hotkey="default", path=wallets).hotkey
    with EngramClient.from_network(
        chain=cluster.chain.url, netuid=test_network.NETUID, keypair=alice
    ) as owner:
        info = owner.namespace_info("alice-agent")
        assert info["owner"] == alice.ss58_address and info["private"]
        assert [g["permission"] for g in info["grants"]] == ["read"]
    with EngramClient(_gateway(cluster), namespace="alice-agent") as stranger:
        _refused(lambda: stranger.query("seat preference"))
