"""The durable storage engine of one node (SQLite + HNSW)."""

from engram.store.engine import Store

__all__ = ["Store"]
