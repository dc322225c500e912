"""LlamaIndex on Engram: a vector store and the canonical embedding model, offline.

``EngramVectorStore`` is a LlamaIndex ``BasePydanticVectorStore`` over an
:class:`~engram.sdk.client.EngramClient` (embedded, one node over HTTP, or the
network), and ``EngramEmbedding`` a ``BaseEmbedding`` over Engram's canonical
model (all-MiniLM-L6-v2, 384-d), so an index needs no API key and no network::

    store = EngramVectorStore(path="./engram-data")   # or miner_url="http://127.0.0.1:8091"
    index = VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=EngramEmbedding(),
    )

Each node becomes one record: its embedding, its text, and its metadata
flattened into the record's metadata (so filters reach it) together with what
LlamaIndex needs to rebuild the node (``_node_content``, ``_node_type``,
``ref_doc_id``, and ``_node_id``, by which nodes are found again: a record's
own id is its content's CID, which changes whenever the node does).

Needs ``pip install 'engram-subnet[llama-index]'`` (and ``[embed]`` for the model).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import (
        BaseNode,
        Document,
        MetadataMode,
        NodeRelationship,
        TextNode,
    )
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "engram.sdk.llama_index needs llama-index-core: pip install 'engram-subnet[llama-index]'"
    ) from exc

from engram.cid import RESERVED_METADATA_KEYS, is_valid_cid
from engram.config import Limits
from engram.embed import MODEL_ID, Embedder, get_embedder, model_dir
from engram.errors import (
    InvalidFilterError,
    InvalidRequestError,
    NotFoundError,
)
from engram.memory.tokens import token_ids
from engram.records import QueryResult, Record, check_namespace
from engram.sdk.client import EngramClient

__all__ = [
    "NODE_ID_KEY",
    "EngramEmbedding",
    "EngramVectorStore",
    "sentence_splitter",
    "to_engram_filter",
]

NODE_ID_KEY = "_node_id"  # the LlamaIndex node id, top-level so a filter finds it
REF_DOC_KEY = "ref_doc_id"  # written by node_to_metadata_dict ("None" for a node with no doc)
_NODE_CONTENT_KEY = "_node_content"
_LIMITS = Limits()  # what a node accepts unless configured otherwise
_PAGE = _LIMITS.max_list_limit  # records per list call
_IDS_PER_FILTER = 500  # node ids per $in filter: small requests, far below SQLite's limits


# --- filters --------------------------------------------------------------------------------

_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}
_NEGATED = {
    FilterOperator.EQ: FilterOperator.NE,
    FilterOperator.NE: FilterOperator.EQ,
    FilterOperator.GT: FilterOperator.LTE,
    FilterOperator.GTE: FilterOperator.LT,
    FilterOperator.LT: FilterOperator.GTE,
    FilterOperator.LTE: FilterOperator.GT,
    FilterOperator.IN: FilterOperator.NIN,
    FilterOperator.NIN: FilterOperator.IN,
}


def to_engram_filter(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` as an Engram filter (``None``: no filter).

    AND and OR become ``$and`` / ``$or``; NOT means "none of these match" (as in
    LlamaIndex's own SimpleVectorStore) and is pushed down to the leaves with De
    Morgan's laws, each operator replaced by its negation (EQ→``$ne``,
    IN→``$nin``, GT→``$lte``, ...), because Engram filters have no ``$not``.
    Engram's ``$ne``, ``$nin`` and range operators match only records that have
    the key (range operators: a number), so a negated filter leaves out records
    without the key. Operators other than EQ NE GT GTE LT LTE IN NIN raise
    :class:`~engram.errors.InvalidFilterError`.
    """
    if filters is None or not filters.filters:
        return None
    return _group(filters, negate=False)


