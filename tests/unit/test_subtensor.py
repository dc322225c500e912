"""SubtensorChain, the adapter to Bittensor's subtensor, against a stand-in for the SDK's Subtensor.

The public Bittensor chain cannot be reached from here, so the SDK's ``Subtensor``
is replaced by :class:`tests.subtensor_standin.SubtensorStandIn`, the one fake the
suite allows; the SDK's reads, intents and signers run for real on top of it. The
keys, the miners probed by ``engram status --live`` and ``from_subnet`` (real HTTP
servers on 127.0.0.1) and the LocalChain are real.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import bittensor as bt
import pytest
from bittensor.settings import U16_MAX
from bittensor.sp_core import Keypair
from typer.testing import CliRunner

from engram import AsyncEngramClient, EngramClient
from engram.chain import LocalChain, open_chain
from engram.chain.keys import new_wallet
from engram.chain.subtensor import SubtensorChain, fit_weights
from engram.cli import app
from engram.config import SPEC_VERSION, ChainParams, MinerConfig, SubtensorConfig
from engram.errors import ChainError, ChainUnavailableError, UnavailableError
from engram.miner.app import create_miner_app
from engram.miner.axon import Axon
from engram.network.routing import RouteCheck, replicas
from tests.conftest import HashEmbedder, ThreadedServer, free_port, serve_in_thread
from tests.subtensor_standin import RAO, SubtensorStandIn, address, standin_for

NETUID = 450
FAST = SubtensorConfig(
    subtensor_timeout_s=2.0,
    subtensor_extrinsic_timeout_s=5.0,
    subtensor_retries=2,
    subtensor_backoff_s=0.01,
)


@pytest.fixture
def standin() -> SubtensorStandIn:
    return SubtensorStandIn("test")


@pytest.fixture
def validator(tmp_path: Path) -> bt.Wallet:
    return new_wallet("owner/validator", tmp_path / "wallets")[0]


def crowded(
    standin: SubtensorStandIn, validator: bt.Wallet, miners: int = 255, **hyperparameters: object
) -> None:
    """Subnet 450 with ``validator`` at uid 0 (with a permit) and ``miners`` serving miners."""
    standin.add_subnet(NETUID, **hyperparameters)
    standin.add_neuron(
        NETUID,
        validator.hotkey.ss58_address,
        validator.coldkeypub.ss58_address,
        stake_tao=10_000.0,
        permit=True,
    )
    for i in range(1, miners + 1):
        standin.add_neuron(
            NETUID,
            address(f"miner-{i}"),
            stake_tao=float(i),
            incentive=i / 100_000,
            axon=(f"10.{i // 200}.{i % 200}.1", 8000 + i),
        )


def chain_of(standin: SubtensorStandIn) -> SubtensorChain:
    return SubtensorChain("test", subtensor=standin, config=FAST)  # type: ignore[arg-type]


def opinion(uids: list[int]) -> list[float]:
    """A validator's scores: a few miners stand out, most are zero."""
    return [float(u % 7 == 0) * (1 + u % 5) for u in uids]


# --- the SDK surface the adapter uses -----------------------------------------------------------


def test_standin_offers_what_the_sdk_offers(standin: SubtensorStandIn) -> None:
    """Every SDK call the adapter makes exists on a real (never connected) Subtensor."""
    real = bt.Subtensor("test")
    used = [
        "subnets.metagraph",
        "subnets.burn",
        "subnets.commit_reveal_enabled",
        "neurons.uid",
        "hyperparameters.weights_rate_limit",
        "hyperparameters.min_allowed_weights",
        "weights.weights",
        "balances.get",
        "query",
        "execute",
        "connect",
        "close",
    ]
    for dotted in used:
        for client in (real, standin):
            target: object = client
            for part in dotted.split("."):
                target = getattr(target, part)
            assert callable(target), dotted
    assert isinstance(inspect.getattr_static(real, "block"), property)
    assert real._mode is None  # nothing was dialled


# --- weights ------------------------------------------------------------------------------------


