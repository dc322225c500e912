"""The node API's calls: each operation as a request/response codec and an in-process run.

A :class:`Call` describes one operation without doing it. Over HTTP it
becomes a request (:meth:`Call.request`) and its answer is parsed back
(:meth:`Call.parse`, :meth:`Call.failure`) by :func:`engram.api.exchange.exchange`;
in-process, :meth:`Call.local` runs it on any :class:`~engram.api.node.Node`.
The SDK's plans yield calls, and so do the network client and the validator
when they talk to miners, so every request a client sends is written here once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import quote

import numpy as np

from engram.api.exchange import HttpRequest, to_json
from engram.api.node import Node
from engram.cid import metadata_bytes, vector_bytes
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
from engram.records import IngestItem, QueryResult, Record
from engram.security.access import Permission

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


class Call(Generic[T]):
    """One operation, described: how to send it over HTTP and how to run it in-process."""

    # Non-2xx statuses whose body is still this call's answer (health says 503 while starting).
    accepts: ClassVar[frozenset[int]] = frozenset()
    operation: ClassVar[str] = ""  # the Node method it runs ("" for a miner's extras)

    def request(self) -> HttpRequest:
        raise NotImplementedError

    def parse(self, body: Any) -> T:
        raise NotImplementedError

    def local(self, node: Node) -> T:
        """Run the operation on a node in this process (embedded store, the network)."""
        raise NotImplementedError(f"{type(self).__name__} is answered over HTTP only")

    def failure(self, status: int, body: Any, retried: bool) -> T:
        """An error answer: by default the server's exception, rebuilt from its body."""
        raise error_from_wire(status, body)


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
    if item.embedding is None:
        return to_json(doc)
    return to_json(doc)[:-1] + b',"raw_embedding":' + _vector_json(item.embedding) + b"}"


@dataclass(frozen=True)
class IngestOne(Call[str]):
    """A single write: the server raises its typed error (e.g. a dimension mismatch)."""

    operation: ClassVar[str] = "ingest"
    item: IngestItem

    def request(self) -> HttpRequest:
        return HttpRequest("POST", "/IngestSynapse", body=encode_item(self.item))

    def parse(self, body: Any) -> str:
        if not isinstance(body.get("cid"), str):
            raise error_from_wire(400, body)  # an older node reports errors with status 200
        return body["cid"]

    def local(self, node: Node) -> str:
        (outcome,) = node.ingest([self.item])
        if isinstance(outcome, EngramError):
            raise outcome
        return outcome.cid


Outcome = tuple[str | None, str | None]  # (cid, error message) of one batch item


@dataclass(frozen=True)
class IngestMany(Call[list[Outcome]]):
    """One chunk of a batch; ``encoded`` holds each item's JSON when it was sized for HTTP."""

    operation: ClassVar[str] = "ingest"

    items: list[IngestItem]
    encoded: list[bytes] | None = None

    def request(self) -> HttpRequest:
        encoded = self.encoded or [encode_item(i) for i in self.items]
        return HttpRequest("POST", "/BatchIngestSynapse", body=_batch_body(encoded))

    def parse(self, body: Any) -> list[Outcome]:
        cids, errors = body["cids"], body["errors"]
        if len(cids) != len(self.items) or len(errors) != len(self.items):
            raise UpstreamError(
                f"the node answered {len(cids)} results for a batch of {len(self.items)}"
            )
        return list(zip(cids, errors, strict=True))

    def local(self, node: Node) -> list[Outcome]:
        return [
            (None, o.message) if isinstance(o, EngramError) else (o.cid, None)
            for o in node.ingest(self.items)
        ]


def _batch_body(encoded: Sequence[bytes]) -> bytes:
    return b'{"items":[' + b",".join(encoded) + b"]}"


_BATCH_OVERHEAD = len(_batch_body([]))


