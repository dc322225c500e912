"""``RemoteNode``: one miner over real HTTP, behind the same ``Node`` operations as a local store.

The same calls go to a ``LocalNode`` and to a ``RemoteNode`` on a miner serving an
identical store, and the answers must agree; a tiny deterministic embedder, since
meaning is not what is tested here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bittensor.sp_core import Keypair

from engram.config import MinerConfig, SecurityConfig
from engram.errors import InvalidRequestError, NotFoundError, UnauthorizedError
from engram.miner.app import create_miner_app
from engram.node.local import LocalNode
from engram.records import IngestItem
from engram.sdk.remote import RemoteNode
from engram.security.access import Caller, Permission
from tests.conftest import HashEmbedder, free_port, serve_in_thread

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
TEXTS = ["the river floods in spring", "a quiet librarian", "the orchestra tunes up"]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[LocalNode, RemoteNode]]:
    port = free_port()
    config = MinerConfig(home=tmp_path / "miner", port=port, reader_threads=2)
    app = create_miner_app(
        config, embedder=HashEmbedder(), security=SecurityConfig(rate_limits=False)
    )
    server = serve_in_thread(app, port, "remote-node-miner")
    local = LocalNode.open(tmp_path / "local", HashEmbedder())
    remote = RemoteNode(server.url, signer=ALICE)
    try:
        yield local, remote
    finally:
        remote.close()
        local.close()
        server.stop()


def test_remote_node_answers_as_a_local_one(nodes: tuple[LocalNode, RemoteNode]) -> None:
    local, remote = nodes
    items = [IngestItem(text=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    stored = [remote.ingest(items), local.ingest(items)]
    assert [s.cid for s in stored[0]] == [s.cid for s in stored[1]]
    cids = [s.cid for s in stored[0]]
    for node in (remote, local):
        hits = node.query("a quiet librarian", None, 2, None, None, False)
        assert hits[0].cid == cids[1]
        found = node.search("librarian", 2, {"i": 1}, None, "keyword")
        assert [h.cid for h in found] == [cids[1]] and found[0].channels
        assert node.get(cids[2], None).text == TEXTS[2]
        assert [r.cid for r in node.list(10, 0, None, {"i": {"$gte": 1}})] == cids[1:]
        assert node.count(None) == 3
        assert node.health()["ready"] is True
        assert node.stats()["records"] == 3


def test_remote_node_namespaces_and_errors(nodes: tuple[LocalNode, RemoteNode]) -> None:
    _, remote = nodes
    (stored,) = remote.ingest([IngestItem(text="alice's note", namespace="alice-notes")])
    info = remote.set_grant("alice-notes", BOB.ss58_address, Permission.READ, True)
    assert info["owner"] == ALICE.ss58_address
    assert info["grants"] == [{"hotkey": BOB.ss58_address, "permission": "read"}]
    assert remote.describe_namespace("alice-notes")["private"] is True
    remote.delete(stored.cid, "alice-notes")
    with pytest.raises(NotFoundError):
        remote.delete(stored.cid, "alice-notes")
    with pytest.raises(InvalidRequestError, match="signer"):
        remote.count(None, Caller(hotkey=BOB.ss58_address))
    anonymous = RemoteNode(remote.url)
    try:
        with pytest.raises(UnauthorizedError):
            anonymous.list(10, 0, "alice-notes")
    finally:
        anonymous.close()
