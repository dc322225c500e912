"""One router that serves any :class:`~engram.api.node.Node` over HTTP.

The miner mounts it over its :class:`~engram.node.local.LocalNode`, the
gateway over a :class:`~engram.network.node.NetworkNode`; each adds only its
own extras (proofs on the miner, ``/api/*`` and the web pages on the
gateway). Every route parses its wire message, admits the caller through the
:class:`~engram.server.gate.Gate`, runs the node's operation on a worker
thread (the storage engine and the network node block) and encodes the
answer. ``ROUTES`` names the route(s) serving each operation; a test holds it
to :data:`~engram.api.node.OPERATIONS`.

The original network's clients keep working here: their ``DELETE
/retrieve/{cid}`` and ``POST /list``, and their namespace and signing fields
(``namespace_key`` guards a namespace; see :mod:`engram.security.access`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import unquote

from fastapi import FastAPI, Query, Request, Response

from engram.api.node import Node, Stored
from engram.api.wire import (
    BatchIngestRequest,
    BatchIngestResponse,
    CountResponse,
    DeleteRequest,
    DeleteResponse,
    GatewayBatchIngestResponse,
    GatewayIngestResponse,
    GrantRequest,
    HealthResponse,
    IngestRequest,
    IngestResponse,
    LegacyFields,
    ListRequest,
    ListResponse,
    NamespaceInfo,
    QueryRequest,
    QueryResponse,
    RecordOut,
)
from engram.cid import parse_cid
from engram.config import Limits
from engram.errors import EngramError, InvalidRequestError, NotFoundError, UnavailableError
from engram.network.client import NAMESPACE_KEY_HEADER
from engram.records import IngestItem, Record
from engram.security.access import Caller, Permission
from engram.security.legacy import namespace_signer
from engram.security.ratelimit import Budget
from engram.server.app import json_body_doc, parse_body
from engram.server.gate import Gate

T = TypeVar("T")

ROUTES: dict[str, tuple[str, ...]] = {
    "ingest": ("POST /IngestSynapse", "POST /BatchIngestSynapse"),
    "query": ("POST /QuerySynapse",),
    "get": ("GET /retrieve/{cid}",),
    "delete": ("DELETE /records/{cid}", "DELETE /retrieve/{cid}"),
    "list": ("GET /list", "POST /list"),
    "count": ("GET /count",),
    "stats": ("GET /stats",),
    "health": ("GET /health",),
    "set_grant": (
        "POST /namespaces/{namespace}/grants",
        "DELETE /namespaces/{namespace}/grants/{hotkey}",
    ),
    "describe_namespace": ("GET /namespaces/{namespace}",),
}
"""The HTTP routes of each node operation."""


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
    )


def record_out(record: Record) -> dict[str, Any]:
    return RecordOut(**record.to_dict()).model_dump()


class NodeRoutes:
    """The node API of ``app.state.node``, run on ``app.state.pool``, admitted by ``gate``."""

    def __init__(self, gate: Gate, limits: Limits, *, replicated: bool) -> None:
        self.gate = gate
        self.limits = limits
        self.replicated = replicated  # answers name the replicas that acknowledged each write

    @staticmethod
    async def run(request: Request, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the app's worker pool: the node's operations block."""
        pool: Executor = request.app.state.pool
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @staticmethod
    def node(request: Request) -> Node:
        return request.app.state.node

    async def caller(
        self, request: Request, budget: Budget, body: LegacyFields | None = None, cost: float = 1.0
    ) -> Caller:
        """The verified caller, with the legacy namespace key it presented (body or header)."""
        caller = await self.gate.admit(request, budget, cost)
        key = body.namespace_key if body is not None else None
        key = key or unquote(request.headers.get(NAMESPACE_KEY_HEADER, ""))
        if key:
            caller = replace(caller, namespace_key=key)
        namespace = getattr(body, "namespace", None)
        if (
            body is not None
            and not caller.signed
            and namespace
            and body.namespace_hotkey
            and body.namespace_sig
            and body.namespace_timestamp_ms is not None
        ):
            window_s = self.gate.config.legacy_signature_window_s
            hotkey = namespace_signer(
                namespace,
                body.namespace_hotkey,
                body.namespace_sig,
                body.namespace_timestamp_ms,
                window_s,
            )
            caller = replace(caller, hotkey=hotkey)
        return caller

    def mount(self, app: FastAPI) -> None:
        """Add every route of :data:`ROUTES` to ``app``."""
        single = GatewayIngestResponse if self.replicated else IngestResponse
        batch = GatewayBatchIngestResponse if self.replicated else BatchIngestResponse
        post = app.post
        post("/IngestSynapse", response_model=single, openapi_extra=json_body_doc(IngestRequest))(
            self.ingest
        )
        post(
            "/BatchIngestSynapse",
            response_model=batch,
            openapi_extra=json_body_doc(BatchIngestRequest),
        )(self.batch_ingest)
        post(
            "/QuerySynapse",
            response_model=QueryResponse,
            response_model_exclude_none=True,
            openapi_extra=json_body_doc(QueryRequest),
        )(self.query)
        app.get("/retrieve/{cid}", response_model=RecordOut)(self.get)
        app.delete("/records/{cid}", response_model=DeleteResponse)(self.delete)
        app.delete("/retrieve/{cid}", response_model=DeleteResponse)(self.delete_legacy)
        app.get("/list", response_model=ListResponse)(self.list)
        post("/list", response_model=ListResponse, openapi_extra=json_body_doc(ListRequest))(
            self.list_filtered
        )
        app.get("/count", response_model=CountResponse)(self.count)
        app.get("/stats")(self.stats)
        app.get("/health", response_model=HealthResponse)(self.health)
        app.get("/namespaces/{namespace}", response_model=NamespaceInfo)(self.describe_namespace)
        post(
            "/namespaces/{namespace}/grants",
            response_model=NamespaceInfo,
            openapi_extra=json_body_doc(GrantRequest),
        )(self.grant)
        app.delete("/namespaces/{namespace}/grants/{hotkey}", response_model=NamespaceInfo)(
            self.revoke
        )

    # --- writes --------------------------------------------------------------------------

    def _written(self, stored: Stored) -> dict[str, Any]:
        extra = {"replicas": list(stored.replicas)} if self.replicated else {}
        return {"cid": stored.cid, "error": None, **extra}

    async def ingest(self, request: Request) -> dict[str, Any]:
        body = await parse_body(request, IngestRequest)
        caller = await self.caller(request, Budget.INGEST, body)
        item = item_from_request(body)
        (outcome,) = await self.run(request, self.node(request).ingest, [item], caller)
        if isinstance(outcome, EngramError):
            raise outcome
        return self._written(outcome)

    async def batch_ingest(self, request: Request) -> dict[str, Any]:
        body = await parse_body(request, BatchIngestRequest)
        caller = await self.caller(request, Budget.INGEST, body.items[0], cost=len(body.items))
        items: list[IngestItem] = []
        outcomes: list[Stored | EngramError | None] = []
        for req in body.items:
            try:
                items.append(item_from_request(req))
                outcomes.append(None)
            except EngramError as exc:
                outcomes.append(exc)
        stored = iter(await self.run(request, self.node(request).ingest, items, caller))
        done = [next(stored) if o is None else o for o in outcomes]
        answer: dict[str, Any] = {
            "cids": [o.cid if isinstance(o, Stored) else None for o in done],
            "errors": [o.message if isinstance(o, EngramError) else None for o in done],
        }
        if self.replicated:
            answer["replicas"] = [list(o.replicas) if isinstance(o, Stored) else [] for o in done]
        return answer

    async def _delete(
        self, request: Request, cid: str, namespace: str | None, body: LegacyFields | None
    ) -> dict[str, Any]:
        parse_cid(cid)
        caller = await self.caller(request, Budget.INGEST, body)
        await self.run(request, self.node(request).delete, cid, namespace, caller)
        return {"cid": cid, "deleted": True}

    async def delete(
        self, cid: str, request: Request, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self._delete(request, cid, namespace, None)

    async def delete_legacy(
        self, cid: str, request: Request, namespace: str | None = None
    ) -> dict[str, Any]:
        """The original clients' delete; its optional JSON body may name the namespace."""
        body = await parse_body(request, DeleteRequest) if await request.body() else None
        ns = namespace or (body.namespace if body is not None else None)
        return await self._delete(request, cid, ns, body)

    async def grant(self, namespace: str, request: Request) -> dict[str, Any]:
        body = await parse_body(request, GrantRequest)
        caller = await self.caller(request, Budget.INGEST)
        node = self.node(request)
        return await self.run(
            request, node.set_grant, namespace, body.hotkey, body.permission, True, caller
        )

    async def revoke(
        self, namespace: str, hotkey: str, request: Request, permission: Permission
    ) -> dict[str, Any]:
        caller = await self.caller(request, Budget.INGEST)
        node = self.node(request)
        return await self.run(request, node.set_grant, namespace, hotkey, permission, False, caller)

    # --- reads ---------------------------------------------------------------------------

    async def query(self, request: Request) -> dict[str, Any]:
        body = await parse_body(request, QueryRequest)
        caller = await self.caller(request, Budget.QUERY, body)
        started = time.perf_counter()
        results = await self.run(
            request,
            self.node(request).query,
            body.query_text,
            body.query_vector,
            body.top_k,
            body.filter,
            body.namespace,
            body.include_embedding,
            caller,
        )
        latency_ms = (time.perf_counter() - started) * 1000
        return {"results": [r.to_dict() for r in results], "latency_ms": latency_ms}

    async def get(self, cid: str, request: Request, namespace: str | None = None) -> dict[str, Any]:
        parse_cid(cid)
        caller = await self.caller(request, Budget.QUERY)
        record = await self.run(request, self.node(request).get, cid, namespace, caller)
        if record is None:
            where = (
                f"namespace {namespace}" if namespace is not None else "any namespace you may read"
            )
            raise NotFoundError(f"no record {cid} in {where}")
        return record_out(record)

    async def _page(self, request: Request, body: ListRequest, caller: Caller) -> dict[str, Any]:
        node = self.node(request)
        records = await self.run(
            request, node.list, body.limit, body.offset, body.namespace, body.filter, caller
        )
        if body.filter:  # a filtered total would cost a second scan: report what was seen
            total = body.offset + len(records)
        else:
            total = await self.run(request, node.count, body.namespace or "default", caller)
        return {
            "records": [record_out(r) for r in records],
            "total": total,
            "limit": body.limit,
            "offset": body.offset,
        }

    async def list(
        self,
        request: Request,
        limit: int = Query(100, ge=1),
        offset: int = Query(0, ge=0),
        namespace: str | None = None,
    ) -> dict[str, Any]:
        if limit > self.limits.max_list_limit:
            raise InvalidRequestError(f"limit must be at most {self.limits.max_list_limit}")
        caller = await self.caller(request, Budget.QUERY)
        return await self._page(
            request, ListRequest(limit=limit, offset=offset, namespace=namespace), caller
        )

    async def list_filtered(self, request: Request) -> dict[str, Any]:
        """The original clients' listing: ``POST /list`` with a metadata filter."""
        body = await parse_body(request, ListRequest)
        caller = await self.caller(request, Budget.QUERY, body)
        return await self._page(request, body, caller)

    async def count(self, request: Request, namespace: str | None = None) -> dict[str, Any]:
        caller = await self.caller(request, Budget.QUERY)
        count = await self.run(request, self.node(request).count, namespace, caller)
        return {"count": count, "namespace": namespace}

    async def stats(self, request: Request) -> dict[str, Any]:
        caller = await self.caller(request, Budget.QUERY)
        return await self.run(request, self.node(request).stats, caller)

    async def health(self, request: Request, response: Response) -> dict[str, Any]:
        state = await self.run(request, self.node(request).health)
        if not state.get("ready"):
            response.status_code = UnavailableError.status
        return state

    async def describe_namespace(self, namespace: str, request: Request) -> dict[str, Any]:
        caller = await self.caller(request, Budget.QUERY)
        node = self.node(request)
        return await self.run(request, node.describe_namespace, namespace, caller)
