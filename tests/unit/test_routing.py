"""XOR routing (docs/architecture.md, "Routing and replication") and a miner's RouteCheck, on hand-built metagraphs; no sockets."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import pytest

from engram.chain.base import Metagraph, Neuron
from engram.cid import generate_cid
from engram.network.routing import REPLICAS, RouteCheck, closest, key_id, node_id, replicas
from tests.conftest import unit_vectors

BLOCK = 1_000


def _sha(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest(), "big")


def _neuron(uid: int, hotkey: str | None = None, *, axon_block: int | None = BLOCK) -> Neuron:
    announced = axon_block is not None
    return Neuron(
        uid=uid,
        hotkey=hotkey if hotkey is not None else f"hotkey-{uid}",
        coldkey=f"coldkey-{uid}",
        stake=0.0,
        validator_permit=False,
        ip="127.0.0.1" if announced else None,
        port=9000 + uid if announced else None,
        axon_block=axon_block,
    )


def _metagraph(neurons: list[Neuron]) -> Metagraph:
    return Metagraph(netuid=1, block=BLOCK, neurons=tuple(neurons), tempo=360)


def _cids(n: int) -> list[str]:
    return [generate_cid(v, {"i": i}) for i, v in enumerate(unit_vectors(n, seed=7))]


MINERS = [_neuron(uid) for uid in range(8)]
CIDS = _cids(6)


def test_node_and_key_ids_are_sha256_of_hotkey_and_cid() -> None:
    assert node_id("hotkey-3") == _sha("hotkey-3")
    for cid in CIDS:
        assert key_id(cid) == _sha(cid)
        assert 0 < key_id(cid) < 2**256


@pytest.mark.parametrize("cid", CIDS)
def test_closest_orders_by_xor_distance(cid: str) -> None:
    expected = sorted(MINERS, key=lambda n: _sha(n.hotkey) ^ _sha(cid))
    shuffled = MINERS[:]
    random.Random(cid).shuffle(shuffled)
    assert [n.uid for n in closest(cid, shuffled)] == [n.uid for n in expected]
    assert [n.uid for n in closest(cid, shuffled, 3)] == [n.uid for n in expected[:3]]
    distances = [_sha(n.hotkey) ^ _sha(cid) for n in closest(cid, MINERS)]
    assert distances == sorted(distances)


def test_closest_breaks_ties_by_uid() -> None:
    # The same hotkey at several uids is at the same distance from every CID.
    twins = [_neuron(uid, "same-hotkey") for uid in (5, 2, 9)] + [_neuron(1, "other")]
    for cid in CIDS:
        tied = [n.uid for n in closest(cid, twins) if n.hotkey == "same-hotkey"]
        assert tied == [2, 5, 9]


def test_replicas_are_three_distinct_miners_and_deterministic() -> None:
    assert REPLICAS == 3
    for cid in CIDS:
        chosen = replicas(cid, MINERS)
        assert len(chosen) == 3
        assert len({n.hotkey for n in chosen}) == 3
        assert chosen == closest(cid, MINERS, 3)
        assert replicas(cid, list(reversed(MINERS))) == chosen
        assert replicas(cid, MINERS) == chosen
    assert len(replicas(CIDS[0], MINERS[:2])) == 2  # fewer miners than R: all of them


def test_replicas_spread_over_the_miners() -> None:
    primaries = {replicas(cid, MINERS)[0].hotkey for cid in _cids(64)}
    assert len(primaries) > 4


def test_routecheck_accepts_everything_before_a_metagraph() -> None:
    check = RouteCheck("hotkey-0")
    assert all(check.accepts(cid) for cid in CIDS)


def test_routecheck_accepts_exactly_the_cids_routed_to_it() -> None:
    graph = _metagraph(MINERS)
    for miner in MINERS:
        check = RouteCheck(miner.hotkey)
        check.update(graph)
        for cid in _cids(24):
            routed = miner.hotkey in {n.hotkey for n in closest(cid, MINERS, 3)}
            assert check.accepts(cid) is routed
            assert check.replicas(cid) == closest(cid, MINERS, 3)


def test_routecheck_refuses_an_unregistered_hotkey() -> None:
    check = RouteCheck("not-on-the-subnet")
    check.update(_metagraph(MINERS))
    assert not any(check.accepts(cid) for cid in CIDS)


def test_an_axon_announced_long_ago_is_still_routed_to() -> None:
    # Miners announce once: the age of an announcement says nothing about serving.
    ancient = [_neuron(n.uid, n.hotkey, axon_block=0) for n in MINERS]
    assert _metagraph(ancient).serving() == ancient


def test_routecheck_accepts_a_cid_whose_closer_miners_do_not_answer() -> None:
    # The CID's replicas are a, b, c; b stops answering, so clients route to a, c, fourth.
    cid = CIDS[0]
    ranked = closest(cid, MINERS)
    a, b, c, fourth, fifth = ranked[:5]
    asked: list[list[str]] = []

    def answering(miners: Sequence[Neuron]) -> set[str]:
        asked.append(sorted(n.hotkey for n in miners))
        return {n.hotkey for n in miners} - {b.hotkey}

    graph = _metagraph(MINERS)
    for holder in (a, b, c, fourth):
        check = RouteCheck(holder.hotkey, answering=answering)
        check.update(graph)
        assert check.accepts(cid), holder.hotkey
    # Only the miner past the R closest asked which of the closer ones answer.
    assert asked == [sorted([a.hotkey, b.hotkey, c.hotkey])]
    # One silent miner makes room for one more, not two.
    outsider = RouteCheck(fifth.hotkey, answering=answering)
    outsider.update(graph)
    assert not outsider.accepts(cid)
    # Without a view of who answers, only the R closest accept.
    blind = RouteCheck(fourth.hotkey)
    blind.update(graph)
    assert not blind.accepts(cid)


def test_routecheck_ignores_neurons_that_never_announced() -> None:
    cid = CIDS[1]
    a = closest(cid, MINERS, 3)[0]
    silent = _neuron(a.uid, a.hotkey, axon_block=None)  # registered, no axon
    graph = _metagraph([silent if n.uid == a.uid else n for n in MINERS])
    check = RouteCheck(a.hotkey)
    check.update(graph)
    assert not check.accepts(cid)
    fourth = closest(cid, MINERS)[3]
    newcomer = RouteCheck(fourth.hotkey)
    newcomer.update(graph)
    assert newcomer.accepts(cid)
