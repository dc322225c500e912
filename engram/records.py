"""Records and query results: the values every mode of the API hands back.

Validation of what a user may store (limits on text, metadata and namespaces)
lives here too, so the embedded store, the miner and the SDK refuse the same
inputs with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engram.cid import cid_of_bytes, metadata_bytes, record_bytes, text_bytes, vector_bytes
from engram.config import DEFAULT_NAMESPACE, MODEL_VERSION, Limits
from engram.errors import EngramError, InvalidRequestError, PayloadTooLargeError

if TYPE_CHECKING:
    from engram.embed import Embedder

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class _ItemAccess:
    """Lets results answer ``r["cid"]`` as well as ``r.cid`` (dict-style code keeps working)."""

    def __getitem__(self, key: str) -> Any:
        if key.startswith("_") or not hasattr(self, key):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return list(self.__dataclass_fields__)  # type: ignore[attr-defined]


@dataclass(frozen=True, eq=False)
class Record(_ItemAccess):
    """One stored record; its CID covers the embedding, metadata and text."""

    cid: str
    embedding: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    model_version: str = MODEL_VERSION
    writer: str | None = None  # the hotkey that signed its write, where a node knows it

    def canonical_bytes(self) -> bytes:
        return record_bytes(self.embedding, self.metadata, self.model_version, self.text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.cid == other.cid
            and self.namespace == other.namespace
            and self.metadata == other.metadata
            and self.text == other.text
            and self.model_version == other.model_version
            and np.array_equal(self.embedding, other.embedding)
        )

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "cid": self.cid,
            "namespace": self.namespace,
            "embedding": self.embedding.tolist(),
            "metadata": self.metadata,
            "text": self.text,
            "model_version": self.model_version,
        }
        if self.writer is not None:
            out["writer"] = self.writer
        return out


@dataclass(frozen=True)
class QueryResult(dict[str, Any]):
    """One hit of a query; ``score`` is cosine similarity in [-1, 1].

    Also a plain ``dict`` of the same fields, so ``json.dumps(results)`` and code
    written for the original clients' dict results (``hit["metadata"]``) work as is.
    """

    cid: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    embedding: list[float] | None = None
    # A search's per-channel contribution: {"vector" | "keyword": {"rank": 1.., "score": raw}}.
    channels: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cid": self.cid,
            "score": self.score,
            "metadata": self.metadata,
            "text": self.text,
        }
        if self.embedding is not None:
            out["embedding"] = self.embedding
        if self.channels is not None:
            out["channels"] = self.channels
        return out

    def __post_init__(self) -> None:
        dict.update(self, self.to_dict())


@dataclass(frozen=True)
class IngestItem:
    """One record to ingest: text to embed, or an embedding (optionally with its text)."""

    text: str | None = None
    embedding: Sequence[float] | np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    model_version: str = MODEL_VERSION
    # A validator's copy of a record keeps the hotkey that wrote it (only a delete signed by
    # that hotkey removes a public record); anyone else's write is its own.
    writer: str | None = None


def check_namespace(namespace: str | None, limits: Limits) -> str:
    """The namespace to use; ``None`` means the default one."""
    if namespace is None:
        return DEFAULT_NAMESPACE
    if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
        raise InvalidRequestError(
            f"namespace {namespace!r} is invalid: use letters, digits and _ . : - "
            "starting with a letter or digit"
        )
    if len(namespace) > limits.max_namespace_chars:
        raise InvalidRequestError(
            f"namespace is {len(namespace)} characters, the limit is {limits.max_namespace_chars}"
        )
    return namespace


def check_text(text: Any, limits: Limits, *, required: bool = False) -> str | None:
    """Reject non-strings, over-long text and (when required) blank text; '' means no text."""
    if text is None or text == "":
        if required:
            raise InvalidRequestError("text must be a non-empty string")
        return None
    if not isinstance(text, str):
        raise InvalidRequestError(f"text must be a string, got {type(text).__name__}")
    if required and not text.strip():
        raise InvalidRequestError("text must contain something other than whitespace")
    if len(text) > limits.max_text_chars:
        raise PayloadTooLargeError(
            f"text is {len(text)} characters, the limit is {limits.max_text_chars}"
        )
    text_bytes(text)  # rejects lone surrogates before anything embeds the text
    return text


def make_record(
    embedding: Any,
    metadata: Any = None,
    text: Any = None,
    namespace: str | None = None,
    *,
    dim: int | None,
    limits: Limits,
    model_version: str = MODEL_VERSION,
) -> Record:
    """Validate one record's parts against every rule and limit and give it its CID
    (``dim``: the dimension the namespace holds, ``None`` while it holds none)."""
    text = check_text(text, limits)
    namespace = check_namespace(namespace, limits)
    vec = vector_bytes(embedding, dim)
    if len(vec) // 4 > limits.max_dim:
        raise InvalidRequestError(
            f"embedding has {len(vec) // 4} dimensions, the limit is {limits.max_dim}"
        )
    meta = metadata_bytes(metadata, model_version, limits.max_metadata_depth)
    if len(meta) > limits.max_metadata_bytes:
        raise PayloadTooLargeError(
            f"metadata is {len(meta)} bytes of JSON, the limit is {limits.max_metadata_bytes}"
        )
    canonical = vec + meta + text_bytes(text)
    return Record(
        cid=cid_of_bytes(canonical),
        embedding=np.frombuffer(vec, dtype="<f4"),
        metadata=dict(metadata or {}),
        text=text,
        namespace=namespace,
        model_version=model_version,
    )


def record_builder(known_dim: Callable[[str], int | None], limits: Limits) -> Callable[..., Record]:
    """:func:`make_record` for the items of one batch: each vector is checked against its
    namespace's dimension (``known_dim``), or, in a namespace with none yet, against the
    batch's first vector there."""
    fixed: dict[str, int] = {}

    def build(
        embedding: Any,
        metadata: Any = None,
        text: Any = None,
        namespace: str | None = None,
        model_version: str = MODEL_VERSION,
    ) -> Record:
        ns = check_namespace(namespace, limits)
        dim = known_dim(ns) or fixed.get(ns)
        record = make_record(
            embedding, metadata, text, ns, dim=dim, limits=limits, model_version=model_version
        )
        fixed.setdefault(ns, record.embedding.size)
        return record

    return build


