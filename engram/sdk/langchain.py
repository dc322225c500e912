"""LangChain on Engram: :class:`EngramVectorStore` and :class:`EngramEmbeddings`.

``EngramVectorStore`` is a ``langchain_core`` ``VectorStore`` over any
:class:`~engram.sdk.client.EngramClient` (an embedded store, one node over HTTP
or the whole network), so retrievers, chains and agents written for LangChain
use Engram unchanged. Two things differ from a typical store, and the class
bridges them:

* Engram names a record by its content (a CID), while LangChain names documents
  by caller ids that survive updates. The caller id is kept in each record's
  metadata under :data:`ID_KEY`, so an id finds its record in every mode and
  from any instance; re-adding an id writes the new record, then deletes the
  old one.
* Engram also searches by words (hybrid BM25 + vector search), which LangChain
  has no search type for: ``search_type="hybrid"`` adds one, on the store and
  on its retriever.

Needs ``langchain-core`` (``pip install 'engram-subnet[langchain]'``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engram.cid import is_valid_cid
from engram.embed import Embedder, get_embedder
from engram.errors import InvalidRequestError, NotFoundError
from engram.records import QueryResult, Record
from engram.sdk.client import EngramClient

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "engram.sdk.langchain needs langchain-core: pip install 'engram-subnet[langchain]'"
    ) from exc

__all__ = ["ID_KEY", "EngramEmbeddings", "EngramRetriever", "EngramVectorStore"]

ID_KEY = "langchain_id"
"""The metadata key holding a document's LangChain id; reserved, and hidden from documents."""

_ID_CHUNK = 200  # ids per ``$in`` filter: one lookup stays a small indexed query
_PAGE = 1_000  # records per list page: a node's largest


class EngramEmbeddings(Embeddings):
    """Engram's canonical model (all-MiniLM-L6-v2, 384-d, unit vectors) as LangChain ``Embeddings``.

    The vectors are the ones a node computes for the same text, so text embedded
    here and text a node embedded can be compared. The model loads on first use,
    once per process. ``embedder=`` substitutes another Engram ``Embedder``.
    """

    def __init__(self, embedder: Embedder | None = None) -> None:
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        """The Engram embedder behind these embeddings (loaded when first asked for)."""
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text, in order."""
        if not texts:
            return []
        return [row.tolist() for row in self.embedder.encode(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query (the same model as documents: the space is symmetric)."""
        return self.embed_documents([text])[0]

    def __repr__(self) -> str:
        return f"EngramEmbeddings({self._embedder!r})"


def _relevance(score: float) -> float:
    """Cosine similarity in [-1, 1] as a relevance in [0, 1] (clipped: float32 can overshoot)."""
    return min(1.0, max(0.0, (score + 1.0) / 2.0))


def _no_more(kwargs: Mapping[str, Any], method: str) -> None:
    """Refuse unknown keywords: a silently ignored ``filters=`` would return unfiltered hits."""
    if kwargs:
        raise TypeError(f"{method}() got unexpected keyword argument(s) {sorted(kwargs)}")


def _mmr_by_score(
    similarity_to_query: Sequence[float], vectors: np.ndarray, lambda_mult: float, k: int
) -> list[int]:
    """Maximal marginal relevance when the node gave each candidate's similarity to the query
    (the query was embedded there, so no query vector exists here); the same selection as
    ``langchain_core.vectorstores.utils.maximal_marginal_relevance``."""
    n = min(k, len(similarity_to_query))
    if n <= 0:
        return []
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    pairwise = unit @ unit.T
    query = np.asarray(similarity_to_query, dtype=np.float64)
    chosen = [int(np.argmax(query))]
    while len(chosen) < n:
        redundancy = pairwise[:, chosen].max(axis=1)
        gain = lambda_mult * query - (1.0 - lambda_mult) * redundancy
        gain[chosen] = -np.inf
        chosen.append(int(np.argmax(gain)))
    return chosen


