"""The node API's calls: each operation's codec on both sides of HTTP, and its in-process run.

A :class:`Call` describes one operation without doing it:

* a client sends it (:meth:`Call.request`) and parses the answer
  (:meth:`Call.parse`, :meth:`Call.failure`) through
  :func:`engram.api.exchange.exchange`;
* a server answers it at its :attr:`Call.routes`: :meth:`Call.from_request`
  builds the call from the parsed wire message and :meth:`Call.serve` runs it
  on the server's node and encodes the answer (:mod:`engram.server.routes` is
  generic over these);
* in-process, :meth:`Call.local` runs it on any :class:`~engram.api.node.Node`.

The SDK's plans yield calls, and so do the network client and the validator
when they talk to miners, so each operation's wire format is written here once.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np
from pydantic import BaseModel, ValidationError

from engram.api.exchange import HttpRequest, to_json
from engram.api.node import Lifecycle, Node, Stored
from engram.api.wire import (
    ApplyDeletionsResponse,
    BatchIngestRequest,
    BatchIngestResponse,
    CountResponse,
    DeleteRequest,
    DeleteResponse,
    DeletionsResponse,
    GatewayBatchIngestResponse,
    GatewayIngestResponse,
    GrantRequest,
    HealthResponse,
    IngestRequest,
    IngestResponse,
    LegacyFields,
    LifecycleRequest,
    LifecycleResponse,
    ListParams,
    ListRequest,
    ListResponse,
    NamespaceInfo,
    NamespaceParams,
    QueryRequest,
    QueryResponse,
    RecordOut,
    RevokeParams,
    SearchRequest,
    SearchResponse,
    SetLifecycleRequest,
)
from engram.cid import metadata_bytes, parse_cid, vector_bytes
from engram.config import DEFAULT_NAMESPACE, MODEL_VERSION, Limits
from engram.errors import (
    EngramError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    UpstreamError,
    error_from_wire,
)
from engram.proofs import Challenge, ChallengeResponse, InclusionProof
from engram.records import IngestItem, QueryResult, Record, check_ef, check_mode
from engram.security.access import Caller, Permission, SignedRequest
from engram.security.ratelimit import Budget
from engram.store.db import Deletion

T = TypeVar("T")
_SERVER_LIMITS = Limits()  # what a node accepts unless it was configured otherwise

_FLOAT32 = "{:.9g}".format  # 9 significant digits give back every float32 exactly


def _vector_json(vector: Any) -> bytes:
    """A vector as a JSON array of the float32 values the store keeps, so every mode hashes
    the same bytes. Written short: 40 % fewer bytes than doubles and faster to parse."""
    if isinstance(vector, str | bytes | Mapping):
        raise InvalidRequestError("embedding must be a flat list of numbers")
    arr = np.frombuffer(vector_bytes(vector), dtype="<f4")
    if np.signbit(arr[arr == 0]).any():  # "-0" would parse as the integer 0: keep the sign
        return to_json(arr.tolist())
    return ("[" + ",".join(map(_FLOAT32, arr.tolist())) + "]").encode()


@dataclass(frozen=True)
class BatchLimits:
    """How much one ingest call may carry; ``None`` means no limit (embedded: one transaction)."""

    max_items: int | None = None
    max_bytes: int | None = None


HTTP_BATCH_LIMITS = BatchLimits(_SERVER_LIMITS.max_batch_items, _SERVER_LIMITS.max_body_bytes)


def _params(namespace: str | None, **params: str | int) -> dict[str, str | int]:
    return params if namespace is None else {**params, "namespace": namespace}


@dataclass(frozen=True)
class Route:
    """One HTTP route that serves a call: what it parses, what it spends, what it answers."""

    method: str
    path: str
    budget: Budget | None = Budget.QUERY  # None: answered before any signature or limit
    body: type[BaseModel] | None = None  # the JSON body's wire message
    params: type[BaseModel] | None = None  # the query string's wire message
    response: type[BaseModel] | None = None
    replicated_response: type[BaseModel] | None = None  # a network's answer names replicas
    body_optional: bool = False
    exclude_none: bool = False


@dataclass(frozen=True)
class Incoming:
    """What a route parsed from one request, for :meth:`Call.from_request`."""

    path: Mapping[str, str]
    params: Any = None
    body: Any = None


class Call(Generic[T]):
    """One operation, described: how a client sends it over HTTP, how a server answers it,
    and how it runs on a node in this process."""

    # Non-2xx statuses whose body is still this call's answer (health says 503 while starting).
    accepts: ClassVar[frozenset[int]] = frozenset()
    operation: ClassVar[str] = ""  # the Node method it runs ("" for a miner's extras)
    routes: ClassVar[tuple[Route, ...]] = ()  # where a server answers it

    # --- the client side ---------------------------------------------------------------

    def request(self) -> HttpRequest:
        raise NotImplementedError

    def parse(self, body: Any) -> T:
        raise NotImplementedError

    def failure(self, status: int, body: Any, retried: bool) -> T:
        """An error answer: by default the server's exception, rebuilt from its body."""
        raise error_from_wire(status, body)

    # --- in this process -------------------------------------------------------------------

    def local(self, node: Node, caller: Caller | None = None) -> T:
        """Run the operation on a node in this process, for ``caller`` (default: the node's)."""
        raise NotImplementedError(f"{type(self).__name__} is answered over HTTP only")

    # --- the server side -------------------------------------------------------------------

    @classmethod
    def from_request(cls, incoming: Incoming) -> Call[T]:
        """The call a request to one of :attr:`routes` describes; bad input raises a 4xx."""
        raise NotImplementedError

    @classmethod
    def credentials(cls, incoming: Incoming) -> LegacyFields | None:
        """The original clients' namespace fields the request carries, if any."""
        return incoming.body if isinstance(incoming.body, LegacyFields) else None

    def cost(self) -> float:
        """Rate-limit tokens the request spends."""
        return 1.0

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        """Run on a server's node and encode the answer: the inverse of :meth:`parse`."""
        raise NotImplementedError

    def status(self, answer: Mapping[str, Any]) -> int:
        return 200


