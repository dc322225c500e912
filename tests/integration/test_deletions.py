"""A delete a replica missed while it was down does not come back when it returns.

Real parts: a LocalChain file, four uvicorn miners on loopback ports (each with an
:class:`Axon`, so it knows the validator's permit and refuses misrouted writes), the
validator with its own state database and wallet, and the owner's network client
signing with a real sr25519 key. A miner goes down by stopping its server and comes
back on the same home (its SQLite store) and a new port, announced again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from bittensor.sp_core import Keypair

from engram.chain.keys import identity, new_wallet
from engram.chain.local import LocalChain
from engram.config import ChainParams, MinerConfig, NetworkConfig, ValidatorConfig
from engram.miner.app import create_miner_app
from engram.miner.axon import Axon
from engram.network.client import Network
from engram.network.routing import RouteCheck
from engram.records import IngestItem
from engram.security.signing import HotkeyAuth
from engram.validator import Validator
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread, unit_vectors

NETUID = 1
MIN_STAKE = 1_000.0
PROBE_INTERVAL_S = 0.5
ALICE = Keypair.create_from_uri("//Alice")
PRIVATE = "alice-notes"  # Alice's first signed write makes it hers
PUBLIC = "default"  # nobody owns it: only the writer of a record may delete it


@dataclass
class Miner:
    signer: Keypair
    uid: int
    home: Path
    server: ThreadedServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def holds(self, namespace: str) -> set[str]:
        """What the miner holds in ``namespace``, listed as its owner Alice."""
        with httpx.Client(base_url=self.url, timeout=10, auth=HotkeyAuth(ALICE)) as http:
            answer = http.get("/list", params={"namespace": namespace, "limit": 1000})
        assert answer.status_code == 200, answer.text
        return {r["cid"] for r in answer.json()["records"]}


@dataclass
class Subnet:
    root: Path
    chain: LocalChain
    miners: list[Miner]

    def start(self, miner: Miner) -> None:
        """Serve ``miner``'s home on a fresh port and announce it there."""
        port = free_port()
        hotkey = miner.signer.ss58_address
        route = RouteCheck(hotkey)
        axon = Axon(self.chain, NETUID, miner.signer, miner.uid, "127.0.0.1", port, 0.5, route)
        config = MinerConfig(home=miner.home, port=port, reader_threads=2)
        app = create_miner_app(config, embedder=HashEmbedder(), axon=axon)
        miner.server = serve_in_thread(app, port, f"miner-{miner.uid}")
        axon.announce()

    def stop(self, miner: Miner) -> None:
        assert miner.server is not None
        miner.server.stop()
        miner.server = None

    def validator_config(self) -> ValidatorConfig:
        return ValidatorConfig(
            chain=self.chain.url,
            netuid=NETUID,
            wallet="validator/default",
            wallet_path=self.root / "wallets",
            home=self.root / "validator",
            corpus_size=16,
            queries_per_miner=2,
            challenges_per_miner=2,
            audits_per_miner=1,
            request_timeout_s=2.0,
            challenge_deadline_s=2.0,
            probe_interval_s=PROBE_INTERVAL_S,
            probe_timeout_s=0.3,
        )

    def client(self) -> Network:
        config = NetworkConfig(
            chain=self.chain.url,
            netuid=NETUID,
            metagraph_ttl_s=0.2,
            probe_interval_s=PROBE_INTERVAL_S,
            probe_timeout_s=0.3,
        )
        return Network(self.chain, config, signer=ALICE)


@pytest.fixture
def subnet(tmp_path: Path) -> Iterator[Subnet]:
    params = ChainParams(block_time_s=0.2, min_validator_stake=MIN_STAKE)
    chain = LocalChain.create(tmp_path / "chain.sqlite", NETUID, params)
    wallet, _ = new_wallet("validator/default", tmp_path / "wallets")
    chain.register(NETUID, wallet, stake=MIN_STAKE)
    assert identity(wallet).hotkey
    miners = []
    for i in range(4):
        signer = Keypair.create_from_uri(f"//miner-{i}")
        uid = chain.register(NETUID, signer, coldkey=f"miner-coldkey-{i}")
        miners.append(Miner(signer, uid, tmp_path / f"miner{i}"))
    net = Subnet(tmp_path, chain, miners)
    for m in miners:
        net.start(m)
    try:
        yield net
    finally:
        for m in miners:
            if m.server is not None:
                net.stop(m)
        chain.close()


def _items(namespace: str, seed: int) -> list[IngestItem]:
    return [IngestItem(embedding=v, namespace=namespace) for v in unit_vectors(24, seed=seed)]


async def _until_serving(miner: Miner, serving: bool, *networks: Network) -> None:
    """Until each network client's probes see ``miner`` serving (or not)."""
    hotkey = miner.signer.ss58_address
    deadline = time.monotonic() + 15
    for network in networks:
        while (hotkey in {n.hotkey for n in await network.miners()}) != serving:
            assert time.monotonic() < deadline, f"{hotkey} still {'not ' * serving}serving"
            await asyncio.sleep(0.1)


