"""The approximate index of one namespace: HNSW segments from FAISS over cosine similarity.

FAISS over hnswlib, by measurement on 100k x 384 clustered vectors (2 cores):
both build in ~8-10 s at M=32 and reach recall@10 >= 0.99 near 10k QPS, but
FAISS evaluates filter and tombstone selectors in C++ during the graph walk,
where hnswlib calls back into Python per candidate. Labels are SQLite row ids,
so the index files alone are enough to map hits back to records.

A FAISS index must not be searched while rows are added to it, so a namespace
is a list of *segments* (:class:`Segments`), each covering an ascending range
of row ids, none ever changed once searchers can see it. New rows go into a
copy of the last segment only while it is smaller than ``index_segment_rows``;
past that a new segment starts. The work of one indexing cycle is therefore
bounded by the segment size, never by the whole index, and a checkpoint
rewrites only the segment that changed.

FAISS's Python package installs an interrupt callback that takes the GIL from
inside OpenMP regions of long builds. In a background thread at interpreter
exit that acquisition ends the thread by unwinding through the OpenMP region,
and the process aborts ("terminate called without an active exception"). The
callback is removed here: builds run in bounded chunks between which Python
signals are delivered anyway.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np

from engram.errors import StorageError

ENGINE = "faiss-hnsw-flat-ip"
_thread_state = threading.local()

faiss.InterruptCallback.clear_instance()  # type: ignore[attr-defined]  # not in faiss's stubs


def _single_threaded() -> None:
    """One query gains nothing from OpenMP; its thread start-up costs more than the search.

    The OpenMP thread count is per calling thread, so index builds elsewhere keep all cores.
    """
    if not getattr(_thread_state, "single", False):
        faiss.omp_set_num_threads(1)
        _thread_state.single = True


def _threads(threads: int | None) -> None:
    """Let FAISS calls of this thread use ``threads`` cores (all when None)."""
    faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
    _thread_state.single = False


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows, so inner product is cosine similarity."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms == 0, 1, norms), dtype=np.float32)


def exact_search(
    unit_vectors: np.ndarray, ids: np.ndarray, unit_query: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the best ``k`` rows of a contiguous matrix, by brute force.

    FAISS's SIMD scan with its top-k heap, on one thread: numpy's matrix-vector
    product goes through a multi-threaded BLAS that measured 5-15x slower here
    (20k x 384: ~1 ms against 5-16 ms) whenever the other core is busy.
    """
    if len(ids) == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    _single_threaded()
    k = min(k, len(ids))
    scores, positions = faiss.knn(
        unit_query.reshape(1, -1),
        np.ascontiguousarray(unit_vectors, dtype=np.float32),
        k,
        metric=faiss.METRIC_INNER_PRODUCT,
    )
    return scores[0], ids[positions[0]]


