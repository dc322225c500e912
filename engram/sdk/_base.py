"""What every client mode shares, with no I/O: argument checks and result shapes.

``EngramClient`` and ``AsyncEngramClient`` only move these values through a
transport (embedded store, one node over HTTP, or the network).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from engram.errors import InvalidRequestError
from engram.memory import IngestItem


@dataclass(frozen=True)
class BatchResult:
    """CIDs in input order (``None`` where an item failed) and each failure's message."""

    cids: list[str | None]
    errors: list[str | None]

    def __iter__(self) -> Iterator[str | None]:
        return iter(self.cids)

    def __len__(self) -> int:
        return len(self.cids)

    def __getitem__(self, i: int) -> str | None:
        return self.cids[i]

    @property
    def failed(self) -> list[tuple[int, str]]:
        return [(i, e) for i, e in enumerate(self.errors) if e is not None]


@dataclass
class FileIngestReport:
    """The outcome of ``batch_ingest_file``: counts, CIDs and per-line errors (1-based lines)."""

    path: str
    ingested: int = 0
    cids: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)


def ingest_item(item: Any, namespace: str | None = None) -> IngestItem:
    """Check one batch item (``{"text" | "embedding", "metadata"?}``) without touching storage."""
    if isinstance(item, IngestItem):
        return item if namespace is None else replace(item, namespace=namespace)
    if not isinstance(item, Mapping):
        raise InvalidRequestError(
            f'each item must be an object like {{"text": ...}} or {{"embedding": [...]}}, '
            f"got {type(item).__name__}"
        )
    unknown = set(item) - {"text", "embedding", "metadata"}
    if unknown:
        raise InvalidRequestError(
            f"unknown item field(s) {sorted(unknown)}; use text, embedding and metadata"
        )
    text, embedding, metadata = item.get("text"), item.get("embedding"), item.get("metadata")
    if text is None and embedding is None:
        raise InvalidRequestError('an item needs "text" or "embedding"')
    if text is not None and not isinstance(text, str):
        raise InvalidRequestError(f"text must be a string, got {type(text).__name__}")
    if embedding is not None and (
        isinstance(embedding, str | bytes | Mapping) or not isinstance(embedding, Sequence)
    ):
        if not hasattr(embedding, "tolist"):
            raise InvalidRequestError("embedding must be a list of numbers")
        embedding = embedding.tolist()
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidRequestError(f"metadata must be an object, got {type(metadata).__name__}")
    return IngestItem(
        text=text,
        embedding=list(embedding) if embedding is not None else None,
        metadata=dict(metadata or {}),
        namespace=namespace,
    )


def parse_jsonl_line(line: str, namespace: str | None = None) -> IngestItem | None:
    """One line of an ingest file; blank lines are skipped (``None``)."""
    if not line.strip():
        return None
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"not valid JSON: {exc.msg} at column {exc.colno}") from exc
    return ingest_item(doc, namespace)


def require_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError("query text must be a non-empty string")
    return text
