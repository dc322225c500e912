"""The chain Engram runs on, named by a URL: ``local:PATH`` or a Bittensor network.

``local:PATH`` is a LocalChain file; ``finney``, ``test``, ``local`` (a subtensor
node on this machine), ``ws://…`` and ``wss://…`` are Bittensor's subtensor
(:class:`~engram.chain.subtensor.SubtensorChain`). :func:`open_chain` looks the
URL up in a registry of ``scheme -> factory`` entries, so a new kind of chain is
one :func:`register_chain_scheme` call rather than another branch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engram.chain.base import Chain, Metagraph, Neuron
from engram.chain.local import LocalChain
from engram.chain.subtensor import SubtensorChain
from engram.errors import ChainError

__all__ = [
    "Chain",
    "ChainFactory",
    "LocalChain",
    "Metagraph",
    "Neuron",
    "SubtensorChain",
    "open_chain",
    "register_chain_scheme",
]

ChainFactory = Callable[[str], Chain]  # called with the whole URL, surrounding spaces removed

_FACTORIES: dict[str, ChainFactory] = {}


def register_chain_scheme(scheme: str, factory: ChainFactory) -> None:
    """Make :func:`open_chain` hand URLs of ``scheme`` to ``factory``, replacing any earlier one.

    A scheme ending in ``:`` or ``/`` (``local:``, ``wss://``) matches every URL
    it starts; any other (``finney``) matches that exact name. The longest
    match wins.
    """
    if not scheme or scheme != scheme.strip():
        raise ValueError(f"invalid chain scheme {scheme!r}")
    _FACTORIES[scheme] = factory


def open_chain(url: str) -> Chain:
    """The chain at ``url``, so every command and process names its chain the same way.

    ``local:PATH`` is a :class:`LocalChain` file (``~`` expanded); it must exist.
    A Bittensor network connects on first use.
    """
    url = url.strip()
    matches = [
        scheme
        for scheme in _FACTORIES
        if url == scheme or (scheme.endswith((":", "/")) and url.startswith(scheme))
    ]
    if not matches:
        raise ChainError(
            f"unknown chain {url!r}: use local:PATH (a LocalChain file) or a Bittensor network "
            f"(finney, test, local, ws://…); known schemes: {', '.join(sorted(_FACTORIES))}"
        )
    return _FACTORIES[max(matches, key=len)](url)


def _open_local(url: str) -> Chain:
    path = url.removeprefix("local:")
    if not path:
        raise ChainError(f"chain {url!r} names no file: use local:PATH (a LocalChain file)")
    return LocalChain(Path(path).expanduser())


register_chain_scheme("local:", _open_local)
for _scheme in ("finney", "test", "local", "ws://", "wss://"):
    register_chain_scheme(_scheme, SubtensorChain)