def _group(filters: MetadataFilters, negate: bool) -> dict[str, Any]:
    if not filters.filters:
        raise InvalidFilterError(
            "a nested MetadataFilters has no filters; drop it (it would match everything)"
        )
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.NOT:  # none match: AND of negations; negated: OR of them
        word, negate_children = ("$or", False) if negate else ("$and", True)
    elif condition == FilterCondition.AND:
        word, negate_children = ("$or" if negate else "$and"), negate
    elif condition == FilterCondition.OR:
        word, negate_children = ("$and" if negate else "$or"), negate
    else:  # pragma: no cover - a condition LlamaIndex adds later
        raise InvalidFilterError(f"filter condition {condition.value!r} has no Engram equivalent")
    parts = [
        _group(f, negate_children) if isinstance(f, MetadataFilters) else _leaf(f, negate_children)
        for f in filters.filters
    ]
    return parts[0] if len(parts) == 1 else {word: parts}


def _leaf(flt: MetadataFilter, negate: bool) -> dict[str, Any]:
    op = FilterOperator(flt.operator)
    if op not in _OPERATORS:
        raise InvalidFilterError(
            f"filter operator {op.value!r} on {flt.key!r} has no Engram equivalent; use one of "
            f"{', '.join(o.value for o in _OPERATORS)} (on a list field, == and in match "
            "when any item does)"
        )
    if negate:
        op = _NEGATED[op]
    value: Any = flt.value
    if op in (FilterOperator.IN, FilterOperator.NIN) and not isinstance(value, list):
        value = [value]
    return {flt.key: {_OPERATORS[op]: value}}


