"""Engram: decentralized, content-addressed semantic memory for AI."""

__version__ = "0.1.0"  # first: modules imported below read it

from engram import errors
from engram.records import QueryResult, Record
from engram.sdk import AsyncEngramClient, BatchResult, EngramClient, FileIngestReport
from engram.security.sealing import SealKey

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
