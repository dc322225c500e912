"""What Engram needs from a chain, whichever chain it is.

Neurons, axons, stake, weights and the consensus outcome (incentive,
emission), as Bittensor's metagraph describes them. :class:`Chain` is the
interface; :mod:`engram.chain.local` implements it in one SQLite file and
:mod:`engram.chain.subtensor` on Bittensor's subtensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engram.security.signing import Signer


@dataclass(frozen=True)
class Neuron:
    """One registered hotkey on a subnet."""

    uid: int
    hotkey: str
    coldkey: str
    stake: float
    validator_permit: bool
    ip: str | None = None
    port: int | None = None
    axon_block: int | None = None  # block its axon was last announced (``serve_axon``)
    incentive: float = 0.0
    emission: float = 0.0
    registered_block: int = 0
    last_update: int | None = None  # block of its last weights (set or committed), where known

    @property
    def axon_url(self) -> str | None:
        if self.ip is None or self.port is None:
            return None
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Metagraph:
    """A snapshot of one subnet at ``block``."""

    netuid: int
    block: int
    neurons: tuple[Neuron, ...]
    tempo: int
    weights: Mapping[int, Mapping[int, float]] = field(default_factory=dict)  # validator → miner

    def serving(self) -> list[Neuron]:
        """Neurons with an announced axon, however long ago: the miners routing considers.

        A miner announces once (again only when its address changes, as a real chain
        rate-limits it), so the chain cannot say whether it still answers; which of
        these do is observed by probing them (:class:`engram.network.survey.Liveness`).
        """
        return [n for n in self.neurons if n.axon_url is not None]

    def by_hotkey(self, hotkey: str) -> Neuron | None:
        return next((n for n in self.neurons if n.hotkey == hotkey), None)

    def by_uid(self, uid: int) -> Neuron | None:
        return next((n for n in self.neurons if n.uid == uid), None)


class Chain(Protocol):
    """The chain operations a miner, validator, gateway and client use.

    Writes take the ``signer`` that a real chain needs to sign the extrinsic
    (a bittensor Wallet or Keypair, see :mod:`engram.security.signing`), not
    a hotkey address: the hotkey is the signer's.
    """

    url: str

    def block(self) -> int: ...

    def metagraph(self, netuid: int) -> Metagraph: ...

    def register(
        self, netuid: int, signer: Signer, stake: float = 0.0, *, coldkey: str | None = None
    ) -> int:
        """Register the signer's hotkey (idempotent) and return its uid.

        The owner is a Wallet's coldkey; ``coldkey`` names it for a bare Keypair.
        """
        ...

    def serve_axon(self, netuid: int, signer: Signer, ip: str, port: int) -> None:
        """Announce (or refresh) where the signer's registered hotkey serves."""
        ...

    def set_weights(
        self,
        netuid: int,
        signer: Signer,
        uids: Sequence[int],
        weights: Sequence[float],
        *,
        version_key: int,
    ) -> None:
        """The signing validator's weights; needs a validator permit.

        ``version_key`` is the code's spec version (:data:`engram.config.SPEC_VERSION`),
        which a subnet can require to be recent enough.
        """
        ...

    def close(self) -> None: ...
