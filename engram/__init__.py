"""Engram: decentralized, content-addressed semantic memory for AI.

The public names load on first use, so ``import engram`` is cheap and no module
inside the package needs to import this one (each imports what it uses).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from engram._version import __version__

if TYPE_CHECKING:
    from engram import errors
    from engram.records import QueryResult, Record
    from engram.sdk import AsyncEngramClient, BatchResult, EngramClient, FileIngestReport
    from engram.security.sealing import SealKey

_PUBLIC = {
    "AsyncEngramClient": "engram.sdk",
    "BatchResult": "engram.sdk",
    "EngramClient": "engram.sdk",
    "FileIngestReport": "engram.sdk",
    "QueryResult": "engram.records",
    "Record": "engram.records",
    "SealKey": "engram.security.sealing",
}

__all__ = [
    "AsyncEngramClient",
    "BatchResult",
    "EngramClient",
    "FileIngestReport",
    "QueryResult",
    "Record",
    "SealKey",
    "__version__",
    "errors",
]


def __getattr__(name: str) -> Any:
    if name == "errors":
        return import_module("engram.errors")
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engram' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
