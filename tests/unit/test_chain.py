"""LocalChain, the chain registry and Yuma consensus, on real SQLite files and real keys."""

from __future__ import annotations

import functools
import inspect
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bittensor import Wallet
from bittensor.sp_core import Keypair

import engram.chain
from engram._version import __version__
from engram.chain import Chain, LocalChain, SubtensorChain, open_chain, register_chain_scheme
from engram.chain.consensus import yuma
from engram.chain.keys import new_wallet
from engram.config import SPEC_VERSION, ChainParams, spec_version
from engram.errors import ChainError, ChainUnavailableError

FAST = ChainParams(
    block_time_s=0.05, tempo=4, axon_ttl_blocks=6, max_uids=8, min_validator_stake=100.0
)


@functools.cache
def key(name: str) -> Keypair:
    """A real sr25519 hotkey, the same for the same name."""
    return Keypair.create_from_uri(f"//{name}")


def hotkey(name: str) -> str:
    return key(name).ss58_address


def wait_blocks(chain: LocalChain, n: int) -> None:
    target = chain.block() + n
    while chain.block() < target:
        time.sleep(0.01)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[LocalChain]:
    c = LocalChain.create(tmp_path / "chain.sqlite", params=FAST)
    yield c
    c.close()


# --- consensus ---------------------------------------------------------------------------


def test_yuma_single_validator_incentive_is_its_weights() -> None:
    incentive = yuma(np.array([5.0]), np.array([[0.2, 0.3, 0.5]]))
    np.testing.assert_allclose(incentive, [0.2, 0.3, 0.5])


def test_yuma_renormalises_rows() -> None:
    np.testing.assert_allclose(yuma(np.array([1.0]), np.array([[2.0, 6.0]])), [0.25, 0.75])


def test_yuma_minority_validator_cannot_lift_its_miner() -> None:
    stakes = np.array([70.0, 30.0])
    weights = np.array([[1.0, 0.0], [0.0, 1.0]])
    # Without the clip miner 1 would get 0.3; the 70% majority gave it nothing.
    np.testing.assert_allclose(yuma(stakes, weights), [1.0, 0.0])


def test_yuma_clips_to_the_stake_weighted_median() -> None:
    stakes = np.array([0.6, 0.4])
    weights = np.array([[0.5, 0.5], [0.1, 0.9]])
    # Miner 1: the majority gave 0.5, so the minority's 0.9 is clipped to 0.5.
    # Miner 0: half the stake gave at least 0.5 -> consensus 0.5, the 0.1 stays.
    rank = np.array([0.6 * 0.5 + 0.4 * 0.1, 0.6 * 0.5 + 0.4 * 0.5])
    np.testing.assert_allclose(yuma(stakes, weights), rank / rank.sum())


def test_yuma_agreeing_validators() -> None:
    weights = np.array([[0.25, 0.75], [0.25, 0.75], [0.25, 0.75]])
    np.testing.assert_allclose(yuma(np.array([1.0, 2.0, 3.0]), weights), [0.25, 0.75])


def test_yuma_zero_stake_counts_validators_equally() -> None:
    stakes = np.zeros(3)
    weights = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(yuma(stakes, weights), [1.0, 0.0])


def test_yuma_zero_weights_and_empty_shapes() -> None:
    np.testing.assert_array_equal(yuma(np.array([1.0, 1.0]), np.zeros((2, 3))), np.zeros(3))
    assert yuma(np.zeros(0), np.zeros((0, 4))).tolist() == [0.0] * 4
    assert yuma(np.array([1.0]), np.zeros((1, 0))).shape == (0,)


def test_yuma_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        yuma(np.array([1.0]), np.array([[-0.5, 1.0]]))
    with pytest.raises(ValueError):
        yuma(np.array([1.0, 2.0]), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError):
        yuma(np.array([np.nan]), np.array([[1.0]]))


# --- registration and axons --------------------------------------------------------------


