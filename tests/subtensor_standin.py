"""A stand-in for ``bittensor.Subtensor``: the public Bittensor chain cannot be reached from here.

The one fake the test suite allows. It keeps subnets in memory and offers the part
of the SDK's blocking ``Subtensor`` that :class:`engram.chain.subtensor.SubtensorChain`
uses, and as much SDK code as possible runs on top of it:

* reads are the SDK's own read namespaces (``bittensor.namespaces``) over a view of
  this state, so the metagraph is the SDK's decoding of a runtime record shaped like
  the chain's, the weights its normalisation of stored u16 rows, and so on;
* writes are the SDK's own intents, built (``intent.build``) against this state and
  signed by the SDK's signer of the wallet given, so what :attr:`extrinsics` records
  is the call the SDK would submit (``SubtensorModule.set_mechanism_weights`` with
  its u16 ``weights`` and ``version_key``, ``commit_timelocked_mechanism_weights``,
  ``serve_axon``, ``burned_register``).

It then applies each call by the chain's rules a caller can break (registration,
validator permit, weights version, rate limits for weights and axons, minimum
weights, max weight limit, commit-reveal on or off, registration cost), failing
the extrinsic with the chain's error name as the real chain does. A timelocked
commit cannot be decrypted without drand's round signature, so the stand-in also
builds the plaintext the SDK encrypted and applies it once the commit's reveal
period has passed (:meth:`advance`). It can be made unreachable for a while
(:attr:`unreachable`, :attr:`fail_next`) or slow (:attr:`delay_s`): every call then
fails as the SDK's transport does, with ``RpcConnectionError``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bittensor import Balance, RpcConnectionError, namespaces
from bittensor import ChainError as SdkChainError
from bittensor._generated.calls import Call
from bittensor.intents.base import BuiltCall, Intent
from bittensor.intents.weights import SetWeights
from bittensor.result import ExtrinsicResult
from bittensor.settings import U16_MAX
from bittensor.signing import public_view, resolve_signer
from bittensor.sp_core import ss58_encode

BLOCK_TIME_S = 12.0
RAO = 10**9


def address(seed: str) -> str:
    """A valid SS58 address derived from ``seed`` (no key: for neurons that never sign)."""
    return ss58_encode(hashlib.sha256(seed.encode()).digest(), 42)


@dataclass
class StandinNeuron:
    uid: int
    hotkey: str
    coldkey: str
    stake_rao: int = 0
    permit: bool = False
    incentive_u16: int = 0
    emission_rao: int = 0
    registered_block: int = 0
    last_update: int = 0
    axon: dict[str, int] | None = None  # the chain's AxonInfo, None until served


@dataclass
class StandinSubnet:
    """One subnet and its hyperparameters (the chain's storage names in the comments)."""

    netuid: int
    tempo: int = 360  # Tempo
    max_uids: int = 256
    min_allowed_weights: int = 1  # MinAllowedWeights
    max_weight_limit: int = U16_MAX  # MaxWeightsLimit
    weights_rate_limit: int = 100  # WeightsSetRateLimit
    serving_rate_limit: int = 50  # ServingRateLimit
    commit_reveal: bool = False  # CommitRevealWeightsEnabled
    reveal_period: int = 1  # RevealPeriodEpochs
    weights_version: int = 0  # WeightsVersionKey
    burn_rao: int = RAO  # Burn
    neurons: list[StandinNeuron] = field(default_factory=list)
    weights: dict[int, dict[int, int]] = field(default_factory=dict)  # validator -> miner -> u16
    commits: list[dict[str, Any]] = field(default_factory=list)  # timelocked, not yet revealed

    def by_hotkey(self, hotkey: str) -> StandinNeuron | None:
        return next((n for n in self.neurons if n.hotkey == hotkey), None)


@dataclass(frozen=True)
class Extrinsic:
    """One submitted call, as the SDK composed it, and what the chain made of it."""

    call: Call
    signer: str
    block: int
    ok: bool
    error: str | None = None

    @property
    def function(self) -> str:
        return self.call.function

    @property
    def params(self) -> dict[str, Any]:
        return self.call.params


class _Refused(Exception):
    """The chain's dispatch error, by its name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _axon_ip_ok(ip: int, ip_type: int) -> bool:
    """The chain's ``is_valid_ip_address``: no zero, no loopback."""
    if ip_type not in (4, 6) or ip == 0:
        return False
    if ip_type == 4:
        return ip < 2**32 - 1 and not ipaddress.IPv4Address(ip).is_loopback
    return ip != 1


class _View:
    """The read view the SDK's reads take (a client or snapshot), over the stand-in's state."""

    def __init__(self, chain: SubtensorStandIn) -> None:
        self._chain = chain

    @property
    def block(self) -> int:
        return self._chain.block_number

    async def at(self, block: int | None = None) -> _View:
        return self

    async def query(self, item: Any, params: list[Any] | None = None, *, block: Any = None) -> Any:
        return self._chain.storage(item[0], item[1], params or [])

    async def query_map(
        self, item: Any, params: list[Any] | None = None, *, block: Any = None
    ) -> list[tuple[Any, Any]]:
        return self._chain.storage_map(item[0], item[1], params or [])

    async def query_batch(self, item: Any, param_sets: list[Any], *, block: Any = None) -> Any:
        return [self._chain.storage(item[0], item[1], p) for p in param_sets]

    async def runtime(self, method: Any, params: list[Any], *, block: Any = None) -> Any:
        return self._chain.runtime(method[0], method[1], params)

    def balance(self, rao: int, netuid: int = 0) -> Balance:
        return Balance(int(rao), netuid)


class _Substrate:
    """The chain access an intent builds against (the SDK's ``Substrate``), over the state.

    ``commit_reveal`` overrides the subnet's flag, to build the plaintext of a commit.
    """

    def __init__(self, chain: SubtensorStandIn, commit_reveal: bool | None = None) -> None:
        self._chain = chain
        self._commit_reveal = commit_reveal

    async def block_number(self) -> int:
        return self._chain.block_number

    async def block_hash(self, block: int | None = None) -> str:
        return f"0x{(self._chain.block_number if block is None else block):064x}"

    async def query(
        self, module: str, name: str, params: list[Any] | None = None, block_hash: Any = None
    ) -> Any:
        if name == "CommitRevealWeightsEnabled" and self._commit_reveal is not None:
            return self._commit_reveal
        return self._chain.storage(module, name, params or [])

    async def compose(self, call: Call) -> Call:
        return call

    async def block_time(self) -> float:
        return BLOCK_TIME_S


class _Blocking:
    """One of the SDK's read namespaces, blocking as ``Subtensor``'s are."""

    def __init__(self, chain: SubtensorStandIn, namespace: Any) -> None:
        self._chain = chain
        self._namespace = namespace

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._namespace, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._chain.reach()
            return asyncio.run(method(*args, **kwargs))

        return call


class SubtensorStandIn:
    """Subnets in memory behind the surface of ``bittensor.Subtensor`` that Engram uses."""

    def __init__(self, network: str = "test", *, block: int = 10_000) -> None:
        self.network = network
        self.block_number = block
        self.state: dict[int, StandinSubnet] = {}
        self.free_rao: dict[str, int] = {}
        self.extrinsics: list[Extrinsic] = []
        self.requests = 0  # every call that reached for the chain, failed or not
        self.unreachable = False  # every call fails, as with no route to the node
        self.fail_next = 0  # the next N calls fail, then the chain answers again
        self.delay_s = 0.0  # every call waits this long first (a slow or hung node)
        self.closed = 0
        view = _View(self)
        self.subnets = _Blocking(self, namespaces.Subnets(view))
        self.neurons = _Blocking(self, namespaces.Neurons(view))
        self.hyperparameters = _Blocking(self, namespaces.Hyperparameters(view))
        self.weights = _Blocking(self, namespaces.Weights(view))
        self.balances = _Blocking(self, namespaces.Balances(view))

    # --- building the world ------------------------------------------------------------

    def add_subnet(self, netuid: int, **hyperparameters: Any) -> StandinSubnet:
        self.state[netuid] = StandinSubnet(netuid, **hyperparameters)
        return self.state[netuid]

    def add_neuron(
        self,
        netuid: int,
        hotkey: str,
        coldkey: str | None = None,
        *,
        stake_tao: float = 0.0,
        permit: bool = False,
        incentive: float = 0.0,
        axon: tuple[str, int] | None = None,
    ) -> StandinNeuron:
        subnet = self.state[netuid]
        neuron = StandinNeuron(
            uid=len(subnet.neurons),
            hotkey=hotkey,
            coldkey=coldkey or address(f"cold-{hotkey}"),
            stake_rao=int(stake_tao * RAO),
            permit=permit,
            incentive_u16=round(incentive * U16_MAX),
            emission_rao=int(incentive * RAO),
            registered_block=self.block_number,
        )
        subnet.neurons.append(neuron)
        if axon is not None:
            self.set_axon(netuid, neuron.uid, *axon)
        return neuron

    def set_axon(self, netuid: int, uid: int, ip: str, port: int) -> None:
        """Put an axon on chain directly (as if served long ago), loopback allowed."""
        parsed = ipaddress.ip_address(ip)
        self.state[netuid].neurons[uid].axon = {
            "block": max(1, self.block_number - 1_000),
            "version": 1,
            "ip": int(parsed),
            "port": port,
            "ip_type": parsed.version,
            "protocol": 4,
            "placeholder1": 0,
            "placeholder2": 0,
        }

    def fund(self, coldkey: str, tao: float) -> None:
        self.free_rao[coldkey] = self.free_rao.get(coldkey, 0) + int(tao * RAO)

    def advance(self, blocks: int) -> None:
        """Let ``blocks`` pass; timelocked commits whose reveal block passed are applied."""
        self.block_number += blocks
        for subnet in self.state.values():
            due = [c for c in subnet.commits if c["reveal_block"] <= self.block_number]
            subnet.commits = [c for c in subnet.commits if c not in due]
            for commit in due:
                subnet.weights[commit["uid"]] = _upscaled(commit["dests"], commit["weights"])

    def calls(self, function: str) -> list[Extrinsic]:
        return [e for e in self.extrinsics if e.function == function]

    # --- the surface of bittensor.Subtensor --------------------------------------------

    def reach(self) -> None:
        """Every call starts here: count it, and fail it as the transport would."""
        self.requests += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.unreachable or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise RpcConnectionError(
                "could not connect to any endpoint: [Errno 111] Connect call failed "
                f"({self.network})"
            )

    def connect(self) -> SubtensorStandIn:
        self.reach()
        return self

    @property
    def block(self) -> int:
        self.reach()
        return self.block_number

    def query(self, item: Any, params: list[Any] | None = None, *, block: Any = None) -> Any:
        self.reach()
        return self.storage(item[0], item[1], params or [])

    def close(self) -> None:
        self.closed += 1

    def execute(self, intent: Intent, wallet: Any, **options: Any) -> ExtrinsicResult:
        """Build the intent as the SDK does, sign it, and apply the call by the chain's rules."""
        self.reach()
        substrate = _Substrate(self)
        built = asyncio.run(intent.build(substrate, intent.origin_view(substrate, wallet)))
        call: Call = built.call if isinstance(built, BuiltCall) else built
        signer = public_view(wallet, intent.signer).ss58_address
        resolve_signer(wallet, intent.signer).sign(repr(call).encode())
        plaintext = None
        if isinstance(intent, SetWeights) and call.function.startswith("commit_timelocked"):
            plaintext = asyncio.run(intent.build(_Substrate(self, commit_reveal=False), wallet))
        try:
            self._apply(call, signer, plaintext)
        except _Refused as exc:
            self.extrinsics.append(Extrinsic(call, signer, self.block_number, False, exc.name))
            return ExtrinsicResult(
                success=False, message=str(exc), error=SdkChainError(str(exc), name=exc.name)
            )
        self.extrinsics.append(Extrinsic(call, signer, self.block_number, True))
        return ExtrinsicResult(
            success=True,
            message="Success",
            block_hash=f"0x{self.block_number:064x}",
            extrinsic_id=f"{self.block_number}-{len(self.extrinsics)}",
        )

    # --- storage and runtime API, as the chain answers them ----------------------------

    def _subnet(self, netuid: int) -> StandinSubnet:
        return self.state.get(netuid) or StandinSubnet(netuid)

    def storage(self, module: str, name: str, params: list[Any]) -> Any:
        if (module, name) == ("System", "Account"):
            return {"data": {"free": self.free_rao.get(params[0], 0)}}
        if module != "SubtensorModule":
            raise KeyError(f"the stand-in holds no {module}.{name}")
        s = self._subnet(int(params[0]) % 4096)
        if name in ("Uids", "Axons"):
            neuron = s.by_hotkey(params[1])
            if neuron is None:
                return None
            return neuron.uid if name == "Uids" else neuron.axon
        scalar: dict[str, Callable[[], Any]] = {
            "CommitRevealWeightsEnabled": lambda: s.commit_reveal,
            "WeightsSetRateLimit": lambda: s.weights_rate_limit,
            "MinAllowedWeights": lambda: s.min_allowed_weights,
            "MaxWeightsLimit": lambda: s.max_weight_limit,
            "WeightsVersionKey": lambda: s.weights_version,
            "ServingRateLimit": lambda: s.serving_rate_limit,
            "Burn": lambda: s.burn_rao,
            "Tempo": lambda: s.tempo,
            "RevealPeriodEpochs": lambda: s.reveal_period,
            "LastEpochBlock": lambda: self.block_number // s.tempo * s.tempo,
            "PendingEpochAt": lambda: 0,
            "SubnetEpochIndex": lambda: self.block_number // s.tempo,
            "BlocksSinceLastStep": lambda: self.block_number % s.tempo,
            "SubnetEpochConsensus": lambda: "Yuma",
            "LastUpdate": lambda: [n.last_update for n in s.neurons],
            "ValidatorPermit": lambda: [n.permit for n in s.neurons],
        }
        if name not in scalar:
            raise KeyError(f"the stand-in holds no {module}.{name}")
        return scalar[name]()

    def storage_map(self, module: str, name: str, params: list[Any]) -> list[tuple[Any, Any]]:
        if (module, name) != ("SubtensorModule", "Weights"):
            raise KeyError(f"the stand-in holds no map {module}.{name}")
        rows = self._subnet(int(params[0])).weights
        return [(uid, sorted(row.items())) for uid, row in rows.items()]

    def runtime(self, api: str, method: str, params: list[Any]) -> Any:
        if (api, method) != ("SubnetInfoRuntimeApi", "get_metagraph"):
            raise KeyError(f"the stand-in answers no runtime call {api}.{method}")
        subnet = self.state.get(int(params[0]))
        return None if subnet is None else self._metagraph_record(subnet)

    def _metagraph_record(self, s: StandinSubnet) -> dict[str, Any]:
        """What ``SubnetInfoRuntimeApi.get_metagraph`` returns, for the fields the SDK reads."""
        ns = s.neurons
        none = {"block": 0, "version": 0, "ip": 0, "port": 0, "ip_type": 0, "protocol": 0}
        zeros = [0] * len(ns)
        return {
            "netuid": s.netuid,
            "name": list(b"engram"),
            "symbol": list("α".encode()),
            "block": self.block_number,
            "tempo": s.tempo,
            "last_step": self.block_number // s.tempo * s.tempo,
            "blocks_since_last_step": self.block_number % s.tempo,
            "owner_hotkey": ns[0].hotkey if ns else address("owner"),
            "owner_coldkey": ns[0].coldkey if ns else address("owner-cold"),
            "network_registered_at": 1,
            "num_uids": len(ns),
            "max_uids": s.max_uids,
            "hotkeys": [n.hotkey for n in ns],
            "coldkeys": [n.coldkey for n in ns],
            "identities": [None] * len(ns),
            "axons": [n.axon or none for n in ns],
            "active": [True] * len(ns),
            "validator_permit": [n.permit for n in ns],
            "last_update": [n.last_update for n in ns],
            "block_at_registration": [n.registered_block for n in ns],
            "rank": zeros,
            "trust": zeros,
            "consensus": zeros,
            "incentives": [n.incentive_u16 for n in ns],
            "dividends": zeros,
            "pruning_score": zeros,
            "emission": [n.emission_rao for n in ns],
            "alpha_stake": [n.stake_rao for n in ns],
            "tao_stake": zeros,
            "total_stake": [n.stake_rao for n in ns],
            "tao_in": 0,
            "alpha_in": 0,
            "moving_price": None,
            "identity": None,
        }

    # --- the chain's rules -------------------------------------------------------------

    def _registered(self, s: StandinSubnet, hotkey: str) -> StandinNeuron:
        neuron = s.by_hotkey(hotkey)
        if neuron is None:
            raise _Refused("HotKeyNotRegisteredInSubNet", f"{hotkey} is not registered")
        return neuron

    def _rate_limited(self, s: StandinSubnet, neuron: StandinNeuron, name: str) -> None:
        last = neuron.last_update
        if s.weights_rate_limit and last and self.block_number - last < s.weights_rate_limit:
            raise _Refused(name, f"weights set {self.block_number - last} blocks ago")

    def _apply(self, call: Call, signer: str, plaintext: Any) -> None:
        p = call.params
        if call.function == "burned_register":
            self._burned_register(p["netuid"], p["hotkey"], signer)
            return
        if p["netuid"] not in self.state:
            raise _Refused("SubnetNotExists", f"no subnet {p['netuid']}")
        s = self.state[p["netuid"]]
        neuron = self._registered(s, signer)
        if call.function == "serve_axon":
            self._serve_axon(s, neuron, p)
        elif call.function == "set_mechanism_weights":
            if s.commit_reveal:
                raise _Refused("CommitRevealEnabled", "use commit-reveal on this subnet")
            self._check_weights(s, neuron, p["dests"], p["weights"], p["version_key"])
            self._rate_limited(s, neuron, "SettingWeightsTooFast")
            s.weights[neuron.uid] = _upscaled(p["dests"], p["weights"])
            neuron.last_update = self.block_number
        elif call.function == "commit_timelocked_mechanism_weights":
            if not s.commit_reveal:
                raise _Refused("CommitRevealDisabled", "commit-reveal is off on this subnet")
            self._rate_limited(s, neuron, "CommittingWeightsTooFast")
            q = plaintext.params  # what the chain would find on decrypting the commit
            self._check_weights(s, neuron, q["dests"], q["weights"], q["version_key"])
            s.commits.append(
                {
                    "uid": neuron.uid,
                    "dests": q["dests"],
                    "weights": q["weights"],
                    "reveal_round": p["reveal_round"],
                    "reveal_block": self.block_number + s.tempo * s.reveal_period,
                }
            )
            neuron.last_update = self.block_number
        else:
            raise KeyError(f"the stand-in does not apply {call.module}.{call.function}")

    def _check_weights(
        self,
        s: StandinSubnet,
        neuron: StandinNeuron,
        dests: Sequence[int],
        weights: Sequence[int],
        version_key: int,
    ) -> None:
        if version_key < s.weights_version:
            raise _Refused("IncorrectWeightVersionKey", f"version {version_key} is too old")
        if len(dests) != len(weights):
            raise _Refused("WeightVecNotEqualSize", "uids and weights differ in length")
        if len(set(dests)) != len(dests):
            raise _Refused("DuplicateUids", "a uid repeats")
        if any(not 0 <= w <= U16_MAX or int(w) != w for w in weights):
            raise _Refused("InvalidArgument", "weights must be u16")
        if any(u >= len(s.neurons) for u in dests):
            raise _Refused("UidVecContainInvalidOne", "a uid is not registered")
        self_only = list(dests) == [neuron.uid]
        if not self_only and not neuron.permit:
            raise _Refused("NeuronNoValidatorPermit", "no validator permit")
        if not self_only and len(dests) < s.min_allowed_weights:
            raise _Refused("WeightVecLengthIsLow", f"fewer than {s.min_allowed_weights} weights")
        total = sum(weights)
        if (
            s.max_weight_limit < U16_MAX
            and total
            and max(weights) / total > (s.max_weight_limit / U16_MAX)
        ):
            raise _Refused("MaxWeightExceeded", "a weight exceeds the max weight limit")

    def _serve_axon(self, s: StandinSubnet, neuron: StandinNeuron, p: dict[str, Any]) -> None:
        if not _axon_ip_ok(p["ip"], p["ip_type"]):
            raise _Refused("InvalidIpAddress", f"ip {p['ip']} is not servable")
        served = (neuron.axon or {}).get("block", 0)
        if s.serving_rate_limit and served and self.block_number - served < s.serving_rate_limit:
            raise _Refused("ServingRateLimitExceeded", "axon served too recently")
        neuron.axon = {
            "block": self.block_number,
            **{k: p[k] for k in ("version", "ip", "port", "ip_type", "protocol")},
            "placeholder1": 0,
            "placeholder2": 0,
        }

    def _burned_register(self, netuid: int, hotkey: str, coldkey: str) -> None:
        if netuid not in self.state:
            raise _Refused("SubnetNotExists", f"no subnet {netuid}")
        s = self.state[netuid]
        if s.by_hotkey(hotkey) is not None:
            raise _Refused("HotKeyAlreadyRegisteredInSubNet", f"{hotkey} is registered")
        owners = {n.hotkey: n.coldkey for sub in self.state.values() for n in sub.neurons}
        if owners.get(hotkey, coldkey) != coldkey:
            raise _Refused("NonAssociatedColdKey", f"{hotkey} belongs to another coldkey")
        if len(s.neurons) >= s.max_uids:
            raise _Refused("TooManyRegistrationsThisBlock", "the stand-in never prunes a uid")
        if self.free_rao.get(coldkey, 0) < s.burn_rao:
            raise _Refused("NotEnoughBalanceToStake", "the coldkey cannot pay the burn")
        self.free_rao[coldkey] -= s.burn_rao
        s.neurons.append(
            StandinNeuron(len(s.neurons), hotkey, coldkey, registered_block=self.block_number)
        )


def _upscaled(dests: Sequence[int], weights: Sequence[int]) -> dict[int, int]:
    """As the pallet stores a row: u16 values max-upscaled so the largest is 65535."""
    top = max(weights) if weights else 0
    return {u: round(w * U16_MAX / top) for u, w in zip(dests, weights, strict=True)} if top else {}


def standin_for(monkeypatch: Any, standin: SubtensorStandIn) -> None:
    """Make every ``SubtensorChain`` that connects by itself use ``standin``."""
    import engram.chain.subtensor

    monkeypatch.setattr(engram.chain.subtensor, "Subtensor", lambda network: standin)
