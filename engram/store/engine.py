"""The storage engine: SQLite as the truth, one HNSW index per namespace beside it.

Writes commit to SQLite first and are acknowledged then; the new vectors join
an in-memory *pending* set that queries scan exactly, so an acknowledged write
is searchable at once. A background indexer moves pending vectors into HNSW
copy-on-write (clone, add, swap), so searches never wait for a build. The
index is checkpointed to disk with the highest row id it covers; on open,
rows past that id are pending again and deleted rows become tombstones, which
is why the store needs no repair after ``kill -9``.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson

from engram.config import EMBEDDING_MODEL_ID, MODEL_VERSION, Limits, StoreConfig
from engram.errors import DimensionMismatchError, InvalidRequestError, StorageError
from engram.records import (
    QueryResult,
    Record,
    check_mode,
    check_namespace,
    check_top_k,
    record_builder,
)
from engram.store.db import Database
from engram.store.filters import compile_filter
from engram.store.fusion import fuse, keyword_query, with_neighbours
from engram.store.index import HnswIndex, normalize

log = logging.getLogger(__name__)

_MIN_TOMBSTONES_TO_COMPACT = 64


class _Space:
    """In-memory state of one namespace: its index, pending rows and tombstones.

    Pending rows live in buffers that grow by doubling; readers take views of
    the filled part, which later appends never touch.
    """

    def __init__(self, name: str, index: HnswIndex, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.name = name
        self.index = index
        self._ids = ids
        self._vecs = vecs
        self._n = len(ids)
        self.dead: set[int] = set()
        self.dead_selector: Any = None
        self.dead_selector_parts: tuple[Any, ...] = ()
        self.dirty = False
        self.saved_at = time.monotonic()
        self.lock = threading.Lock()

    @property
    def pending_ids(self) -> np.ndarray:
        return self._ids[: self._n]

    @property
    def pending_vecs(self) -> np.ndarray:
        return self._vecs[: self._n]

    def append(self, ids: np.ndarray, unit_vecs: np.ndarray) -> None:
        end = self._n + len(ids)
        if end > len(self._ids):
            capacity = max(end, 2 * len(self._ids), 1024)
            grown_ids = np.empty(capacity, dtype=np.int64)
            grown_vecs = np.empty((capacity, unit_vecs.shape[1]), dtype=np.float32)
            grown_ids[: self._n] = self.pending_ids
            grown_vecs[: self._n] = self.pending_vecs
            self._ids, self._vecs = grown_ids, grown_vecs
        self._ids[self._n : end] = ids
        self._vecs[self._n : end] = unit_vecs
        self._n = end

    def drop_pending(self, keep: np.ndarray) -> None:
        self._ids = self.pending_ids[keep]
        self._vecs = self.pending_vecs[keep]
        self._n = len(self._ids)

    def selector(self) -> Any:
        """A FAISS selector that hides tombstones, rebuilt only when they change."""
        if not self.dead:
            return None
        if self.dead_selector is None:
            batch = faiss.IDSelectorBatch(np.fromiter(self.dead, dtype=np.int64))
            self.dead_selector = faiss.IDSelectorNot(batch)
            self.dead_selector_parts = (batch,)
        return self.dead_selector


class _RowCache:
    """Recently returned rows (cid, metadata JSON, text) by row id, least recently used out.

    Rows never change once written (their CID is their content), so the only
    invalidation is a delete; a stale entry for a deleted row is never asked
    for again because searches skip tombstones.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._rows: OrderedDict[int, tuple[Any, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, ids: list[int]) -> dict[int, tuple[Any, ...]]:
        found = {}
        with self._lock:
            for i in ids:
                row = self._rows.get(i)
                if row is not None:
                    self._rows.move_to_end(i)
                    found[i] = row
        return found

    def put_many(self, rows: dict[int, tuple[Any, ...]]) -> None:
        if self.max_rows <= 0:
            return
        with self._lock:
            self._rows.update(rows)
            while len(self._rows) > self.max_rows:
                self._rows.popitem(last=False)

    def discard(self, rowid: int) -> None:
        with self._lock:
            self._rows.pop(rowid, None)


class Store:
    """A durable, searchable collection of records in one directory."""

    def __init__(
        self,
        path: str | Path,
        config: StoreConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.config = config or StoreConfig()
        self.limits = limits or Limits()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "index").mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the store directory {self.path}: {exc}") from exc
        self.db = Database(self.path / "engram.db", self.config.synchronous)
        self._spaces: dict[str, _Space] = {}
        self._spaces_lock = threading.Lock()
        self._wake = threading.Event()
        self._maintain_lock = threading.Lock()
        self._rows = _RowCache(self.config.row_cache_rows)
        self._closed = threading.Event()
        self._dims = self.db.dims()
        self._index_params = {
            "m": self.config.hnsw_m,
            "ef_construction": self.config.hnsw_ef_construction,
            "model": EMBEDDING_MODEL_ID,
        }
        self._cleanup_index_files()
        self._indexer = threading.Thread(
            target=self._index_loop, name="engram-indexer", daemon=True
        )
        self._indexer.start()

    # --- writes --------------------------------------------------------------------------

    def dim_of(self, namespace: str) -> int | None:
        """The dimension of a namespace's vectors (``None``: not fixed yet, any is accepted).

        It is fixed by the namespace's first write, for good: text the canonical
        model embeds is 384-d, and a namespace of another model's vectors takes
        only that model's.
        """
        return self.config.dim or self._dims.get(namespace)

    def record(
        self,
        embedding: Any,
        metadata: Mapping[str, Any] | None = None,
        text: str | None = None,
        namespace: str | None = None,
        model_version: str = MODEL_VERSION,
    ) -> Record:
        """Validate parts against the namespace's dimension and the limits; the result has
        its CID."""
        return self.record_builder()(embedding, metadata, text, namespace, model_version)

    def record_builder(self) -> Callable[..., Record]:
        """:meth:`record` for the items of one batch: the first vector of a new namespace
        fixes its dimension for the items after it."""
        return record_builder(self.dim_of, self.limits)

    def put(self, records: Sequence[Record], writer: str | None = None) -> list[str]:
        """Store records durably (one transaction) and return their CIDs.

        ``writer`` is the hotkey that signed the write (the only one that may
        delete a public record). Re-storing a CID already in the namespace
        changes nothing, its writer included.
        """
        if not records:
            return []
        for r in records:
            if not np.any(r.embedding):
                raise InvalidRequestError("embedding is all zeros: it has no direction to compare")
        with self.db.write_lock:
            dims: dict[str, int] = {}
            for r in records:
                dim = dims.setdefault(r.namespace, self.dim_of(r.namespace) or r.embedding.size)
                if r.embedding.shape != (dim,):
                    raise DimensionMismatchError(
                        f"embedding has {r.embedding.size} dimensions, namespace "
                        f"{r.namespace!r} holds {dim}"
                    )
            # Load each namespace before the insert, or the load would count these rows twice.
            for name, dim in dims.items():
                self._space(name, dim)
            with self.db.transaction() as conn:
                for name, dim in dims.items():
                    self.db.fix_dim(conn, name, dim)
                ids = self.db.insert(conn, records, writer)
            self._dims.update(dims)
            by_space: dict[str, list[tuple[int, np.ndarray]]] = {}
            for rowid, r in zip(ids, records, strict=True):
                if rowid is not None:
                    by_space.setdefault(r.namespace, []).append((rowid, r.embedding))
            for name, rows in by_space.items():
                space = self._space(name)
                new_ids = np.fromiter((x[0] for x in rows), dtype=np.int64, count=len(rows))
                vecs = normalize(np.stack([x[1] for x in rows]))
                with space.lock:
                    space.append(new_ids, vecs)
                    if len(space.pending_ids) >= self.config.index_batch_rows:
                        self._wake.set()
        return [r.cid for r in records]

    def delete(self, cid: str, namespace: str | None = None) -> bool:
        """Delete a record; True if it existed. Its vector becomes a tombstone until compaction."""
        namespace = check_namespace(namespace, self.limits)
        with self.db.write_lock:
            with self.db.transaction() as conn:
                rowid = self.db.delete(conn, namespace, cid)
            if rowid is None:
                return False
            self._rows.discard(rowid)
            space = self._space(namespace)
            with space.lock:
                in_pending = space.pending_ids == rowid
                if in_pending.any():
                    space.drop_pending(~in_pending)
                else:
                    space.dead.add(rowid)
                    space.dead_selector = None
                    if self._needs_compaction(space):
                        self._wake.set()
        return True

    # --- reads ---------------------------------------------------------------------------

    def get(self, cid: str, namespace: str | None = None) -> Record | None:
        return self.db.get(check_namespace(namespace, self.limits), cid)

    def find(self, cid: str) -> Record | None:
        """The record with this CID in whichever namespace holds it."""
        found = self.db.find_cid(cid)
        return found[0] if found else None

    def find_all(self, cid: str) -> list[Record]:
        """Every copy of this CID, one per namespace holding it, oldest first."""
        return self.db.find_cid(cid)

    def list(
        self,
        namespace: str | None = None,
        limit: int = 100,
        offset: int = 0,
        filter: Mapping[str, Any] | None = None,
    ) -> builtins.list[Record]:
        """A page of a namespace's records in insertion order, only those matching ``filter``."""
        if not 1 <= limit <= self.limits.max_list_limit or not 0 <= offset < 2**63:
            raise InvalidRequestError(
                f"limit must be 1..{self.limits.max_list_limit} and offset 0..2^63-1"
            )
        namespace = check_namespace(namespace, self.limits)
        select = compile_filter(filter, namespace) if filter else None
        return self.db.page(namespace, limit, offset, select)

    def count(self, namespace: str | None = None) -> int:
        """Records in ``namespace``, or in the whole store when it is None."""
        return self.db.count(None if namespace is None else check_namespace(namespace, self.limits))

    def namespaces(self) -> dict[str, int]:
        return self.db.namespaces()

    def cids(self) -> builtins.list[str]:
        """Every CID held, for the inventory commitment."""
        return self.db.all_cids()

    def search(
        self,
        vector: Any,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        include_embedding: bool = False,
    ) -> builtins.list[QueryResult]:
        """Nearest records by cosine similarity, best first; ``filter`` never cuts recall."""
        top_k = check_top_k(top_k, self.limits)
        namespace = check_namespace(namespace, self.limits)
        select = compile_filter(filter, namespace) if filter is not None and filter != {} else None
        if namespace not in self._spaces and not self.db.count(namespace):
            self._query_vector(vector, None)  # a bad vector is refused even here
            return []  # unknown namespace: no state is created for it (queries are untrusted)
        query = self._query_vector(vector, self.dim_of(namespace))
        scores, ids = self._nearest(namespace, query, top_k, select)
        return self._hydrate(scores, ids, include_embedding)

    def _nearest(
        self,
        namespace: str,
        query: np.ndarray,
        k: int,
        select: tuple[str, builtins.list[Any]] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row ids of the ``k`` nearest, only among ``select`` (a compiled filter)."""
        space = self._space(namespace)
        if select is not None:
            return self._filtered(space, query, k, self.db.filter_ids(*select))
        return self._unfiltered(space, query, k)

    def hybrid_search(
        self,
        text: str | None,
        vector: Any,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        mode: str = "hybrid",
    ) -> builtins.list[QueryResult]:
        """Vector and keyword (BM25, OR semantics) channels fused into one ranking.

        ``mode`` picks the channels: ``hybrid`` needs ``text`` and ``vector``,
        ``vector`` only the vector, ``keyword`` only the text. The filter applies
        inside each channel before it is cut to ``search_candidates``, so it
        never costs recall. Each hit carries every channel's rank and score.
        """
        top_k = check_top_k(top_k, self.limits)
        namespace = check_namespace(namespace, self.limits)
        mode = check_mode(mode)
        select = compile_filter(filter, namespace) if filter else None
        if namespace not in self._spaces and not self.db.count(namespace):
            return []
        depth = max(top_k, self.config.search_candidates)
        channels: dict[str, builtins.list[tuple[int, float]]] = {}
        if mode != "keyword":
            query = self._query_vector(vector, self.dim_of(namespace))
            scores, ids = self._nearest(namespace, query, depth, select)
            channels["vector"] = list(zip(ids.tolist(), scores.tolist(), strict=True))
        if mode != "vector":
            if not isinstance(text, str) or not text.strip():
                raise InvalidRequestError("keyword search needs query text")
            match = keyword_query(text)
            channels["keyword"] = (
                self.db.keyword_ids(namespace, match, depth, select) if match else []
            )
        weights = {
            "vector": self.config.search_vector_weight,
            "keyword": self.config.search_keyword_weight,
        }
        fused = fuse(channels, weights, self.config.search_fusion)
        if mode == "hybrid" and self.config.search_neighbour_weight:
            fused = with_neighbours(fused, self.config.search_neighbour_weight)
        fused = fused[:top_k]
        return self._hydrate(
            np.array([f.score for f in fused], dtype=np.float64),
            np.array([f.row for f in fused], dtype=np.int64),
            clip=False,
            channels=[
                {c: {"rank": rank, "score": score} for c, (rank, score) in f.channels.items()}
                for f in fused
            ],
        )

    def _query_vector(self, vector: Any, dim: int | None) -> np.ndarray:
        try:
            with np.errstate(over="ignore"):  # 1e308 becomes inf, refused below
                q = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError("query vector must be a flat list of numbers") from exc
        if q.ndim != 1:
            raise InvalidRequestError(f"query vector must be flat, got shape {q.shape}")
        if dim is not None and q.size != dim:
            raise DimensionMismatchError(f"query vector has {q.size} dimensions, expected {dim}")
        with np.errstate(over="ignore", invalid="ignore"):
            norm = float(np.sqrt(np.dot(q, q)))  # NaN or inf anywhere makes this non-finite
        if not np.isfinite(norm):
            if not np.isfinite(q).all():
                raise InvalidRequestError("query vector contains NaN or infinite values")
            return normalize(q / np.abs(q).max())  # finite but too large to square
        if norm == 0.0:
            raise InvalidRequestError("query vector is all zeros")
        return q / np.float32(norm)

    def _snapshot(self, space: _Space) -> tuple[HnswIndex, np.ndarray, np.ndarray, Any]:
        with space.lock:
            return space.index, space.pending_ids, space.pending_vecs, space.selector()

    def _unfiltered(
        self, space: _Space, query: np.ndarray, top_k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        index, pending_ids, pending_vecs, selector = self._snapshot(space)
        parts = []
        if len(index):
            ef = max(self.config.hnsw_ef_search, top_k)
            parts.append(index.search(query, top_k, ef, selector))
        if len(pending_ids):
            parts.append((pending_vecs @ query, pending_ids))
        return _best(parts, top_k)

    def _filtered(
        self, space: _Space, query: np.ndarray, top_k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the matches when they are few, filtered HNSW when they are many."""
        if len(allowed) == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        index, pending_ids, pending_vecs, _ = self._snapshot(space)
        in_pending = np.isin(pending_ids, allowed, assume_unique=True)
        parts = [(pending_vecs[in_pending] @ query, pending_ids[in_pending])]
        indexed = allowed[allowed <= index.max_label] if len(index) else allowed[:0]
        selectivity = len(indexed) / max(len(index), 1)
        if (
            len(allowed) <= self.config.exact_search_max_rows
            or selectivity < self.config.filtered_hnsw_min_selectivity
        ):
            if len(indexed):
                parts.append((index.vectors(indexed) @ query, indexed))
            # Committed by a concurrent writer after our snapshot: read them from SQLite.
            seen = np.concatenate([indexed, pending_ids[in_pending]])
            late = np.setdiff1d(allowed, seen, assume_unique=True)
            if len(late):
                late_ids, late_vecs = self.db.vectors(space.name, ids=late)
                if len(late_ids):
                    parts.append((normalize(late_vecs) @ query, late_ids))
        elif len(indexed):
            ef = max(self.config.hnsw_ef_search, top_k)
            ef = min(int(ef / math.sqrt(selectivity)), 1024)
            selector = faiss.IDSelectorBatch(indexed)
            parts.append(index.search(query, top_k, ef, selector))
        return _best(parts, top_k)

    def _hydrate(
        self,
        scores: np.ndarray,
        ids: np.ndarray,
        include_embedding: bool = False,
        clip: bool = True,
        channels: Sequence[dict[str, dict[str, float]]] | None = None,
    ) -> builtins.list[QueryResult]:
        if len(ids) == 0:
            return []
        wanted = ids.tolist()
        if include_embedding:
            rows = self.db.hits(wanted, with_embedding=True)
        else:
            rows = self._rows.get_many(wanted)
            missing = [i for i in wanted if i not in rows]
            if missing:
                fetched = self.db.hits(missing)
                self._rows.put_many(fetched)
                rows.update(fetched)
        results = []
        for i, (score, rowid) in enumerate(zip(scores.tolist(), ids.tolist(), strict=True)):
            row = rows.get(rowid)
            if row is None:  # deleted between search and read
                continue
            cid, metadata, text, embedding = row
            results.append(
                QueryResult(
                    cid=cid,
                    score=min(1.0, max(-1.0, score)) if clip else score,
                    metadata=orjson.loads(metadata),
                    text=text,
                    embedding=np.frombuffer(embedding, "<f4").tolist()
                    if include_embedding and embedding is not None
                    else None,
                    channels=None if channels is None else channels[i],
                )
            )
        return results

    # --- namespaces, indexing, checkpoints ----------------------------------------------

    def _space(self, name: str, dim: int | None = None) -> _Space:
        """A namespace's search state, loaded on first use (``dim``: of a first write)."""
        space = self._spaces.get(name)
        if space is not None:
            return space
        with self._spaces_lock:
            space = self._spaces.get(name)
            if space is None:
                dim = self.dim_of(name) or dim
                if dim is None:
                    raise StorageError(f"namespace {name!r} has no dimension yet")
                space = self._spaces[name] = self._load_space(name, dim)
        return space

    def _new_index(self, dim: int) -> HnswIndex:
        c = self.config
        return HnswIndex(dim, c.hnsw_m, c.hnsw_ef_construction, c.hnsw_ef_search)

    def _params(self, dim: int) -> dict[str, Any]:
        return {"dim": dim, **self._index_params}

    def _load_space(self, name: str, dim: int) -> _Space:
        index = None
        checkpoint = self.db.checkpoint(name)
        if checkpoint is not None:
            file, _upto, params = checkpoint
            if params.get("dim") != dim or params.get("model") != EMBEDDING_MODEL_ID:
                raise StorageError(
                    f"the index of namespace {name!r} was built for {params}, but this store is "
                    f"configured for {self._params(dim)}; open it with the same settings"
                )
            path = self.path / "index" / file
            if params != self._params(dim):
                log.warning("index parameters of %r changed; rebuilding it", name)
            elif not path.exists():
                log.warning("index file %s is missing; rebuilding namespace %r", path, name)
            else:
                index = HnswIndex.load(path, params, self.config.hnsw_ef_search)
        if index is None:
            index = self._new_index(dim)
        live = self.db.live_ids(name, upto=index.max_label)
        dead = set(np.setdiff1d(index.labels, live, assume_unique=True).tolist())
        ids, vecs = self.db.vectors(name, after_id=index.max_label)
        vecs = normalize(vecs) if len(ids) else np.empty((0, dim), np.float32)
        space = _Space(name, index, ids, vecs)
        space.dead = dead
        if len(ids) >= self.config.index_batch_rows or self._needs_compaction(space):
            self._wake.set()
        return space

    def _needs_compaction(self, space: _Space, force: bool = False) -> bool:
        """Due when tombstones pass the configured share; ``force`` (flush) takes any."""
        dead = len(space.dead)
        if force:
            return dead > 0
        return (
            dead >= _MIN_TOMBSTONES_TO_COMPACT
            and dead > self.config.compact_tombstone_ratio * len(space.index)
        )

    def _index_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                for space in list(self._spaces.values()):
                    self._maintain(space, force=False)
            except Exception:  # the indexer must outlive one bad cycle; SQLite stays the truth
                log.exception("background indexing failed; will retry")
                time.sleep(1.0)

    def _maintain(self, space: _Space, force: bool) -> None:
        """Index pending rows, compact tombstones and checkpoint, as each is due."""
        # In the background, leave a core to writers and queries; a flush may use them all.
        threads = None if force else self.config.index_threads or max(1, (os.cpu_count() or 2) - 1)
        with self._maintain_lock:
            if self._needs_compaction(space, force):
                self._rebuild(space, compact=True, threads=threads)
            if len(space.pending_ids) and (
                force or len(space.pending_ids) >= self.config.index_batch_rows
            ):
                self._rebuild(space, compact=False, threads=threads)
            due = time.monotonic() - space.saved_at > self.config.checkpoint_interval_s
            if space.dirty and (force or due):
                self._checkpoint(space)

    def _rebuild(self, space: _Space, compact: bool, threads: int | None) -> None:
        """Build the next index off to the side and swap it in; searches go on meanwhile."""
        with space.lock:
            base, ids, vecs = space.index, space.pending_ids, space.pending_vecs
            dead = np.fromiter(space.dead, dtype=np.int64)
        if compact:
            keep = np.setdiff1d(base.labels, dead)
            fresh = self._new_index(base.dim)
            fresh.add(keep, base.vectors(keep), threads)
        else:
            fresh = base.clone() if len(base) else self._new_index(base.dim)
        fresh.add(ids, vecs, threads)
        with self.db.write_lock, space.lock:
            top = fresh.max_label
            live = self.db.live_ids(space.name, upto=top)
            space.index = fresh
            space.drop_pending(space.pending_ids > top)
            space.dead = set(np.setdiff1d(fresh.labels, live, assume_unique=True).tolist())
            space.dead_selector = None
            space.dirty = True

    def _checkpoint(self, space: _Space) -> None:
        with space.lock:
            index = space.index
            space.dirty = False
        stem = hashlib.sha256(space.name.encode()).hexdigest()[:16]
        file = f"{stem}-{index.max_label}-{len(index.labels)}.faiss"
        index.save(self.path / "index" / file)
        old = self.db.checkpoint(space.name)
        self.db.set_checkpoint(space.name, file, index.max_label, self._params(index.dim))
        if old is not None and old[0] != file:
            (self.path / "index" / old[0]).unlink(missing_ok=True)
        space.saved_at = time.monotonic()

    def _cleanup_index_files(self) -> None:
        """Remove half-written or superseded index files left by a crash."""
        referenced = {
            row[0] for row in self.db.reader.execute("SELECT file FROM index_checkpoints")
        }
        for file in (self.path / "index").iterdir():
            if file.name not in referenced:
                file.unlink(missing_ok=True)

    def flush(self) -> None:
        """Index everything pending, compact and checkpoint now (e.g. before a benchmark)."""
        for name in self.db.namespaces():
            self._space(name)
        for space in list(self._spaces.values()):
            self._maintain(space, force=True)

    def stats(self) -> dict[str, Any]:
        return {
            name: {
                "indexed": len(space.index),
                "pending": len(space.pending_ids),
                "tombstones": len(space.dead),
            }
            for name, space in list(self._spaces.items())
        }

    def close(self) -> None:
        """Stop the indexer, checkpoint what was indexed, close SQLite. Safe to call twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        self._indexer.join()
        with self._maintain_lock:
            for space in list(self._spaces.values()):
                if space.dirty:
                    self._checkpoint(space)
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _best(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge scored candidates from several sources into the best ``k``, best first."""
    parts = [p for p in parts if len(p[1])]
    if not parts:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    scores = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    ids = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    valid = ids >= 0
    scores, ids = scores[valid], ids[valid]
    if len(ids) > k:
        top = np.argpartition(-scores, k - 1)[:k]
        scores, ids = scores[top], ids[top]
    order = np.argsort(-scores, kind="stable")
    return scores[order], ids[order]
