"""Everything the client does, with no I/O: checks, requests, responses, retries, batching.

``EngramClient`` and ``AsyncEngramClient`` write nothing twice. Each public
method here builds a *plan*: a generator that yields :class:`Call` objects
(one operation, described, not done) and gets each call's result sent back.
The sync twin drives a plan with :func:`run_sync`, the async twin with
:func:`run_async`; a transport answers each call.

* embedded: ``call.local(store)`` in this process (the async twin in a thread);
* HTTP: :func:`exchange` turns a call into :class:`HttpRequest` and
  :class:`Sleep` steps (retries with exponential backoff) and the reply back
  into the result or the server's typed exception. The HTTP transports only
  send bytes and sleep.
"""

from __future__ import annotations

import json
import math
from collections.abc import (
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import numpy as np

from engram.cid import metadata_bytes, parse_cid, vector_bytes
from engram.config import (
    DEFAULT_NAMESPACE,
    MODEL_VERSION,
    ClientConfig,
    Limits,
    NetworkConfig,
    load_config,
)
from engram.errors import (
    EngramError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    error_from_wire,
)
from engram.memory import IngestItem
from engram.records import QueryResult, Record, check_namespace
from engram.security.access import Permission, check_hotkey
from engram.security.signing import signer_hotkey

if TYPE_CHECKING:
    from engram.embed import Embedder
    from engram.sdk.embedded import EmbeddedTransport
    from engram.sdk.sealer import Sealer

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")

FILE_BATCH_ITEMS = 1_000  # a full protocol batch: embedding sorts by length within it
_SERVER_LIMITS = Limits()  # what a node accepts unless it was configured otherwise

# --- result types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    """CIDs in input order (``None`` where an item failed) and each failure's message."""

    cids: list[str | None]
    errors: list[str | None]

    def __iter__(self) -> Iterator[str | None]:
        return iter(self.cids)

    def __len__(self) -> int:
        return len(self.cids)

    def __getitem__(self, i: int) -> str | None:
        return self.cids[i]

    @property
    def failed(self) -> list[tuple[int, str]]:
        return [(i, e) for i, e in enumerate(self.errors) if e is not None]


@dataclass
class FileIngestReport:
    """The outcome of ``batch_ingest_file``: counts, CIDs and per-line errors (1-based lines)."""

    path: str
    ingested: int = 0
    cids: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)


# --- argument checks ------------------------------------------------------------------------


def ingest_item(item: Any, namespace: str | None = None) -> IngestItem:
    """Check one batch item (``{"text" | "embedding", "metadata"?}``) without touching storage."""
    if isinstance(item, IngestItem):
        return item if namespace is None else replace(item, namespace=namespace)
    if not isinstance(item, Mapping):
        raise InvalidRequestError(
            f'each item must be an object like {{"text": ...}} or {{"embedding": [...]}}, '
            f"got {type(item).__name__}"
        )
    unknown = set(item) - {"text", "embedding", "metadata"}
    if unknown:
        raise InvalidRequestError(
            f"unknown item field(s) {sorted(unknown)}; use text, embedding and metadata"
        )
    text, embedding, metadata = item.get("text"), item.get("embedding"), item.get("metadata")
    if text is None and embedding is None:
        raise InvalidRequestError('an item needs "text" or "embedding"')
    if text is not None and not isinstance(text, str):
        raise InvalidRequestError(f"text must be a string, got {type(text).__name__}")
    if embedding is not None and (
        isinstance(embedding, str | bytes | Mapping) or not isinstance(embedding, Sequence)
    ):
        if not hasattr(embedding, "tolist"):
            raise InvalidRequestError("embedding must be a list of numbers")
        embedding = embedding.tolist()
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidRequestError(f"metadata must be an object, got {type(metadata).__name__}")
    return IngestItem(
        text=text,
        embedding=list(embedding) if embedding is not None else None,
        metadata=dict(metadata or {}),
        namespace=namespace,
    )