class EngramRetriever(VectorStoreRetriever):
    """A ``VectorStoreRetriever`` that also allows ``search_type="hybrid"`` (words and meaning).

    LangChain's retriever accepts only its three search types; this one adds
    Engram's hybrid search and hands it to :meth:`EngramVectorStore.search`.
    """

    allowed_search_types: ClassVar[tuple[str, ...]] = (
        *VectorStoreRetriever.allowed_search_types,
        "hybrid",
    )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type == "hybrid":
            return self.vectorstore.search(query, "hybrid", **(self.search_kwargs | kwargs))
        return super()._get_relevant_documents(query, run_manager=run_manager, **kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type == "hybrid":
            return await self.vectorstore.asearch(query, "hybrid", **(self.search_kwargs | kwargs))
        return await super()._aget_relevant_documents(query, run_manager=run_manager, **kwargs)


class EngramVectorStore(VectorStore):
    """A LangChain ``VectorStore`` on Engram, in any mode of :class:`EngramClient`.

    Where the records live (give at most one; none means the embedded store
    under ``ENGRAM_HOME``, as ``EngramClient()``):

    * ``miner_url="http://host:8091"``: one node (a miner or a gateway) over HTTP;
    * ``path=DIR``: an embedded store at ``DIR``;
    * ``chain="local:PATH"`` (or a real chain): the whole subnet, via
      :meth:`EngramClient.from_network`;
    * ``client=``: an ``EngramClient`` you opened (and close yourself).

    Other keywords go to the client: ``keypair=``/``wallet=`` sign requests (a
    node deletes a public record only for the hotkey that wrote it, and the first
    signed write to a fresh namespace makes it yours), ``seal_key=`` seals text
    and metadata (the id key stays in clear, so ids are still found),
    ``timeout=``, ``netuid=``... ``namespace=`` keeps this store's documents
    apart from other data.

    ``embeddings=None`` lets the node embed with Engram's canonical model (only
    text is sent); a LangChain ``Embeddings`` embeds here and sends the vectors
    with the text. A namespace's dimension is fixed by its first record, so one
    namespace holds the vectors of one model.

    Scores are cosine similarities in [-1, 1]; relevance scores map them to
    [0, 1]. ``filter=`` takes Engram's metadata filters (``$eq $ne $gt $gte
    $lt $lte $in $nin $and $or``).
    """

    def __init__(
        self,
        miner_url: str | None = None,
        embeddings: Embeddings | None = None,
        *,
        client: EngramClient | None = None,
        path: str | Path | None = None,
        chain: str | None = None,
        namespace: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        if isinstance(miner_url, Embeddings):
            raise TypeError(
                "the first argument is miner_url (the original adapter's order): "
                "pass embeddings=... by keyword"
            )
        given = [
            name
            for name, value in (
                ("client", client),
                ("miner_url", miner_url),
                ("path", path),
                ("chain", chain),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give one of client, miner_url, path or chain, not {given}")
        if client is not None:
            if client_kwargs:
                raise ValueError(
                    f"{sorted(client_kwargs)} configure a new client; "
                    "with client= configure that client instead"
                )
            clear = client.clear_fields
            if clear is not None and ID_KEY not in clear:
                raise ValueError(
                    f"a client that seals records must keep {ID_KEY!r} in clear_fields: "
                    "ids are found by a filter on it"
                )
            self._owns_client = False
        else:
            fields = client_kwargs.get("clear_fields", ())
            if client_kwargs.get("seal_key") is not None and not isinstance(fields, str):
                client_kwargs["clear_fields"] = [*fields, ID_KEY]  # ids stay filterable
            if chain is not None:
                client = EngramClient.from_network(chain, namespace=namespace, **client_kwargs)
            else:
                client = EngramClient(
                    miner_url=miner_url, path=path, namespace=namespace, **client_kwargs
                )
            self._owns_client = True
        self.client = client
        self.namespace: str | None = namespace if namespace is not None else client.namespace
        self._embeddings = embeddings
        self._canonical = EngramEmbeddings(client_kwargs.get("embedder"))

    # --- LangChain's plumbing ------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        """The model of this store's vectors: the one given, else the canonical model."""
        return self._embeddings if self._embeddings is not None else self._canonical

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Cosine similarity s in [-1, 1] to relevance (s + 1) / 2 in [0, 1]."""
        return _relevance

    def as_retriever(self, **kwargs: Any) -> EngramRetriever:
        """LangChain's retriever, with ``search_type="hybrid"`` allowed too.

        ``search_kwargs`` go to the search: ``k``, ``filter``, and for ``mmr``
        ``fetch_k`` and ``lambda_mult``, for ``similarity_score_threshold``
        ``score_threshold``.
        """
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return EngramRetriever(vectorstore=self, tags=tags, **kwargs)

    def search(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        """LangChain's search types, plus ``"hybrid"`` (see :meth:`hybrid_search`)."""
        if search_type == "hybrid":
            return self.hybrid_search(query, **kwargs)
        return super().search(query, search_type, **kwargs)

    async def asearch(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        """:meth:`search` for asyncio code."""
        if search_type == "hybrid":
            return await run_in_executor(None, self.hybrid_search, query, **kwargs)
        return await super().asearch(query, search_type, **kwargs)

    # --- writes ----------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Store ``texts`` under ``ids`` (new uuid4 strings where missing); returns the ids.

        An id already in the namespace is overwritten: the new record is written
        first, then the id's old records are deleted, so a failed write never
        loses the old version. ``batch_size`` (LangChain's indexing API passes
        it) bounds the texts embedded and sent at once; by default all at once,
        the client splitting requests to the node's limits.
        """
        _no_more(kwargs, "add_texts")
        texts = list(texts)
        if metadatas and len(metadatas) != len(texts):
            raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids and len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        given: list[str | None] = list(ids) if ids else [None] * len(texts)
        doc_ids = [self._check_id(i) if i is not None else str(uuid.uuid4()) for i in given]
        if len(set(doc_ids)) != len(doc_ids):
            repeated = sorted({i for i in doc_ids if doc_ids.count(i) > 1})
            raise ValueError(f"ids must be unique within one call; repeated: {repeated}")
        if not texts:
            return []
        metas = [
            self._stored_metadata(m, i)
            for m, i in zip(metadatas or [{}] * len(texts), doc_ids, strict=True)
        ]
        previous = self._records([i for i in given if i is not None])
        written: dict[str, str] = {}  # id -> its new CID
        failed: list[str] = []
        size = batch_size or len(texts)
        for start in range(0, len(texts), size):
            chunk = range(start, min(start + size, len(texts)))
            result = self.client.batch_ingest(
                self._items([texts[j] for j in chunk], [metas[j] for j in chunk]),
                namespace=self.namespace,
            )
            pairs = zip(chunk, result.cids, strict=True)
            written.update((doc_ids[j], cid) for j, cid in pairs if cid is not None)
            failed += [f"{doc_ids[chunk[i]]!r}: {error}" for i, error in result.failed]
        self._delete_cids(
            r.cid
            for r in previous
            if str(r.metadata.get(ID_KEY)) in written
            and r.cid != written[str(r.metadata.get(ID_KEY))]
        )
        if failed:
            raise InvalidRequestError(
                f"{len(failed)} of {len(texts)} documents were not stored "
                f"({'; '.join(failed)}); the other {len(written)} were"
            )
        return doc_ids

    def _items(self, texts: list[str], metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Batch items: text for the node to embed, or text with this side's vectors."""
        if self._embeddings is None:
            return [{"text": t, "metadata": m} for t, m in zip(texts, metas, strict=True)]
        vectors = self._embeddings.embed_documents(texts)
        return [
            {"text": t, "embedding": v, "metadata": m}
            for t, v, m in zip(texts, vectors, metas, strict=True)
        ]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete the documents of ``ids`` (missing ids are no error); returns True.

        An id may also be the CID of a record written without LangChain (such a
        document's ``id`` is its CID). ``ids=None`` deletes every document this
        integration wrote to the namespace; other records stay.
        """
        _no_more(kwargs, "delete")
        if ids is None:
            self._delete_cids(r.cid for r in self._all_records())
            return True
        records = self._records(ids)
        found = {str(r.metadata.get(ID_KEY)) for r in records}
        cids = [r.cid for r in records]
        cids += [i for i in dict.fromkeys(ids) if i not in found and is_valid_cid(i)]
        self._delete_cids(cids)
        return True

    # --- reads -----------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents of ``ids`` that exist, in the order asked (each once)."""
        by_id: dict[str, Document] = {}
        for record in self._records(ids):
            doc = self._document(record.cid, record.text, record.metadata)
            by_id.setdefault(str(doc.id), doc)
        for i in dict.fromkeys(ids):
            if i not in by_id and is_valid_cid(i):
                got = self.client.get(i, namespace=self.namespace)
                if got is not None:
                    by_id[i] = self._document(got.cid, got.text, got.metadata)
        return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents nearest in meaning to ``query``, best first."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with their cosine similarity to ``query`` (in [-1, 1], higher is nearer)."""
        _no_more(kwargs, "similarity_search_with_score")
        if self._embeddings is not None:
            vector = self._embeddings.embed_query(query)
            return self.similarity_search_with_score_by_vector(vector, k, filter)
        hits = self.client.query(query, top_k=k, filter=filter, namespace=self.namespace)
        return self._scored(hits)

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` documents nearest to a vector of this store's model, best first."""
        _no_more(kwargs, "similarity_search_by_vector")
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter)]

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float], k: int = 4, filter: dict[str, Any] | None = None
    ) -> list[tuple[Document, float]]:
        """Documents nearest to ``embedding`` with their cosine similarity to it."""
        hits = self.client.query_by_vector(
            embedding, top_k=k, filter=filter, namespace=self.namespace
        )
        return self._scored(hits)

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` of the ``fetch_k`` nearest documents, chosen to be relevant yet unlike each other
        (``lambda_mult`` 1: relevance only, 0: diversity only)."""
        _no_more(kwargs, "max_marginal_relevance_search")
        if self._embeddings is not None:
            vector = self._embeddings.embed_query(query)
            return self.max_marginal_relevance_search_by_vector(
                vector, k, fetch_k, lambda_mult, filter
            )
        hits = self.client.query(
            query, top_k=fetch_k, filter=filter, namespace=self.namespace, include_embedding=True
        )
        if not hits:
            return []
        vectors = np.asarray([h.embedding for h in hits], dtype=np.float64)
        chosen = _mmr_by_score([h.score for h in hits], vectors, lambda_mult, k)
        return [self._document(hits[i].cid, hits[i].text, hits[i].metadata) for i in chosen]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` from a vector of this store's model."""
        _no_more(kwargs, "max_marginal_relevance_search_by_vector")
        hits = self.client.query_by_vector(
            embedding,
            top_k=fetch_k,
            filter=filter,
            namespace=self.namespace,
            include_embedding=True,
        )
        candidates = [list(h.embedding or []) for h in hits]
        chosen = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float64), candidates, lambda_mult, k
        )
        return [self._document(hits[i].cid, hits[i].text, hits[i].metadata) for i in chosen]

    def hybrid_search(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        mode: str = "hybrid",
        **kwargs: Any,
    ) -> list[Document]:
        """Engram's hybrid search: meaning and words (BM25) fused, best first.

        Finds what similarity alone misses, such as a rare name or code that the
        model blurs. ``mode="keyword"`` or ``"vector"`` uses one channel.
        """
        return [doc for doc, _ in self.hybrid_search_with_score(query, k, filter, mode, **kwargs)]

    def hybrid_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        mode: str = "hybrid",
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """:meth:`hybrid_search` with each document's fused score (higher is better; in hybrid
        mode it is not a cosine similarity)."""
        _no_more(kwargs, "hybrid_search")
        vector = None
        if self._embeddings is not None and mode != "keyword":
            vector = self._embeddings.embed_query(query)  # the namespace's model, not the node's
        hits = self.client.search(
            query, top_k=k, filter=filter, namespace=self.namespace, mode=mode, vector=vector
        )
        return self._scored(hits)

    # --- construction and lifetime ---------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> EngramVectorStore:
        """A store (built from ``kwargs`` as the constructor's) holding ``texts``."""
        store = cls(embeddings=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def health(self) -> bool:
        """Whether the store or node answers and is ready (the original adapter's check)."""
        return self.client.is_online()

    def close(self) -> None:
        """Close the client this store opened (one passed as ``client=`` stays open)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> EngramVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EngramVectorStore({self.client.target.where!r}, namespace={self.namespace!r})"

    # --- ids and records -------------------------------------------------------------------

    @staticmethod
    def _check_id(doc_id: Any) -> str:
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError(f"a document id must be a non-empty string, got {doc_id!r}")
        return doc_id

    @staticmethod
    def _stored_metadata(metadata: Mapping[str, Any] | None, doc_id: str) -> dict[str, Any]:
        """The caller's metadata (copied, never changed in place) with the id under ID_KEY."""
        meta = dict(metadata or {})
        if ID_KEY in meta:
            raise ValueError(
                f"metadata key {ID_KEY!r} is reserved: it holds the document id (pass ids=)"
            )
        meta[ID_KEY] = doc_id
        return meta

    @staticmethod
    def _document(cid: str, text: str | None, metadata: Mapping[str, Any]) -> Document:
        """A record as LangChain sees it: its id is the caller's id (or the CID of a record
        written without LangChain), and the id key is not part of the metadata."""
        meta = dict(metadata)
        doc_id = meta.pop(ID_KEY, None)
        return Document(
            id=cid if doc_id is None else str(doc_id), page_content=text or "", metadata=meta
        )

    def _scored(self, hits: Iterable[QueryResult]) -> list[tuple[Document, float]]:
        return [(self._document(h.cid, h.text, h.metadata), float(h.score)) for h in hits]

    def _list(self, flt: Mapping[str, Any]) -> list[Record]:
        """Every record matching ``flt``, page by page."""
        out: list[Record] = []
        while True:
            page = self.client.list(_PAGE, len(out), namespace=self.namespace, filter=flt)
            out += page
            if len(page) < _PAGE:
                return out

    def _records(self, ids: Iterable[str]) -> list[Record]:
        """The records holding any of ``ids`` (an id may hold several while an update runs)."""
        wanted = list(dict.fromkeys(ids))
        out: list[Record] = []
        for start in range(0, len(wanted), _ID_CHUNK):
            out += self._list({ID_KEY: {"$in": wanted[start : start + _ID_CHUNK]}})
        return out

    def _all_records(self) -> list[Record]:
        """Every record of the namespace written through this integration."""
        return self._list({ID_KEY: {"$ne": ""}})  # ``$ne`` matches only records with the key

    def _delete_cids(self, cids: Iterable[str]) -> None:
        for cid in dict.fromkeys(cids):
            with contextlib.suppress(NotFoundError):  # gone already: another writer, a retry
                self.client.delete(cid, namespace=self.namespace)