def best_k(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
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


class HnswIndex:
    """HNSW graph plus id map; search is safe from many threads, mutation is not.

    ``file`` names the checkpoint file that holds exactly this index (``None``:
    not written yet); a segment that searchers can see is never changed, so the
    name stays true.
    """

    def __init__(
        self, dim: int, m: int, ef_construction: int, ef_search: int, index: Any = None
    ) -> None:
        self.dim = dim
        self.params: dict[str, Any] = {
            "engine": ENGINE,
            "dim": dim,
            "m": m,
            "ef_construction": ef_construction,
        }
        if index is None:
            inner = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = ef_construction
            index = faiss.IndexIDMap2(inner)
        self._index = index
        self._hnsw = cast(faiss.IndexHNSW, faiss.downcast_index(index.index))
        self._hnsw.hnsw.efSearch = ef_search
        self._storage = cast(faiss.IndexFlat, faiss.downcast_index(self._hnsw.storage))
        self._labels = faiss.vector_to_array(index.id_map).astype(np.int64)
        self._params_cache: dict[tuple[int, int], Any] = {}
        self.file: str | None = None

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def labels(self) -> np.ndarray:
        """Row ids in insertion order (ascending: rows are indexed in id order)."""
        return self._labels

    @property
    def max_label(self) -> int:
        return int(self._labels[-1]) if len(self._labels) else 0

    def add(self, ids: np.ndarray, unit_vectors: np.ndarray, threads: int | None = None) -> None:
        """Add rows (ascending ids) using ``threads`` cores (all when None)."""
        if len(ids) == 0:
            return
        if len(self._labels) and ids[0] <= self._labels[-1]:
            raise StorageError("rows must be indexed in ascending id order")
        _threads(threads)
        self._index.add_with_ids(np.ascontiguousarray(unit_vectors), ids)
        self._labels = np.concatenate([self._labels, ids.astype(np.int64)])

    def _search_params(self, ef: int, selector: Any) -> Any:
        search_parameters = faiss.SearchParametersHNSW  # type: ignore[attr-defined]  # not in faiss's stubs
        if selector is not None:
            return search_parameters(efSearch=ef, sel=selector)
        key = (ef, 0)
        params = self._params_cache.get(key)
        if params is None:
            params = self._params_cache[key] = search_parameters(efSearch=ef)
        return params

    def search(
        self, unit_query: np.ndarray, k: int, ef: int, selector: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) of the best ``k``; ids are -1 where fewer were found."""
        _single_threaded()
        params = self._search_params(ef, selector)
        scores, ids = self._index.search(unit_query.reshape(1, -1), k, params=params)
        return scores[0], ids[0]

    def search_many(
        self, unit_queries: np.ndarray, k: int, ef: int, selector: Any, threads: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for a matrix of queries at once, on ``threads`` cores."""
        _threads(threads)
        return cast(
            tuple[np.ndarray, np.ndarray],
            self._index.search(unit_queries, k, params=self._search_params(ef, selector)),
        )

    def exact(
        self, unit_queries: np.ndarray, k: int, dead: np.ndarray, threads: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The true best ``k`` (scores, row ids) of each query, ``dead`` row ids left out."""
        _threads(threads)
        params = None
        mine = dead[np.isin(dead, self._labels, assume_unique=True)]
        if len(mine):
            positions = np.searchsorted(self._labels, mine).astype(np.int64)
            hidden = faiss.IDSelectorBatch(positions)
            params = faiss.SearchParameters(sel=faiss.IDSelectorNot(hidden))  # type: ignore[call-arg]
        scores, found = self._storage.search(unit_queries, k, params=params)
        ids = np.where(found >= 0, self._labels[np.maximum(found, 0)], -1)
        return scores, ids

    def clone(self) -> HnswIndex:
        """A deep copy to add to while searches keep using this one."""
        p = self.params
        return HnswIndex(
            self.dim,
            p["m"],
            p["ef_construction"],
            self._hnsw.hnsw.efSearch,
            index=faiss.clone_index(self._index),
        )

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored unit vectors of ``ids`` (each must be in the index)."""
        positions = np.searchsorted(self._labels, ids)
        xb = faiss.rev_swig_ptr(self._storage.get_xb(), len(self) * self.dim)
        return np.asarray(xb).reshape(len(self), self.dim)[positions]

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves either the old file or the new one, never half."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self.file = path.name

    @classmethod
    def load(cls, path: Path, params: dict[str, Any], ef_search: int) -> HnswIndex:
        try:
            raw = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise StorageError(f"cannot read index file {path}: {exc}") from exc
        index = cls(params["dim"], params["m"], params["ef_construction"], ef_search, index=raw)
        if index.dim != raw.d:
            raise StorageError(f"index file {path} has dimension {raw.d}, expected {index.dim}")
        index.file = path.name
        return index


class Segments:
    """The segments of one namespace, oldest first, over ascending row-id ranges.

    Immutable: indexing publishes a new :class:`Segments`, so a searcher's
    snapshot never changes under it. With one segment every call is that
    segment's own; with several, results are merged by score.
    """

    def __init__(self, parts: Sequence[HnswIndex] = ()) -> None:
        self.parts = tuple(p for p in parts if len(p))
        self._tops = np.array([p.max_label for p in self.parts], dtype=np.int64)
        self._size = sum(len(p) for p in self.parts)
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def max_label(self) -> int:
        return int(self._tops[-1]) if len(self._tops) else 0

    @property
    def labels(self) -> np.ndarray:
        """Every row id held, ascending."""
        if self._labels is None:
            parts = [p.labels for p in self.parts]
            self._labels = np.concatenate(parts) if parts else np.empty(0, np.int64)
        return self._labels

    def replaced(self, position: int, segment: HnswIndex | None) -> Segments:
        """A copy with the segment at ``position`` swapped (or appended at ``len(parts)``)."""
        parts: list[HnswIndex] = list(self.parts)
        if segment is None:
            del parts[position : position + 1]
        elif position == len(parts):
            parts.append(segment)
        else:
            parts[position] = segment
        return Segments(parts)

    def search(
        self, unit_query: np.ndarray, k: int, ef: int, selector: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(self.parts) == 1:
            return self.parts[0].search(unit_query, k, ef, selector)
        return best_k([p.search(unit_query, k, ef, selector) for p in self.parts], k)

    def search_many(
        self, unit_queries: np.ndarray, k: int, ef: int, selector: Any, threads: int | None
    ) -> np.ndarray:
        """Row ids of the best ``k`` of each query (-1 where fewer were found)."""
        return _merge_rows(
            [p.search_many(unit_queries, k, ef, selector, threads) for p in self.parts], k
        )

    def exact(
        self,
        unit_queries: np.ndarray,
        k: int,
        dead: np.ndarray,
        threads: int | None,
        stop: Callable[[], bool] = lambda: False,
    ) -> np.ndarray | None:
        """Row ids of the true best ``k`` of each query (``None`` when ``stop`` said so)."""
        found = []
        for part in self.parts:
            if stop():
                return None
            found.append(part.exact(unit_queries, k, dead, threads))
        return _merge_rows(found, k)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored unit vectors of ``ids`` (each must be held)."""
        if len(self.parts) == 1:
            return self.parts[0].vectors(ids)
        out = np.empty((len(ids), self.parts[0].dim if self.parts else 0), dtype=np.float32)
        owner = np.searchsorted(self._tops, ids)
        for i, part in enumerate(self.parts):
            mine = owner == i
            if mine.any():
                out[mine] = part.vectors(ids[mine])
        return out


def _merge_rows(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """Per query row, the ids of the best ``k`` over several (scores, ids) matrices."""
    if not parts:
        return np.empty((0, k), np.int64)
    if len(parts) == 1:
        return parts[0][1]
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(ids >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1)