SEARCH_MODES = ("hybrid", "vector", "keyword")


def check_mode(mode: Any) -> str:
    """A search mode: both channels fused, or one of them alone."""
    if mode not in SEARCH_MODES:
        raise InvalidRequestError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
    return str(mode)


def check_top_k(top_k: Any, limits: Limits) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= limits.max_top_k:
        raise InvalidRequestError(
            f"top_k must be an integer from 1 to {limits.max_top_k}, got {top_k!r}"
        )
    return top_k


def check_ef(ef: Any, limits: Limits) -> int | None:
    """A search's own HNSW beam width: ``None`` (the namespace's calibrated default) or 1..max."""
    if ef is None:
        return None
    if isinstance(ef, bool) or not isinstance(ef, int) or not 1 <= ef <= limits.max_ef:
        raise InvalidRequestError(
            f"ef (the search beam width) must be an integer from 1 to {limits.max_ef}, got {ef!r}"
        )
    return ef


def prepare_records(
    items: Sequence[IngestItem],
    embedder: Callable[[], Embedder],
    build: Callable[..., Record],
    limits: Limits,
) -> list[Record | EngramError]:
    """Embed every text of ``items`` in one batch, then ``build`` each record.

    A bad item yields its error in place. ``embedder`` is called only when
    some item has text to embed, so vector-only work never loads the model.
    The local node and the network both prepare here, so a text gets the same
    vector, and the same CID, in every mode.
    """
    out: list[Record | EngramError | None] = [None] * len(items)
    to_embed: list[int] = []
    for i, item in enumerate(items):
        if item.embedding is not None:
            continue
        try:
            check_text(item.text, limits, required=True)
            if item.model_version != MODEL_VERSION:
                raise InvalidRequestError(
                    f"text is embedded with model {MODEL_VERSION}; send raw_embedding "
                    f"for model_version {item.model_version!r}"
                )
            to_embed.append(i)
        except EngramError as exc:
            out[i] = exc
    vectors: dict[int, np.ndarray] = {}
    if to_embed:
        encoded = embedder().encode([items[i].text or "" for i in to_embed])
        vectors = dict(zip(to_embed, encoded, strict=True))
    for i, item in enumerate(items):
        if out[i] is not None:
            continue
        try:
            vector = vectors[i] if item.embedding is None else item.embedding
            out[i] = build(vector, item.metadata, item.text, item.namespace, item.model_version)
        except EngramError as exc:
            out[i] = exc
    return [o for o in out if o is not None]