def _and(*parts: dict[str, Any] | None) -> dict[str, Any] | None:
    kept = [p for p in parts if p is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else {"$and": kept}


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --- the vector store -----------------------------------------------------------------------


class EngramVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store whose nodes are Engram records in one namespace.

    ``EngramVectorStore(client)`` uses a client you opened (its namespace unless
    ``namespace=`` is given); otherwise the store opens one and closes it in
    :meth:`close`: ``path=`` an embedded store, ``url=`` (or the original SDK's
    ``miner_url=``, with ``timeout=``) one node over HTTP, nothing the embedded
    store under ``ENGRAM_HOME``. Give ``keypair=`` or ``wallet=`` to sign
    requests: a node lets only the hotkey that wrote a record delete it.

    Adding a node whose id is already stored replaces it. Queries: the default
    mode (by embedding; by text, embedded by the canonical model, when there is
    none), ``hybrid`` (Engram's vector + BM25 search), ``text_search`` and
    ``sparse`` (BM25 only). ``similarities`` are cosine similarities in the
    default mode and fused scores in the others.
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    flat_metadata: bool = False
    namespace: str | None = Field(
        default=None, description="the Engram namespace; None: the client's (or the default)"
    )

    _client: EngramClient = PrivateAttr()
    _owns_client: bool = PrivateAttr(default=False)

    def __init__(
        self,
        client: EngramClient | None = None,
        namespace: str | None = None,
        *,
        url: str | None = None,
        path: str | Path | None = None,
        miner_url: str | None = None,
        timeout: float | None = None,
        keypair: Any = None,
        wallet: Any = None,
    ) -> None:
        if namespace is not None:
            check_namespace(namespace, _LIMITS)
        connection = (url, path, miner_url, timeout, keypair, wallet)
        if client is not None and any(x is not None for x in connection):
            raise InvalidRequestError(
                "give a client, or where to connect (url, path, miner_url, ...), not both"
            )
        super().__init__(stores_text=True)
        self.namespace = namespace
        if client is None:
            client = EngramClient(
                url,
                path=path,
                miner_url=miner_url,
                timeout=timeout,
                keypair=keypair,
                wallet=wallet,
            )
            self._owns_client = True
        self._client = client

    @classmethod
    def class_name(cls) -> str:
        return "EngramVectorStore"

    @property
    def client(self) -> EngramClient:
        """The Engram client underneath, for anything this interface does not cover."""
        return self._client

    def close(self) -> None:
        """Close the client if this store opened it (a client you passed in stays yours)."""
        if self._owns_client:
            self._client.close()

    def health(self) -> bool:
        """Whether the store or node answers and is ready (the original SDK's ``health()``)."""
        return self._client.is_online()

    @classmethod
    def from_documents(cls, documents: Sequence[Document], **kwargs: Any) -> EngramVectorStore:
        """A store holding one node per document, embedded by the canonical model where it is
        stored: the original SDK's shortcut. ``VectorStoreIndex.from_documents`` splits
        documents into chunks first and is what a new application wants."""
        store = cls(**kwargs)
        store.add(
            [
                TextNode(
                    text=doc.text,
                    metadata=dict(doc.metadata),
                    relationships={NodeRelationship.SOURCE: doc.as_related_node_info()},
                )
                for doc in documents
            ]
        )
        return store

    # --- writes ---------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store the nodes (one batch, split to fit the node's limits); returns their ids.

        A node without an embedding is embedded from its text by the canonical
        model. Records left by earlier versions of these node ids are deleted
        once the new ones are stored.
        """
        if not nodes:
            return []
        result = self._client.batch_ingest(
            [self._item(node) for node in nodes], namespace=self.namespace
        )
        stored = {node.node_id for node, cid in zip(nodes, result.cids, strict=True) if cid}
        self._drop_stale(stored, {cid for cid in result.cids if cid})
        if result.failed:
            details = "; ".join(f"node {nodes[i].node_id}: {error}" for i, error in result.failed)
            raise InvalidRequestError(
                f"Engram stored {len(nodes) - len(result.failed)} of {len(nodes)} nodes; {details}"
            )
        return [node.node_id for node in nodes]

    def _item(self, node: BaseNode) -> dict[str, Any]:
        metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
        for key in RESERVED_METADATA_KEYS:  # Engram's own; the node keeps it in _node_content
            metadata.pop(key, None)
        metadata[NODE_ID_KEY] = node.node_id
        item: dict[str, Any] = {"metadata": metadata}
        text = node.get_content(metadata_mode=MetadataMode.NONE)
        if text:
            item["text"] = text
        if node.embedding is not None:
            item["embedding"] = node.embedding
        return item

    def _drop_stale(self, node_ids: set[str], keep: set[str]) -> None:
        stale = [r.cid for r in self._matching(sorted(node_ids), None) if r.cid not in keep]
        self._delete_cids(stale)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the document ``ref_doc_id``."""
        self._delete_cids([r.cid for r in self._records({REF_DOC_KEY: ref_doc_id})])

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids and matching ``filters`` (neither: every node, as
        in LlamaIndex's SimpleVectorStore)."""
        self._delete_cids([r.cid for r in self._matching(node_ids, filters)])

    def clear(self) -> None:
        """Delete every record of the store's namespace."""
        self._delete_cids([r.cid for r in self._records(None)])

    def _delete_cids(self, cids: Sequence[str]) -> None:
        for cid in dict.fromkeys(cids):
            with contextlib.suppress(NotFoundError):  # deleted meanwhile: that is what was asked
                self._client.delete(cid, namespace=self.namespace)

    # --- reads ----------------------------------------------------------------------------

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The nodes with these ids (in that order) and matching ``filters``, with embeddings;
        neither: every node."""
        nodes = [
            self._node(r.metadata, r.text, r.cid, r.embedding.tolist())
            for r in self._matching(node_ids, filters)
        ]
        if node_ids is not None:
            order = {node_id: i for i, node_id in enumerate(node_ids)}
            nodes.sort(key=lambda n: order.get(n.node_id, len(order)))
        return nodes

    def _records(self, flt: Mapping[str, Any] | None) -> Iterator[Record]:
        offset = 0
        while True:
            page = self._client.list(_PAGE, offset, namespace=self.namespace, filter=flt)
            yield from page
            if len(page) < _PAGE:
                return
            offset += len(page)

    def _matching(
        self, node_ids: Sequence[str] | None, filters: MetadataFilters | None
    ) -> list[Record]:
        """The records of these node ids (``None``: all) that match ``filters``. A record
        written without LlamaIndex has its CID as node id: found by it when no filters."""
        extra = to_engram_filter(filters)
        if node_ids is None:
            return list(self._records(extra))
        wanted = list(dict.fromkeys(node_ids))
        found = [
            record
            for chunk in _chunks(wanted, _IDS_PER_FILTER)
            for record in self._records(_and({NODE_ID_KEY: {"$in": chunk}}, extra))
        ]
        if extra is None:
            seen = {record.metadata.get(NODE_ID_KEY) for record in found}
            for cid in wanted:
                if cid not in seen and is_valid_cid(cid):
                    record = self._client.get(cid, namespace=self.namespace)
                    if record is not None and NODE_ID_KEY not in record.metadata:
                        found.append(record)
        return found

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Nearest nodes to ``query`` in its mode, restricted by its filters, ``doc_ids`` and
        ``node_ids``."""
        # An empty doc_ids or node_ids restricts nothing: VectorStoreIndex.as_retriever passes
        # node_ids=[] for a store that keeps the nodes itself, as other stores read it too.
        flt = _and(
            to_engram_filter(query.filters),
            {REF_DOC_KEY: {"$in": list(query.doc_ids)}} if query.doc_ids else None,
            {NODE_ID_KEY: {"$in": list(query.node_ids)}} if query.node_ids else None,
        )
        mode = VectorStoreQueryMode(query.mode)
        if mode == VectorStoreQueryMode.DEFAULT:
            hits = self._nearest(query, flt)
        elif mode == VectorStoreQueryMode.HYBRID:
            return self._hybrid(query, flt)
        elif mode in (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE):
            top_k = query.sparse_top_k or query.similarity_top_k
            hits = self._search(query, top_k, flt, "keyword")
        else:
            raise InvalidRequestError(
                f"query mode {mode.value!r} is not supported by Engram; use default, hybrid, "
                "text_search or sparse"
            )
        return self._result(hits, [h.score for h in hits])

    def _nearest(self, query: VectorStoreQuery, flt: dict[str, Any] | None) -> list[QueryResult]:
        top_k, ns = query.similarity_top_k, self.namespace
        if query.query_embedding is not None:
            return self._client.query_by_vector(query.query_embedding, top_k, flt, ns)
        if query.query_str:
            return self._client.query(query.query_str, top_k, flt, ns)
        raise InvalidRequestError("a query needs query_embedding or query_str")

    def _search(
        self, query: VectorStoreQuery, top_k: int, flt: dict[str, Any] | None, mode: str
    ) -> list[QueryResult]:
        if not query.query_str:
            raise InvalidRequestError(f"a {mode} search needs query_str")
        vector = None if mode == "keyword" else query.query_embedding
        return self._client.search(query.query_str, top_k, flt, self.namespace, mode, vector)

    def _hybrid(
        self, query: VectorStoreQuery, flt: dict[str, Any] | None
    ) -> VectorStoreQueryResult:
        """Engram's hybrid search, with LlamaIndex's ``alpha`` (1: vector only, 0: keyword
        only; between: each channel's scores min-max normalised over the candidates and
        weighted alpha : 1 - alpha) and ``hybrid_top_k`` (how many results)."""
        top_k = query.hybrid_top_k or query.similarity_top_k
        alpha = query.alpha
        if not query.query_str:  # nothing for the keyword channel: a plain vector query
            hits = self._nearest(query, flt)
            return self._result(hits, [h.score for h in hits])
        if alpha is None or alpha in (0, 1):
            mode = "hybrid" if alpha is None else "vector" if alpha == 1 else "keyword"
            hits = self._search(query, top_k, flt, mode)
            return self._result(hits, [h.score for h in hits])
        if not 0 < alpha < 1:
            raise InvalidRequestError(f"alpha must be between 0 and 1, got {alpha}")
        candidates = max(top_k, min(4 * top_k, _LIMITS.max_top_k))
        hits = self._search(query, candidates, flt, "hybrid")
        weighted = _reweigh(hits, alpha)[:top_k]
        return self._result([h for h, _ in weighted], [s for _, s in weighted])

    def _result(
        self, hits: Sequence[QueryResult], scores: Sequence[float]
    ) -> VectorStoreQueryResult:
        nodes = [self._node(h.metadata, h.text, h.cid) for h in hits]
        return VectorStoreQueryResult(
            nodes=nodes, similarities=[float(s) for s in scores], ids=[n.node_id for n in nodes]
        )

    @staticmethod
    def _node(
        metadata: Mapping[str, Any],
        text: str | None,
        cid: str,
        embedding: list[float] | None = None,
    ) -> BaseNode:
        """The node a record holds; a record written without LlamaIndex becomes a TextNode
        whose id is its CID."""
        meta = dict(metadata)
        node: BaseNode
        if _NODE_CONTENT_KEY in meta:
            node = metadata_dict_to_node(meta, text=text)
        else:
            node = TextNode(id_=cid, text=text or "", metadata=meta)
        node.embedding = embedding
        return node

    # --- async: the sync calls in a worker thread -------------------------------------------

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """:meth:`add` in a worker thread, so the event loop never blocks."""
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """:meth:`delete` in a worker thread."""
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """:meth:`delete_nodes` in a worker thread."""
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """:meth:`get_nodes` in a worker thread."""
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aclear(self) -> None:
        """:meth:`clear` in a worker thread."""
        await asyncio.to_thread(self.clear)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """:meth:`query` in a worker thread."""
        return await asyncio.to_thread(self.query, query, **kwargs)


def _reweigh(hits: Sequence[QueryResult], alpha: float) -> list[tuple[QueryResult, float]]:
    """Relative score fusion with weights alpha (vector) and 1 - alpha (keyword), best first."""

    def normalised(channel: str) -> dict[str, float]:
        raw = {
            h.cid: float(h.channels[channel]["score"])
            for h in hits
            if h.channels and channel in h.channels
        }
        if not raw:
            return {}
        low, high = min(raw.values()), max(raw.values())
        return {cid: (s - low) / (high - low) if high > low else 1.0 for cid, s in raw.items()}

    vector, keyword = normalised("vector"), normalised("keyword")
    scored = [
        (h, alpha * vector.get(h.cid, 0.0) + (1 - alpha) * keyword.get(h.cid, 0.0)) for h in hits
    ]
    return sorted(scored, key=lambda pair: -pair[1])


# --- the embedding model --------------------------------------------------------------------


class EngramEmbedding(BaseEmbedding):
    """Engram's canonical model (all-MiniLM-L6-v2, 384-d, unit vectors) as a LlamaIndex
    embedding: the same vectors a node computes for the same text, loaded offline.

    The model loads on first use, once per process. ``embedder=`` plugs in
    another :class:`~engram.embed.Embedder`; ``backend=`` picks ``"onnx"`` or
    ``"torch"``. The model reads at most 256 tokens of a text: split documents
    with :func:`sentence_splitter` so no chunk is cut short.
    """

    model_name: str = Field(default=MODEL_ID, description="the embedding model")
    embed_batch_size: int = Field(default=64, gt=0, le=2048, description="texts per encode call")
    backend: str | None = Field(
        default=None, description="onnx or torch; None: the default (onnx, else torch)"
    )

    _embedder: Embedder | None = PrivateAttr(default=None)

    def __init__(self, embedder: Embedder | None = None, **kwargs: Any) -> None:
        if embedder is not None:
            kwargs.setdefault("model_name", embedder.model_id)
        super().__init__(**kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "EngramEmbedding"

    def _model(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.backend)
        return self._embedder

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        vectors = self._model().encode(texts, batch_size=self.embed_batch_size)
        return [row.tolist() for row in vectors]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embeddings([query])[0]  # the model has no query prefix

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)


@functools.cache
def _model_window() -> int:
    """Tokens of a text the canonical model reads, less [CLS] and [SEP]."""
    with open(model_dir() / "sentence_bert_config.json", encoding="utf-8") as fh:
        return int(json.load(fh)["max_seq_length"]) - 2


def sentence_splitter(chunk_size: int | None = None, chunk_overlap: int = 32) -> SentenceSplitter:
    """A ``SentenceSplitter`` that counts tokens with the canonical model's tokenizer and cuts
    chunks that fit its window (254 tokens by default), so every word of a chunk counts.

    LlamaIndex's default splitter makes chunks of 1024 GPT tokens, of which the
    model reads only the first ~256; pass ``transformations=[sentence_splitter()]``
    to ``VectorStoreIndex.from_documents``. Offline, like the model.
    """
    return SentenceSplitter(
        chunk_size=_model_window() if chunk_size is None else chunk_size,
        chunk_overlap=chunk_overlap,
        tokenizer=token_ids,
    )