def test_register_is_idempotent_and_hands_out_uids(chain: LocalChain) -> None:
    assert chain.register(1, key("hot-a"), coldkey="5Cold-a") == 0
    assert chain.register(1, key("hot-b"), stake=50.0, coldkey="5Cold-a") == 1
    assert chain.register(1, key("hot-a"), stake=999.0, coldkey="5Cold-a") == 0  # stake not reset
    mg = chain.metagraph(1)
    assert [(n.uid, n.hotkey, n.stake) for n in mg.neurons] == [
        (0, hotkey("hot-a"), 0.0),
        (1, hotkey("hot-b"), 50.0),
    ]
    with pytest.raises(ChainError, match="another coldkey"):
        chain.register(1, key("hot-a"), coldkey="5Cold-other")


def test_register_takes_the_coldkey_from_a_wallet(chain: LocalChain, tmp_path: Path) -> None:
    wallet, _ = new_wallet("owner/miner", tmp_path / "wallets")
    owner = wallet.coldkeypub.ss58_address
    uid = chain.register(1, wallet)
    neuron = chain.metagraph(1).by_uid(uid)
    assert neuron is not None
    assert (neuron.hotkey, neuron.coldkey) == (wallet.hotkey.ss58_address, owner)
    assert chain.register(1, wallet, coldkey=owner) == uid
    with pytest.raises(ChainError, match="not the wallet's coldkey"):
        chain.register(1, wallet, coldkey="5Cold-other")
    with pytest.raises(ChainError, match="cannot read the signer's hotkey"):
        chain.register(1, Wallet("owner", "missing", path=str(tmp_path / "wallets")))


def test_register_needs_a_coldkey_for_a_bare_keypair(chain: LocalChain) -> None:
    with pytest.raises(ChainError, match="coldkey is required"):
        chain.register(1, key("hot"))
    assert chain.metagraph(1).neurons == ()


@pytest.mark.parametrize("signer", ["5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", None, 42])
def test_chain_writes_refuse_what_cannot_sign(chain: LocalChain, signer: object) -> None:
    cannot = "address string|cannot sign"
    with pytest.raises(ChainError, match=cannot):
        chain.register(1, signer, coldkey="5Cold")
    chain.register(1, key("miner"), coldkey="5Cold")
    with pytest.raises(ChainError, match=cannot):
        chain.serve_axon(1, signer, "127.0.0.1", 8091)
    with pytest.raises(ChainError, match=cannot):
        chain.set_weights(1, signer, [0], [1.0], version_key=SPEC_VERSION)
    assert [n.hotkey for n in chain.metagraph(1).neurons] == [hotkey("miner")]


def test_local_chain_writes_match_the_chain_protocol() -> None:
    for name in ("register", "serve_axon", "set_weights"):
        assert inspect.signature(getattr(LocalChain, name)) == inspect.signature(
            getattr(Chain, name)
        )


def test_add_stake_grants_a_validator_permit(chain: LocalChain) -> None:
    chain.register(1, key("val"), stake=60.0, coldkey="5Cold")
    assert not chain.metagraph(1).by_hotkey(hotkey("val")).validator_permit  # type: ignore[union-attr]
    assert chain.add_stake(1, hotkey("val"), 40.0) == 100.0
    assert chain.metagraph(1).by_hotkey(hotkey("val")).validator_permit  # type: ignore[union-attr]
    with pytest.raises(ChainError):
        chain.add_stake(1, hotkey("val"), -1000.0)
    with pytest.raises(ChainError, match="not registered"):
        chain.add_stake(1, hotkey("nobody"), 1.0)


def test_full_subnet(chain: LocalChain) -> None:
    for i in range(FAST.max_uids):
        assert chain.register(1, key(f"hot-{i}"), coldkey="5Cold") == i
    with pytest.raises(ChainError, match="full"):
        chain.register(1, key("hot-late"), coldkey="5Cold")
    assert chain.register(1, key("hot-3"), coldkey="5Cold") == 3  # still idempotent when full


def test_unknown_netuid(chain: LocalChain) -> None:
    with pytest.raises(ChainError, match="subnet 7 does not exist"):
        chain.metagraph(7)
    with pytest.raises(ChainError):
        chain.register(7, key("hot"), coldkey="5Cold")


