"""The whole network as one store: replicated writes, scatter-gather reads (docs/architecture.md, "Routing and replication").

Text is embedded once, here, and the same vector goes to every replica, so
all R copies are bit-identical and share one CID. A write succeeds when a
quorum of its replicas acknowledged it; a read asks every serving miner under
one deadline, so a dead or slow miner costs at most that deadline and never
the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from engram._version import __version__
from engram.api.calls import (
    HTTP_BATCH_LIMITS,
    Call,
    Delete,
    DescribeNamespace,
    Get,
    GetLifecycle,
    IngestMany,
    IngestOne,
    ListRecords,
    Outcome,
    Query,
    Relayed,
    Search,
    SetGrant,
    SetLifecycle,
    Stats,
    serves,
    split_batch,
    store_records,
    writes,
)
from engram.api.exchange import call_node
from engram.api.node import Lifecycle
from engram.chain.base import Chain, Metagraph, Neuron
from engram.cid import generate_cid, verify_cid
from engram.config import (
    DEFAULT_NAMESPACE,
    MODEL_VERSION,
    ON_BEHALF_PARAM,
    ClientConfig,
    Limits,
    NetworkConfig,
)
from engram.embed import Embedder, get_embedder
from engram.errors import (
    ChainUnavailableError,
    EngramError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
    error_from_wire,
)
from engram.network.routing import closest
from engram.network.survey import Liveness
from engram.records import (
    IngestItem,
    QueryResult,
    Record,
    check_namespace,
    check_text,
    prepare_records,
    record_builder,
)
from engram.security.access import Caller, Permission, SignedRequest
from engram.security.signing import Signer, hotkey_signer, signer_hotkey

T = TypeVar("T")
log = logging.getLogger("engram.network")
NAMESPACE_KEY_HEADER = "x-engram-namespace-key"  # percent-encoded UTF-8
namespace_key: ContextVar[str | None] = ContextVar("engram_namespace_key", default=None)
"""A legacy namespace key the current operation relays to every miner it asks (a gateway
serving the original clients); set it around an operation with :func:`acting_for`."""


relayed: ContextVar[SignedRequest | None] = ContextVar("engram_relayed", default=None)
"""The signed request a gateway is serving: sent unchanged to the miners that answer it, so
each checks the signer (see :meth:`Network._call`); set it with :func:`acting_for`."""


anonymous: ContextVar[bool | None] = ContextVar("engram_anonymous", default=None)
"""Whether the current operation is for a caller with neither signature nor API key: what this
client signs for it says ``on_behalf=anonymous``, so miners judge it as anonymous and charge it
to this client's hotkey. Set with :func:`acting_for`; unset, the client's own default holds
(a gateway's: anonymous, whatever reaches its network without a caller)."""


async def acting_for(caller: Caller, work: Awaitable[T]) -> T:
    """Await ``work`` on behalf of ``caller``: its legacy namespace key and its signed
    request are relayed to the miners; an API key's request is signed by this client's own
    hotkey; an anonymous one is signed as made for nobody (subtasks inherit all three)."""
    key_token = namespace_key.set(caller.namespace_key)
    relay_token = relayed.set(caller.signed_request)
    nobody = caller.hotkey is None and caller.api_key is None and not caller.operator
    anonymous_token = anonymous.set(nobody)
    try:
        return await work
    finally:
        anonymous.reset(anonymous_token)
        relayed.reset(relay_token)
        namespace_key.reset(key_token)


def _cannot_relay(signed: SignedRequest) -> UnauthorizedError:
    return UnauthorizedError(
        f"a gateway can carry your signature to the miners only on the node routes "
        f"(not {signed.method} {signed.path}): for this, sign through the network client "
        "(EngramClient.from_network(wallet=...)) or a miner"
    )


_PAGE = Limits().max_list_limit


@dataclass(frozen=True)
class WriteReport:
    """One record's write: which replicas stored it and why the others did not."""

    cid: str | None
    replicas: tuple[str, ...] = ()  # hotkeys routing chose, primary first
    acked: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # the item was invalid, or the quorum was not met
    code: str | None = None  # a missed quorum's one error code, when every refusal agreed

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ReadReport:
    """Which miners answered a read, and what went wrong with the others."""

    answered: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, EngramError) else repr(exc)