def encode_item(item: IngestItem) -> bytes:
    """An item as the protocol's ingest request (JSON); vector and metadata checked as the store
    checks them, so a bad item fails here with the store's message."""
    metadata_bytes(item.metadata, item.model_version)
    doc = {
        "text": item.text,
        "metadata": dict(item.metadata),
        "model_version": item.model_version,
        "namespace": item.namespace,
    }
    if item.writer is not None:
        doc["writer"] = item.writer
    if item.embedding is None:
        return to_json(doc)
    return to_json(doc)[:-1] + b',"raw_embedding":' + _vector_json(item.embedding) + b"}"


def item_from_request(req: IngestRequest) -> IngestItem:
    """A wire ingest request as an item: text, a vector, or both on purpose."""
    if req.text is None and req.raw_embedding is None:
        raise InvalidRequestError(
            "give text, raw_embedding, or both (to store this vector with this text)"
        )
    return IngestItem(
        text=req.text,
        embedding=req.raw_embedding,
        metadata=req.metadata or {},
        namespace=req.namespace,
        model_version=req.model_version,
        writer=req.writer,
    )


def _written(stored: Stored, replicated: bool) -> dict[str, Any]:
    extra = {"replicas": list(stored.replicas)} if replicated else {}
    return {"cid": stored.cid, "error": None, **extra}


@dataclass(frozen=True)
class IngestOne(Call[str]):
    """A single write: the server raises its typed error (e.g. a dimension mismatch)."""

    operation: ClassVar[str] = "ingest"
    routes: ClassVar[tuple[Route, ...]] = (
        Route(
            "POST",
            "/IngestSynapse",
            Budget.INGEST,
            body=IngestRequest,
            response=IngestResponse,
            replicated_response=GatewayIngestResponse,
        ),
    )
    item: IngestItem

    def request(self) -> HttpRequest:
        return HttpRequest("POST", "/IngestSynapse", body=encode_item(self.item))

    def parse(self, body: Any) -> str:
        if not isinstance(body.get("cid"), str):
            raise error_from_wire(400, body)  # an older node reports errors with status 200
        return body["cid"]

    def _stored(self, node: Node, caller: Caller | None) -> Stored:
        (outcome,) = node.ingest([self.item], caller)
        if isinstance(outcome, EngramError):
            raise outcome
        return outcome

    def local(self, node: Node, caller: Caller | None = None) -> str:
        return self._stored(node, caller).cid

    @classmethod
    def from_request(cls, incoming: Incoming) -> IngestOne:
        return cls(item_from_request(incoming.body))

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return _written(self._stored(node, caller), replicated)


class Outcome(NamedTuple):
    """One batch item's fate: its CID, or why it failed (message and error code)."""

    cid: str | None
    error: str | None = None
    code: str | None = None  # the error's code (see engram.errors), when the node sent one

    @classmethod
    def failed(cls, error: EngramError) -> Outcome:
        return cls(None, error.message, error.code)


