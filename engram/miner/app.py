"""The miner's HTTP API: thin routes over :class:`MinerService`.

The store is synchronous, so writes go through one writer thread and reads
and embedding through a pool of reader threads; the event loop only moves
bytes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Query, Request, Response
from prometheus_client import Gauge

from engram import __version__
from engram.cid import parse_cid
from engram.config import Limits, MinerConfig, SecurityConfig, StoreConfig, load_config
from engram.embed import Embedder
from engram.errors import EngramError, UnavailableError
from engram.memory import Memory
from engram.miner.axon import Axon, join_subnet
from engram.miner.service import MinerService, item_from_request, items_from_batch
from engram.proofs import Challenge
from engram.protocol import (
    BatchIngestRequest,
    BatchIngestResponse,
    ChallengeAnswer,
    ChallengeRequest,
    CommitmentResponse,
    CountResponse,
    DeleteResponse,
    GrantRequest,
    HealthResponse,
    InclusionProofOut,
    IngestRequest,
    IngestResponse,
    ListResponse,
    NamespaceInfo,
    QueryRequest,
    QueryResponse,
    RecordOut,
    StatsResponse,
)
from engram.security.access import Permission
from engram.security.ratelimit import Budget
from engram.server.app import configure_logging, create_app, json_body_doc, parse_body
from engram.server.gate import Gate
from engram.store import Store

log = logging.getLogger("engram.miner")
T = TypeVar("T")


class _Runtime:
    """The service plus the threads it runs on; lives for the app's lifetime."""

    def __init__(self, service: MinerService, reader_threads: int) -> None:
        self.service = service
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="engram-writer")
        self.readers = ThreadPoolExecutor(reader_threads, thread_name_prefix="engram-reader")
        self.model_ready = threading.Event()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.readers, fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.writer, fn, *args)

    def warm_up(self) -> None:
        """Load the model off the request path; /health says ready once it answers."""
        try:
            self.service.memory.embedder.encode(["warm up"])
            self.model_ready.set()
        except EngramError:
            log.exception("the embedder could not be loaded; text requests will fail")

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        self.readers.shutdown(wait=True)
        self.service.store.close()


def _record_out(record: Any) -> dict[str, Any]:
    return RecordOut(**record.to_dict()).model_dump()


