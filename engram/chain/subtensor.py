"""SubtensorChain: the :class:`~engram.chain.base.Chain` of Bittensor's subtensor, through its SDK.

``finney`` (mainnet), ``test`` (testnet, where the original network runs as netuid
450), ``local`` (a subtensor node on this machine) or a ``ws://``/``wss://``
endpoint. Reads are the SDK's typed reads; writes are its intents (``ServeAxon``,
``SetWeights``, ``BurnedRegister``) signed by the neuron's wallet, each checked
first against the chain's own rules, so that none is a call the chain would
refuse: weights are fitted to the subnet's limits and sent at most once per
weights rate limit (the SDK sends them as a timelocked commit, which the chain
reveals itself, when the subnet runs commit-reveal); an axon is announced only
when it changed and the serving rate limit allows.

The SDK's blocking calls have no deadline of their own, so each runs in a worker
thread under one (``subtensor_timeout_s``, ``subtensor_extrinsic_timeout_s``). A
call the connection failed or that hung is retried with backoff (the SDK dials
again by itself), then given up as :class:`~engram.errors.ChainUnavailableError`;
what the chain refuses is a :class:`~engram.errors.ChainError` carrying the
SDK's remedy.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from bittensor import (
    BittensorError,
    ConnectionNotReady,
    RpcConnectionError,
    Subtensor,
    Wallet,
    storage,
)
from bittensor import ChainError as SdkChainError
from bittensor import Signer as SdkSigner
from bittensor.intents.registration import BurnedRegister
from bittensor.intents.serving import ServeAxon
from bittensor.intents.weights import SetWeights, clip_to_max_weight, normalize
from bittensor.metagraph import Metagraph as SdkMetagraph
from bittensor.metagraph import MetagraphNeuron
from bittensor.result import ErrorCode
from bittensor.settings import U16_MAX
from bittensor.sp_core import KeyfileError
from bittensor.wallets import signing_keypair

from engram.chain.base import Metagraph, Neuron
from engram.config import SubtensorConfig, load_config
from engram.errors import ChainError, ChainUnavailableError, InvalidRequestError
from engram.security.signing import Signer, signer_hotkey

log = logging.getLogger("engram.chain")
T = TypeVar("T")

_UNREACHABLE = (RpcConnectionError, ConnectionNotReady, OSError, TimeoutError)
_INCLUDED = {"wait_for_inclusion": True, "wait_for_finalization": False, "retries": 2}
_S = storage.SubtensorModule


def _within(timeout_s: float, fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread, given up with :class:`TimeoutError` after ``timeout_s``.

    An abandoned worker ends when the SDK gives up on its connection, and never
    keeps the process alive.
    """
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)

    threading.Thread(target=run, name="engram-subtensor", daemon=True).start()
    try:
        return future.result(timeout_s)
    except TimeoutError:
        if future.done():  # fn itself timed out
            raise
        raise TimeoutError(f"no answer within {timeout_s:g}s") from None