def test_a_returning_replica_drops_what_was_deleted_while_it_was_down(subnet: Subnet) -> None:
    async def body() -> None:
        async with Validator(subnet.validator_config()) as v:
            alice = subnet.client()
            try:
                await scenario(v, alice)
            finally:
                await alice.close()

    async def scenario(v: Validator, alice: Network) -> None:
        written: dict[str, list[str]] = {}
        for namespace, seed in ((PRIVATE, 1), (PUBLIC, 2)):
            reports = await alice.ingest(_items(namespace, seed))
            assert all(r.ok for r in reports)
            written[namespace] = [str(r.cid) for r in reports]
        await v.repair_round()  # the validator has read every miner's (empty) deletions

        down = max(subnet.miners, key=lambda m: len(m.holds(PRIVATE)) + len(m.holds(PUBLIC)))
        held = {ns: down.holds(ns) for ns in written}
        subnet.stop(down)
        await _until_serving(down, False, alice, v.network)

        deleted: dict[str, list[str]] = {}
        for namespace, cids in written.items():
            deleted[namespace] = [c for c in cids if c in held[namespace]][:5]
            for cid in deleted[namespace]:
                await alice.delete(cid, namespace)  # every serving replica confirms it
        # One record is deleted and then written again while the replica is still down.
        again = deleted[PRIVATE].pop()
        item = _items(PRIVATE, 1)[written[PRIVATE].index(again)]
        assert (await alice.ingest([item]))[0].ok

        subnet.start(down)
        await _until_serving(down, True, alice, v.network)
        stale = {ns: down.holds(ns) & set(cids) for ns, cids in deleted.items()}
        assert stale == {ns: set(cids) for ns, cids in deleted.items()}  # back with them

        report = await v.repair_round()
        assert report.deletions_found >= sum(map(len, deleted.values()))
        assert report.deletions_applied == sum(map(len, deleted.values()))
        for namespace, cids in deleted.items():
            assert not down.holds(namespace) & set(cids)
            assert not any(set(cids) & m.holds(namespace) for m in subnet.miners)
            for cid in cids:
                assert (await alice.get(cid, namespace))[0] is None
        assert again in down.holds(PRIVATE)  # written after the delete: it stays
        assert (await alice.get(again, PRIVATE))[0] is not None

        report = await v.repair_round()  # nothing left to tell, and nothing deleted is copied
        assert (report.deletions_found, report.deletions_applied) == (0, 0)
        for namespace, cids in deleted.items():
            assert not any(set(cids) & m.holds(namespace) for m in subnet.miners)

    asyncio.run(body())


def test_deletions_are_shown_to_validators_only_and_bad_ones_get_a_400(subnet: Subnet) -> None:
    miner = subnet.miners[0]
    with httpx.Client(base_url=miner.url, timeout=10, auth=HotkeyAuth(ALICE)) as http:
        refused = http.get("/deletions")
        assert refused.status_code == 403 and "validators only" in refused.json()["error"]
        bad = http.get("/deletions", params={"after": -1})
        assert bad.status_code == 400
        for body, says in (
            (b"{}", "deletions"),
            (b'{"deletions": [{"cid": 1}]}', "deletions"),
            (b"not json", "not valid JSON"),
        ):
            answer = http.post("/deletions", content=body)
            assert answer.status_code == 400 and says in answer.json()["error"], answer.text
        unproven = {"namespace": "x", "cid": "v1::00", "deleted_at": time.time(), "proof": "{}"}
        answer = http.post("/deletions", json={"deletions": [unproven]})
        assert answer.status_code == 200
        (outcome,) = answer.json()["outcomes"]
        assert outcome.startswith("refused: not a signed request")


def test_the_writer_deletes_a_public_record_a_validator_copied(subnet: Subnet) -> None:
    """Repair copies a public record onto the next closest miner while a replica is down: its
    writer may still delete it everywhere, that copy included."""

    async def body() -> None:
        async with Validator(subnet.validator_config()) as v:
            alice = subnet.client()
            try:
                reports = await alice.ingest(_items(PUBLIC, 4))
                assert all(r.ok for r in reports)
                down = max(subnet.miners, key=lambda m: len(m.holds(PUBLIC)))
                held = sorted(down.holds(PUBLIC))
                subnet.stop(down)
                await _until_serving(down, False, alice, v.network)
                assert (await v.repair_round()).foreign_repaired >= len(held)
                for cid in held:
                    await alice.delete(cid, PUBLIC)
                    assert not any(cid in m.holds(PUBLIC) for m in subnet.miners if m.server)
            finally:
                await alice.close()

    asyncio.run(body())
