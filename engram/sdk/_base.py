"""Everything the client does, with no I/O: argument checks, choosing a mode, batching.

``EngramClient`` and ``AsyncEngramClient`` write nothing twice. Each public
method here builds a *plan*: a generator that yields calls of the node API
(:mod:`engram.api.calls`: one operation, described, not done) and gets each
call's result sent back. The sync twin drives a plan with
:func:`~engram.api.exchange.run_sync`, the async twin with
:func:`~engram.api.exchange.run_async`; a transport answers each call:

* embedded or network: ``call.local(node)`` on a :class:`~engram.api.node.Node`
  in this process (the async twin in a thread);
* HTTP: :func:`~engram.api.exchange.exchange` sends it with retries and maps
  the answer back to the result or the server's typed exception.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import numpy as np

from engram.api.calls import (
    BatchLimits,
    Call,
    DescribeNamespace,
    Get,
    IngestOne,
    ListRecords,
    Outcome,
    Query,
    Search,
    SetGrant,
    split_batch,
)
from engram.config import DEFAULT_NAMESPACE, ClientConfig, Limits, NetworkConfig, load_config
from engram.errors import EngramError, InvalidRequestError
from engram.records import IngestItem, QueryResult, Record, check_namespace
from engram.security.access import Permission, check_hotkey
from engram.security.signing import signer_hotkey

if TYPE_CHECKING:
    from engram.embed import Embedder
    from engram.sdk.sealer import Sealer

T = TypeVar("T")

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
        tolist = getattr(embedding, "tolist", None)  # a numpy array (or alike)
        if tolist is None:
            raise InvalidRequestError("embedding must be a list of numbers")
        embedding = tolist()
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


def query_vector(vector: Any) -> list[float]:
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


def _alias(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """``value``, or the original SDK's name for it (``miner_url``, ``timeout``)."""
    if alias_value is None:
        return value
    if value is not None:
        raise InvalidRequestError(f"give {name} or {alias} (its older name), not both")
    return alias_value


def choose_target(
    url: str | None,
    *,
    path: str | Path | None,
    embedder: Embedder | None,
    timeout_s: float | None,
    retries: int | None,
    backoff_s: float | None,
    signer: Any = None,
    miner_url: str | None = None,
    timeout: float | None = None,
    api_key: str | None = None,
) -> Target:
    """The one place that picks the mode: a URL means HTTP, anything else the embedded store."""
    url = _alias("url", url, "miner_url", miner_url)
    timeout_s = _alias("timeout_s", timeout_s, "timeout", timeout)
    if url is not None and path is not None:
        raise InvalidRequestError(
            "give url (a node over HTTP) or path (an embedded store), not both"
        )
    if api_key is not None and url is None:
        raise InvalidRequestError("api_key is a gateway's: give the gateway's url too")
    config = load_config(
        ClientConfig, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, api_key=api_key
    )
    if url is not None and config.api_key is not None:
        if not isinstance(config.api_key, str) or not config.api_key.strip():
            raise InvalidRequestError("api_key must be the key a gateway gave (ek_...)")
        if signer is not None:
            raise InvalidRequestError(
                "give a wallet or an api_key, not both: the key acts for its owner, the "
                "wallet signs for itself"
            )
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


# --- plans: every public method, written once ----------------------------------------------

Plan = Generator[Call[Any], Any, T]


def _single(call: Call[T]) -> Plan[T]:
    return (yield call)


class LineSource(Protocol):
    """An ingest file's lines (raw bytes) and a place to report progress."""

    path: str

    def __iter__(self) -> Iterator[bytes]: ...

    def progress(self, ok: int, bad: int) -> None: ...


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

    def named(self, call: Call[T]) -> Call[T]:
        """``call`` in this client's namespace when it names none."""
        if getattr(call, "namespace", False) is None and self.namespace is not None:
            call = replace(call, namespace=self.namespace)  # type: ignore[type-var]
        return call

    def call(self, call: Call[T]) -> Plan[T]:
        """Any call as it is, in this client's namespace when it names none: an operation with
        no client-side logic needs nothing here but its call, one line in each twin."""
        return _single(self.named(call))

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
        outcomes: list[Outcome] = [Outcome(None)] * len(items)
        if self.sealer is not None:
            sealed = self.sealer.seal_items(items)
            kept = [i for i, s in enumerate(sealed) if not isinstance(s, EngramError)]
            for i, s in enumerate(sealed):
                if isinstance(s, EngramError):
                    outcomes[i] = Outcome.failed(s)
            sent = yield from self._send_plain([sealed[i] for i in kept])  # type: ignore[misc]
            for i, outcome in zip(kept, sent, strict=True):
                outcomes[i] = outcome
            return outcomes
        return (yield from self._send_plain(items))

    def _send_plain(self, items: Sequence[IngestItem]) -> Plan[list[Outcome]]:
        outcomes: list[Outcome] = [Outcome(None)] * len(items)
        chunks, rejected = split_batch(items, self.limits)
        for i, error in rejected:
            outcomes[i] = Outcome(None, error)
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
                outcomes.append(Outcome(None))
            except EngramError as exc:
                outcomes.append(Outcome.failed(exc))
        sent = yield from self._send_items(valid)
        for slot, outcome in zip(slots, sent, strict=True):
            outcomes[slot] = outcome
        return BatchResult(cids=[o.cid for o in outcomes], errors=[o.error for o in outcomes])

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
            for (line_no, _), (cid, error, _code) in zip(batch, outcomes, strict=True):
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

    # reads

    def query(
        self,
        text: str,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
        ef: int | None = None,
    ) -> Plan[list[QueryResult]]:
        if self.sealer is not None:  # the query text never leaves this process either
            vector = self.sealer.embed([require_text(text)])[0]
            return self.query_by_vector(vector, top_k, filter, namespace, include_embedding, ef)
        call = Query(
            require_text(text), None, top_k, filter, self._ns(namespace), include_embedding, ef
        )
        return _single(call)

    def search(self, call: Search) -> Plan[list[QueryResult]]:
        """Hybrid search sends the query text: not for a client that seals its records."""
        if self.sealer is not None:
            raise InvalidRequestError(
                "search sends the query text to the node, and sealed records' text is sealed: "
                "use query(), which embeds the text here"
            )
        return self.call(call)

    def query_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None,
        namespace: str | None,
        include_embedding: bool,
        ef: int | None = None,
    ) -> Plan[list[QueryResult]]:
        ns = self._ns(namespace)
        sealer = self.sealer
        vec = query_vector(vector)
        if sealer is None:
            return _single(Query(None, vec, top_k, filter, ns, include_embedding, ef))
        return self._opened_hits(
            Query(None, vec, top_k, filter, ns, True, ef), ns, include_embedding
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
        return self._opened(Get(cid, self._ns(namespace) or DEFAULT_NAMESPACE))

    def list(
        self, limit: int, offset: int, namespace: str | None, filter: Mapping[str, Any] | None
    ) -> Plan[list[Record]]:
        return self._opened(ListRecords(limit, offset, self._ns(namespace), filter or None))

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
