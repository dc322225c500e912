"""The Python SDK: the same client API embedded or against one node, sync or async."""

from engram.records import QueryResult, Record
from engram.sdk._base import BatchResult, FileIngestReport
from engram.sdk.async_client import AsyncEngramClient
from engram.sdk.client import EngramClient

__all__ = [
    "AsyncEngramClient",
    "BatchResult",
    "EngramClient",
    "FileIngestReport",
    "QueryResult",
    "Record",
]
