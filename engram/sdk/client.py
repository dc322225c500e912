"""``EngramClient``: one API whether the store is in-process, one node, or the network."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from engram.embed import Embedder
from engram.errors import EngramError, InvalidRequestError
from engram.memory import IngestItem
from engram.records import QueryResult, Record
from engram.sdk._base import (
    BatchResult,
    FileIngestReport,
    ingest_item,
    parse_jsonl_line,
    require_text,
)
from engram.sdk.embedded import EmbeddedTransport

FILE_BATCH_ITEMS = 256


class EngramClient:
    """Semantic memory: ingest text or vectors, query by meaning.

    ``EngramClient()`` opens the embedded store under ``ENGRAM_HOME`` (default
    ``~/.engram``); ``EngramClient(path=DIR)`` opens one at ``DIR``.
    """

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        namespace: str | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.namespace = namespace
        self._transport = EmbeddedTransport(path, embedder=embedder)

    def _ns(self, namespace: str | None) -> str | None:
        return namespace if namespace is not None else self.namespace

    # --- writes --------------------------------------------------------------------------

    def ingest(
        self, text: str, metadata: Mapping[str, Any] | None = None, namespace: str | None = None
    ) -> str:
        """Embed ``text`` with the canonical model and store it; returns its CID."""
        item = IngestItem(require_text(text), None, dict(metadata or {}), self._ns(namespace))
        return self._one(item)

    def ingest_embedding(
        self,
        vector: Sequence[float] | np.ndarray,
        metadata: Mapping[str, Any] | None = None,
        text: str | None = None,
        namespace: str | None = None,
    ) -> str:
        """Store a vector you computed (optionally with its text); returns its CID."""
        item = ingest_item(
            {"embedding": vector, "metadata": metadata, "text": text}, self._ns(namespace)
        )
        return self._one(item)

    def _one(self, item: IngestItem) -> str:
        (outcome,) = self._transport.ingest([item])
        if isinstance(outcome, EngramError):
            raise outcome
        return outcome

    def batch_ingest(
        self, items: Iterable[Mapping[str, Any] | IngestItem], namespace: str | None = None
    ) -> BatchResult:
        """Ingest many items (``{"text" | "embedding", "metadata"?}``) in one transaction.

        Valid items are stored even when others fail; ``result.failed`` lists
        the failures with their messages.
        """
        outcomes: list[str | EngramError] = []
        valid: list[IngestItem] = []
        slots: list[int] = []
        for i, raw in enumerate(items):
            try:
                valid.append(ingest_item(raw, self._ns(namespace)))
                slots.append(i)
                outcomes.append("")
            except EngramError as exc:
                outcomes.append(exc)
        for slot, outcome in zip(slots, self._transport.ingest(valid), strict=True):
            outcomes[slot] = outcome
        return BatchResult(
            cids=[o if isinstance(o, str) else None for o in outcomes],
            errors=[o.message if isinstance(o, EngramError) else None for o in outcomes],
        )

    def batch_ingest_file(
        self,
        path: str | Path,
        namespace: str | None = None,
        batch_size: int = FILE_BATCH_ITEMS,
        progress: bool = True,
    ) -> FileIngestReport:
        """Ingest a JSONL file (one item a line); a bad line is reported, not fatal."""
        path = Path(path)
        if not path.is_file():
            raise InvalidRequestError(f"{path} is not a file")
        report = FileIngestReport(path=str(path))
        batch: list[tuple[int, IngestItem]] = []

        def flush() -> None:
            outcomes = self._transport.ingest([item for _, item in batch])
            for (line_no, _), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, EngramError):
                    report.errors.append((line_no, outcome.message))
                else:
                    report.cids.append(outcome)
                    report.ingested += 1
            batch.clear()

        bar = Progress(
            TextColumn("[bold]ingest[/] {task.fields[name]}"),
            BarColumn(),
            TextColumn(
                "{task.percentage:>3.0f}% · {task.fields[ok]} ok · {task.fields[bad]} failed"
            ),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not progress,
        )
        with bar, path.open("rb") as fh:
            task = bar.add_task("ingest", total=path.stat().st_size, name=path.name, ok=0, bad=0)
            for line_no, raw in enumerate(fh, start=1):
                try:
                    item = parse_jsonl_line(raw.decode("utf-8"), self._ns(namespace))
                except UnicodeDecodeError:
                    report.errors.append((line_no, "line is not valid UTF-8"))
                    item = None
                except EngramError as exc:
                    report.errors.append((line_no, exc.message))
                    item = None
                if item is not None:
                    batch.append((line_no, item))
                if len(batch) >= batch_size:
                    flush()
                bar.update(task, completed=fh.tell(), ok=report.ingested, bad=report.failed)
            if batch:
                flush()
            bar.update(task, completed=fh.tell(), ok=report.ingested, bad=report.failed)
        report.errors.sort()
        return report

    def delete(self, cid: str, namespace: str | None = None) -> None:
        """Delete a record; raises :class:`~engram.errors.NotFoundError` if it is not there."""
        self._transport.delete(cid, self._ns(namespace))

    # --- reads ---------------------------------------------------------------------------

    def query(
        self,
        text: str,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        include_embedding: bool = False,
    ) -> list[QueryResult]:
        """Records nearest in meaning to ``text``, best first (cosine similarity)."""
        return self._transport.query(
            require_text(text), None, top_k, filter, self._ns(namespace), include_embedding
        )

    def query_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        include_embedding: bool = False,
    ) -> list[QueryResult]:
        """Records nearest to ``vector``, best first (cosine similarity)."""
        return self._transport.query(
            None, vector, top_k, filter, self._ns(namespace), include_embedding
        )

    def get(self, cid: str, namespace: str | None = None) -> Record | None:
        """The whole record, or ``None`` when this CID is not stored."""
        return self._transport.get(cid, self._ns(namespace))

    def list(self, limit: int = 100, offset: int = 0, namespace: str | None = None) -> list[Record]:
        """A page of records in insertion order."""
        return self._transport.list(limit, offset, self._ns(namespace))

    def count(self, namespace: str | None = None) -> int:
        return self._transport.count(self._ns(namespace))

    def stats(self) -> dict[str, Any]:
        return self._transport.stats()

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> EngramClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