@dataclass(frozen=True)
class IngestMany(Call[list[Outcome]]):
    """One chunk of a batch; ``encoded`` holds each item's JSON when it was sized for HTTP.

    On a server, ``invalid`` holds the request's items that made no item (by position).
    """

    operation: ClassVar[str] = "ingest"
    routes: ClassVar[tuple[Route, ...]] = (
        Route(
            "POST",
            "/BatchIngestSynapse",
            Budget.INGEST,
            body=BatchIngestRequest,
            response=BatchIngestResponse,
            replicated_response=GatewayBatchIngestResponse,
        ),
    )
    items: list[IngestItem]
    encoded: list[bytes] | None = None
    invalid: tuple[tuple[int, EngramError], ...] = ()

    def request(self) -> HttpRequest:
        encoded = self.encoded or [encode_item(i) for i in self.items]
        return HttpRequest("POST", "/BatchIngestSynapse", body=_batch_body(encoded))

    def parse(self, body: Any) -> list[Outcome]:
        cids, errors = body["cids"], body["errors"]
        codes = body.get("codes") or [None] * len(cids)  # older nodes send no codes
        if not len(cids) == len(errors) == len(codes) == len(self.items):
            raise UpstreamError(
                f"the node answered {len(cids)} results for a batch of {len(self.items)}"
            )
        return [Outcome(*o) for o in zip(cids, errors, codes, strict=True)]

    def local(self, node: Node, caller: Caller | None = None) -> list[Outcome]:
        return [
            Outcome.failed(o) if isinstance(o, EngramError) else Outcome(o.cid)
            for o in node.ingest(self.items, caller)
        ]

    @classmethod
    def from_request(cls, incoming: Incoming) -> IngestMany:
        items: list[IngestItem] = []
        invalid: list[tuple[int, EngramError]] = []
        for i, req in enumerate(incoming.body.items):
            try:
                items.append(item_from_request(req))
            except EngramError as exc:
                invalid.append((i, exc))
        return cls(items, invalid=tuple(invalid))

    @classmethod
    def credentials(cls, incoming: Incoming) -> LegacyFields | None:
        return incoming.body.items[0]  # one caller per request: its first item speaks for it

    def cost(self) -> float:
        return len(self.items) + len(self.invalid)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        stored = iter(node.ingest(self.items, caller))
        failed = dict(self.invalid)
        done = [failed.get(i) or next(stored) for i in range(len(self.items) + len(failed))]
        answer: dict[str, Any] = {
            "cids": [o.cid if isinstance(o, Stored) else None for o in done],
            "errors": [o.message if isinstance(o, EngramError) else None for o in done],
            "codes": [o.code if isinstance(o, EngramError) else None for o in done],
        }
        if replicated:
            answer["replicas"] = [list(o.replicas) if isinstance(o, Stored) else [] for o in done]
        return answer


def _batch_body(encoded: Sequence[bytes]) -> bytes:
    return b'{"items":[' + b",".join(encoded) + b"]}"


_BATCH_OVERHEAD = len(_batch_body([]))


@dataclass(frozen=True)
class Query(Call[list[QueryResult]]):
    operation: ClassVar[str] = "query"
    routes: ClassVar[tuple[Route, ...]] = (
        Route(
            "POST",
            "/QuerySynapse",
            body=QueryRequest,
            response=QueryResponse,
            exclude_none=True,
        ),
    )
    text: str | None
    vector: list[float] | None
    top_k: int
    filter: Mapping[str, Any] | None
    namespace: str | None
    include_embedding: bool
    ef: int | None = None  # the HNSW beam width; None: each namespace's calibrated default

    def __post_init__(self) -> None:
        check_ef(self.ef, _SERVER_LIMITS)

    def request(self) -> HttpRequest:
        doc = {
            "query_text": self.text,
            "query_vector": self.vector,
            "top_k": self.top_k,
            "filter": None if self.filter is None else dict(self.filter),
            "namespace": self.namespace,
            "include_embedding": self.include_embedding,
            **_ef_field(self.ef),
        }
        return HttpRequest("POST", "/QuerySynapse", body=to_json(doc))

    def parse(self, body: Any) -> list[QueryResult]:
        return _hits_from_wire(body)

    def local(self, node: Node, caller: Caller | None = None) -> list[QueryResult]:
        return node.query(
            self.text,
            self.vector,
            self.top_k,
            self.filter,
            self.namespace,
            self.include_embedding,
            caller,
            ef=self.ef,
        )

    @classmethod
    def from_request(cls, incoming: Incoming) -> Query:
        b = incoming.body
        return cls(
            b.query_text, b.query_vector, b.top_k, b.filter, b.namespace, b.include_embedding, b.ef
        )

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return _hits_to_wire(self, node, caller)