def test_serve_axon_requires_registration_and_a_valid_port(chain: LocalChain) -> None:
    with pytest.raises(ChainError, match="not registered"):
        chain.serve_axon(1, key("hot"), "127.0.0.1", 8091)
    chain.register(1, key("hot"), coldkey="5Cold")
    for port in (0, 65536, -1):
        with pytest.raises(ChainError, match="port"):
            chain.serve_axon(1, key("hot"), "127.0.0.1", port)
    with pytest.raises(ChainError, match="ip"):
        chain.serve_axon(1, key("hot"), "http://x/", 8091)
    chain.serve_axon(1, key("hot"), "::1", 8091)
    neuron = chain.metagraph(1).by_hotkey(hotkey("hot"))
    assert neuron is not None
    assert neuron.axon_url == "http://[::1]:8091"
    assert neuron.axon_block is not None


def test_an_axon_announced_once_stays_listed(chain: LocalChain) -> None:
    """Miners announce once; whether they still answer is for probes to say, not its age."""
    chain.register(1, key("once"), coldkey="5Cold")
    chain.register(1, key("silent"), coldkey="5Cold")
    chain.serve_axon(1, key("once"), "127.0.0.1", 8091)
    announced = chain.metagraph(1).by_hotkey(hotkey("once"))
    wait_blocks(chain, 10)
    graph = chain.metagraph(1)
    assert [n.hotkey for n in graph.serving()] == [hotkey("once")]
    later = graph.by_hotkey(hotkey("once"))
    assert announced is not None and later is not None
    assert (later.axon_url, later.axon_block) == (announced.axon_url, announced.axon_block)


# --- weights and epochs ------------------------------------------------------------------


def test_set_weights_requires_a_permit(chain: LocalChain) -> None:
    chain.register(1, key("miner"), coldkey="5Cold")
    with pytest.raises(ChainError, match="not registered"):
        chain.set_weights(1, key("val"), [0], [1.0], version_key=SPEC_VERSION)
    chain.register(1, key("val"), stake=10.0, coldkey="5Cold")
    with pytest.raises(ChainError, match="permit"):
        chain.set_weights(1, key("val"), [0], [1.0], version_key=SPEC_VERSION)


@pytest.mark.parametrize(
    ("uids", "weights", "match"),
    [
        ([0], [1.0, 2.0], "uids but"),
        ([0, 0], [1.0, 1.0], "repeat"),
        ([0, 5], [1.0, 1.0], "not registered"),
        ([0], [-1.0], ">= 0"),
        ([0], [float("nan")], "finite"),
        ([0], [float("inf")], "finite"),
        ([True], [1.0], "integer"),
    ],
)
def test_set_weights_rejects_bad_input(
    chain: LocalChain, uids: list[int], weights: list[float], match: str
) -> None:
    chain.register(1, key("miner"), coldkey="5Cold")
    chain.register(1, key("val"), stake=100.0, coldkey="5Cold")
    with pytest.raises(ChainError, match=match):
        chain.set_weights(1, key("val"), uids, weights, version_key=SPEC_VERSION)


@pytest.mark.parametrize("version_key", [-1, True, 1.5, "100"])
def test_set_weights_needs_a_version_key(chain: LocalChain, version_key: object) -> None:
    chain.register(1, key("miner"), coldkey="5Cold")
    chain.register(1, key("val"), stake=100.0, coldkey="5Cold")
    with pytest.raises(ChainError, match="version_key"):
        chain.set_weights(1, key("val"), [0], [1.0], version_key=version_key)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        chain.set_weights(1, key("val"), [0], [1.0])  # type: ignore[call-arg]
    assert chain.metagraph(1).weights == {}


def test_spec_version_is_computed_as_subnets_do() -> None:
    assert spec_version("0.1.0") == 100
    assert spec_version("1.2.3") == 10203
    assert spec_version("2.10.0rc1") == 21000
    assert spec_version(__version__) == SPEC_VERSION
    with pytest.raises(ValueError):
        spec_version("1.2")


