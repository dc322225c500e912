"""The gateway's HTTP API: the miner protocol, answered by the whole network.

Any Engram client (the SDK's one-node mode included) can point at a gateway
as at a miner; the gateway embeds text once, writes to each CID's replicas,
scatters reads and merges them. ``GET /api/network`` shows the subnet: the
chain's neurons, weights and incentive, and the validator's scores and
replica health when a validator URL is configured. The web pages
(playground, browser, CID pages, dashboard) are in :mod:`engram.gateway.web`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Query, Request, Response

from engram import __version__
from engram.chain import open_chain
from engram.cid import parse_cid
from engram.config import GatewayConfig, Limits, NetworkConfig, load_config
from engram.embed import Embedder
from engram.errors import EngramError, InvalidRequestError, NotFoundError, QuorumError
from engram.gateway.web import add_web
from engram.miner.service import item_from_request, items_from_batch
from engram.network.client import Network, WriteReport
from engram.protocol import (
    BatchIngestRequest,
    CountResponse,
    DeleteResponse,
    GatewayBatchIngestResponse,
    GatewayIngestResponse,
    HealthResponse,
    IngestRequest,
    ListResponse,
    QueryRequest,
    QueryResponse,
    RecordOut,
)
from engram.server.app import configure_logging, create_app, json_body_doc, parse_body

log = logging.getLogger("engram.gateway")


def _record_out(record: Any) -> dict[str, Any]:
    return RecordOut(**record.to_dict()).model_dump()


def _outcome(report: WriteReport | EngramError) -> WriteReport:
    if isinstance(report, EngramError):
        raise report
    if not report.ok:
        raise QuorumError(report.error or "write quorum not met")
    return report


def create_gateway_app(
    config: GatewayConfig | None = None,
    limits: Limits | None = None,
    embedder: Embedder | None = None,
) -> FastAPI:
    """The gateway over the subnet ``config.netuid`` of ``config.chain``."""
    config = config or GatewayConfig()
    limits = limits or Limits()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chain = open_chain(config.chain)
        settings = load_config(NetworkConfig, chain=config.chain, netuid=config.netuid)
        network = Network(chain, settings, embedder=embedder)
        app.state.network = network
        app.state.model_ready = asyncio.Event()
        warm = asyncio.create_task(_warm_up(network, app.state.model_ready))
        log.info("gateway ready", extra={"chain": config.chain, "netuid": config.netuid})
        try:
            yield
        finally:
            warm.cancel()
            await network.close()
            chain.close()

    app = create_app("Engram gateway", __version__, limits, lifespan=lifespan)

    def net(request: Request) -> Network:
        return request.app.state.network

    @app.post(
        "/IngestSynapse",
        response_model=GatewayIngestResponse,
        openapi_extra=json_body_doc(IngestRequest),
    )
    async def ingest(request: Request) -> dict[str, Any]:
        body = await parse_body(request, IngestRequest)
        (report,) = await net(request).ingest([item_from_request(body)])
        report = _outcome(report)
        return {"cid": report.cid, "error": None, "replicas": list(report.acked)}

    @app.post(
        "/BatchIngestSynapse",
        response_model=GatewayBatchIngestResponse,
        openapi_extra=json_body_doc(BatchIngestRequest),
    )
    async def batch_ingest(request: Request) -> dict[str, Any]:
        body = await parse_body(request, BatchIngestRequest)
        items, invalid = items_from_batch(body.items)
        reports = iter(await net(request).ingest(items))
        cids: list[str | None] = []
        errors: list[str | None] = []
        replicas: list[list[str]] = []
        for outcome in (next(reports) if e is None else e for e in invalid):
            if isinstance(outcome, WriteReport) and outcome.ok:
                cids.append(outcome.cid)
                errors.append(None)
                replicas.append(list(outcome.acked))
            else:
                cids.append(None)
                errors.append(
                    outcome.message if isinstance(outcome, EngramError) else outcome.error
                )
                replicas.append([])
        return {"cids": cids, "errors": errors, "replicas": replicas}

    @app.post(
        "/QuerySynapse",
        response_model=QueryResponse,
        response_model_exclude_none=True,
        openapi_extra=json_body_doc(QueryRequest),
    )
    async def query(request: Request) -> dict[str, Any]:
        body = await parse_body(request, QueryRequest)
        network = net(request)
        if (body.query_text is None) == (body.query_vector is None):
            raise InvalidRequestError("give exactly one of query_text or query_vector")
        started = asyncio.get_running_loop().time()
        vector = body.query_vector or await network.embed_query(body.query_text or "")
        results, _ = await network.query(
            vector, body.top_k, body.filter, body.namespace, body.include_embedding
        )
        latency_ms = (asyncio.get_running_loop().time() - started) * 1000
        return {"results": [r.to_dict() for r in results], "latency_ms": latency_ms}

    @app.get("/retrieve/{cid}", response_model=RecordOut)
    async def retrieve(cid: str, request: Request, namespace: str | None = None) -> dict[str, Any]:
        parse_cid(cid)
        record, _ = await net(request).get(cid, namespace, verify=True)
        if record is None:
            raise NotFoundError(f"no miner holds {cid}")
        return _record_out(record)

    @app.delete("/records/{cid}", response_model=DeleteResponse)
    async def delete(cid: str, request: Request, namespace: str | None = None) -> dict[str, Any]:
        parse_cid(cid)
        await net(request).delete(cid, namespace)
        return {"cid": cid, "deleted": True}

    @app.get("/list", response_model=ListResponse)
    async def list_records(
        request: Request,
        limit: int = Query(100, ge=1, le=limits.max_list_limit),
        offset: int = Query(0, ge=0),
        namespace: str | None = None,
    ) -> dict[str, Any]:
        records = await net(request).records(namespace)
        return {
            "records": [_record_out(r) for r in records[offset : offset + limit]],
            "total": len(records),
            "limit": limit,
            "offset": offset,
        }

    @app.get("/count", response_model=CountResponse)
    async def count(request: Request, namespace: str | None = None) -> dict[str, Any]:
        return {"count": await net(request).count(namespace), "namespace": namespace}

    @app.get("/health", response_model=HealthResponse)
    async def health(request: Request, response: Response) -> dict[str, Any]:
        state = await net(request).health()
        model = request.app.state.model_ready.is_set()
        ready = bool(state["ready"]) and model
        if not ready:
            response.status_code = 503
        return {
            "status": "ok" if ready else ("starting" if not model else state["status"]),
            "ready": ready,
            "store": bool(state["ready"]),
            "model": model,
            "version": __version__,
        }

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return await net(request).stats()

    @app.get("/api/network")
    async def network_view(request: Request) -> dict[str, Any]:
        return await network_summary(net(request), config.validator_url)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return request.app.state.metrics.render()

    add_web(app, config, network_summary)
    return app


async def _warm_up(network: Network, ready: asyncio.Event) -> None:
    """Load the embedding model off the request path; /health is ready once it answers."""
    try:
        await asyncio.to_thread(network.embedder.encode, ["warm up"])
        ready.set()
    except EngramError:
        log.exception("the embedder could not be loaded; text requests will fail")


async def network_summary(network: Network, validator_url: str | None) -> dict[str, Any]:
    """The subnet at a glance: the chain's view, joined with the validator's scores."""
    graph = await network.metagraph(refresh=True)
    serving = {n.hotkey for n in graph.serving()}
    scores: dict[str, Any] = {}
    validator: dict[str, Any] | None = None
    if validator_url:
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                validator = (await http.get(validator_url.rstrip("/") + "/api/scores")).json()
            scores = {str(k): v for k, v in (validator or {}).get("miners", {}).items()}
        except (httpx.HTTPError, ValueError) as exc:
            validator = {"error": f"validator at {validator_url} did not answer: {exc!r}"}
    weights = {str(v): {str(m): w for m, w in row.items()} for v, row in graph.weights.items()}
    neurons = []
    for n in graph.neurons:
        score = scores.get(str(n.uid), {})
        neurons.append(
            {
                "uid": n.uid,
                "hotkey": n.hotkey,
                "coldkey": n.coldkey,
                "role": "validator" if n.validator_permit else "miner",
                "stake": n.stake,
                "validator_permit": n.validator_permit,
                "axon": n.axon_url,
                "serving": n.hotkey in serving,
                "incentive": n.incentive,
                "emission": n.emission,
                **{
                    k: score.get(k)
                    for k in ("recall", "latency_ms", "proof_rate", "score", "ema", "weight")
                },
            }
        )
    return {
        "chain": network.chain.url,
        "netuid": graph.netuid,
        "block": graph.block,
        "tempo": graph.tempo,
        "neurons": neurons,
        "weights": weights,
        "replica_health": (validator or {}).get("replica_health"),
        "validator": validator,
    }


def serve_gateway(config: GatewayConfig) -> None:
    """Run the gateway until SIGINT/SIGTERM."""
    configure_logging(config.log_level)
    uvicorn.run(
        create_gateway_app(config),
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,
    )
