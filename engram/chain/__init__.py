"""The chain Engram runs on, named by a URL: ``local:PATH`` today, Bittensor's subtensor later."""

from __future__ import annotations

from pathlib import Path

from engram.chain.base import Chain, Metagraph, Neuron
from engram.chain.local import LocalChain
from engram.errors import ChainError

__all__ = ["Chain", "LocalChain", "Metagraph", "Neuron", "open_chain"]

_SUBTENSOR_NAMES = ("finney", "test", "local")


def open_chain(url: str) -> Chain:
    """The chain at ``url``, so every command and process names its chain the same way.

    ``local:PATH`` is a :class:`LocalChain` file (``~`` expanded); it must exist.
    """
    url = url.strip()
    if url.startswith("local:") and len(url) > len("local:"):
        return LocalChain(Path(url.removeprefix("local:")).expanduser())
    if url in _SUBTENSOR_NAMES or url.startswith(("ws://", "wss://")):
        raise ChainError(
            f"chain {url!r} is a Bittensor subtensor network: the subtensor adapter is not "
            "available in this version of Engram yet; use a LocalChain file, local:PATH"
        )
    raise ChainError(
        f"unknown chain {url!r}: use local:PATH (a LocalChain file); "
        "finney, test and ws(s):// subtensor endpoints are not supported yet"
    )