# --- checks of what the caller gives --------------------------------------------------------


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ChainError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ChainError(f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ChainError(f"{name} must be in {low}..{high}, got {number}")
    return number


def _check_netuid(netuid: object) -> int:
    return _check_int("netuid", netuid, 0, U16_MAX)


def _address(signer: Signer) -> str:
    try:
        return signer_hotkey(signer)
    except InvalidRequestError as exc:
        raise ChainError(exc.message) from exc
    except (OSError, KeyfileError) as exc:  # a Wallet whose hotkey file is missing or unreadable
        raise ChainError(f"cannot read the signer's hotkey: {exc}") from exc


def _hotkey_signer(signer: Signer) -> Any:
    """What signs a hotkey's own writes (axon, weights): a Wallet, or the hotkey's Keypair."""
    if isinstance(signer, Wallet):
        if not signer.hotkey_file.exists_on_device():
            raise ChainError(
                f"wallet {signer.name} has no hotkey {signer.hotkey_str} under {signer.path}"
            )
        return signer
    if isinstance(signer, SdkSigner) and not isinstance(signer, str):
        try:
            signer.sign(b"engram")
        except (ValueError, TypeError, KeyfileError) as exc:  # e.g. a public-only Keypair
            raise ChainError(f"cannot sign with this {type(signer).__name__}: {exc}") from exc
        return signer
    raise ChainError(
        f"cannot sign chain writes with {type(signer).__name__}: give a bittensor Wallet "
        "(or, for a hotkey's own writes, its Keypair)"
    )


@dataclass(frozen=True)
class _UnlockedWallet:
    """A wallet whose coldkey was unlocked here, where a password prompt can be answered.

    Wallet-shaped as the SDK accepts (coldkey, coldkeypub, hotkey), so it signs with
    the keypair as it is instead of unlocking it again on its own thread.
    """

    coldkey: Any
    coldkeypub: Any
    hotkey: Any


def _owner(signer: Signer, coldkey: str | None) -> Wallet:
    """The Wallet that pays a registration; its coldkey signs, so a bare Keypair cannot."""
    if not isinstance(signer, Wallet):
        raise ChainError(
            f"registering on Bittensor is paid and signed by a coldkey: give a bittensor Wallet, "
            f"not a {type(signer).__name__}"
        )
    try:
        owner = signer.coldkeypub.ss58_address
    except (OSError, KeyfileError) as exc:
        raise ChainError(f"wallet {signer.name} has no readable coldkeypub: {exc}") from exc
    if coldkey is not None and coldkey != owner:
        raise ChainError(f"coldkey {coldkey} is not the wallet's coldkey {owner}")
    return signer


def _unlock(wallet: Wallet) -> _UnlockedWallet:
    try:
        coldkey = signing_keypair(wallet, "coldkey")
        return _UnlockedWallet(coldkey, wallet.coldkeypub, wallet.hotkey)
    except (ValueError, OSError, KeyfileError) as exc:  # wrong password, missing coldkey file
        raise ChainError(f"cannot unlock the coldkey of wallet {wallet.name}: {exc}") from exc


def _announced_ip(ip: object) -> str:
    """The chain stores an IP address (not a name) and refuses loopback and unspecified ones."""
    try:
        address = ipaddress.ip_address(ip)  # type: ignore[arg-type]
    except ValueError:
        raise ChainError(
            f"the chain stores an axon's IP address: give one (--external-ip), not {ip!r}"
        ) from None
    if address.is_loopback or address.is_unspecified:
        raise ChainError(
            f"the chain refuses {address} as an axon address: announce where clients reach "
            "this miner (--external-ip, ENGRAM_EXTERNAL_IP)"
        )
    return str(address)


def _weight_pairs(uids: Sequence[int], weights: Sequence[float]) -> tuple[list[int], list[float]]:
    ids = [_check_int("uid", u, 0, U16_MAX) for u in uids]
    values: list[float] = []
    for w in weights:
        try:
            value = float(w)
        except (TypeError, ValueError):
            raise ChainError(f"weight must be a number, got {w!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ChainError(f"weight must be a finite number >= 0, got {w!r}")
        values.append(value)
    if len(ids) != len(values):
        raise ChainError(f"{len(ids)} uids but {len(values)} weights")
    if len(set(ids)) != len(ids):
        raise ChainError("uids must not repeat")
    return ids, values


# --- weights as the chain accepts them ------------------------------------------------------


def fit_weights(
    uids: Sequence[int],
    weights: Sequence[float],
    *,
    min_allowed: int,
    max_weight_limit: int,
    own_uid: int | None = None,
) -> tuple[list[int], list[int]]:
    """The uids and u16 weights a subnet with these limits accepts, as subnets fit theirs.

    Zeros are dropped. When fewer uids remain than the subnet requires (its
    ``min_allowed_weights``, and enough that none need hold more than
    ``max_weight_limit``/65535 of the total), the lowest other uids given are added
    with the smallest weight. The largest weights are clipped to that share, the
    vector scaled so its largest is 65535 and rounded. ``([], [])`` when every
    weight is zero (no opinion); a :class:`ChainError` when the uids given cannot
    meet the limits.
    """
    ids = [u for u, w in zip(uids, weights, strict=True) if w > 0]
    values = [float(w) for w in weights if w > 0]
    if not ids:
        return [], []
    if max_weight_limit <= 0:
        raise ChainError("the subnet's max_weight_limit is 0: it accepts no weights")
    need = max(min_allowed, math.ceil(U16_MAX / max_weight_limit))
    spare = sorted(set(uids) - set(ids) - {own_uid})[: max(0, need - len(ids))]
    if len(ids) + len(spare) < need:
        raise ChainError(
            f"the subnet takes weights on at least {need} uids (min_allowed_weights "
            f"{min_allowed}, max_weight_limit {max_weight_limit}/65535); only "
            f"{len(ids) + len(spare)} were given"
        )
    ids += spare
    values += [min(values) / U16_MAX] * len(spare)
    if len(values) > 1 and max_weight_limit < U16_MAX:
        values = clip_to_max_weight(values, max_weight_limit / U16_MAX)
    dests, quantized = normalize(ids, values)
    fitted = dict(zip(dests, quantized, strict=True))
    for uid in spare:  # a padded uid whose weight rounded to 0 gets the smallest u16
        fitted.setdefault(uid, 1)
    return sorted(fitted), [fitted[u] for u in sorted(fitted)]


@dataclass(frozen=True)
class WeightRules:
    """What a subnet requires of a validator's weights, read at ``block``."""

    block: int
    min_allowed_weights: int
    max_weight_limit: int  # no weight may exceed this /65535 share of the normalised total
    rate_limit_blocks: int  # blocks between two weight sets of one hotkey
    commit_reveal: bool  # weights go as a timelocked commit the chain reveals
    version_key: int  # the oldest version_key the subnet accepts
    last_update: tuple[int, ...]  # per uid, the block of its last weights (0: never)
    permits: tuple[bool, ...]  # per uid, whether it holds a validator permit

    @classmethod
    def read(cls, subtensor: Subtensor, netuid: int) -> WeightRules:
        hyper = subtensor.hyperparameters
        max_limit = subtensor.query(_S.MaxWeightsLimit, [netuid])
        return cls(
            block=int(subtensor.block),
            min_allowed_weights=int(hyper.min_allowed_weights(netuid)),
            max_weight_limit=U16_MAX if max_limit is None else int(max_limit),
            rate_limit_blocks=int(hyper.weights_rate_limit(netuid)),
            commit_reveal=bool(subtensor.subnets.commit_reveal_enabled(netuid)),
            version_key=int(subtensor.query(_S.WeightsVersionKey, [netuid]) or 0),
            last_update=tuple(int(b) for b in subtensor.query(_S.LastUpdate, [netuid]) or ()),
            permits=tuple(bool(p) for p in subtensor.query(_S.ValidatorPermit, [netuid]) or ()),
        )

    def blocks_to_wait(self, uid: int) -> int:
        """Blocks until ``uid`` may set weights again (0: now), as the chain counts them."""
        last = self.last_update[uid] if uid < len(self.last_update) else 0
        if not self.rate_limit_blocks or not last:
            return 0
        return max(0, self.rate_limit_blocks - (self.block - last))


# --- the metagraph --------------------------------------------------------------------------


def _endpoint(axon: str | None) -> tuple[str | None, int | None]:
    """``ip:port`` (``[v6]:port``) as the SDK renders a served axon."""
    if not axon:
        return None, None
    host, _, port = axon.rpartition(":")
    return (host.strip("[]"), int(port)) if int(port) else (None, None)


def _neuron(n: MetagraphNeuron, axon: object) -> Neuron:
    ip, port = _endpoint(n.axon)
    served = int(axon.get("block") or 0) if isinstance(axon, Mapping) else 0
    return Neuron(
        uid=n.uid,
        hotkey=n.hotkey,
        coldkey=n.coldkey,
        stake=n.total_stake.amount,
        validator_permit=n.validator_permit,
        ip=ip,
        port=port,
        axon_block=served if ip is not None else None,
        incentive=n.incentive,
        emission=n.emission.amount,
        registered_block=n.block_at_registration,
        last_update=n.last_update,
    )


def to_metagraph(graph: SdkMetagraph, weights: Mapping[int, Mapping[int, float]]) -> Metagraph:
    """The SDK's metagraph (and the weights read with it) as Engram's."""
    axons = list(graph.raw.get("axons") or [])
    return Metagraph(
        netuid=graph.netuid,
        block=graph.block,
        neurons=tuple(
            _neuron(n, axons[n.uid] if n.uid < len(axons) else None) for n in graph.neurons
        ),
        tempo=graph.tempo,
        weights={int(v): {int(m): float(w) for m, w in row.items()} for v, row in weights.items()},
    )


# --- the chain ------------------------------------------------------------------------------


class SubtensorChain:
    """The :class:`~engram.chain.base.Chain` of a Bittensor network, named by ``url``.

    ``subtensor`` is the SDK client to use (by default ``Subtensor(url)``, which
    connects on first use); ``config`` sets the deadlines and retries.
    """

    def __init__(
        self,
        url: str,
        *,
        subtensor: Subtensor | None = None,
        config: SubtensorConfig | None = None,
    ) -> None:
        self.url = url.strip()
        self.config = config or load_config(SubtensorConfig)
        c = self.config
        if min(c.subtensor_timeout_s, c.subtensor_extrinsic_timeout_s) <= 0:
            raise ChainError("subtensor timeouts must be > 0")
        if c.subtensor_retries < 0 or c.subtensor_backoff_s < 0:
            raise ChainError("subtensor_retries and subtensor_backoff_s must be >= 0")
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._subtensor = subtensor if subtensor is not None else Subtensor(self.url)
        except ValueError as exc:  # not a network name the SDK knows
            raise ChainError(f"unknown Bittensor network {self.url!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SubtensorChain({self.url!r})"

    def __enter__(self) -> SubtensorChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subtensor = self._subtensor
        with contextlib.suppress(BittensorError, RuntimeError, OSError):
            subtensor.close()

    # --- one call, under a deadline, retried while the chain is unreachable --------------

    def _current(self) -> Subtensor:
        with self._lock:
            if self._closed:
                raise ChainUnavailableError(f"the chain {self.url} is closed")
            return self._subtensor

    def _call(self, what: str, op: Callable[[Subtensor], T], *, write: bool = False) -> T:
        c = self.config
        timeout_s = c.subtensor_extrinsic_timeout_s if write else c.subtensor_timeout_s
        attempts = c.subtensor_retries + 1
        delay = c.subtensor_backoff_s
        for attempt in range(1, attempts + 1):
            subtensor = self._current()
            try:
                return _within(timeout_s, functools.partial(op, subtensor))
            except _UNREACHABLE as exc:
                failure = exc
                if attempt == attempts:
                    break
                log.warning(
                    "chain %s unreachable (%s); retry %d of %d in %.1fs",
                    self.url,
                    str(exc),  # not the exception: a log record would keep its frames
                    attempt,
                    attempts - 1,
                    delay,
                )
                time.sleep(delay)
                delay *= 2
            except SdkChainError as exc:
                raise ChainError(
                    f"{self.url} refused to {what}: {exc.message} ({exc.remediation})"
                ) from exc
            except BittensorError as exc:
                raise ChainError(f"cannot {what} on {self.url}: {exc}") from exc
        raise ChainUnavailableError(
            f"the Bittensor network {self.url} is unreachable: could not {what} in "
            f"{attempts} attempts ({type(failure).__name__}: {failure})"
        ) from failure

    def _uid(self, subtensor: Subtensor, netuid: int, hotkey: str) -> int:
        uid = subtensor.neurons.uid(hotkey, netuid)
        if uid is None:
            raise ChainError(
                f"hotkey {hotkey} is not registered on subnet {netuid} of {self.url}; register "
                f"it with `engram chain register {self.url} --netuid {netuid} --wallet NAME/HOTKEY`"
            )
        return int(uid)

    # --- reads ----------------------------------------------------------------------------

    def block(self) -> int:
        return self._call("read the current block", lambda s: int(s.block))

    def metagraph(self, netuid: int) -> Metagraph:
        netuid = _check_netuid(netuid)

        def read(s: Subtensor) -> tuple[SdkMetagraph, Mapping[int, Mapping[int, float]]]:
            graph = s.subnets.metagraph(netuid, commitments=False)
            if graph is None:
                raise ChainError(f"subnet {netuid} does not exist on {self.url}")
            return graph, s.weights.weights(netuid)

        return to_metagraph(*self._call(f"read subnet {netuid}", read))

    def uid(self, netuid: int, hotkey: str) -> int | None:
        """The uid of ``hotkey`` on the subnet, ``None`` while it is not registered."""
        netuid = _check_netuid(netuid)
        found = self._call(f"look up {hotkey}", lambda s: s.neurons.uid(hotkey, netuid))
        return None if found is None else int(found)

    def registration_cost(self, netuid: int) -> float:
        """TAO that registering a hotkey on the subnet burns now (it floats with demand)."""
        netuid = _check_netuid(netuid)
        return float(self._call("read the registration cost", lambda s: s.subnets.burn(netuid).tao))

    def balance(self, coldkey: str) -> float:
        """Free TAO of a coldkey."""
        return float(
            self._call(f"read the balance of {coldkey}", lambda s: s.balances.get(coldkey).tao)
        )

    # --- writes ---------------------------------------------------------------------------

    def register(
        self, netuid: int, signer: Signer, stake: float = 0.0, *, coldkey: str | None = None
    ) -> int:
        """Register the wallet's hotkey by burned registration (idempotent) and return its uid.

        It spends the subnet's registration cost (:meth:`registration_cost`) from the
        wallet's coldkey, which is unlocked here first. Stake is added with ``btcli``.
        """
        netuid = _check_netuid(netuid)
        if stake:
            raise ChainError(
                "Engram registers on Bittensor but does not stake: add stake with `btcli stake "
                "add` (a validator needs enough for a validator permit)"
            )
        wallet = _owner(signer, coldkey)
        hotkey = _address(wallet)
        known = self.uid(netuid, hotkey)
        if known is not None:
            return known
        keys = _unlock(wallet)

        def burn(s: Subtensor) -> int:
            found = s.neurons.uid(hotkey, netuid)  # a retry finds a registration that landed
            if found is None:
                s.execute(BurnedRegister(netuid=netuid), keys, **_INCLUDED).raise_for_failure()
            return self._uid(s, netuid, hotkey)

        uid = self._call(f"register {hotkey} on subnet {netuid}", burn, write=True)
        log.info("registered %s on subnet %d of %s as uid %d", hotkey, netuid, self.url, uid)
        return uid

    def serve_axon(self, netuid: int, signer: Signer, ip: str, port: int) -> None:
        """Announce where the signer's hotkey serves, when that changed and the chain allows.

        An unchanged axon is not announced again; a change within the subnet's serving
        rate limit waits (logged) for a later call.
        """
        netuid = _check_netuid(netuid)
        keys = _hotkey_signer(signer)
        hotkey = _address(signer)
        address = _announced_ip(ip)
        port = _check_int("port", port, 1, U16_MAX)
        number = int(ipaddress.ip_address(address))

        def announce(s: Subtensor) -> str:
            self._uid(s, netuid, hotkey)
            current = s.query(_S.Axons, [netuid, hotkey]) or {}
            if int(current.get("ip") or 0) == number and int(current.get("port") or 0) == port:
                return ""
            limit = int(s.query(_S.ServingRateLimit, [netuid]) or 0)
            served = int(current.get("block") or 0)
            wait = limit - (int(s.block) - served) if limit and served else 0
            if wait > 0:
                return f"the serving rate limit allows it in {wait} blocks"
            try:
                intent = ServeAxon(netuid=netuid, ip=address, port=port)
                s.execute(intent, keys, **_INCLUDED).raise_for_failure()
            except SdkChainError as exc:
                if exc.code is ErrorCode.RATE_LIMITED:
                    return exc.message
                raise
            return "announced"

        outcome = self._call(f"announce {address}:{port} on subnet {netuid}", announce, write=True)
        if outcome == "announced":
            log.info("axon %s:%d announced on subnet %d of %s", address, port, netuid, self.url)
        elif outcome:
            log.warning("axon %s:%d not announced yet: %s", address, port, outcome)

    def set_weights(
        self,
        netuid: int,
        signer: Signer,
        uids: Sequence[int],
        weights: Sequence[float],
        *,
        version_key: int,
    ) -> None:
        """The signing validator's weights, fitted to the subnet's limits (:func:`fit_weights`).

        Within the weights rate limit, or with every weight zero, nothing is sent
        (logged). On a commit-reveal subnet the SDK commits them timelocked and the
        chain reveals them.
        """
        netuid = _check_netuid(netuid)
        keys = _hotkey_signer(signer)
        hotkey = _address(signer)
        version_key = _check_int("version_key", version_key, 0, 2**64 - 1)
        ids, values = _weight_pairs(uids, weights)

        def submit(s: Subtensor) -> str:
            uid = self._uid(s, netuid, hotkey)
            rules = WeightRules.read(s, netuid)
            if version_key < rules.version_key:
                raise ChainError(
                    f"subnet {netuid} takes weights of version {rules.version_key} or later; "
                    f"this Engram is {version_key}: upgrade it"
                )
            wait = rules.blocks_to_wait(uid)
            if wait:
                return f"not sent: the weights rate limit allows them in {wait} blocks"
            dests, fitted = fit_weights(
                ids,
                values,
                min_allowed=rules.min_allowed_weights,
                max_weight_limit=rules.max_weight_limit,
                own_uid=uid,
            )
            if not dests:
                return "not sent: every weight is zero"
            permitted = uid < len(rules.permits) and rules.permits[uid]
            if not permitted and dests != [uid]:
                raise ChainError(
                    f"hotkey {hotkey} has no validator permit on subnet {netuid}: stake to it "
                    "with `btcli stake add`"
                )
            intent = SetWeights(
                netuid=netuid,
                uids=dests,
                weights=[float(v) for v in fitted],
                version_key=version_key,
            )
            try:
                s.execute(intent, keys, **_INCLUDED).raise_for_failure()
            except SdkChainError as exc:
                if exc.code is ErrorCode.RATE_LIMITED:
                    return f"not sent: {exc.message}"
                raise
            how = (
                "committed (commit-reveal: the chain reveals them)"
                if rules.commit_reveal
                else "set"
            )
            return f"{how} on {len(dests)} uids at block {rules.block}"

        outcome = self._call(f"set weights on subnet {netuid}", submit, write=True)
        log.info("weights on subnet %d of %s: %s", netuid, self.url, outcome)
