"""The wire messages of the node API, shared by every server and client.

Field names follow the original Engram synapses (``IngestSynapse``,
``QuerySynapse``, ...) so existing clients keep working, and requests accept
the original clients' namespace and signing fields (:class:`LegacyFields`).
Limits come from :class:`engram.config.Limits`; values the models cannot check
alone (text length, metadata size and depth, dimensions) are checked when the
record is built, with the same messages in every mode.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engram.config import MODEL_VERSION, Limits
from engram.memory.model import Link, Memory
from engram.security.access import Permission

_LIMITS = Limits()


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LegacyFields(_Wire):
    """Fields the original network's clients send; accepted everywhere, used where they mean
    something. ``namespace_key`` guards a namespace with a shared secret (the weaker legacy
    scheme, see ``engram.security.access``); the signature fields are superseded by signed
    HTTP requests (bittensor ``http_auth``) and are ignored."""

    namespace_key: str | None = Field(default=None, max_length=1024)
    namespace_hotkey: str | None = None
    namespace_sig: str | None = None
    namespace_timestamp_ms: int | str | None = None
    hotkey: str | None = None
    nonce: int | str | None = None
    signature: str | None = None


class IngestRequest(LegacyFields):
    text: str | None = None
    raw_embedding: list[float] | None = None
    metadata: dict[str, Any] | None = None
    model_version: str = MODEL_VERSION
    namespace: str | None = None
    writer: str | None = Field(default=None, max_length=64)  # a validator's copy: who wrote it


class IngestResponse(_Wire):
    cid: str | None = None
    error: str | None = None


class GatewayIngestResponse(IngestResponse):
    replicas: list[str]  # hotkeys of the miners that acknowledged, primary first


class BatchIngestRequest(_Wire):
    items: list[IngestRequest] = Field(min_length=1, max_length=_LIMITS.max_batch_items)


class BatchIngestResponse(_Wire):
    cids: list[str | None]
    errors: list[str | None]
    codes: list[str | None] | None = None  # each failure's error code (older nodes omit it)


class GatewayBatchIngestResponse(BatchIngestResponse):
    replicas: list[list[str]]  # per item, the miners that acknowledged


class QueryRequest(LegacyFields):
    query_text: str | None = None
    query_vector: list[float] | None = None
    top_k: int = Field(default=10, ge=1, le=_LIMITS.max_top_k)
    filter: dict[str, Any] | None = None
    namespace: str | None = None
    include_embedding: bool = False
    ef: int | None = Field(default=None, ge=1, le=_LIMITS.max_ef)  # HNSW beam; None: the node's


class QueryHit(_Wire):
    cid: str
    score: float
    metadata: dict[str, Any]
    text: str | None = None
    embedding: list[float] | None = None


class QueryResponse(_Wire):
    results: list[QueryHit] = Field(default_factory=list)
    latency_ms: float = 0.0
    error: str | None = None


class SearchRequest(LegacyFields):
    """``POST /search``: hybrid search in the shape of the seed's memory server."""

    query: str = Field(min_length=1, max_length=_LIMITS.max_text_chars)
    limit: int = Field(default=10, ge=1, le=_LIMITS.max_top_k)
    filters: dict[str, Any] | None = None
    namespace: str | None = None
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"
    query_vector: list[float] | None = None  # the query already embedded (a gateway does it once)
    ef: int | None = Field(default=None, ge=1, le=_LIMITS.max_ef)  # HNSW beam; None: the node's


class ChannelScore(_Wire):
    rank: int
    score: float


class SearchHit(QueryHit):
    channels: dict[str, ChannelScore]  # what each channel (vector, keyword) contributed


class SearchResponse(_Wire):
    results: list[SearchHit] = Field(default_factory=list)
    latency_ms: float = 0.0


class ChallengeRequest(LegacyFields):
    cid: str
    validator_hotkey_hex: str | None = None  # sent by the original validators; unused
    nonce_hex: str = Field(min_length=32, max_length=256)
    expires_at: float = Field(allow_inf_nan=False)


class ChallengeAnswer(_Wire):
    embedding_hash: str
    proof: str


class RecordOut(_Wire):
    cid: str
    namespace: str
    embedding: list[float]
    metadata: dict[str, Any]
    text: str | None = None
    model_version: str = MODEL_VERSION
    # The hotkey that signed its write, where known; absent otherwise, so a record written
    # unsigned has exactly the original clients' fields.
    writer: str | None = Field(default=None, exclude_if=lambda writer: writer is None)


class ListRequest(LegacyFields):
    """``POST /list``: the original clients' listing, with a metadata filter."""

    limit: int = Field(default=100, ge=1, le=_LIMITS.max_list_limit)
    offset: int = Field(default=0, ge=0)
    filter: dict[str, Any] | None = None
    namespace: str | None = None


