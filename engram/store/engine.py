"""The storage engine: SQLite as the truth, HNSW segments per namespace beside it.

Writes commit to SQLite first and are acknowledged then; the new vectors join
an in-memory *pending* buffer that queries scan exactly (one contiguous
matrix, FAISS's SIMD scan), so an acknowledged write is searchable at once. A
background indexer moves pending rows into HNSW in bounded steps: it adds them
to a private copy of the namespace's last segment (at most
``index_segment_rows`` rows, see :mod:`engram.store.index`) and then publishes
it, so searches never wait for a build and no cycle costs more than one
segment. Checkpoints, due every ``checkpoint_rows`` rows or
``checkpoint_interval_s``, write each changed segment with the highest row id
covered; on open, rows past that id are pending again and deleted rows become
tombstones, which is why the store needs no repair after ``kill -9`` and
resumes from its last checkpoint.

Whenever an index has grown by a quarter (or been compacted), the default
beam width (ef) of its namespace is calibrated against exact search on a
sample of the namespace's own vectors, so the default keeps recall@10 at
``calibration_recall`` on hard data as on easy data; a search may still pass
its own ``ef``.

The indexer checks for a close between steps: :meth:`Store.close` waits for it
at most ``close_timeout_s``, and an ``atexit`` hook closes the stores a
program left open, so no exit finds it inside FAISS.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import hashlib
import logging
import math
import os
import threading
import time
import weakref
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
    check_ef,
    check_mode,
    check_namespace,
    check_top_k,
    record_builder,
)
from engram.store.db import Checkpoint, Database
from engram.store.filters import compile_filter
from engram.store.fusion import fuse, keyword_query, with_neighbours
from engram.store.index import HnswIndex, Segments, best_k, exact_search, normalize

log = logging.getLogger(__name__)

_MIN_TOMBSTONES_TO_COMPACT = 64
_PUBLISH_S = 1.0  # a cycle adds rows at least this long before it publishes them to searches,
_COPY_SHARE = 0.1  # ... and long enough that copying the last segment is at most this share
_CYCLES_S = 10.0  # one namespace's turn in the background, before the others get theirs
_STEP_ROWS = (64, 16_384)  # bounds of the rows one background step adds
_CALIBRATION_K = 10
_CALIBRATION_REACH = 1.5  # calibration queries lie this many nearest-neighbour distances out
_CALIBRATION_NEIGHBOUR_EF = 256  # the beam that finds each sampled vector's nearest neighbour
_CALIBRATION_GROWTH = 1.25  # indexed rows, relative to the last calibration, that make one due
_INDEXER_NICE = 10
_EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)

_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """Close the stores a program left open, so no indexer is inside FAISS when the
    interpreter shuts down."""
    for store in list(_OPEN_STORES):
        store.close()


def _never() -> bool:
    return False


def _yield_to_queries() -> None:
    """Lower this thread's scheduling priority (Linux: per thread), so on a busy machine
    searches and writes get the cores first and the indexer the time left over."""
    with contextlib.suppress(AttributeError, OSError):  # elsewhere: at normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _INDEXER_NICE)


class _Space:
    """In-memory state of one namespace: its segments, pending rows, tombstones and tuning.

    Pending rows live in buffers that grow by doubling; readers take views of
    the filled part, which later appends never touch. ``claimed`` is the
    highest row id in a segment or in one being built: a row deleted at or
    below it may be in a segment, so it becomes a tombstone.
    """

    def __init__(
        self, name: str, dim: int, segments: Segments, ids: np.ndarray, vecs: np.ndarray, ef: int
    ) -> None:
        self.name = name
        self.dim = dim
        self.segments = segments
        self.claimed = segments.max_label
        self._ids = ids
        self._vecs = vecs
        self._n = len(ids)
        self.dead: set[int] = set()
        self.dead_selector: Any = None
        self.dead_selector_parts: tuple[Any, ...] = ()
        self.ef = ef
        self.recall: float | None = None
        self.calibrated_rows = 0
        self.dirty = False
        self.unsaved_rows = 0
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

    DB_FILE = "engram.db"

    @classmethod
    def exists(cls, path: str | Path) -> bool:
        """Whether ``path`` holds a store, without creating one (reads refuse to invent one)."""
        return (Path(path).expanduser() / cls.DB_FILE).is_file()

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
        self.db = Database(self.path / self.DB_FILE, self.config.synchronous)
        self._spaces: dict[str, _Space] = {}
        self._spaces_lock = threading.Lock()
        self._wake = threading.Event()
        self._maintain_lock = threading.Lock()
        self._rows = _RowCache(self.config.row_cache_rows)
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._indexer_running = True
        self._indexer_closes_db = False
        self._row_s = 0.0005  # seconds one row takes to index, learnt from every step
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
        _OPEN_STORES.add(self)

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
        delete a public record); a record that names its own writer (a
        validator's copy) keeps that one. Re-storing a CID already in the namespace
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

    def delete(
        self,
        cid: str,
        namespace: str | None = None,
        *,
        deleted_at: float | None = None,
        proof: str | None = None,
        written_before: float | None = None,
    ) -> bool:
        """Delete a record; True if it existed. Its vector becomes a tombstone until compaction.

        The record's deletion is kept too (``deleted_at``, default now, and the ``proof`` of
        who asked), for ``deletion_retention_s``: replicas that missed the delete are told of
        it from here. With ``written_before``, only a copy written before then is deleted
        (a delete never removes a record written again after it).
        """
        namespace = check_namespace(namespace, self.limits)
        now = time.time()
        with self.db.write_lock:
            with self.db.transaction() as conn:
                rowid = self.db.delete(conn, namespace, cid, written_before)
                if rowid is not None:
                    expire = now - self.config.deletion_retention_s
                    at = now if deleted_at is None else deleted_at
                    self.db.record_deletion(conn, namespace, cid, at, proof, expire)
            if rowid is None:
                return False
            self._rows.discard(rowid)
            space = self._space(namespace)
            with space.lock:
                in_pending = space.pending_ids == rowid
                if in_pending.any():
                    space.drop_pending(~in_pending)
                if rowid <= space.claimed:
                    space.dead.add(rowid)
                    space.dead_selector = None
                    if len(space.dead) % _MIN_TOMBSTONES_TO_COMPACT == 0:
                        self._wake.set()  # the indexer decides whether a segment is due
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
        ef: int | None = None,
    ) -> builtins.list[QueryResult]:
        """Nearest records by cosine similarity, best first; ``filter`` never cuts recall.

        ``ef`` is this search's HNSW beam width (wider: better recall, slower);
        ``None`` takes the namespace's calibrated default.
        """
        top_k = check_top_k(top_k, self.limits)
        ef = check_ef(ef, self.limits)
        namespace = check_namespace(namespace, self.limits)
        select = compile_filter(filter, namespace) if filter is not None and filter != {} else None
        if namespace not in self._spaces and not self.db.count(namespace):
            self._query_vector(vector, None)  # a bad vector is refused even here
            return []  # unknown namespace: no state is created for it (queries are untrusted)
        query = self._query_vector(vector, self.dim_of(namespace))
        scores, ids = self._nearest(namespace, query, top_k, select, ef)
        return self._hydrate(scores, ids, include_embedding)

    def _nearest(
        self,
        namespace: str,
        query: np.ndarray,
        k: int,
        select: tuple[str, builtins.list[Any]] | None,
        ef: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row ids of the ``k`` nearest, only among ``select`` (a compiled filter)."""
        space = self._space(namespace)
        beam = space.ef if ef is None else ef
        if select is not None:
            return self._filtered(space, query, k, self.db.filter_ids(*select), beam)
        return self._unfiltered(space, query, k, beam)

    def hybrid_search(
        self,
        text: str | None,
        vector: Any,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        mode: str = "hybrid",
        ef: int | None = None,
    ) -> builtins.list[QueryResult]:
        """Vector and keyword (BM25, OR semantics) channels fused into one ranking.

        ``mode`` picks the channels: ``hybrid`` needs ``text`` and ``vector``,
        ``vector`` only the vector, ``keyword`` only the text. The filter applies
        inside each channel before it is cut to ``search_candidates``, so it
        never costs recall. Each hit carries every channel's rank and score. ``ef`` is the
        vector channel's beam width (as in :meth:`search`).
        """
        top_k = check_top_k(top_k, self.limits)
        ef = check_ef(ef, self.limits)
        namespace = check_namespace(namespace, self.limits)
        mode = check_mode(mode)
        select = compile_filter(filter, namespace) if filter else None
        if namespace not in self._spaces and not self.db.count(namespace):
            return []
        depth = max(top_k, self.config.search_candidates)
        channels: dict[str, builtins.list[tuple[int, float]]] = {}
        if mode != "keyword":
            query = self._query_vector(vector, self.dim_of(namespace))
            scores, ids = self._nearest(namespace, query, depth, select, ef)
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

    def _snapshot(self, space: _Space) -> tuple[Segments, np.ndarray, np.ndarray, Any]:
        with space.lock:
            return space.segments, space.pending_ids, space.pending_vecs, space.selector()

    def _unfiltered(
        self, space: _Space, query: np.ndarray, top_k: int, ef: int
    ) -> tuple[np.ndarray, np.ndarray]:
        segments, pending_ids, pending_vecs, selector = self._snapshot(space)
        parts = []
        if len(segments):
            parts.append(segments.search(query, top_k, max(ef, top_k), selector))
        if len(pending_ids):
            parts.append(exact_search(pending_vecs, pending_ids, query, top_k))
        return best_k(parts, top_k)

    def _filtered(
        self, space: _Space, query: np.ndarray, top_k: int, allowed: np.ndarray, ef: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the matches when they are few, filtered HNSW when they are many."""
        if len(allowed) == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        segments, pending_ids, pending_vecs, _ = self._snapshot(space)
        in_pending = np.isin(pending_ids, allowed, assume_unique=True)
        parts = [exact_search(pending_vecs[in_pending], pending_ids[in_pending], query, top_k)]
        indexed = allowed[allowed <= segments.max_label] if len(segments) else allowed[:0]
        selectivity = len(indexed) / max(len(segments), 1)
        if (
            len(allowed) <= self.config.exact_search_max_rows
            or selectivity < self.config.filtered_hnsw_min_selectivity
        ):
            if len(indexed):
                parts.append(exact_search(segments.vectors(indexed), indexed, query, top_k))
            # Committed by a concurrent writer after our snapshot: read them from SQLite.
            seen = np.concatenate([indexed, pending_ids[in_pending]])
            late = np.setdiff1d(allowed, seen, assume_unique=True)
            if len(late):
                late_ids, late_vecs = self.db.vectors(space.name, ids=late)
                if len(late_ids):
                    parts.append(exact_search(normalize(late_vecs), late_ids, query, top_k))
        elif len(indexed):
            beam = max(ef, top_k)
            beam = min(int(beam / math.sqrt(selectivity)), max(1024, beam))
            selector = faiss.IDSelectorBatch(indexed)
            parts.append(segments.search(query, top_k, beam, selector))
        return best_k(parts, top_k)

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
        parts: builtins.list[HnswIndex] = []
        tuning = None
        checkpoint = self.db.checkpoint(name)
        if checkpoint is not None:
            params = checkpoint.params
            if params.get("dim") != dim or params.get("model") != EMBEDDING_MODEL_ID:
                raise StorageError(
                    f"the index of namespace {name!r} was built for {params}, but this store is "
                    f"configured for {self._params(dim)}; open it with the same settings"
                )
            missing = [f for f in checkpoint.files if not (self.path / "index" / f).exists()]
            if params != self._params(dim):
                log.warning("index parameters of %r changed; rebuilding it", name)
            elif missing:
                log.warning("index files %s are missing; rebuilding namespace %r", missing, name)
            else:
                ef = self.config.hnsw_ef_search
                parts = [
                    HnswIndex.load(self.path / "index" / f, params, ef) for f in checkpoint.files
                ]
                tuning = checkpoint.tuning
        segments = Segments(parts)
        live = self.db.live_ids(name, upto=segments.max_label)
        dead = set(np.setdiff1d(segments.labels, live, assume_unique=True).tolist())
        ids, vecs = self.db.vectors(name, after_id=segments.max_label)
        vecs = normalize(vecs) if len(ids) else np.empty((0, dim), np.float32)
        space = _Space(name, dim, segments, ids, vecs, self.config.hnsw_ef_search)
        space.dead = dead
        if tuning is not None and self.config.calibration_recall > 0:
            space.ef = max(int(tuning["ef"]), self.config.hnsw_ef_search)
            space.recall = float(tuning["recall"])
            space.calibrated_rows = int(tuning["rows"])
        if len(ids) >= self.config.index_batch_rows or dead or self._calibration_due(space, False):
            self._wake.set()
        return space

    # --- the indexer: steps that stop when the store closes ----------------------------

    def _index_loop(self) -> None:
        _yield_to_queries()
        try:
            while not self._closed.is_set():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                for space in list(self._spaces.values()):
                    if self._closed.is_set():
                        break
                    try:
                        self._maintain(space, force=False)
                    except Exception:  # the indexer must outlive one bad cycle; SQLite is the truth
                        log.exception("background indexing of %r failed; will retry", space.name)
                        self._closed.wait(1.0)
            with self._maintain_lock:
                for space in list(self._spaces.values()):
                    if space.dirty:
                        self._checkpoint(space)
        except Exception:
            log.exception("the last checkpoint failed; the next open resumes from the one before")
        finally:
            with self._close_lock:
                self._indexer_running = False
                closes_db = self._indexer_closes_db
            if closes_db:
                self.db.close()

    def _maintain(self, space: _Space, force: bool) -> None:
        """Compact, index pending rows, calibrate and checkpoint, each when due.

        In the background every step is bounded and the work stops when the store
        closes; ``force`` (a flush) does everything now, with every core.
        """
        # In the background, leave a core to writers and queries; a flush may use them all.
        threads = None if force else self.config.index_threads or max(1, (os.cpu_count() or 2) - 1)
        stop = _never if force else self._closed.is_set
        with self._maintain_lock:
            for segment in self._compactable(space, force):
                if not self._compact(space, segment, threads, stop):
                    return
            pending = len(space.pending_ids)
            if pending and (force or pending >= self.config.index_batch_rows):
                turn_ends = time.monotonic() + _CYCLES_S
                while len(space.pending_ids) and not stop():
                    if not self._index_cycle(space, threads, force, stop):
                        break
                    if self._calibration_due(space, force=False):
                        self._calibrate(space, threads, stop)
                    if not force and self._checkpoint_due(space):
                        self._checkpoint(space)
                    if not force and time.monotonic() > turn_ends:
                        self._wake.set()  # more to do once the other namespaces had a turn
                        break
            if not stop() and self._calibration_due(space, force):
                self._calibrate(space, threads, stop)
            if space.dirty and (force or self._checkpoint_due(space)):
                self._checkpoint(space)

    def _step_rows(self, force: bool) -> int:
        if force:  # a flush need not stop early: whole segments, as FAISS builds fastest
            return self.config.index_segment_rows
        low, high = _STEP_ROWS
        return int(min(high, max(low, self.config.index_step_s / self._row_s)))

    def _index_cycle(
        self, space: _Space, threads: int | None, force: bool, stop: Callable[[], bool]
    ) -> int:
        """Add pending rows to a copy of the last segment (or a new one) and publish it;
        returns the rows added.

        Rows stay pending, and so searched exactly, until the copy replaces the
        segment. A cycle ends when the segment is full, nothing is pending, the
        store closes, or it has run long enough to be worth its copy.
        """
        cap = self.config.index_segment_rows
        segments = space.segments
        last = segments.parts[-1] if segments.parts else None
        started = time.monotonic()
        if last is not None and len(last) < cap:
            building, position = last.clone(), len(segments.parts) - 1
        else:
            building, position = self._new_index(space.dim), len(segments.parts)
        worth = max(_PUBLISH_S, (time.monotonic() - started) / _COPY_SHARE)
        before = len(building)
        while len(building) < cap:
            with space.lock:
                ids, vecs = space.pending_ids, space.pending_vecs
                first = int(
                    np.searchsorted(ids, max(building.max_label, segments.max_label), "right")
                )
                n = min(self._step_rows(force), cap - len(building), len(ids) - first)
                if n <= 0:
                    break
                ids, vecs = ids[first : first + n], vecs[first : first + n]
                space.claimed = max(space.claimed, int(ids[-1]))
            step_started = time.monotonic()
            building.add(ids, vecs, threads)
            seconds = time.monotonic() - step_started
            self._row_s = 0.7 * self._row_s + 0.3 * seconds / n
            if stop() or (not force and time.monotonic() - started >= worth):
                break
        added = len(building) - before
        if added:
            with space.lock:
                space.segments = space.segments.replaced(position, building)
                space.drop_pending(space.pending_ids > building.max_label)
                space.unsaved_rows += added
                space.dirty = True
        return added

    def _compactable(self, space: _Space, force: bool) -> builtins.list[HnswIndex]:
        """Segments whose tombstones are due to be dropped (any, on ``force``)."""
        with space.lock:
            if not space.dead:
                return []
            dead = np.sort(np.fromiter(space.dead, dtype=np.int64, count=len(space.dead)))
            segments = space.segments
        due = []
        for segment in segments.parts:
            labels = segment.labels
            count = int(
                np.searchsorted(dead, labels[-1], "right") - np.searchsorted(dead, labels[0])
            )
            if (force and count) or (
                count >= _MIN_TOMBSTONES_TO_COMPACT
                and count > self.config.compact_tombstone_ratio * len(segment)
            ):
                due.append(segment)
        return due

    def _compact(
        self, space: _Space, segment: HnswIndex, threads: int | None, stop: Callable[[], bool]
    ) -> bool:
        """Rebuild one segment without its tombstones; False if the store closed first."""
        with space.lock:
            dead = np.fromiter(space.dead, dtype=np.int64, count=len(space.dead))
        gone = dead[np.isin(dead, segment.labels, assume_unique=True)]
        keep = np.setdiff1d(segment.labels, gone, assume_unique=True)
        fresh = self._new_index(segment.dim)
        step = self._step_rows(stop is _never)
        for start in range(0, len(keep), step):
            if stop():
                return False
            rows = keep[start : start + step]
            fresh.add(rows, segment.vectors(rows), threads)
        with space.lock:
            position = next(i for i, p in enumerate(space.segments.parts) if p is segment)
            space.segments = space.segments.replaced(position, fresh if len(fresh) else None)
            space.dead.difference_update(gone.tolist())
            space.dead_selector = None
            space.calibrated_rows = 0  # the graph changed: measure its recall again
            space.dirty = True
        return True

    # --- calibration of the default beam width ------------------------------------------

    def _calibration_due(self, space: _Space, force: bool) -> bool:
        """Once enough rows are indexed, and again whenever they grew by a quarter (by a
        half while a backlog is still being indexed)."""
        c = self.config
        live = len(space.segments) - len(space.dead)
        if c.calibration_recall <= 0 or live < c.calibration_min_rows:
            return False
        if space.calibrated_rows == 0:
            return True
        caught_up = force or len(space.pending_ids) < c.index_batch_rows
        growth = _CALIBRATION_GROWTH if caught_up else 2 * _CALIBRATION_GROWTH - 1
        return live >= growth * space.calibrated_rows

    def _ef_ladder(self) -> builtins.list[int]:
        floor = self.config.hnsw_ef_search
        cap = min(self.config.calibration_max_ef, self.limits.max_ef)
        return [floor, *(ef for ef in _EF_LADDER if floor < ef <= cap)]

    def _calibrate(self, space: _Space, threads: int | None, stop: Callable[[], bool]) -> None:
        """Set the namespace's default ef to the narrowest beam whose recall@10 reaches the
        target on queries made from a sample of its own indexed vectors.

        A stored vector is no fair query: its own node in the graph leads the search
        straight to its neighbours. Each sampled vector is therefore moved, in a random
        direction, one and a half times as far as its nearest neighbour is from it: a
        query farther from the records than a fresh one from the same data, so the beam
        errs on the side of recall (measured on clustered, sentence-embedding and
        near-uniform sets; queries at the stored vectors themselves overrate recall).
        """
        c = self.config
        with space.lock:
            segments, selector = space.segments, space.selector()
            dead = np.sort(np.fromiter(space.dead, dtype=np.int64, count=len(space.dead)))
        live = np.setdiff1d(segments.labels, dead, assume_unique=True)
        if len(live) <= _CALIBRATION_K:
            return
        rng = np.random.default_rng(len(live))
        sample = np.sort(rng.choice(live, min(c.calibration_queries, len(live)), replace=False))
        points = np.ascontiguousarray(segments.vectors(sample))
        nearest = segments.search_many(points, 2, _CALIBRATION_NEIGHBOUR_EF, selector, threads)
        neighbour = np.where(nearest[:, 0] == sample, nearest[:, 1], nearest[:, 0])
        found_one = neighbour >= 0
        similarity = np.ones(len(sample), np.float32)
        similarity[found_one] = np.einsum(
            "ij,ij->i", points[found_one], segments.vectors(neighbour[found_one])
        )
        distance = np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0))
        direction = normalize(rng.standard_normal(points.shape).astype(np.float32))
        queries = normalize(points + (_CALIBRATION_REACH * distance)[:, None] * direction)
        truth = segments.exact(queries, _CALIBRATION_K, dead, threads, stop)
        if truth is None:
            return
        ef, recall = c.hnsw_ef_search, 0.0
        for ef in self._ef_ladder():
            if stop():
                return
            found = segments.search_many(queries, _CALIBRATION_K, ef, selector, threads)
            recall = _recall(truth, found)
            if recall >= c.calibration_recall:
                break
        else:
            log.warning(
                "namespace %r reaches recall@10 %.3f at most (ef %d); searches may ask for "
                "a wider ef",
                space.name,
                recall,
                ef,
            )
        with space.lock:
            space.ef, space.recall, space.calibrated_rows = ef, recall, len(live)
            space.dirty = True
        log.info("namespace %r: default ef %d, recall@10 %.3f", space.name, ef, recall)

    # --- checkpoints ---------------------------------------------------------------------

    def _checkpoint_due(self, space: _Space) -> bool:
        """Every ``checkpoint_interval_s``, or once the rows indexed since the last one reach
        ``checkpoint_rows`` and a quarter of the last segment (which a checkpoint rewrites)."""
        if not space.dirty:
            return False
        if time.monotonic() - space.saved_at >= self.config.checkpoint_interval_s:
            return True
        last = len(space.segments.parts[-1]) if space.segments.parts else 0
        return space.unsaved_rows >= max(self.config.checkpoint_rows, last // 4)

    def _checkpoint(self, space: _Space) -> None:
        """Write the segments not on disk yet, then point SQLite at the new set of files."""
        with space.lock:
            segments, unsaved = space.segments, space.unsaved_rows
            space.dirty, space.unsaved_rows = False, 0
            tuning = None
            if space.recall is not None:
                tuning = {
                    "ef": space.ef,
                    "recall": round(space.recall, 4),
                    "rows": space.calibrated_rows,
                }
        try:
            stem = hashlib.sha256(space.name.encode()).hexdigest()[:16]
            for segment in segments.parts:
                if segment.file is None:
                    first, token = int(segment.labels[0]), os.urandom(4).hex()
                    name = f"{stem}-{first}-{segment.max_label}-{len(segment)}-{token}.faiss"
                    segment.save(self.path / "index" / name)
            files = [str(segment.file) for segment in segments.parts]
            old = self.db.checkpoint(space.name)
            params = self._params(space.dim)
            self.db.set_checkpoint(
                space.name, Checkpoint(files, segments.max_label, params, tuning)
            )
        except BaseException:
            with space.lock:
                space.dirty, space.unsaved_rows = True, space.unsaved_rows + unsaved
            raise
        if old is not None:
            for file in set(old.files) - set(files):
                (self.path / "index" / file).unlink(missing_ok=True)
        space.saved_at = time.monotonic()

    def _cleanup_index_files(self) -> None:
        """Remove half-written or superseded index files left by a crash."""
        referenced = self.db.index_files()
        for file in (self.path / "index").iterdir():
            if file.name not in referenced:
                file.unlink(missing_ok=True)

    def flush(self) -> None:
        """Index everything pending, compact, calibrate and checkpoint now (e.g. before a
        benchmark), with every core."""
        for name in self.db.namespaces():
            self._space(name)
        for space in list(self._spaces.values()):
            self._maintain(space, force=True)

    def stats(self) -> dict[str, Any]:
        """Per loaded namespace: rows in HNSW, pending (searched exactly) and deleted but not
        yet compacted; its segments; its default ef and the recall@10 measured at it."""
        return {
            name: {
                "indexed": len(space.segments),
                "pending": len(space.pending_ids),
                "tombstones": len(space.dead),
                "segments": len(space.segments.parts),
                "ef": space.ef,
                "recall": None if space.recall is None else round(space.recall, 3),
            }
            for name, space in list(self._spaces.items())
        }

    def close(self) -> None:
        """Stop the indexer, let it checkpoint, close SQLite; returns within ``close_timeout_s``.

        An indexer still busy then finishes its step and checkpoint on its own and
        closes the database after; rows it never indexed are durable in SQLite and
        are indexed again on the next open. Safe to call twice.
        """
        with self._close_lock:
            if self._closed.is_set():
                return
            self._closed.set()
        _OPEN_STORES.discard(self)
        self._wake.set()
        self._indexer.join(self.config.close_timeout_s)
        with self._close_lock:
            if self._indexer_running:
                self._indexer_closes_db = True
                log.warning(
                    "the indexer of %s is still busy after %.1f s; it closes the store when done",
                    self.path,
                    self.config.close_timeout_s,
                )
                return
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recall(truth: np.ndarray, found: np.ndarray) -> float:
    """Mean share of each query's true nearest (rows of ``truth``) that were found."""
    total = 0.0
    for true_row, found_row in zip(truth.tolist(), found.tolist(), strict=True):
        wanted = [i for i in true_row if i >= 0]
        total += len(set(found_row).intersection(wanted)) / len(wanted) if wanted else 1.0
    return total / len(truth)