def test_set_weights_normalises_and_replaces(chain: LocalChain) -> None:
    for i in range(3):
        chain.register(1, key(f"miner-{i}"), coldkey="5Cold")
    val = chain.register(1, key("val"), stake=100.0, coldkey="5Cold")
    chain.set_weights(1, key("val"), [0, 1], [1.0, 3.0], version_key=SPEC_VERSION)
    assert chain.metagraph(1).weights == {val: {0: 0.25, 1: 0.75}}
    chain.set_weights(1, key("val"), np.array([2]), [7.0], version_key=SPEC_VERSION)
    assert chain.metagraph(1).weights == {val: {2: 1.0}}
    chain.set_weights(1, key("val"), [0, 1], [0.0, 0.0], version_key=SPEC_VERSION)
    assert chain.metagraph(1).weights == {val: {0: 0.0, 1: 0.0}}


def test_blocks_follow_the_wall_clock(chain: LocalChain) -> None:
    first = chain.block()
    time.sleep(0.3)
    assert chain.block() - first >= 4


def test_an_epoch_turns_weights_into_incentive_and_emission(chain: LocalChain) -> None:
    chain.register(1, key("miner-0"), coldkey="5Cold")
    chain.register(1, key("miner-1"), coldkey="5Cold")
    chain.register(1, key("val"), stake=100.0, coldkey="5Cold")
    chain.set_weights(1, key("val"), [0, 1], [1.0, 3.0], version_key=SPEC_VERSION)
    wait_blocks(chain, FAST.tempo + 1)
    by_uid = {n.uid: n for n in chain.metagraph(1).neurons}
    assert by_uid[0].incentive == pytest.approx(0.25)
    assert by_uid[1].incentive == pytest.approx(0.75)
    assert by_uid[2].incentive == 0.0
    assert by_uid[1].emission == pytest.approx(0.75 * FAST.emission_per_block * FAST.tempo)
    history = chain.epochs(1)
    assert history
    assert history[-1]["block"] % FAST.tempo == 0
    assert {e["uid"]: e["incentive"] for e in history[-1]["neurons"]} == pytest.approx(
        {0: 0.25, 1: 0.75, 2: 0.0}
    )
    assert chain.epochs(1, limit=1) == history[-1:]


def test_epochs_without_voters_give_no_incentive(chain: LocalChain) -> None:
    chain.register(1, key("miner"), coldkey="5Cold")
    chain.register(1, key("val"), stake=100.0, coldkey="5Cold")
    chain.set_weights(1, key("val"), [0], [0.0], version_key=SPEC_VERSION)  # no opinion
    wait_blocks(chain, FAST.tempo + 1)
    assert all(n.incentive == 0.0 for n in chain.metagraph(1).neurons)
    assert chain.epochs(1)


# --- files, reopening and URLs -----------------------------------------------------------


def test_a_second_instance_sees_the_same_state(chain: LocalChain) -> None:
    chain.register(1, key("hot"), stake=3.0, coldkey="5Cold")
    chain.serve_axon(1, key("hot"), "10.0.0.1", 9000)
    with LocalChain(chain.path) as other:
        assert other.genesis_time == chain.genesis_time
        assert abs(other.block() - chain.block()) <= 1
        neuron = other.metagraph(1).by_hotkey(hotkey("hot"))
        assert neuron is not None
        assert (neuron.uid, neuron.stake, neuron.axon_url) == (0, 3.0, "http://10.0.0.1:9000")
        assert other.register(1, key("hot2"), coldkey="5Cold") == 1
    assert chain.metagraph(1).by_uid(1) is not None