@dataclass(frozen=True)
class Query(Call[list[QueryResult]]):
    operation: ClassVar[str] = "query"
    text: str | None
    vector: list[float] | None
    top_k: int
    filter: Mapping[str, Any] | None
    namespace: str | None
    include_embedding: bool

    def request(self) -> HttpRequest:
        doc = {
            "query_text": self.text,
            "query_vector": self.vector,
            "top_k": self.top_k,
            "filter": None if self.filter is None else dict(self.filter),
            "namespace": self.namespace,
            "include_embedding": self.include_embedding,
        }
        return HttpRequest("POST", "/QuerySynapse", body=to_json(doc))

    def parse(self, body: Any) -> list[QueryResult]:
        return [
            QueryResult(
                cid=hit["cid"],
                score=float(hit["score"]),
                metadata=hit.get("metadata") or {},
                text=hit.get("text"),
                embedding=hit.get("embedding"),
            )
            for hit in body["results"]
        ]

    def local(self, node: Node) -> list[QueryResult]:
        return node.query(
            self.text, self.vector, self.top_k, self.filter, self.namespace, self.include_embedding
        )


def record_from_wire(doc: Mapping[str, Any]) -> Record:
    return Record(
        cid=doc["cid"],
        embedding=np.asarray(doc["embedding"], dtype="<f4"),
        metadata=doc.get("metadata") or {},
        text=doc.get("text"),
        namespace=doc.get("namespace") or DEFAULT_NAMESPACE,
        model_version=doc.get("model_version") or MODEL_VERSION,
    )


@dataclass(frozen=True)
class Get(Call[Record | None]):
    operation: ClassVar[str] = "get"
    cid: str
    namespace: str | None  # None: a node searches every namespace (an audit names only a CID)

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

    def local(self, node: Node) -> Record | None:
        return node.get(self.cid, self.namespace)


@dataclass(frozen=True)
class Delete(Call[None]):
    operation: ClassVar[str] = "delete"
    cid: str
    namespace: str | None

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

    def local(self, node: Node) -> None:
        node.delete(self.cid, self.namespace)


@dataclass(frozen=True)
class ListRecords(Call[list[Record]]):
    """A page of records; with a filter it is the original clients' ``POST /list``."""

    operation: ClassVar[str] = "list"
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

    def local(self, node: Node) -> list[Record]:
        return node.list(self.limit, self.offset, self.namespace, self.filter)


@dataclass(frozen=True)
class Count(Call[int]):
    operation: ClassVar[str] = "count"
    namespace: str | None

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/count", _params(self.namespace))

    def parse(self, body: Any) -> int:
        return int(body["count"])

    def local(self, node: Node) -> int:
        return node.count(self.namespace)


@dataclass(frozen=True)
class Stats(Call[dict[str, Any]]):
    operation: ClassVar[str] = "stats"

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/stats")

    def parse(self, body: Any) -> dict[str, Any]:
        return {"mode": "http", **body}

    def local(self, node: Node) -> dict[str, Any]:
        return node.stats()


@dataclass(frozen=True)
class Health(Call[dict[str, Any]]):
    operation: ClassVar[str] = "health"
    accepts: ClassVar[frozenset[int]] = frozenset({503})

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/health")

    def parse(self, body: Any) -> dict[str, Any]:
        if "ready" not in body:  # a 503 from something that is not a node
            raise UnavailableError(str(body.get("error") or "the node is unavailable"))
        return {"mode": "http", **body}

    def local(self, node: Node) -> dict[str, Any]:
        return node.health()


@dataclass(frozen=True)
class SetGrant(Call[dict[str, Any]]):
    """Grant (or revoke) one hotkey one permission in a namespace the caller owns."""

    operation: ClassVar[str] = "set_grant"

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

    def local(self, node: Node) -> dict[str, Any]:
        return node.set_grant(self.namespace, self.hotkey, self.permission, self.granted)


@dataclass(frozen=True)
class DescribeNamespace(Call[dict[str, Any]]):
    operation: ClassVar[str] = "describe_namespace"
    namespace: str

    def request(self) -> HttpRequest:
        return HttpRequest("GET", f"/namespaces/{quote(self.namespace, safe='')}")

    def parse(self, body: Any) -> dict[str, Any]:
        return dict(body)

    def local(self, node: Node) -> dict[str, Any]:
        return node.describe_namespace(self.namespace)


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
            )
            for r in records
        ]
    )


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