def test_fit_weights_drops_zeros_and_quantises_to_u16() -> None:
    uids, values = fit_weights([3, 1, 2], [0.5, 0.0, 1.0], min_allowed=1, max_weight_limit=U16_MAX)
    assert uids == [2, 3]
    assert values == [U16_MAX, round(U16_MAX / 2)]
    assert fit_weights([1, 2], [0.0, 0.0], min_allowed=4, max_weight_limit=U16_MAX) == ([], [])


def test_fit_weights_pads_to_min_allowed_and_clips_to_max_weight_limit() -> None:
    limit = U16_MAX // 5  # no uid may hold more than a fifth of the weight
    all_uids = list(range(20))
    scores = [0.0] * 20
    scores[4], scores[9] = 1.0, 0.25
    uids, values = fit_weights(all_uids, scores, min_allowed=8, max_weight_limit=limit, own_uid=0)
    assert len(uids) == 8 and 0 not in uids
    assert {4, 9} <= set(uids)
    assert all(isinstance(v, int) and 1 <= v <= U16_MAX for v in values)
    assert max(values) == U16_MAX
    assert max(values) / sum(values) <= limit / U16_MAX
    # The highest-scored miner keeps the most weight.
    assert values[uids.index(4)] == max(values)


def test_fit_weights_refuses_what_no_weights_could_satisfy() -> None:
    with pytest.raises(ChainError, match="at least 8 uids"):
        fit_weights([1, 2, 3], [1.0, 0.0, 0.0], min_allowed=8, max_weight_limit=U16_MAX)
    with pytest.raises(ChainError, match="at least 11 uids"):
        fit_weights(list(range(5)), [1.0] * 5, min_allowed=1, max_weight_limit=U16_MAX // 10)


def test_weights_reach_set_weights_as_u16_within_the_subnets_limits(
    standin: SubtensorStandIn, validator: bt.Wallet
) -> None:
    limit = U16_MAX // 10
    crowded(standin, validator, min_allowed_weights=16, max_weight_limit=limit)
    chain = chain_of(standin)
    uids = list(range(1, 256))
    scores = opinion(uids)
    chain.set_weights(NETUID, validator, uids, scores, version_key=SPEC_VERSION)

    [sent] = standin.extrinsics
    assert sent.ok and sent.function == "set_mechanism_weights"
    assert sent.signer == validator.hotkey.ss58_address
    assert sent.params["version_key"] == SPEC_VERSION
    dests, weights = sent.params["dests"], sent.params["weights"]
    assert all(isinstance(w, int) and 0 < w <= U16_MAX for w in weights)
    assert len(dests) >= 16 and max(weights) == U16_MAX
    assert max(weights) / sum(weights) <= limit / U16_MAX
    expected, fitted = fit_weights(uids, scores, min_allowed=16, max_weight_limit=limit, own_uid=0)
    assert dests == expected
    assert all(abs(a - b) <= 1 for a, b in zip(weights, fitted, strict=True))
    row = chain.metagraph(NETUID).weights[0]
    assert set(row) == set(dests) and sum(row.values()) == pytest.approx(1.0)
    chain.close()


def test_weights_go_as_a_timelocked_commit_when_commit_reveal_is_on(
    standin: SubtensorStandIn, validator: bt.Wallet
) -> None:
    crowded(
        standin, validator, commit_reveal=True, tempo=100, reveal_period=2, min_allowed_weights=4
    )
    chain = chain_of(standin)
    uids = list(range(1, 256))
    chain.set_weights(NETUID, validator, uids, opinion(uids), version_key=SPEC_VERSION)

    [sent] = standin.extrinsics
    assert sent.ok and sent.function == "commit_timelocked_mechanism_weights"
    assert sent.params["reveal_round"] > 0 and len(sent.params["commit"]) > 32
    assert not standin.calls("set_mechanism_weights")
    assert chain.metagraph(NETUID).weights == {}  # hidden until the chain reveals it
    standin.advance(200)
    revealed = chain.metagraph(NETUID).weights[0]
    expected, _ = fit_weights(uids, opinion(uids), min_allowed=4, max_weight_limit=U16_MAX)
    assert sorted(revealed) == expected
    chain.close()


def test_weights_respect_the_rate_limit(
    standin: SubtensorStandIn, validator: bt.Wallet, caplog: pytest.LogCaptureFixture
) -> None:
    crowded(standin, validator, miners=20, weights_rate_limit=100)
    chain = chain_of(standin)
    uids = list(range(1, 21))
    with caplog.at_level(logging.INFO, logger="engram.chain"):
        for _ in range(3):  # a validator's cadence faster than the subnet allows
            chain.set_weights(NETUID, validator, uids, opinion(uids), version_key=SPEC_VERSION)
        assert len(standin.extrinsics) == 1
        assert "rate limit allows them in 100 blocks" in caplog.text
        standin.advance(99)
        chain.set_weights(NETUID, validator, uids, opinion(uids), version_key=SPEC_VERSION)
        assert len(standin.extrinsics) == 1
        standin.advance(1)
        chain.set_weights(NETUID, validator, uids, opinion(uids), version_key=SPEC_VERSION)
    assert [e.ok for e in standin.extrinsics] == [True, True]  # none the chain refused
    chain.close()


def test_weights_nobody_would_accept_are_not_sent(
    standin: SubtensorStandIn, validator: bt.Wallet, caplog: pytest.LogCaptureFixture
) -> None:
    crowded(standin, validator, miners=10, weights_version=SPEC_VERSION + 1)
    chain = chain_of(standin)
    uids = list(range(1, 11))
    with pytest.raises(ChainError, match="upgrade"):
        chain.set_weights(NETUID, validator, uids, opinion(uids), version_key=SPEC_VERSION)
    standin.state[NETUID].weights_version = 0
    with caplog.at_level(logging.INFO, logger="engram.chain"):
        chain.set_weights(NETUID, validator, uids, [0.0] * 10, version_key=SPEC_VERSION)
    assert "every weight is zero" in caplog.text
    standin.state[NETUID].neurons[0].permit = False
    with pytest.raises(ChainError, match="no validator permit"):
        chain.set_weights(NETUID, validator, uids, opinion(uids), version_key=SPEC_VERSION)
    with pytest.raises(ChainError, match="repeat"):
        chain.set_weights(NETUID, validator, [1, 1], [1.0, 1.0], version_key=SPEC_VERSION)
    assert standin.extrinsics == []
    chain.close()


def test_writes_need_a_signer_that_can_sign(
    standin: SubtensorStandIn, validator: bt.Wallet
) -> None:
    crowded(standin, validator, miners=3)
    chain = chain_of(standin)
    public_only = Keypair(ss58_address=validator.hotkey.ss58_address)
    for signer, message in (
        (validator.hotkey.ss58_address, "cannot sign chain writes with str"),
        (public_only, "no private key"),
        (object(), "cannot sign chain writes with object"),
    ):
        with pytest.raises(ChainError, match=message):
            chain.set_weights(NETUID, signer, [1], [1.0], version_key=SPEC_VERSION)
    # A hotkey's own Keypair signs its own writes.
    chain.set_weights(NETUID, validator.hotkey, [1, 2], [1.0, 0.5], version_key=SPEC_VERSION)
    assert standin.extrinsics[-1].signer == validator.hotkey.ss58_address
    with pytest.raises(ChainError, match="give a bittensor Wallet"):
        chain.register(NETUID, validator.hotkey)
    chain.close()


# --- an unreachable chain -----------------------------------------------------------------------


def test_an_unreachable_chain_is_retried_then_reported_and_works_again(
    standin: SubtensorStandIn, validator: bt.Wallet
) -> None:
    crowded(standin, validator, miners=5)
    chain = chain_of(standin)
    standin.unreachable = True
    began = time.monotonic()
    with pytest.raises(ChainUnavailableError, match="unreachable: could not read subnet 450 in 3"):
        chain.metagraph(NETUID)
    assert standin.requests == 3  # the first try and two retries
    assert time.monotonic() - began >= 0.01 + 0.02  # backing off between them
    with pytest.raises(ChainUnavailableError, match="set weights"):
        chain.set_weights(NETUID, validator, [1, 2], [1.0, 1.0], version_key=SPEC_VERSION)
    assert standin.extrinsics == []

    standin.unreachable = False  # the chain is back
    assert len(chain.metagraph(NETUID).neurons) == 6
    chain.set_weights(NETUID, validator, [1, 2], [1.0, 1.0], version_key=SPEC_VERSION)
    assert [e.ok for e in standin.extrinsics] == [True]

    standin.fail_next = 2  # a short outage inside one call: its retries carry it
    assert chain.block() == standin.block_number
    chain.close()
    with pytest.raises(ChainUnavailableError, match="closed"):
        chain.block()


def test_a_hung_chain_times_out(standin: SubtensorStandIn, validator: bt.Wallet) -> None:
    crowded(standin, validator, miners=1)
    config = SubtensorConfig(subtensor_timeout_s=0.2, subtensor_retries=1, subtensor_backoff_s=0.01)
    chain = SubtensorChain("test", subtensor=standin, config=config)  # type: ignore[arg-type]
    standin.delay_s = 1.0
    began = time.monotonic()
    with pytest.raises(ChainUnavailableError, match=r"no answer within 0\.2s"):
        chain.block()
    assert time.monotonic() - began < 0.9
    chain.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_real_sdk_finding_no_node_is_reported_unreachable() -> None:
    """The SDK's own transport, dialling a port nobody listens on (no stand-in here)."""
    chain = SubtensorChain(f"ws://127.0.0.1:{free_port()}", config=FAST)
    try:
        chain.metagraph(NETUID)
    except ChainUnavailableError as exc:
        message = exc.message
    chain.close()
    assert "in 3 attempts (RpcConnectionError" in message
    del chain
    # The SDK's close() stops its private event loop without closing it; collect it here,
    # where this test ignores the ResourceWarning that follows, not in a later test.
    gc.collect()


# --- the metagraph and routing ------------------------------------------------------------------


def test_a_metagraph_of_256_neurons_maps_and_routes(
    standin: SubtensorStandIn, validator: bt.Wallet
) -> None:
    crowded(standin, validator, tempo=99)
    state = standin.state[NETUID].neurons
    state[7].last_update = standin.block_number - 5
    state[9].axon = None  # registered, never served
    graph = chain_of(standin).metagraph(NETUID)

    assert (graph.netuid, graph.block, graph.tempo) == (NETUID, standin.block_number, 99)
    assert [n.uid for n in graph.neurons] == list(range(256))
    for n, s in zip(graph.neurons, state, strict=True):
        assert (n.hotkey, n.coldkey, n.validator_permit) == (s.hotkey, s.coldkey, s.permit)
        assert n.stake == pytest.approx(s.stake_rao / RAO)
        assert n.incentive == pytest.approx(s.incentive_u16 / U16_MAX)
        assert n.emission == pytest.approx(s.emission_rao / RAO)
        assert n.registered_block == s.registered_block and n.last_update == s.last_update
    assert graph.neurons[0].validator_permit and graph.neurons[0].axon_url is None
    assert graph.neurons[7].last_update == standin.block_number - 5
    assert graph.neurons[201].axon_url == "http://10.1.1.1:8201"
    assert graph.neurons[201].axon_block == state[201].axon["block"]  # type: ignore[index]
    serving = graph.serving()
    assert len(serving) == 254 and {0, 9}.isdisjoint(n.uid for n in serving)

    for cid in (f"v1::{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(50)):
        key = int.from_bytes(hashlib.sha256(cid.encode()).digest(), "big")

        def distance(hotkey: str, key: int = key) -> int:
            return int.from_bytes(hashlib.sha256(hotkey.encode()).digest(), "big") ^ key

        expected = sorted(
            (s for s in state if s.axon is not None), key=lambda s: distance(s.hotkey)
        )
        assert [n.hotkey for n in replicas(cid, serving)] == [s.hotkey for s in expected[:3]]


def test_an_unknown_subnet_says_so(standin: SubtensorStandIn) -> None:
    with pytest.raises(ChainError, match="subnet 7 does not exist on test"):
        chain_of(standin).metagraph(7)


# --- axons --------------------------------------------------------------------------------------


def test_an_axon_is_announced_once_and_again_only_when_it_moves(
    standin: SubtensorStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    miner = new_wallet("owner/miner", tmp_path / "wallets")[0]
    standin.add_subnet(NETUID, serving_rate_limit=50)
    standin.add_neuron(NETUID, miner.hotkey.ss58_address, miner.coldkeypub.ss58_address)
    chain = chain_of(standin)
    for _ in range(20):  # the miner's sync cycles
        chain.serve_axon(NETUID, miner, "203.0.113.7", 8091)
    [served] = standin.extrinsics
    assert served.function == "serve_axon" and served.signer == miner.hotkey.ss58_address
    assert chain.metagraph(NETUID).neurons[0].axon_url == "http://203.0.113.7:8091"

    with caplog.at_level(logging.INFO, logger="engram.chain"):
        chain.serve_axon(NETUID, miner, "203.0.113.8", 8091)  # moved, within the rate limit
    assert len(standin.extrinsics) == 1 and "in 50 blocks" in caplog.text
    standin.advance(50)
    chain.serve_axon(NETUID, miner, "203.0.113.8", 8091)
    assert [e.ok for e in standin.extrinsics] == [True, True]
    assert chain.metagraph(NETUID).neurons[0].ip == "203.0.113.8"

    for bad, message in (("127.0.0.1", "refuses 127.0.0.1"), ("miner.example", "IP address")):
        with pytest.raises(ChainError, match=message):
            chain.serve_axon(NETUID, miner, bad, 8091)
    stranger = new_wallet("owner/stranger", tmp_path / "wallets")[0]
    with pytest.raises(ChainError, match="not registered on subnet 450 of test"):
        chain.serve_axon(NETUID, stranger, "203.0.113.9", 8091)
    chain.close()


def test_a_miner_announces_its_axon_once_across_its_sync_cycles(
    standin: SubtensorStandIn, tmp_path: Path
) -> None:
    """The miner's own start (``Axon.announce``) and sync cycles (``Axon.sync``) on Bittensor."""
    wallet = new_wallet("owner/miner", tmp_path / "wallets")[0]
    standin.add_subnet(NETUID)
    standin.add_neuron(NETUID, wallet.hotkey.ss58_address, wallet.coldkeypub.ss58_address)
    standin.add_neuron(NETUID, address("validator"), stake_tao=5000.0, permit=True)
    chain = chain_of(standin)
    route = RouteCheck(wallet.hotkey.ss58_address)
    axon = Axon(chain, NETUID, wallet, 0, "198.51.100.4", 8091, 12.0, route)
    axon.announce()
    for _ in range(30):
        standin.advance(1)
        axon.sync()
    assert [e.function for e in standin.extrinsics] == ["serve_axon"]
    assert axon.validators == frozenset({address("validator")})
    chain.close()


# --- registration -------------------------------------------------------------------------------


def test_register_burns_the_cost_once(standin: SubtensorStandIn, tmp_path: Path) -> None:
    wallet = new_wallet("owner/miner", tmp_path / "wallets")[0]
    coldkey = wallet.coldkeypub.ss58_address
    standin.add_subnet(NETUID, burn_rao=RAO // 2)
    standin.add_neuron(NETUID, address("someone"))
    chain = chain_of(standin)
    assert chain.registration_cost(NETUID) == 0.5
    with pytest.raises(ChainError, match=r"NotEnoughBalance|balance"):
        chain.register(NETUID, wallet)
    standin.fund(coldkey, 2.0)
    assert chain.balance(coldkey) == 2.0
    assert chain.register(NETUID, wallet) == 1
    assert chain.register(NETUID, wallet) == 1  # idempotent: nothing paid twice
    paid = standin.calls("burned_register")
    assert [e.ok for e in paid] == [False, True]
    assert paid[-1].signer == coldkey
    assert paid[-1].params == {"netuid": NETUID, "hotkey": wallet.hotkey.ss58_address}
    assert chain.balance(coldkey) == 1.5
    assert chain.uid(NETUID, wallet.hotkey.ss58_address) == 1
    with pytest.raises(ChainError, match="btcli stake add"):
        chain.register(NETUID, wallet, stake=100.0)
    with pytest.raises(ChainError, match="not the wallet's coldkey"):
        chain.register(NETUID, wallet, coldkey=address("other"))
    chain.close()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, standin: SubtensorStandIn) -> CliRunner:
    """The ``engram`` command, whose Bittensor networks are the stand-in."""
    standin_for(monkeypatch, standin)
    monkeypatch.setenv("ENGRAM_SUBTENSOR_BACKOFF_S", "0.01")
    monkeypatch.setenv("ENGRAM_SUBTENSOR_RETRIES", "1")
    monkeypatch.delenv("ENGRAM_URL", raising=False)
    return CliRunner(env={"COLUMNS": "240"})


def test_cli_register_on_bittensor_shows_the_cost_and_asks(
    cli: CliRunner, standin: SubtensorStandIn, tmp_path: Path
) -> None:
    wallets = tmp_path / "wallets"
    wallet = new_wallet("owner/miner", wallets)[0]
    standin.add_subnet(NETUID, burn_rao=RAO // 4)
    standin.fund(wallet.coldkeypub.ss58_address, 1.0)
    args = ["chain", "register", "test", "--netuid", "450", "--wallet", "owner/miner"]
    args += ["--wallet-path", str(wallets)]

    declined = cli.invoke(app, args, input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "burns 0.25 TAO" in declined.output and "holds 1 TAO" in declined.output
    assert "nothing was paid" in declined.output and not standin.extrinsics
    assert cli.invoke(app, args).exit_code == 1  # no answer is no

    accepted = cli.invoke(app, args, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "is uid 0 on subnet 450" in accepted.output
    again = cli.invoke(app, [*args, "--yes"])
    assert again.exit_code == 0 and "burns" not in again.output
    assert len(standin.calls("burned_register")) == 1
    staked = cli.invoke(app, [*args, "--stake", "10"])
    assert staked.exit_code == 2 and "btcli stake add" in staked.output


# --- engram status --live and from_subnet -------------------------------------------------------


@pytest.fixture(scope="module")
def miners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ThreadedServer]]:
    """Two real miners on 127.0.0.1, one holding a record."""
    started: list[ThreadedServer] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            home = tmp_path_factory.mktemp(f"miner-{name}")
            config = MinerConfig(home=home, port=port, reader_threads=1)
            started.append(
                serve_in_thread(create_miner_app(config, embedder=HashEmbedder()), port, name)
            )
        with EngramClient(started[0].url) as client:
            client.ingest("held by miner a")
        yield started
    finally:
        for server in started:
            server.stop()


def subnet_of_miners(standin: SubtensorStandIn, miners: list[ThreadedServer]) -> int:
    """Subnet 450: a validator, the two miners and one whose axon nobody answers at."""
    standin.add_subnet(NETUID)
    standin.add_neuron(NETUID, address("validator"), stake_tao=5000.0, permit=True)
    for i, server in enumerate(miners):
        standin.add_neuron(
            NETUID, address(f"m{i}"), incentive=0.3 + i / 10, axon=("127.0.0.1", server.port)
        )
    dead = free_port()
    standin.add_neuron(NETUID, address("dead"), incentive=0.9, axon=("127.0.0.1", dead))
    return dead


def test_status_live_against_bittensor(
    cli: CliRunner, standin: SubtensorStandIn, miners: list[ThreadedServer]
) -> None:
    subnet_of_miners(standin, miners)
    args = ["status", "--live", "--chain", "test", "--netuid", "450"]
    result = cli.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["chain"], report["netuid"], report["block"]) == ("test", 450, 10_000)
    assert (report["neurons"], report["announced"], report["ready"]) == (4, 3, 2)
    by_uid = {m["uid"]: m for m in report["miners"]}
    assert by_uid[0]["probe"] is None and by_uid[0]["validator_permit"]
    for uid, records in ((1, 1), (2, 0)):
        probe = by_uid[uid]["probe"]
        assert probe["ready"] and probe["latency_ms"] > 0 and probe["error"] is None
        assert probe["stats"]["records"] == records
        assert by_uid[uid]["axon"] == miners[uid - 1].url
    assert not by_uid[3]["probe"]["ready"] and by_uid[3]["probe"]["error"]

    table = cli.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "test · subnet 450" in table.output and "3 of 4 announced, 2 serving" in table.output
    assert table.output.count(" ok ") == 2

    assert cli.invoke(app, [*args, "--url", miners[0].url]).exit_code == 2
    assert cli.invoke(app, ["status", "--chain", "test"]).exit_code == 2
    standin.unreachable = True
    down = cli.invoke(app, args)
    assert down.exit_code == 1 and "unreachable" in down.output


def test_status_live_against_a_localnet(
    cli: CliRunner, tmp_path: Path, miners: list[ThreadedServer]
) -> None:
    params = ChainParams(block_time_s=0.5, tempo=20, axon_ttl_blocks=100, min_validator_stake=1.0)
    path = tmp_path / "chain.sqlite"
    chain = LocalChain.create(path, 1, params)
    for i, port in enumerate([miners[0].port, miners[1].port, free_port()]):
        key = Keypair.create_from_uri(f"//status-miner-{i}")
        chain.register(1, key, coldkey=address("owner"))
        chain.serve_axon(1, key, "127.0.0.1", port)
    chain.close()
    result = cli.invoke(app, ["status", "--live", "--chain", f"local:{path}", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["netuid"], report["announced"], report["ready"]) == (1, 3, 2)
    assert sorted(m["probe"]["stats"]["records"] for m in report["miners"][:2]) == [0, 1]


def test_from_subnet_probes_the_best_miners(
    monkeypatch: pytest.MonkeyPatch, standin: SubtensorStandIn, miners: list[ThreadedServer]
) -> None:
    standin_for(monkeypatch, standin)
    subnet_of_miners(standin, miners)
    with EngramClient.from_subnet(netuid=450, network="test", embedder=HashEmbedder()) as client:
        assert client.health()["miners"] == 3
        assert [r.text for r in client.query("held by miner a", top_k=1)] == ["held by miner a"]

    async def twin() -> int:
        async with await AsyncEngramClient.from_subnet(
            netuid=450, network="test", embedder=HashEmbedder(), top_n=2
        ) as client:
            return (await client.health())["miners"]

    assert asyncio.run(twin()) == 3

    # The best by incentive is the dead one; alone, it fails fast.
    with pytest.raises(UnavailableError, match=r"none of the 1 best miners of subnet 450 on test"):
        EngramClient.from_subnet(
            netuid=450, network="test", embedder=HashEmbedder(), top_n=1, probe_timeout=0.5
        )
    with pytest.raises(UnavailableError, match="none of the 1 best"):
        asyncio.run(
            AsyncEngramClient.from_subnet(
                netuid=450, network="test", embedder=HashEmbedder(), top_n=1, probe_timeout=0.5
            )
        )


def test_open_chain_reaches_bittensor_through_the_sdk(
    monkeypatch: pytest.MonkeyPatch, standin: SubtensorStandIn
) -> None:
    standin_for(monkeypatch, standin)
    standin.add_subnet(NETUID)
    chain = open_chain("test")
    assert isinstance(chain, SubtensorChain) and chain.url == "test"
    assert chain.block() == standin.block_number
    chain.close()
    assert standin.closed == 1