def _ef_field(ef: int | None) -> dict[str, int]:
    """``ef`` on the wire only when a search asks for one: nodes that predate it refuse the
    field, and ``None`` means their own default anyway."""
    return {} if ef is None else {"ef": ef}


def _hits_from_wire(body: Any) -> list[QueryResult]:
    return [
        QueryResult(
            cid=hit["cid"],
            score=float(hit["score"]),
            metadata=hit.get("metadata") or {},
            text=hit.get("text"),
            embedding=hit.get("embedding"),
            channels=hit.get("channels"),
        )
        for hit in body["results"]
    ]


def _hits_to_wire(
    call: Call[list[QueryResult]], node: Node, caller: Caller | None
) -> dict[str, Any]:
    """Run a query or search on a server's node: its hits, and how long the node took."""
    started = time.perf_counter()
    results = call.local(node, caller)
    latency_ms = (time.perf_counter() - started) * 1000
    # A QueryResult is already its own wire dict: copy it rather than build it again.
    return {"results": [dict(r) for r in results], "latency_ms": latency_ms}


@dataclass(frozen=True)
class Search(Call[list[QueryResult]]):
    """Hybrid search (``POST /search``, the seed memory server's shape)."""

    operation: ClassVar[str] = "search"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", "/search", body=SearchRequest, response=SearchResponse),
    )
    text: str
    top_k: int
    filter: Mapping[str, Any] | None
    namespace: str | None
    mode: str = "hybrid"
    vector: list[float] | None = None  # the text already embedded (the network embeds once)
    ef: int | None = None  # the vector channel's HNSW beam width (None: the node's default)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        check_ef(self.ef, _SERVER_LIMITS)
        if not isinstance(self.text, str) or not self.text.strip():
            raise InvalidRequestError("search text must be a non-empty string")

    def request(self) -> HttpRequest:
        doc = {
            "query": self.text,
            "limit": self.top_k,
            "filters": None if self.filter is None else dict(self.filter),
            "namespace": self.namespace,
            "mode": self.mode,
            "query_vector": self.vector,
            **_ef_field(self.ef),
        }
        return HttpRequest("POST", "/search", body=to_json(doc))

    def parse(self, body: Any) -> list[QueryResult]:
        return _hits_from_wire(body)

    def local(self, node: Node, caller: Caller | None = None) -> list[QueryResult]:
        return node.search(
            self.text,
            self.top_k,
            self.filter,
            self.namespace,
            self.mode,
            self.vector,
            caller,
            ef=self.ef,
        )

    @classmethod
    def from_request(cls, incoming: Incoming) -> Search:
        b = incoming.body
        return cls(b.query, b.limit, b.filters, b.namespace, b.mode, b.query_vector, b.ef)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return _hits_to_wire(self, node, caller)


def record_from_wire(doc: Mapping[str, Any]) -> Record:
    return Record(
        cid=doc["cid"],
        embedding=np.asarray(doc["embedding"], dtype="<f4"),
        metadata=doc.get("metadata") or {},
        text=doc.get("text"),
        namespace=doc.get("namespace") or DEFAULT_NAMESPACE,
        model_version=doc.get("model_version") or MODEL_VERSION,
        writer=doc.get("writer"),
    )


def record_to_wire(record: Record) -> dict[str, Any]:
    return RecordOut(**record.to_dict()).model_dump()