def parse_jsonl_line(line: str, namespace: str | None = None) -> IngestItem | None:
    """One line of an ingest file; blank lines are skipped (``None``)."""
    if not line.strip():
        return None
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"not valid JSON: {exc.msg} at column {exc.colno}") from exc
    return ingest_item(doc, namespace)


def require_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError("query text must be a non-empty string")
    return text


_FLOAT32 = "{:.9g}".format  # 9 significant digits give back every float32 exactly


def _vector_json(vector: Any) -> bytes:
    """A vector as a JSON array of the float32 values the store keeps, so every mode hashes
    the same bytes. Written short: 40 % fewer bytes than doubles and faster to parse."""
    if isinstance(vector, str | bytes | Mapping):
        raise InvalidRequestError("embedding must be a flat list of numbers")
    arr = np.frombuffer(vector_bytes(vector), dtype="<f4")
    if np.signbit(arr[arr == 0]).any():  # "-0" would parse as the integer 0: keep the sign
        return _json(arr.tolist())
    return ("[" + ",".join(map(_FLOAT32, arr.tolist())) + "]").encode()


def _query_vector(vector: Any) -> list[float]:
    """A query vector as plain floats; the same checks and messages as the store's."""
    try:
        if isinstance(vector, str | bytes | Mapping):
            raise TypeError(type(vector).__name__)
        arr = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError("query vector must be a flat list of numbers") from exc
    if arr.ndim != 1:
        raise InvalidRequestError(f"query vector must be flat, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidRequestError("query vector contains NaN or infinite values")
    return arr.tolist()


# --- choosing a mode ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a client's calls go: a node's base URL, the network, or an embedded store."""

    url: str | None = None
    path: Path | None = None
    embedder: Embedder | None = None
    config: ClientConfig = field(default_factory=ClientConfig)
    network: NetworkConfig | None = None
    verify: bool = False  # network mode: check every returned record against its CID
    signer: Any = None  # a bittensor Wallet or Keypair that signs every request

    @property
    def where(self) -> str:
        if self.network is not None:
            return f"chain={self.network.chain}, netuid={self.network.netuid}"
        return self.url or f"path={self.path or 'ENGRAM_HOME'}"


def check_url(url: Any) -> str:
    """A node URL as ``http(s)://host[:port][/prefix]`` without a trailing slash."""
    if not isinstance(url, str):
        raise InvalidRequestError(f"url must be a string like http://127.0.0.1:8091, got {url!r}")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidRequestError(f"url {url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"url {url!r} is not an http(s) URL; give one like http://127.0.0.1:8091 "
            "(or path=... for an embedded store)"
        )
    if parts.query or parts.fragment:
        raise InvalidRequestError(f"url {url!r} must not carry a query or fragment")
    return url.strip().rstrip("/")


def _check_number(name: str, value: Any, *, positive: bool = False, integer: bool = False) -> None:
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be {'an integer' if integer else 'a number'}")
    if value < 0 or (positive and value == 0):
        raise InvalidRequestError(
            f"{name} must be {'positive' if positive else '>= 0'}, got {value}"
        )


def pick_signer(wallet: Any, keypair: Any) -> Any:
    """The one hotkey that signs a client's requests, checked up front (``None``: unsigned)."""
    if wallet is not None and keypair is not None:
        raise InvalidRequestError("give wallet or keypair, not both: one hotkey signs requests")
    signer = wallet if wallet is not None else keypair
    if signer is not None:
        signer_hotkey(signer)
    return signer


def choose_target(
    url: str | None,
    *,
    path: str | Path | None,
    embedder: Embedder | None,
    timeout_s: float | None,
    retries: int | None,
    backoff_s: float | None,
    signer: Any = None,
) -> Target:
    """The one place that picks the mode: a URL means HTTP, anything else the embedded store."""
    if url is not None and path is not None:
        raise InvalidRequestError(
            "give url (a node over HTTP) or path (an embedded store), not both"
        )
    config = load_config(ClientConfig, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
    _check_number("timeout_s", config.timeout_s, positive=True)
    _check_number("retries", config.retries, integer=True)
    _check_number("backoff_s", config.backoff_s)
    if url is None:
        return Target(
            path=None if path is None else Path(path),
            embedder=embedder,
            config=config,
            signer=signer,
        )
    if embedder is not None:
        raise InvalidRequestError(
            "embedder applies to the embedded mode only: a node embeds text with its own model"
        )
    return Target(url=check_url(url), config=config, signer=signer)


def network_target(
    chain: str | None,
    netuid: int | None,
    *,
    embedder: Embedder | None,
    verify: bool,
    replicas: int | None,
    write_quorum: int | None,
    read_deadline_s: float | None,
    signer: Any = None,
) -> Target:
    """The network mode's target; the chain defaults to the LocalChain under ENGRAM_HOME."""
    config = load_config(
        NetworkConfig,
        chain=chain,
        netuid=netuid,
        replicas=replicas,
        write_quorum=write_quorum,
        read_deadline_s=read_deadline_s,
    )
    _check_number("netuid", config.netuid, integer=True)
    _check_number("replicas", config.replicas, positive=True, integer=True)
    _check_number("write_quorum", config.write_quorum, positive=True, integer=True)
    _check_number("read_deadline_s", config.read_deadline_s, positive=True)
    if config.write_quorum > config.replicas:
        raise InvalidRequestError(
            f"write_quorum ({config.write_quorum}) cannot exceed replicas ({config.replicas})"
        )
    return Target(embedder=embedder, network=config, verify=bool(verify), signer=signer)


@dataclass(frozen=True)
class BatchLimits:
    """How much one ingest call may carry; ``None`` means no limit (embedded: one transaction)."""

    max_items: int | None = None
    max_bytes: int | None = None


HTTP_BATCH_LIMITS = BatchLimits(_SERVER_LIMITS.max_batch_items, _SERVER_LIMITS.max_body_bytes)


# --- calls: one operation, described -------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    params: dict[str, str | int] = field(default_factory=dict)
    body: bytes | None = None  # JSON, already encoded


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes


@dataclass(frozen=True)
class Sleep:
    seconds: float


def _json(doc: Any) -> bytes:
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:  # NaN, a lone surrogate: nothing a node could read
        raise InvalidRequestError(f"cannot send this as JSON: {exc}") from exc


def _params(namespace: str | None, **params: str | int) -> dict[str, str | int]:
    return params if namespace is None else {**params, "namespace": namespace}


class Call(Generic[T]):
    """One operation, described: how to send it over HTTP and how to run it in-process."""

    # Non-2xx statuses whose body is still this call's answer (health says 503 while starting).
    accepts: ClassVar[frozenset[int]] = frozenset()

    def request(self) -> HttpRequest:
        raise NotImplementedError

    def parse(self, body: Any) -> T:
        raise NotImplementedError

    def local(self, store: EmbeddedTransport) -> T:
        raise NotImplementedError

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
        return _json(doc)
    return _json(doc)[:-1] + b',"raw_embedding":' + _vector_json(item.embedding) + b"}"


@dataclass(frozen=True)
class IngestOne(Call[str]):
    """A single write: the server raises its typed error (e.g. a dimension mismatch)."""

    item: IngestItem

    def request(self) -> HttpRequest:
        return HttpRequest("POST", "/IngestSynapse", body=encode_item(self.item))

    def parse(self, body: Any) -> str:
        if not isinstance(body.get("cid"), str):
            raise error_from_wire(400, body)  # an older node reports errors with status 200
        return body["cid"]

    def local(self, store: EmbeddedTransport) -> str:
        (outcome,) = store.ingest([self.item])
        if isinstance(outcome, EngramError):
            raise outcome
        return outcome


Outcome = tuple[str | None, str | None]  # (cid, error message) of one batch item


@dataclass(frozen=True)
class IngestMany(Call[list[Outcome]]):
    """One chunk of a batch; ``encoded`` holds each item's JSON when it was sized for HTTP."""

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

    def local(self, store: EmbeddedTransport) -> list[Outcome]:
        return [
            (None, o.message) if isinstance(o, EngramError) else (o, None)
            for o in store.ingest(self.items)
        ]


def _batch_body(encoded: Sequence[bytes]) -> bytes:
    return b'{"items":[' + b",".join(encoded) + b"]}"


_BATCH_OVERHEAD = len(_batch_body([]))


@dataclass(frozen=True)
class Query(Call[list[QueryResult]]):
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
        return HttpRequest("POST", "/QuerySynapse", body=_json(doc))

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

    def local(self, store: EmbeddedTransport) -> list[QueryResult]:
        return store.query(
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

    def local(self, store: EmbeddedTransport) -> Record | None:
        return store.get(self.cid, self.namespace)


@dataclass(frozen=True)
class Delete(Call[None]):
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

    def local(self, store: EmbeddedTransport) -> None:
        store.delete(self.cid, self.namespace)


@dataclass(frozen=True)
class ListRecords(Call[list[Record]]):
    limit: int
    offset: int
    namespace: str | None

    def request(self) -> HttpRequest:
        params = _params(self.namespace, limit=self.limit, offset=self.offset)
        return HttpRequest("GET", "/list", params)

    def parse(self, body: Any) -> list[Record]:
        return [record_from_wire(doc) for doc in body["records"]]

    def local(self, store: EmbeddedTransport) -> list[Record]:
        return store.list(self.limit, self.offset, self.namespace)


@dataclass(frozen=True)
class Count(Call[int]):
    namespace: str | None

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/count", _params(self.namespace))

    def parse(self, body: Any) -> int:
        return int(body["count"])

    def local(self, store: EmbeddedTransport) -> int:
        return store.count(self.namespace)


@dataclass(frozen=True)
class Stats(Call[dict[str, Any]]):
    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/stats")

    def parse(self, body: Any) -> dict[str, Any]:
        return {"mode": "http", **body}

    def local(self, store: EmbeddedTransport) -> dict[str, Any]:
        return store.stats()


@dataclass(frozen=True)
class Health(Call[dict[str, Any]]):
    accepts: ClassVar[frozenset[int]] = frozenset({503})

    def request(self) -> HttpRequest:
        return HttpRequest("GET", "/health")

    def parse(self, body: Any) -> dict[str, Any]:
        if "ready" not in body:  # a 503 from something that is not a node
            raise UnavailableError(str(body.get("error") or "the node is unavailable"))
        return {"mode": "http", **body}

    def local(self, store: EmbeddedTransport) -> dict[str, Any]:
        return store.health()


@dataclass(frozen=True)
class SetGrant(Call[dict[str, Any]]):
    """Grant (or revoke) one hotkey one permission in a namespace the caller owns."""

    namespace: str
    hotkey: str
    permission: Permission
    granted: bool

    def request(self) -> HttpRequest:
        path = f"/namespaces/{quote(self.namespace, safe='')}/grants"
        if self.granted:
            doc = {"hotkey": self.hotkey, "permission": self.permission.value}
            return HttpRequest("POST", path, body=_json(doc))
        return HttpRequest(
            "DELETE", f"{path}/{quote(self.hotkey, safe='')}", {"permission": self.permission.value}
        )

    def parse(self, body: Any) -> dict[str, Any]:
        return dict(body)

    def local(self, store: EmbeddedTransport) -> dict[str, Any]:
        return store.set_grant(self.namespace, self.hotkey, self.permission, self.granted)


@dataclass(frozen=True)
class DescribeNamespace(Call[dict[str, Any]]):
    namespace: str

    def request(self) -> HttpRequest:
        return HttpRequest("GET", f"/namespaces/{quote(self.namespace, safe='')}")

    def parse(self, body: Any) -> dict[str, Any]:
        return dict(body)

    def local(self, store: EmbeddedTransport) -> dict[str, Any]:
        return store.describe(self.namespace)


# --- HTTP exchange: retries and error mapping ----------------------------------------------

_RETRYABLE_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def retryable_status(status: int) -> bool:
    """5xx may pass (a restart, an overloaded node); 4xx will not, so it is never retried."""
    return status >= 500 and status not in (501, 505)


def backoff_delay(config: ClientConfig, retry: int) -> float:
    """Seconds before retry number ``retry`` (1-based): ``backoff_s``, doubled each time."""
    return config.backoff_s * 2 ** (retry - 1)


def transport_error(
    exc: BaseException, request: HttpRequest, url: str, config: ClientConfig, attempts: int
) -> UpstreamError:
    """An httpx failure as Engram's exception; the caller raises it ``from`` the original."""
    where = f"{request.method} {url}{request.path}"
    tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"{where} got no answer within {config.timeout_s}s ({tries})")
    return UnavailableError(f"cannot reach the node: {where} failed ({tries}): {exc!r}")


def _decode(reply: HttpReply) -> Any:
    """The reply's JSON; an error page that is not JSON keeps a readable snippet."""
    try:
        body = json.loads(reply.body) if reply.body else {}
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    if 200 <= reply.status < 300:
        raise UpstreamError(f"the node answered HTTP {reply.status} with a body that is not JSON")
    snippet = reply.body[:200].decode("utf-8", "replace").strip()
    return {"error": f"HTTP {reply.status}: {snippet}" if snippet else f"HTTP {reply.status}"}


def exchange(
    call: Call[T], url: str, config: ClientConfig
) -> Generator[HttpRequest | Sleep, HttpReply | Exception | None, T]:
    """Send ``call``, retrying connection errors and 5xx with exponential backoff.

    Retrying a write is safe: a record's CID is the hash of its content and
    storing a CID twice changes nothing, so an ingest the server did apply
    before the connection broke is not stored twice.
    """
    request = call.request()
    attempts = config.retries + 1
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            yield Sleep(backoff_delay(config, attempt - 1))
        reply = yield request
        last = attempt == attempts
        if isinstance(reply, Exception):
            if last or not isinstance(reply, _RETRYABLE_EXCEPTIONS):
                raise transport_error(reply, request, url, config, attempt) from reply
            continue
        assert reply is not None
        if 200 <= reply.status < 300 or reply.status in call.accepts:
            body = _decode(reply)
            try:
                return call.parse(body)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise UpstreamError(
                    f"the node's answer to {request.method} {request.path} is malformed: {exc!r}"
                ) from exc
        if last or not retryable_status(reply.status):
            return call.failure(reply.status, _decode(reply), retried=attempt > 1)
    raise AssertionError("unreachable: the last attempt returns or raises")


# --- drivers: the only difference between the twins ---------------------------------------


def run_sync(steps: Generator[S, R, T], perform: Callable[[S], R]) -> T:
    """Perform each step a plan yields and send the answer back; the plan's value is returned."""
    try:
        step = next(steps)
        while True:
            step = steps.send(perform(step))
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


async def run_async(steps: Generator[S, R, T], perform: Callable[[S], Awaitable[R]]) -> T:
    """:func:`run_sync` with an awaited ``perform``."""
    try:
        step = next(steps)
        while True:
            step = steps.send(await perform(step))
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


# --- plans: every public method, written once ----------------------------------------------

Plan = Generator[Call[Any], Any, T]


def _single(call: Call[T]) -> Plan[T]:
    return (yield call)


class LineSource(Protocol):
    """An ingest file's lines (raw bytes) and a place to report progress."""

    path: str

    def __iter__(self) -> Iterator[bytes]: ...

    def progress(self, ok: int, bad: int) -> None: ...


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


class ClientCore:
    """The client without I/O: checks arguments and returns the plan for each method.

    With a :class:`~engram.sdk.sealer.Sealer` every write is sealed before it
    is sent, queries are embedded here, and every record that comes back is
    opened.
    """

    def __init__(
        self, namespace: str | None, limits: BatchLimits, sealer: Sealer | None = None
    ) -> None:
        if namespace is not None:
            check_namespace(namespace, _SERVER_LIMITS)
        self.namespace = namespace
        self.limits = limits
        self.sealer = sealer

    def _ns(self, namespace: str | None) -> str | None:
        return namespace if namespace is not None else self.namespace

    # writes

    def ingest(
        self, text: str, metadata: Mapping[str, Any] | None, namespace: str | None
    ) -> Plan[str]:
        item = ingest_item({"text": require_text(text), "metadata": metadata}, self._ns(namespace))
        return _single(IngestOne(self._sealed_one(item)))

    def ingest_embedding(
        self,
        vector: Sequence[float] | np.ndarray,
        metadata: Mapping[str, Any] | None,
        text: str | None,
        namespace: str | None,
    ) -> Plan[str]:
        doc = {"embedding": vector, "metadata": metadata, "text": text}
        return _single(IngestOne(self._sealed_one(ingest_item(doc, self._ns(namespace)))))

    def _sealed_one(self, item: IngestItem) -> IngestItem:
        if self.sealer is None:
            return item
        (sealed,) = self.sealer.seal_items([item])
        if isinstance(sealed, EngramError):
            raise sealed
        return sealed

    def _send_items(self, items: Sequence[IngestItem]) -> Plan[list[Outcome]]:
        """Valid items in as few calls as the transport allows; outcomes in input order."""
        outcomes: list[Outcome] = [(None, None)] * len(items)
        if self.sealer is not None:
            sealed = self.sealer.seal_items(items)
            kept = [i for i, s in enumerate(sealed) if not isinstance(s, EngramError)]
            for i, s in enumerate(sealed):
                if isinstance(s, EngramError):
                    outcomes[i] = (None, s.message)
            sent = yield from self._send_plain([sealed[i] for i in kept])  # type: ignore[misc]
            for i, outcome in zip(kept, sent, strict=True):
                outcomes[i] = outcome
            return outcomes
        return (yield from self._send_plain(items))

    def _send_plain(self, items: Sequence[IngestItem]) -> Plan[list[Outcome]]:
        outcomes: list[Outcome] = [(None, None)] * len(items)
        chunks, rejected = split_batch(items, self.limits)
        for i, error in rejected:
            outcomes[i] = (None, error)
        for indices, call in chunks:
            results = yield call
            for i, outcome in zip(indices, results, strict=True):
                outcomes[i] = outcome
        return outcomes

    def batch_ingest(
        self, items: Iterable[Mapping[str, Any] | IngestItem], namespace: str | None
    ) -> Plan[BatchResult]:
        namespace = self._ns(namespace)
        outcomes: list[Outcome] = []
        valid: list[IngestItem] = []
        slots: list[int] = []
        for i, raw in enumerate(items):
            try:
                valid.append(ingest_item(raw, namespace))
                slots.append(i)
                outcomes.append((None, None))
            except EngramError as exc:
                outcomes.append((None, exc.message))
        sent = yield from self._send_items(valid)
        for slot, outcome in zip(slots, sent, strict=True):
            outcomes[slot] = outcome
        return BatchResult(cids=[c for c, _ in outcomes], errors=[e for _, e in outcomes])

    def batch_ingest_file(
        self, lines: LineSource, namespace: str | None, batch_size: int
    ) -> Plan[FileIngestReport]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidRequestError(f"batch_size must be a positive integer, got {batch_size!r}")
        return self._file_plan(lines, self._ns(namespace), batch_size)

    def _file_plan(
        self, lines: LineSource, namespace: str | None, batch_size: int
    ) -> Plan[FileIngestReport]:
        report = FileIngestReport(path=lines.path)
        batch: list[tuple[int, IngestItem]] = []

        def flush() -> Plan[None]:
            outcomes = yield from self._send_items([item for _, item in batch])
            for (line_no, _), (cid, error) in zip(batch, outcomes, strict=True):
                if cid is None:
                    report.errors.append((line_no, error or "not stored"))
                else:
                    report.cids.append(cid)
                    report.ingested += 1
            batch.clear()

        for line_no, raw in enumerate(lines, start=1):
            try:
                item = parse_jsonl_line(raw.decode("utf-8"), namespace)
                if item is not None:
                    batch.append((line_no, item))
            except UnicodeDecodeError:
                report.errors.append((line_no, "line is not valid UTF-8"))
            except EngramError as exc:
                report.errors.append((line_no, exc.message))
            if len(batch) >= batch_size:
                yield from flush()
            lines.progress(report.ingested, report.failed)
        if batch:
            yield from flush()
        lines.progress(report.ingested, report.failed)
        report.errors.sort()
        return report

    def delete(self, cid: str, namespace: str | None) -> Plan[None]:
        parse_cid(cid)
        return _single(Delete(cid, self._ns(namespace)))

    # reads

    def query(
        self,
        text: str,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
    ) -> Plan[list[QueryResult]]:
        if self.sealer is not None:  # the query text never leaves this process either
            vector = self.sealer.embed([require_text(text)])[0]
            return self.query_by_vector(vector, top_k, filter, namespace, include_embedding)
        call = Query(
            require_text(text), None, top_k, filter, self._ns(namespace), include_embedding
        )
        return _single(call)

    def query_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
    ) -> Plan[list[QueryResult]]:
        ns = self._ns(namespace)
        sealer = self.sealer
        if sealer is None:
            return _single(Query(None, _query_vector(vector), top_k, filter, ns, include_embedding))
        return self._opened_hits(
            Query(None, _query_vector(vector), top_k, filter, ns, True), ns, include_embedding
        )

    def _opened_hits(
        self, call: Query, namespace: str | None, keep_embedding: bool
    ) -> Plan[list[QueryResult]]:
        assert self.sealer is not None
        hits = yield call
        return [self.sealer.open_hit(h, namespace, keep_embedding) for h in hits]

    def _opened(self, call: Call[Any]) -> Plan[Any]:
        """The call's record, or list of records, opened when this client seals."""
        result = yield call
        if self.sealer is None or result is None:
            return result
        if isinstance(result, list):
            return [self.sealer.open_record(r) for r in result]
        return self.sealer.open_record(result)

    def get(self, cid: str, namespace: str | None) -> Plan[Record | None]:
        parse_cid(cid)
        return self._opened(Get(cid, self._ns(namespace) or DEFAULT_NAMESPACE))

    def list(self, limit: int, offset: int, namespace: str | None) -> Plan[list[Record]]:
        return self._opened(ListRecords(limit, offset, self._ns(namespace)))

    def count(self, namespace: str | None) -> Plan[int]:
        return _single(Count(self._ns(namespace)))

    def stats(self) -> Plan[dict[str, Any]]:
        return _single(Stats())

    # namespaces

    def set_grant(
        self, namespace: str | None, hotkey: str, permission: str, granted: bool
    ) -> Plan[dict[str, Any]]:
        ns = check_namespace(self._ns(namespace), _SERVER_LIMITS)
        try:
            perm = Permission(permission)
        except ValueError:
            raise InvalidRequestError(
                f"permission must be 'read' or 'write', got {permission!r}"
            ) from None
        return _single(SetGrant(ns, check_hotkey(hotkey), perm, granted))

    def describe_namespace(self, namespace: str | None) -> Plan[dict[str, Any]]:
        return _single(DescribeNamespace(check_namespace(self._ns(namespace), _SERVER_LIMITS)))

    def health(self) -> Plan[dict[str, Any]]:
        return _single(Health())