def create_miner_app(
    config: MinerConfig | None = None,
    store_config: StoreConfig | None = None,
    limits: Limits | None = None,
    embedder: Embedder | None = None,
    axon: Axon | None = None,
    security: SecurityConfig | None = None,
) -> FastAPI:
    """The miner app over a store under ``config.home``; opened and closed with the app.

    With an ``axon`` it serves on a subnet: it keeps re-announcing itself and
    refuses writes routed to other miners unless ``config.accept_unrouted``.
    """
    config = config or MinerConfig()
    limits = limits or Limits()
    route = axon.route if axon is not None and not config.accept_unrouted else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(config.home, config=store_config, limits=limits)
        runtime = _Runtime(MinerService(Memory(store, embedder), route), config.reader_threads)
        app.state.runtime = runtime
        runtime.readers.submit(runtime.warm_up)
        heartbeat = asyncio.create_task(axon.keep_announced()) if axon is not None else None
        log.info("miner ready", extra={"home": str(config.home), "records": store.count()})
        try:
            yield
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            runtime.close()
            log.info("miner stopped; store closed")

    app = create_app("Engram miner", __version__, limits, lifespan=lifespan)
    gate = Gate(
        security or load_config(SecurityConfig),
        config.require_signatures,
        hotkey=axon.hotkey if axon is not None else None,
        validators=(lambda: axon.validators) if axon is not None else frozenset,
    )
    records_gauge = Gauge("engram_records", "records stored", registry=app.state.metrics.registry)

    def rt(request: Request) -> _Runtime:
        return request.app.state.runtime

    @app.post(
        "/IngestSynapse", response_model=IngestResponse, openapi_extra=json_body_doc(IngestRequest)
    )
    async def ingest(request: Request) -> dict[str, Any]:
        body = await parse_body(request, IngestRequest)
        caller = await gate.admit(request, Budget.INGEST)
        runtime = rt(request)
        prepared = await runtime.read(runtime.service.prepare, [item_from_request(body)])
        (outcome,) = await runtime.write(runtime.service.commit, prepared, caller)
        if isinstance(outcome, Exception):
            raise outcome
        return {"cid": outcome, "error": None}

    @app.post(
        "/BatchIngestSynapse",
        response_model=BatchIngestResponse,
        openapi_extra=json_body_doc(BatchIngestRequest),
    )
    async def batch_ingest(request: Request) -> dict[str, Any]:
        body = await parse_body(request, BatchIngestRequest)
        caller = await gate.admit(request, Budget.INGEST, cost=len(body.items))
        runtime = rt(request)
        items, errors = items_from_batch(body.items)
        prepared = await runtime.read(runtime.service.prepare, items)
        stored = iter(await runtime.write(runtime.service.commit, prepared, caller))
        outcomes = [next(stored) if e is None else e for e in errors]
        return {
            "cids": [o if isinstance(o, str) else None for o in outcomes],
            "errors": [str(o) if isinstance(o, Exception) else None for o in outcomes],
        }

    @app.post(
        "/QuerySynapse",
        response_model=QueryResponse,
        response_model_exclude_none=True,
        openapi_extra=json_body_doc(QueryRequest),
    )
    async def query(request: Request) -> dict[str, Any]:
        body = await parse_body(request, QueryRequest)
        caller = await gate.admit(request, Budget.QUERY)
        runtime = rt(request)
        results, latency_ms = await runtime.read(
            runtime.service.query,
            body.query_text,
            body.query_vector,
            body.top_k,
            body.filter,
            body.namespace,
            body.include_embedding,
            caller,
        )
        return {"results": [r.to_dict() for r in results], "latency_ms": latency_ms}

    @app.post(
        "/ChallengeSynapse",
        response_model=ChallengeAnswer,
        openapi_extra=json_body_doc(ChallengeRequest),
    )
    async def challenge(request: Request) -> dict[str, str]:
        body = await parse_body(request, ChallengeRequest)
        parse_cid(body.cid)
        caller = await gate.admit(request, Budget.CHALLENGE)
        runtime = rt(request)
        answer = await runtime.read(
            runtime.service.challenge, Challenge(body.cid, body.nonce_hex, body.expires_at), caller
        )
        return {"embedding_hash": answer.embedding_hash, "proof": answer.proof}

    @app.get("/retrieve/{cid}", response_model=RecordOut)
    async def retrieve(cid: str, request: Request, namespace: str | None = None) -> dict[str, Any]:
        parse_cid(cid)
        caller = await gate.admit(request, Budget.QUERY)
        runtime = rt(request)
        return _record_out(await runtime.read(runtime.service.retrieve, cid, namespace, caller))

    @app.delete("/records/{cid}", response_model=DeleteResponse)
    async def delete(cid: str, request: Request, namespace: str | None = None) -> dict[str, Any]:
        parse_cid(cid)
        caller = await gate.admit(request, Budget.INGEST)
        runtime = rt(request)
        await runtime.write(runtime.service.delete, cid, namespace, caller)
        return {"cid": cid, "deleted": True}

    @app.get("/list", response_model=ListResponse)
    async def list_records(
        request: Request,
        limit: int = Query(100, ge=1, le=limits.max_list_limit),
        offset: int = Query(0, ge=0),
        namespace: str | None = None,
    ) -> dict[str, Any]:
        caller = await gate.admit(request, Budget.QUERY)
        service = rt(request).service
        records = await rt(request).read(service.list, namespace, limit, offset, caller)
        total = await rt(request).read(service.count, namespace or "default", caller)
        return {
            "records": [_record_out(r) for r in records],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @app.get("/count", response_model=CountResponse)
    async def count(request: Request, namespace: str | None = None) -> dict[str, Any]:
        caller = await gate.admit(request, Budget.QUERY)
        return {
            "count": await rt(request).read(rt(request).service.count, namespace, caller),
            "namespace": namespace,
        }

    @app.get("/namespaces/{namespace}", response_model=NamespaceInfo)
    async def namespace_info(namespace: str, request: Request) -> dict[str, Any]:
        caller = await gate.admit(request, Budget.QUERY)
        return await rt(request).read(rt(request).service.memory.describe, caller, namespace)

    @app.post(
        "/namespaces/{namespace}/grants",
        response_model=NamespaceInfo,
        openapi_extra=json_body_doc(GrantRequest),
    )
    async def grant(namespace: str, request: Request) -> dict[str, Any]:
        body = await parse_body(request, GrantRequest)
        caller = await gate.admit(request, Budget.INGEST)
        runtime = rt(request)
        return await runtime.write(
            runtime.service.memory.set_grant, caller, namespace, body.hotkey, body.permission, True
        )

    @app.delete("/namespaces/{namespace}/grants/{hotkey}", response_model=NamespaceInfo)
    async def revoke(
        namespace: str, hotkey: str, request: Request, permission: Permission
    ) -> dict[str, Any]:
        caller = await gate.admit(request, Budget.INGEST)
        runtime = rt(request)
        return await runtime.write(
            runtime.service.memory.set_grant, caller, namespace, hotkey, permission, False
        )

    @app.get("/commitment", response_model=CommitmentResponse)
    async def commitment(request: Request) -> dict[str, Any]:
        tree = await rt(request).read(rt(request).service.inventory)
        return {"root": tree.root, "count": len(tree)}

    @app.get("/prove/{cid}", response_model=InclusionProofOut)
    async def prove(cid: str, request: Request) -> dict[str, Any]:
        parse_cid(cid)
        root, proof = await rt(request).read(rt(request).service.prove, cid)
        return {**proof.to_dict(), "root": root}

    @app.get("/inventory/{index}", response_model=InclusionProofOut)
    async def inventory(index: int, request: Request) -> dict[str, Any]:
        root, proof = await rt(request).read(rt(request).service.prove_at, index)
        return {**proof.to_dict(), "root": root}

    @app.get("/health", response_model=HealthResponse)
    async def health(request: Request, response: Response) -> dict[str, Any]:
        runtime = rt(request)
        ready = runtime.model_ready.is_set()
        if not ready:
            response.status_code = UnavailableError.status
        return {
            "status": "ok" if ready else "starting",
            "ready": ready,
            "store": True,
            "model": ready,
            "version": __version__,
        }

    @app.get("/stats", response_model=StatsResponse)
    async def stats(request: Request) -> dict[str, Any]:
        caller = await gate.admit(request, Budget.QUERY)
        return await rt(request).read(rt(request).service.stats, caller)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        records_gauge.set(await rt(request).read(rt(request).service.store.count))
        return request.app.state.metrics.render()

    return app


def serve_miner(config: MinerConfig, store_config: StoreConfig | None = None) -> None:
    """Run the miner until SIGINT/SIGTERM; in-flight requests finish, then the store closes."""
    configure_logging(config.log_level)
    axon = join_subnet(config) if config.chain else None
    if axon is not None:
        log.info(
            "serving on subnet",
            extra={
                "chain": config.chain,
                "netuid": config.netuid,
                "uid": axon.uid,
                "hotkey": axon.hotkey,
            },
        )
    app = create_miner_app(config, store_config, axon=axon)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=config.shutdown_grace_s,
    )