@dataclass(frozen=True)
class Get(Call[Record | None]):
    operation: ClassVar[str] = "get"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/retrieve/{cid}", params=NamespaceParams, response=RecordOut),
    )
    cid: str
    namespace: str | None  # None: a node searches every namespace (an audit names only a CID)

    def __post_init__(self) -> None:
        parse_cid(self.cid)  # a malformed CID is the caller's error, before anything is sent

    def request(self) -> HttpRequest:
        path = "/retrieve/" + quote(self.cid, safe=":")
        return HttpRequest("GET", path, _params(self.namespace))

    def parse(self, body: Any) -> Record | None:
        return record_from_wire(body)

    def failure(self, status: int, body: Any, retried: bool) -> Record | None:
        error = error_from_wire(status, body)
        if isinstance(error, NotFoundError):
            return None
        raise error

    def local(self, node: Node, caller: Caller | None = None) -> Record | None:
        return node.get(self.cid, self.namespace, caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> Get:
        return cls(incoming.path["cid"], incoming.params.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        record = self.local(node, caller)
        if record is None:
            where = (
                f"namespace {self.namespace}" if self.namespace else "any namespace you may read"
            )
            raise NotFoundError(f"no record {self.cid} in {where}")
        return record_to_wire(record)


@dataclass(frozen=True)
class Delete(Call[None]):
    """A delete; ``DELETE /retrieve/{cid}`` (with an optional JSON body) is the original
    clients' spelling of it."""

    operation: ClassVar[str] = "delete"
    routes: ClassVar[tuple[Route, ...]] = (
        Route(
            "DELETE",
            "/records/{cid}",
            Budget.INGEST,
            params=NamespaceParams,
            response=DeleteResponse,
        ),
        Route(
            "DELETE",
            "/retrieve/{cid}",
            Budget.INGEST,
            params=NamespaceParams,
            body=DeleteRequest,
            body_optional=True,
            response=DeleteResponse,
        ),
    )
    cid: str
    namespace: str | None

    def __post_init__(self) -> None:
        parse_cid(self.cid)

    def request(self) -> HttpRequest:
        return HttpRequest(
            "DELETE", "/records/" + quote(self.cid, safe=":"), _params(self.namespace)
        )

    def parse(self, body: Any) -> None:
        return None

    def failure(self, status: int, body: Any, retried: bool) -> None:
        error = error_from_wire(status, body)
        if retried and isinstance(error, NotFoundError):
            return None  # an earlier attempt (timed out or 5xx to us) may have deleted it
        raise error

    def local(self, node: Node, caller: Caller | None = None) -> None:
        node.delete(self.cid, self.namespace, caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> Delete:
        namespace = incoming.params.namespace
        if namespace is None and incoming.body is not None:
            namespace = incoming.body.namespace
        return cls(incoming.path["cid"], namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        self.local(node, caller)
        return {"cid": self.cid, "deleted": True}

    @classmethod
    def from_signed(cls, signed: SignedRequest) -> Delete:
        """The delete a signed request asked for (a kept proof); a 400 for any other request,
        and for one that carries a namespace key (a secret, never kept or shown)."""
        for route in cls.routes:
            pattern = re.escape(route.path).replace(re.escape("{cid}"), "(?P<cid>[^/]+)")
            found = re.fullmatch(pattern, signed.path)
            if found is not None and route.method == signed.method:
                break
        else:
            raise InvalidRequestError(f"{signed.method} {signed.path} is no delete")
        given = parse_qs(urlsplit(signed.target).query).get("namespace")
        namespace = given[-1] if given else None
        if signed.body:
            try:
                body = DeleteRequest.model_validate_json(signed.body)
            except ValidationError as exc:
                raise InvalidRequestError(f"the delete's body is not valid: {exc}") from None
            if body.namespace_key is not None:
                raise InvalidRequestError("a delete that carries a namespace key proves nothing")
            namespace = namespace or body.namespace
        return cls(unquote(found["cid"]), namespace)


@dataclass(frozen=True)
class ListRecords(Call[list[Record]]):
    """A page of records; with a filter it is the original clients' ``POST /list``."""

    operation: ClassVar[str] = "list"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/list", params=ListParams, response=ListResponse),
        Route("POST", "/list", body=ListRequest, response=ListResponse),
    )
    limit: int
    offset: int
    namespace: str | None
    filter: Mapping[str, Any] | None = None

    def request(self) -> HttpRequest:
        if self.filter is not None:
            doc = {
                "limit": self.limit,
                "offset": self.offset,
                "filter": dict(self.filter),
                "namespace": self.namespace,
            }
            return HttpRequest("POST", "/list", body=to_json(doc))
        params = _params(self.namespace, limit=self.limit, offset=self.offset)
        return HttpRequest("GET", "/list", params)

    def parse(self, body: Any) -> list[Record]:
        return [record_from_wire(doc) for doc in body["records"]]

    def local(self, node: Node, caller: Caller | None = None) -> list[Record]:
        return node.list(self.limit, self.offset, self.namespace, self.filter, caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> ListRecords:
        p = incoming.body if incoming.body is not None else incoming.params
        return cls(p.limit, p.offset, p.namespace, getattr(p, "filter", None) or None)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        records = self.local(node, caller)
        if self.filter or replicated:  # a second scan (of every miner): report what was seen
            total = self.offset + len(records)
        else:
            total = node.count(self.namespace or DEFAULT_NAMESPACE, caller)
        return {
            "records": [record_to_wire(r) for r in records],
            "total": total,
            "limit": self.limit,
            "offset": self.offset,
        }


@dataclass(frozen=True)
class Count(Call[int]):
    operation: ClassVar[str] = "count"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/count", params=NamespaceParams, response=CountResponse),
    )
    namespace: str | None

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/count", _params(self.namespace))

    def parse(self, body: Any) -> int:
        return int(body["count"])

    def local(self, node: Node, caller: Caller | None = None) -> int:
        return node.count(self.namespace, caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> Count:
        return cls(incoming.params.namespace)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return {"count": self.local(node, caller), "namespace": self.namespace}


@dataclass(frozen=True)
class Stats(Call[dict[str, Any]]):
    operation: ClassVar[str] = "stats"
    routes: ClassVar[tuple[Route, ...]] = (Route("GET", "/stats"),)

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/stats")

    def parse(self, body: Any) -> dict[str, Any]:
        return {"mode": "http", **body}

    def local(self, node: Node, caller: Caller | None = None) -> dict[str, Any]:
        return node.stats(caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> Stats:
        return cls()

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return self.local(node, caller)


@dataclass(frozen=True)
class Health(Call[dict[str, Any]]):
    """Whether the node can serve; a node that is not ready answers 503 with the same body."""

    operation: ClassVar[str] = "health"
    accepts: ClassVar[frozenset[int]] = frozenset({503})
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/health", budget=None, response=HealthResponse),
    )

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/health")

    def parse(self, body: Any) -> dict[str, Any]:
        if "ready" not in body:  # a 503 from something that is not a node
            raise UnavailableError(str(body.get("error") or "the node is unavailable"))
        return {"mode": "http", **body}

    def local(self, node: Node, caller: Caller | None = None) -> dict[str, Any]:
        return node.health()

    @classmethod
    def from_request(cls, incoming: Incoming) -> Health:
        return cls()

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return self.local(node, caller)

    def status(self, answer: Mapping[str, Any]) -> int:
        return 200 if answer.get("ready") else UnavailableError.status


@dataclass(frozen=True)
class SetGrant(Call[dict[str, Any]]):
    """Grant (or revoke) one hotkey one permission in a namespace the caller owns."""

    operation: ClassVar[str] = "set_grant"
    routes: ClassVar[tuple[Route, ...]] = (
        Route(
            "POST",
            "/namespaces/{namespace}/grants",
            Budget.INGEST,
            body=GrantRequest,
            response=NamespaceInfo,
        ),
        Route(
            "DELETE",
            "/namespaces/{namespace}/grants/{hotkey}",
            Budget.INGEST,
            params=RevokeParams,
            response=NamespaceInfo,
        ),
    )
    namespace: str
    hotkey: str
    permission: Permission
    granted: bool

    def request(self) -> HttpRequest:
        path = f"/namespaces/{quote(self.namespace, safe='')}/grants"
        if self.granted:
            doc = {"hotkey": self.hotkey, "permission": self.permission.value}
            return HttpRequest("POST", path, body=to_json(doc))
        return HttpRequest(
            "DELETE", f"{path}/{quote(self.hotkey, safe='')}", {"permission": self.permission.value}
        )

    def parse(self, body: Any) -> dict[str, Any]:
        return dict(body)

    def local(self, node: Node, caller: Caller | None = None) -> dict[str, Any]:
        return node.set_grant(self.namespace, self.hotkey, self.permission, self.granted, caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> SetGrant:
        namespace = incoming.path["namespace"]
        if incoming.body is not None:
            return cls(namespace, incoming.body.hotkey, incoming.body.permission, True)
        return cls(namespace, incoming.path["hotkey"], incoming.params.permission, False)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return self.local(node, caller)


@dataclass(frozen=True)
class DescribeNamespace(Call[dict[str, Any]]):
    operation: ClassVar[str] = "describe_namespace"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/namespaces/{namespace}", response=NamespaceInfo),
    )
    namespace: str

    def request(self) -> HttpRequest:
        return HttpRequest("GET", f"/namespaces/{quote(self.namespace, safe='')}")

    def parse(self, body: Any) -> dict[str, Any]:
        return dict(body)

    def local(self, node: Node, caller: Caller | None = None) -> dict[str, Any]:
        return node.describe_namespace(self.namespace, caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> DescribeNamespace:
        return cls(incoming.path["namespace"])

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return self.local(node, caller)


def _lifecycles(body: Any) -> dict[str, Lifecycle]:
    return {
        cid: Lifecycle(s["state"], s.get("card"), float(s["updated_at"]))
        for cid, s in body["states"].items()
    }


def _lifecycles_to_wire(states: Mapping[str, Lifecycle]) -> dict[str, Any]:
    return {
        "states": {
            cid: {"state": s.state, "card": s.card, "updated_at": s.updated_at}
            for cid, s in states.items()
        }
    }


@dataclass(frozen=True)
class GetLifecycle(Call[dict[str, Lifecycle]]):
    """The lifecycle entries (state, FSRS card) of some memories."""

    operation: ClassVar[str] = "lifecycle"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", "/lifecycle", body=LifecycleRequest, response=LifecycleResponse),
    )
    namespace: str | None
    cids: tuple[str, ...]

    def request(self) -> HttpRequest:
        doc = {"namespace": self.namespace, "cids": list(self.cids)}
        return HttpRequest("POST", "/lifecycle", body=to_json(doc))

    def parse(self, body: Any) -> dict[str, Lifecycle]:
        return _lifecycles(body)

    def local(self, node: Node, caller: Caller | None = None) -> dict[str, Lifecycle]:
        return node.lifecycle(self.namespace, self.cids, caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> GetLifecycle:
        return cls(incoming.body.namespace, tuple(incoming.body.cids))

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return _lifecycles_to_wire(self.local(node, caller))


@dataclass(frozen=True)
class SetLifecycle(Call[dict[str, Lifecycle]]):
    """Archive, unarchive, forget or review (recall) some memories."""

    operation: ClassVar[str] = "set_lifecycle"
    routes: ClassVar[tuple[Route, ...]] = (
        Route(
            "PUT",
            "/lifecycle",
            Budget.INGEST,
            body=SetLifecycleRequest,
            response=LifecycleResponse,
        ),
    )
    namespace: str | None
    cids: tuple[str, ...]
    action: str

    def request(self) -> HttpRequest:
        doc = {"namespace": self.namespace, "cids": list(self.cids), "action": self.action}
        return HttpRequest("PUT", "/lifecycle", body=to_json(doc))

    def parse(self, body: Any) -> dict[str, Lifecycle]:
        return _lifecycles(body)

    def local(self, node: Node, caller: Caller | None = None) -> dict[str, Lifecycle]:
        return node.set_lifecycle(self.namespace, self.cids, self.action, caller)

    @classmethod
    def from_request(cls, incoming: Incoming) -> SetLifecycle:
        b = incoming.body
        return cls(b.namespace, tuple(b.cids), b.action)

    def cost(self) -> float:
        return len(self.cids)

    def serve(self, node: Node, caller: Caller | None, replicated: bool) -> dict[str, Any]:
        return _lifecycles_to_wire(self.local(node, caller))


@dataclass(frozen=True)
class Relayed(Call[T]):
    """A user's signed request sent on unchanged, answered as ``call`` is: a gateway acts
    for its signer, whom each miner verifies itself."""

    signed: SignedRequest
    call: Call[T]

    def request(self) -> HttpRequest:
        return HttpRequest(self.signed.method, self.signed.target, body=self.signed.body or None)

    def parse(self, body: Any) -> T:
        return self.call.parse(body)

    def failure(self, status: int, body: Any, retried: bool) -> T:
        return self.call.failure(status, body, retried)


def serves(call: type[Call[Any]], signed: SignedRequest) -> bool:
    """Whether ``signed`` was sent to one of the routes of the ``call`` operation."""
    return any(
        route.method == signed.method
        and re.fullmatch(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(route.path)), signed.path)
        for route in call.routes
    )


def writes(call: type[Call[Any]]) -> bool:
    """Whether the ``call`` operation changes what a node holds (its routes spend the ingest
    budget)."""
    return any(route.budget is Budget.INGEST for route in call.routes)


NODE_CALLS: tuple[type[Call[Any]], ...] = (
    IngestOne,
    IngestMany,
    Query,
    Search,
    Get,
    Delete,
    ListRecords,
    Count,
    Stats,
    Health,
    SetGrant,
    DescribeNamespace,
    GetLifecycle,
    SetLifecycle,
)
"""Every call a node server answers; the router mounts each of their routes."""


def split_batch(
    items: Sequence[IngestItem], limits: BatchLimits
) -> tuple[list[tuple[list[int], IngestMany]], list[tuple[int, str]]]:
    """Chunks within the transport's item and byte limits, and the items that cannot be sent.

    Returns ``[(indices into items, call)]`` and ``[(index, error)]``: an item
    with an invalid vector or metadata, or too big for any request, fails
    alone, like any other failed item of a batch.
    """
    if limits.max_items is None and limits.max_bytes is None:
        return ([(list(range(len(items))), IngestMany(list(items)))] if items else []), []
    max_items = limits.max_items or len(items) or 1
    max_bytes = limits.max_bytes or math.inf
    chunks: list[tuple[list[int], IngestMany]] = []
    rejected: list[tuple[int, str]] = []
    idx: list[int] = []
    enc: list[bytes] = []
    size = _BATCH_OVERHEAD
    for i, item in enumerate(items):
        try:
            encoded = encode_item(item)
        except EngramError as exc:
            rejected.append((i, exc.message))
            continue
        if _BATCH_OVERHEAD + len(encoded) > max_bytes:
            rejected.append(
                (i, f"item is {len(encoded)} bytes of JSON, over the node's {max_bytes}-byte limit")
            )
            continue
        if idx and (len(idx) >= max_items or size + 1 + len(encoded) > max_bytes):
            chunks.append((idx, IngestMany([items[j] for j in idx], enc)))
            idx, enc, size = [], [], _BATCH_OVERHEAD
        size += len(encoded) + (1 if idx else 0)  # the comma between items
        idx.append(i)
        enc.append(encoded)
    if idx:
        chunks.append((idx, IngestMany([items[j] for j in idx], enc)))
    return chunks, rejected


def store_records(records: Sequence[Record]) -> IngestMany:
    """A batch that stores these exact records (vector, metadata and text) on a node."""
    return IngestMany(
        [
            IngestItem(
                text=r.text,
                embedding=r.embedding,
                metadata=r.metadata,
                namespace=r.namespace,
                model_version=r.model_version,
                writer=r.writer,
            )
            for r in records
        ]
    )


@dataclass(frozen=True)
class DeletionsCall(Call[list[Deletion]]):
    """A page of the tombstones a miner kept, with their proofs (asked by validators)."""

    after: int
    limit: int

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/deletions", {"after": self.after, "limit": self.limit})

    def parse(self, body: Any) -> list[Deletion]:
        page = DeletionsResponse.model_validate(body)
        return [Deletion(**d.model_dump()) for d in page.deletions]


@dataclass(frozen=True)
class ApplyDeletionsCall(Call[list[str]]):
    """Deletions other replicas kept, for a miner to apply where their proofs hold."""

    deletions: Sequence[Deletion]

    def request(self) -> HttpRequest:
        doc = {"deletions": [asdict(d) for d in self.deletions]}
        return HttpRequest("POST", "/deletions", body=to_json(doc))

    def parse(self, body: Any) -> list[str]:
        return ApplyDeletionsResponse.model_validate(body).outcomes


@dataclass(frozen=True)
class ChallengeCall(Call[ChallengeResponse]):
    """A storage challenge (a miner's extra, not a node operation)."""

    challenge: Challenge

    def request(self) -> HttpRequest:
        c = self.challenge
        doc = {"cid": c.cid, "nonce_hex": c.nonce_hex, "expires_at": c.expires_at}
        return HttpRequest("POST", "/ChallengeSynapse", body=to_json(doc))

    def parse(self, body: Any) -> ChallengeResponse:
        return ChallengeResponse(str(body["embedding_hash"]), str(body["proof"]))


@dataclass(frozen=True)
class CommitmentCall(Call[tuple[str, int]]):
    """The node's inventory commitment: Merkle root and number of CIDs."""

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/commitment")

    def parse(self, body: Any) -> tuple[str, int]:
        return str(body["root"]), int(body["count"])


@dataclass(frozen=True)
class InventoryCall(Call[tuple[str, InclusionProof]]):
    """The CID at ``index`` of the node's sorted inventory, with its inclusion proof."""

    index: int

    def request(self) -> HttpRequest:
        return HttpRequest("GET", f"/inventory/{self.index}")

    def parse(self, body: Any) -> tuple[str, InclusionProof]:
        proof = InclusionProof(
            cid=str(body["cid"]),
            index=int(body["index"]),
            siblings=[(str(side), str(h)) for side, h in body["siblings"]],
        )
        return str(body["root"]), proof