class Network:
    """Routing, replication and scatter-gather over the miners a chain lists."""

    def __init__(
        self,
        chain: Chain,
        config: NetworkConfig | None = None,
        *,
        embedder: Embedder | None = None,
        http: httpx.AsyncClient | None = None,
        signer: Signer | None = None,
        serves_others: bool = False,
    ) -> None:
        self.chain = chain
        # a gateway: a call made for no one in particular is made for an anonymous caller
        self.serves_others = serves_others
        # signs every request, bound to each miner's hotkey
        self.signer = hotkey_signer(signer) if signer is not None else None
        self.config = config or NetworkConfig(chain=chain.url)
        self._embedder = embedder
        self._http = http or httpx.AsyncClient(
            headers={"user-agent": f"engram/{__version__}"},
            # Every read fans out to every miner: keep those connections open (a gateway
            # under load spent a fifth of its time opening them with httpx's default 20).
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
        )
        self._owns_http = http is None
        # Reads give up at the deadline rather than retrying; writes retry a little.
        self._read = ClientConfig(timeout_s=self.config.read_deadline_s, retries=0, backoff_s=0)
        self._write = ClientConfig(timeout_s=self.config.write_timeout_s, retries=2, backoff_s=0.2)
        # A relayed request is never resent: its nonce would be refused as a replay.
        self._relay = ClientConfig(timeout_s=self.config.write_timeout_s, retries=0, backoff_s=0)
        self._metagraph: Metagraph | None = None
        self._fetched = 0.0
        # Which announced miners answer: what "serving" means to routing (see miners()).
        self.liveness = Liveness(
            self._http,
            interval_s=self.config.probe_interval_s,
            timeout_s=self.config.probe_timeout_s,
        )
        self.limits = Limits()
        self._dims: dict[str, int] = {}  # namespaces' dimensions, fixed once written

    # --- the metagraph ---------------------------------------------------------------------

    async def metagraph(self, refresh: bool = False) -> Metagraph:
        """The subnet, re-read at most every ``metagraph_ttl_s``; the last one if the chain is down."""
        fresh = time.monotonic() - self._fetched < self.config.metagraph_ttl_s
        if self._metagraph is not None and fresh and not refresh:
            return self._metagraph
        try:
            self._metagraph = await asyncio.to_thread(self.chain.metagraph, self.config.netuid)
        except EngramError as exc:
            if self._metagraph is None:
                raise ChainUnavailableError(
                    f"cannot read subnet {self.config.netuid} of {self.chain.url}: {exc.message}"
                ) from exc
            log.warning("chain unreachable, routing on the last metagraph: %s", exc.message)
        self._fetched = time.monotonic()
        return self._metagraph

    async def miners(self) -> list[Neuron]:
        """Serving miners: those with an announced axon that answer their health probe now
        (:attr:`liveness`); an error that says so when there are none."""
        announced = (await self.metagraph()).serving()
        serving = await self.liveness.serving(announced)
        if serving:
            return serving
        where = f"subnet {self.config.netuid} of {self.chain.url}"
        if announced:
            why = "; ".join(f"uid {n.uid}: {self.liveness.why_not(n)}" for n in announced[:5])
            raise UnavailableError(
                f"no miner is serving on {where}: none of the {len(announced)} announced "
                f"answered GET /health within {self.liveness.timeout_s:g}s ({why})"
            )
        raise UnavailableError(
            f"no miner is serving on {where}; start one with `engram miner --chain ...` or "
            "run `engram localnet`"
        )

    async def replicas(self, cid: str) -> list[Neuron]:
        """The R serving miners that hold ``cid``, primary first."""
        return closest(cid, await self.miners(), self.config.replicas)

    # --- writes ----------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def prepare(
        self, items: Sequence[IngestItem], dims: Mapping[str, int] | None = None
    ) -> list[Record | EngramError]:
        """Embed texts once and build the records every replica will store (CPU-bound),
        each vector checked against its namespace's dimension (``dims``, else the batch's
        first vector for that namespace)."""
        build = record_builder((dims or {}).get, self.limits)
        return prepare_records(items, lambda: self.embedder, build, self.limits)

    async def dims(self, namespaces: Iterable[str]) -> dict[str, int]:
        """The dimension each namespace's replicas hold (fixed by its first write anywhere):
        a write to a namespace new to its replicas must still match it."""
        for ns in set(namespaces) - set(self._dims):
            _, answers = await self._scatter(await self.miners(), DescribeNamespace(ns))
            seen = Counter(
                a["dim"] for a in answers.values() if isinstance(a, dict) and a.get("dim")
            )
            if seen:
                self._dims[ns] = seen.most_common(1)[0][0]
        return self._dims

    async def ingest(self, items: Sequence[IngestItem]) -> list[WriteReport | EngramError]:
        """Embed once, write everywhere: a report per valid item, the error of an invalid one."""
        signed = relayed.get()  # refused before any work when it cannot go on as signed
        if signed is not None and not (serves(IngestMany, signed) or serves(IngestOne, signed)):
            raise _cannot_relay(signed)
        names: set[str] = set()
        for item in items:
            with contextlib.suppress(EngramError):  # a bad name fails in prepare, in place
                names.add(check_namespace(item.namespace, self.limits))
        dims = await self.dims(names)
        prepared = await asyncio.to_thread(self.prepare, items, dims)
        valid = [(i, p) for i, p in enumerate(prepared) if isinstance(p, Record)]
        reports = iter(await self.write([p for _, p in valid], [i for i, _ in valid]))
        done = [next(reports) if isinstance(p, Record) else p for p in prepared]
        for p, outcome in zip(prepared, done, strict=True):
            if isinstance(p, Record) and isinstance(outcome, WriteReport) and outcome.ok:
                self._dims.setdefault(p.namespace, p.embedding.size)
        return done

    async def write(
        self, records: Sequence[Record], positions: Sequence[int] = ()
    ) -> list[WriteReport]:
        """Store each record on its R replicas at once; ok at the write quorum
        (``positions``: each record's place among the items of a relayed request)."""
        if not records:
            return []
        miners = await self.miners()
        routes = [closest(r.cid, miners, self.config.replicas) for r in records]
        by_miner: dict[str, list[int]] = {}
        neurons = {n.hotkey: n for n in miners}
        for i, route in enumerate(routes):
            for n in route:
                by_miner.setdefault(n.hotkey, []).append(i)
        if relayed.get() is not None and not positions:
            positions = range(len(records))
        answers = await asyncio.gather(
            *(
                self.put(
                    neurons[h],
                    [records[i] for i in idx],
                    [positions[i] for i in idx] if positions else (),
                )
                for h, idx in by_miner.items()
            )
        )
        acked: list[list[str]] = [[] for _ in records]
        failed: list[dict[str, str]] = [{} for _ in records]
        codes: list[set[str | None]] = [set() for _ in records]
        for (hotkey, idx), outcomes in zip(by_miner.items(), answers, strict=True):
            for i, (cid, error, code) in zip(idx, outcomes, strict=True):
                if cid == records[i].cid:
                    acked[i].append(hotkey)
                else:
                    failed[i][hotkey] = error or f"stored it under {cid}, not {records[i].cid}"
                    codes[i].add(code)
        reports = []
        for i, record in enumerate(records):
            replicas = tuple(n.hotkey for n in routes[i])
            quorum = min(self.config.write_quorum, len(replicas))
            ok = len(acked[i]) >= quorum
            shortfall = None
            if not ok:
                shortfall = (
                    f"write quorum not met: {len(acked[i])} of {len(replicas)} replicas "
                    f"acknowledged, {quorum} needed ({'; '.join(failed[i].values())})"
                )
            (code,) = codes[i] if not ok and len(codes[i]) == 1 else (None,)
            reports.append(
                WriteReport(record.cid, replicas, tuple(acked[i]), dict(failed[i]), shortfall, code)
            )
        return reports

    async def put(
        self, miner: Neuron, records: Sequence[Record], positions: Sequence[int] = ()
    ) -> list[Outcome]:
        """Store exactly these records on one miner; an outcome per record, never raises.

        On a gateway serving a signed write, the user's request goes to the miner as it
        is (``positions``: where these records are among its items); the miner stores the
        items routed to it and refuses the others.
        """
        signed = relayed.get()
        if signed is not None:
            try:
                answer = await self._call(miner, Relayed(signed, _WriteAnswer()), self._write)
            except EngramError as exc:
                return [Outcome.failed(exc)] * len(records)
            return [answer[p] if p < len(answer) else Outcome(None, "no answer") for p in positions]
        outcomes = [Outcome(None, "not sent")] * len(records)
        chunks, rejected = split_batch(store_records(records).items, HTTP_BATCH_LIMITS)
        for i, reason in rejected:
            outcomes[i] = Outcome(None, reason)
        for indices, call in chunks:
            try:
                answer = await self._call(miner, call, self._write)
            except EngramError as exc:
                answer = [Outcome.failed(exc)] * len(indices)
            for i, outcome in zip(indices, answer, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def delete(self, cid: str, namespace: str | None) -> ReadReport:
        """Delete from every miner that holds it (replicas and any repaired copy), retried as
        a write is. A delete is acknowledged only once every serving replica of the CID has
        deleted it (or never held it): one that did not answer would serve it again."""
        miners = await self.miners()
        report, answers = await self._scatter(
            miners, Delete(cid, namespace), self.config.write_timeout_s, self._write
        )
        _raise_refusal(answers)
        if any(not isinstance(a, BaseException) for a in answers.values()):
            missed = [
                n.hotkey
                for n in closest(cid, miners, self.config.replicas)
                if n.hotkey in report.failed
            ]
            if missed:
                raise UnavailableError(
                    f"{cid} was deleted on {len(report.answered)} miners, but replicas "
                    f"{', '.join(missed)} did not confirm ({report.failed[missed[0]]}): send "
                    "the delete again (a miner that already deleted it answers 404)"
                )
            return report
        if report.failed:
            _raise_client_error(answers)
            raise UnavailableError(f"no miner could delete {cid}: {report.failed}")
        raise NotFoundError(f"no record {cid} in namespace {namespace or DEFAULT_NAMESPACE}")

    # --- reads -----------------------------------------------------------------------------

    def _nobody(self) -> bool:
        """The current operation is an anonymous caller's (see :data:`anonymous`)."""
        nobody = anonymous.get()
        return self.serves_others if nobody is None else nobody

    async def _call(
        self, miner: Neuron, call: Call[T], config: ClientConfig, deadline_s: float | None = None
    ) -> T:
        """Send ``call`` to one miner, signed by this client; on a gateway serving a signed
        request, that request itself (a write it cannot relay is refused, never sent unsigned)."""
        key = namespace_key.get()
        headers = {NAMESPACE_KEY_HEADER: quote(key, safe="")} if key else {}
        signer = self.signer
        signed = relayed.get()
        if signed is not None and not isinstance(call, Relayed):
            if serves(type(call), signed):
                call = Relayed(signed, call)
            elif writes(type(call)):
                raise _cannot_relay(signed)
        query = None
        if isinstance(call, Relayed):
            signer, config = None, self._relay
            headers.update(call.signed.headers)
        elif signer is not None and self._nobody():
            query = {ON_BEHALF_PARAM: "anonymous"}
        return await call_node(
            self._http,
            str(miner.axon_url),
            call,
            config,
            deadline_s,
            signer=signer,
            receiver=miner.hotkey,
            headers=headers or None,
            query=query,
        )

    async def _scatter(
        self,
        miners: Sequence[Neuron],
        call: Any,
        deadline_s: float | None = None,
        config: ClientConfig | None = None,
    ) -> tuple[ReadReport, dict[str, Any]]:
        """Send ``call`` to ``miners`` at once (as reads, unless ``config`` says otherwise);
        answers (or exceptions) by hotkey."""
        deadline = deadline_s or self.config.read_deadline_s

        async def one(n: Neuron) -> Any:
            return await self._call(n, call, config or self._read, deadline)

        results = await asyncio.gather(*(one(n) for n in miners), return_exceptions=True)
        answers = {n.hotkey: r for n, r in zip(miners, results, strict=True)}
        failed = {
            h: _reason(r)
            for h, r in answers.items()
            if isinstance(r, BaseException) and not isinstance(r, NotFoundError)
        }
        answered = tuple(h for h in answers if h not in failed)
        return ReadReport(answered, failed), answers

    async def embed_query(self, text: str) -> list[float]:
        check_text(text, self.limits, required=True)
        vector = await asyncio.to_thread(self.embedder.encode, [text])
        return vector[0].tolist()

    async def query(
        self,
        vector: Sequence[float],
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        include_embedding: bool = False,
        verify: bool = False,
        ef: int | None = None,
    ) -> tuple[list[QueryResult], ReadReport]:
        """Ask every serving miner, merge by score, keep each CID once.

        With ``verify`` each hit's embedding, metadata and text are checked
        against its CID; a miner that returns a record that does not hash to
        its CID is reported as failed and its hits are dropped.
        """
        call = Query(None, list(vector), top_k, filter, namespace, include_embedding or verify, ef)
        return await self._merged(call, top_k, include_embedding, verify)

    async def search(
        self,
        text: str,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        mode: str = "hybrid",
        vector: Sequence[float] | None = None,
        ef: int | None = None,
    ) -> tuple[list[QueryResult], ReadReport]:
        """Hybrid search on every serving miner (the text embedded once, here), each miner's
        fused list merged by score, each CID kept once; ``ef`` is each miner's HNSW beam."""
        if vector is None and mode != "keyword":
            vector = await self.embed_query(text)
        call = Search(
            text, top_k, filter, namespace, mode, None if vector is None else list(vector), ef
        )
        return await self._merged(call, top_k)

    async def _merged(
        self,
        call: Call[list[QueryResult]],
        top_k: int,
        keep_embedding: bool = False,
        verify: bool = False,
    ) -> tuple[list[QueryResult], ReadReport]:
        report, answers = await self._scatter(await self.miners(), call)
        _raise_refusal(answers)
        failed = dict(report.failed)
        best: dict[str, QueryResult] = {}
        for hotkey, hits in answers.items():
            if isinstance(hits, BaseException):
                continue
            if verify and not all(_hit_matches(h) for h in hits):
                failed[hotkey] = "returned a record that does not hash to its CID"
                continue
            for hit in hits:
                if hit.cid not in best or hit.score > best[hit.cid].score:
                    best[hit.cid] = hit
        if len(failed) == len(answers):
            _raise_client_error(answers)
            raise UnavailableError(f"no miner answered the query: {failed}")
        merged = sorted(best.values(), key=lambda h: (-h.score, h.cid))[:top_k]
        if not keep_embedding:
            merged = [replace(h, embedding=None) if h.embedding else h for h in merged]
        answered = tuple(h for h in answers if h not in failed)
        return merged, ReadReport(answered, failed)

    async def get(
        self, cid: str, namespace: str | None, verify: bool = True
    ) -> tuple[Record | None, ReadReport]:
        """The record from its replicas first, then from any other miner (a repaired copy)."""
        ordered = closest(cid, await self.miners())
        r = self.config.replicas
        failed: dict[str, str] = {}
        answered: list[str] = []
        for group in (ordered[:r], ordered[r:]):
            if not group:
                continue
            report, answers = await self._scatter(group, Get(cid, namespace or DEFAULT_NAMESPACE))
            _raise_refusal(answers)
            failed.update(report.failed)
            answered.extend(report.answered)
            for hotkey, record in answers.items():
                if not isinstance(record, Record):
                    continue
                if verify:
                    try:
                        verify_cid(
                            cid,
                            record.embedding,
                            record.metadata,
                            record.model_version,
                            record.text,
                        )
                    except EngramError as exc:
                        failed[hotkey] = exc.message
                        continue
                return record, ReadReport(tuple(answered), failed)
        return None, ReadReport(tuple(answered), failed)

    async def records(
        self, namespace: str | None, filter: Mapping[str, Any] | None = None
    ) -> list[Record]:
        """Every record of ``namespace`` (matching ``filter``) held anywhere, once each, by CID."""

        async def everything(n: Neuron) -> list[Record]:
            out: list[Record] = []
            if relayed.get() is not None:  # the user's own page, asked once of each miner
                return await self._call(
                    n,
                    ListRecords(_PAGE, 0, namespace, filter),
                    self._read,
                    self.config.read_deadline_s,
                )
            while True:
                page = await self._call(
                    n,
                    ListRecords(_PAGE, len(out), namespace, filter),
                    self._read,
                    self.config.read_deadline_s,
                )
                out.extend(page)
                if len(page) < _PAGE:
                    return out

        miners = await self.miners()
        results = await asyncio.gather(*(everything(n) for n in miners), return_exceptions=True)
        _raise_refusal(dict(enumerate(results)))
        unique: dict[str, Record] = {}
        for result in results:
            if not isinstance(result, BaseException):
                for record in result:
                    unique.setdefault(record.cid, record)
        if all(isinstance(r, BaseException) for r in results):
            _raise_client_error(dict(enumerate(results)))
            raise UnavailableError("no miner answered the listing")
        return [unique[c] for c in sorted(unique)]

    async def list(
        self,
        limit: int,
        offset: int,
        namespace: str | None,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        if relayed.get() is not None:  # each miner has skipped ``offset`` of its own records
            return (await self.records(namespace, filter))[:limit]
        return (await self.records(namespace, filter))[offset : offset + limit]

    async def count(self, namespace: str | None) -> int:
        return len(await self.records(namespace))

    async def stats(self) -> dict[str, Any]:
        graph = await self.metagraph()
        miners = graph.serving()
        _, answers = await self._scatter(miners, Stats()) if miners else (None, {})
        return {
            "mode": "network",
            "chain": self.chain.url,
            "netuid": self.config.netuid,
            "block": graph.block,
            "neurons": len(graph.neurons),
            "serving": len(miners),
            "miners": {
                h: (a if not isinstance(a, BaseException) else {"error": _reason(a)})
                for h, a in answers.items()
            },
        }

    async def set_grant(
        self, namespace: str, hotkey: str, permission: Permission, granted: bool
    ) -> dict[str, Any]:
        """Grant or revoke on every serving miner, so whichever replica holds a record obeys."""
        call = SetGrant(namespace, hotkey, permission, granted)
        return await self._first_answer(call, f"change the grants of {namespace!r}")

    async def lifecycle(
        self, namespace: str | None, cids: Sequence[str], action: str | None = None
    ) -> dict[str, Lifecycle]:
        """Read (or, with ``action``, change) memories' lifecycle on every serving miner, so
        whichever replica holds a memory obeys; the newest entry of each CID wins."""
        call: Call[dict[str, Lifecycle]] = (
            GetLifecycle(namespace, tuple(cids))
            if action is None
            else SetLifecycle(namespace, tuple(cids), action)
        )
        report, answers = await self._scatter(await self.miners(), call)
        _raise_refusal(answers)
        newest: dict[str, Lifecycle] = {}
        for answer in answers.values():
            if isinstance(answer, BaseException):
                continue
            for cid, entry in answer.items():
                if cid not in newest or entry.updated_at > newest[cid].updated_at:
                    newest[cid] = entry
        if answers and len(report.failed) == len(answers):
            _raise_client_error(answers)
            raise UnavailableError(f"no miner answered the lifecycle call: {report.failed}")
        return newest

    async def describe(self, namespace: str) -> dict[str, Any]:
        return await self._first_answer(DescribeNamespace(namespace), f"describe {namespace!r}")

    async def _first_answer(self, call: Call[T], what: str) -> T:
        """Every serving miner's answer to ``call``: a refusal from one that holds the
        namespace wins (a miner that never saw it would let anyone claim it), then an answer
        that names an owner, then any answer."""
        report, answers = await self._scatter(await self.miners(), call)
        _raise_refusal(answers)
        good: list[T] = [a for a in answers.values() if not isinstance(a, BaseException)]
        owned = [a for a in good if isinstance(a, Mapping) and a.get("owner")]
        if owned or good:
            return (owned or good)[0]
        _raise_client_error(answers)
        raise UnavailableError(f"no miner could {what}: {report.failed}")

    async def health(self) -> dict[str, Any]:
        try:
            serving = (await self.metagraph()).serving()
        except EngramError as exc:
            return {
                "mode": "network",
                "status": "chain unreachable",
                "ready": False,
                "error": exc.message,
                "miners": 0,
            }
        ready = len(serving) > 0
        return {
            "mode": "network",
            "status": "ok" if ready else "no miners",
            "ready": ready,
            "miners": len(serving),
            "chain": self.chain.url,
            "netuid": self.config.netuid,
            "version": __version__,
            # the hotkey owners grant for API keys (a gateway's)
            "hotkey": signer_hotkey(self.signer) if self.signer is not None else None,
        }

    async def close(self) -> None:
        await self.liveness.close()
        if self._owns_http:
            await self._http.aclose()


class _WriteAnswer(Call[list[Outcome]]):
    """A miner's answer to a relayed write: an outcome per item of the user's request (one
    for a single ingest, the batch's for a batch)."""

    def parse(self, body: Any) -> list[Outcome]:
        if "cids" in body:
            codes = body.get("codes") or [None] * len(body["cids"])
            return [Outcome(*o) for o in zip(body["cids"], body["errors"], codes, strict=True)]
        if not isinstance(body.get("cid"), str):
            raise error_from_wire(400, body)
        return [Outcome(body["cid"])]


def _raise_refusal(answers: Mapping[Any, Any]) -> None:
    """A miner that holds the namespace refused the caller: the others, which do not hold it,
    answer empty, so their answers must not hide the refusal."""
    for answer in answers.values():
        if isinstance(answer, UnauthorizedError | ForbiddenError):
            raise answer


def _raise_client_error(answers: Mapping[Any, Any]) -> None:
    """When every miner refused the request itself (a 4xx), the caller made the mistake."""
    errors = list(answers.values())
    if errors and all(
        isinstance(e, EngramError) and 400 <= e.status < 500 and not isinstance(e, NotFoundError)
        for e in errors
    ):
        raise errors[0]


def _hit_matches(hit: QueryResult) -> bool:
    if hit.embedding is None:
        return False
    try:
        return generate_cid(hit.embedding, hit.metadata, MODEL_VERSION, hit.text) == hit.cid
    except EngramError:
        return False


__all__ = ["Network", "ReadReport", "WriteReport"]
