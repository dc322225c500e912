"""The Python SDK: the same client API embedded, against one node, or the network."""

from engram.records import QueryResult, Record
from engram.sdk._base import BatchResult, FileIngestReport
from engram.sdk.client import EngramClient

__all__ = ["BatchResult", "EngramClient", "FileIngestReport", "QueryResult", "Record"]