class _Params(BaseModel):
    """A query string: values arrive as text and are converted; unknown names are ignored."""

    model_config = ConfigDict(extra="ignore")


class NamespaceParams(_Params):
    namespace: str | None = None


class ListParams(NamespaceParams):
    limit: int = Field(default=100, ge=1, le=_LIMITS.max_list_limit)
    offset: int = Field(default=0, ge=0)


class RevokeParams(_Params):
    permission: Permission


class DeleteRequest(LegacyFields):
    """The optional JSON body of ``DELETE /retrieve/{cid}`` (the original clients' delete)."""

    namespace: str | None = None


class ListResponse(_Wire):
    records: list[RecordOut]
    total: int
    limit: int
    offset: int


class CountResponse(_Wire):
    count: int
    namespace: str | None = None


class DeleteResponse(_Wire):
    cid: str
    deleted: bool


class DeletionWire(_Wire):
    """A deleted record's tombstone as one replica kept it: ``proof`` is the signed delete
    request (JSON, see ``SignedRequest.to_json``) that any other replica can check."""

    seq: int = 0
    namespace: str = Field(max_length=1024)
    cid: str = Field(max_length=256)
    deleted_at: float = Field(allow_inf_nan=False)
    proof: str = Field(max_length=65_536)


class DeletionsResponse(_Wire):
    deletions: list[DeletionWire]
    next: int  # the ``after`` of the next page


class ApplyDeletionsRequest(_Wire):
    deletions: list[DeletionWire] = Field(max_length=1_000)


class ApplyDeletionsResponse(_Wire):
    outcomes: list[str]  # per deletion: deleted, absent, newer, or "refused: why"


class CommitmentResponse(_Wire):
    root: str
    count: int


class InclusionProofOut(_Wire):
    cid: str
    index: int
    root: str
    siblings: list[list[str]]  # [side "L"|"R", sibling hash hex], leaf to root


class HealthResponse(_Wire):
    model_config = ConfigDict(extra="allow")  # each kind of node adds what it knows

    status: str
    ready: bool
    store: bool
    model: bool
    version: str


class GrantRequest(_Wire):
    hotkey: str = Field(max_length=64)
    permission: Permission


class GrantOut(_Wire):
    hotkey: str
    permission: Literal["read", "write"]


class NamespaceInfo(_Wire):
    namespace: str
    owner: str | None  # None: a public namespace
    private: bool
    grants: list[GrantOut]  # shown to the owner only
    dim: int | None = None  # the dimension of its vectors (None: nothing written yet)


# --- memory lifecycle (a node operation) and the memory API (docs/memory.md) -------------------

_MAX_CIDS = _LIMITS.max_list_limit


class LifecycleRequest(LegacyFields):
    """``POST /lifecycle``: the lifecycle entries of some memories."""

    namespace: str | None = None
    cids: list[str] = Field(min_length=1, max_length=_MAX_CIDS)


class SetLifecycleRequest(LifecycleRequest):
    """``PUT /lifecycle``: archive, unarchive, forget or review (recall) some memories."""

    action: Literal["archive", "unarchive", "forget", "review"]


class LifecycleOut(_Wire):
    state: str
    card: str | None  # FSRS card JSON
    updated_at: float


class LifecycleResponse(_Wire):
    states: dict[str, LifecycleOut]  # by CID; a CID the node holds no entry for is absent


# The memory service checks these values itself, so every mode answers with its messages.


class MemoryStoreRequest(LegacyFields):
    """``POST /store`` (also ``/memory/store``)."""

    content: str
    category: str | None = None
    importance: float | None = None
    tags: list[str] = Field(default_factory=list)
    source: str | None = None
    ttl_s: float | None = None
    namespace: str | None = None


class MemoryUpdateRequest(LegacyFields):
    """``POST /memory/{cid}/update``: fields left out are carried over from the old version."""

    content: str
    category: str | None = None
    importance: float | None = None
    tags: list[str] | None = None
    source: str | None = None
    ttl_s: float | None = None
    namespace: str | None = None


class MemorySearchRequest(LegacyFields):
    """``POST /memory/search``: active memories, ranked by relevance and strength."""

    query: str
    limit: int = 10
    filters: dict[str, Any] | None = None
    namespace: str | None = None


class MemoryContextRequest(LegacyFields):
    """``POST /context``: a prompt-ready block within ``max_tokens``."""

    query: str
    max_tokens: int
    namespace: str | None = None


class MemoryListParams(NamespaceParams):
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    state: str = "active"
    limit: int = 50
    offset: int = 0


class MemoriesResponse(_Wire):
    memories: list[Memory]


class VersionsResponse(_Wire):
    versions: list[Memory]  # oldest to newest


class LinksResponse(_Wire):
    links: list[Link]