def test_create_and_a_second_subnet(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "chain.sqlite"
    with LocalChain.create(path, params=FAST) as first:
        assert first.url == f"local:{path}"
    with pytest.raises(ChainError, match="already exists"):
        LocalChain.create(path, params=FAST)
    LocalChain.create(path, params=FAST, exist_ok=True).close()
    other = ChainParams(block_time_s=99.0, tempo=10, max_uids=2)
    with LocalChain.create(path, netuid=2, params=other) as chain:
        assert chain.netuids() == [1, 2]
        assert chain.block_time_s == FAST.block_time_s  # the chain's, not the subnet's
        assert chain.params(2).tempo == 10
        assert chain.params(1) == FAST
        assert chain.metagraph(2).tempo == 10
        assert chain.register(2, key("hot"), coldkey="5Cold") == 0


def test_create_rejects_bad_params(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="tempo"):
        LocalChain.create(tmp_path / "c.sqlite", params=ChainParams(tempo=0))


def test_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ChainUnavailableError, match="engram chain create local:"):
        LocalChain(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ChainUnavailableError):
        LocalChain(garbage)
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(ChainUnavailableError, match="not an Engram chain"):
        LocalChain(foreign)
    with pytest.raises(ChainUnavailableError, match="not an Engram chain"):
        LocalChain.create(foreign)


def test_threads_share_one_instance(chain: LocalChain) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            uid = chain.register(1, key(f"thread-{i}"), coldkey="5Cold")
            for _ in range(50):
                chain.serve_axon(1, key(f"thread-{i}"), "127.0.0.1", 9000 + uid)
                assert chain.metagraph(1).by_uid(uid) is not None
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(n.uid for n in chain.metagraph(1).serving()) == [0, 1, 2, 3]


def test_closed_chain_is_unavailable(chain: LocalChain) -> None:
    chain.close()
    with pytest.raises(ChainUnavailableError, match="closed"):
        chain.block()


def test_open_chain_urls(
    chain: LocalChain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = open_chain(chain.url)
    assert isinstance(opened, LocalChain)
    assert opened.url == chain.url
    opened.close()
    monkeypatch.setenv("HOME", str(tmp_path))
    home = open_chain("local:~/chain.sqlite")
    assert isinstance(home, LocalChain)
    assert home.path == chain.path
    home.close()
    for url in ("finney", "test", "local", "ws://127.0.0.1:9944", "wss://lite.chain.opentensor.ai"):
        subtensor = open_chain(url)  # connects on first use: nothing is dialled here
        assert isinstance(subtensor, SubtensorChain)
        assert subtensor.url == url
        subtensor.close()
    for url in ("", "local:", "http://x", "sqlite:/tmp/x"):
        with pytest.raises(ChainError, match="local:PATH"):
            open_chain(url)
    with pytest.raises(ChainUnavailableError):
        open_chain(f"local:{tmp_path / 'nope.sqlite'}")


# --- the scheme registry -----------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries a test registers are gone after it."""
    monkeypatch.setattr(engram.chain, "_FACTORIES", dict(engram.chain._FACTORIES))


@pytest.mark.usefixtures("registry")
def test_a_registered_scheme_opens_its_chain(chain: LocalChain) -> None:
    opened: list[str] = []

    def factory(url: str) -> Chain:
        opened.append(url)
        return chain

    register_chain_scheme("mem:", factory)
    assert open_chain("  mem:anything ") is chain
    assert opened == ["mem:anything"]
    with pytest.raises(ChainError, match=r"known schemes: .*mem:"):
        open_chain("memory")


@pytest.mark.usefixtures("registry")
def test_an_adapter_replaces_another_and_the_longest_scheme_wins(chain: LocalChain) -> None:
    opened = open_chain("finney")
    assert isinstance(opened, SubtensorChain)
    opened.close()
    register_chain_scheme("finney", lambda url: chain)
    assert open_chain("finney") is chain
    with pytest.raises(ChainError, match="unknown chain"):
        open_chain("finney2")  # a name matches exactly, not as a prefix
    register_chain_scheme("local:special/", lambda url: chain)
    assert open_chain("local:special/x") is chain
    with pytest.raises(ChainUnavailableError, match="no chain at"):
        open_chain("local:elsewhere/x")


@pytest.mark.usefixtures("registry")
def test_register_chain_scheme_refuses_a_blank_scheme() -> None:
    for bad in ("", " ws://"):
        with pytest.raises(ValueError, match="invalid chain scheme"):
            register_chain_scheme(bad, open_chain)
