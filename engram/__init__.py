"""Engram: decentralized, content-addressed semantic memory for AI."""

from engram import errors
from engram.records import QueryResult, Record
from engram.sdk import BatchResult, EngramClient, FileIngestReport

__version__ = "0.1.0"

__all__ = [
    "BatchResult",
    "EngramClient",
    "FileIngestReport",
    "QueryResult",
    "Record",
    "__version__",
    "errors",
]
