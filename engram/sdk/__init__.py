"""The Python SDK: the same client API embedded, against one node or the network, sync or async."""

from engram.records import QueryResult, Record
from engram.sdk._base import FILE_BATCH_ITEMS, BatchResult, FileIngestReport
from engram.sdk.async_client import AsyncEngramClient
from engram.sdk.client import EngramClient

__all__ = [
    "FILE_BATCH_ITEMS",
    "AsyncEngramClient",
    "BatchResult",
    "EngramClient",
    "FileIngestReport",
    "QueryResult",
    "Record",
]
