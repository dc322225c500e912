"""The miner's HTTP API: the node router over a :class:`LocalNode`, plus storage proofs.

The store is synchronous, so every operation runs on a pool of worker
threads (writes are serialised by the store itself); the event loop only
moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from prometheus_client import Gauge

from engram._version import __version__
from engram.api.wire import (
    ApplyDeletionsRequest,
    ApplyDeletionsResponse,
    ChallengeAnswer,
    ChallengeRequest,
    CommitmentResponse,
    DeletionsResponse,
    InclusionProofOut,
)
from engram.cid import parse_cid
from engram.config import Limits, MinerConfig, SecurityConfig, StoreConfig, load_config
from engram.embed import Embedder
from engram.errors import EngramError
from engram.miner.axon import Axon, join_subnet
from engram.node.local import LocalNode
from engram.process import listen
from engram.proofs import Challenge
from engram.security.ratelimit import Budget
from engram.server.app import (
    configure_logging,
    create_app,
    json_body_doc,
    parse_body,
    serve_app,
)
from engram.server.auditlog import FILENAME as AUDIT_FILENAME
from engram.server.auditlog import AuditLog
from engram.server.gate import Gate
from engram.server.routes import NodeRoutes
from engram.store import Store
from engram.store.db import Deletion

log = logging.getLogger("engram.miner")


class SubnetNode(LocalNode):
    """A miner's node on a subnet: its ``/health`` also says whether the chain answers
    (it keeps serving while it does not)."""

    def __init__(self, store: Store, embedder: Embedder | None, axon: Axon, **options: Any) -> None:
        super().__init__(store, embedder, **options)
        self.axon = axon

    def health(self) -> dict[str, Any]:
        return {**super().health(), "chain": self.axon.watch.status()}


def _warm_up(node: LocalNode) -> None:
    """Load the model off the request path; /health says ready once it answers."""
    try:
        node.warm_up()
    except EngramError:
        log.exception("the embedder could not be loaded; text requests will fail")


def create_miner_app(
    config: MinerConfig | None = None,
    store_config: StoreConfig | None = None,
    limits: Limits | None = None,
    embedder: Embedder | None = None,
    axon: Axon | None = None,
    security: SecurityConfig | None = None,
) -> FastAPI:
    """The miner app over a store under ``config.home``; opened and closed with the app.

    With an ``axon`` it serves on a subnet: it keeps its view of the metagraph in
    sync (announcing itself again only if it moved) and refuses writes routed to
    other miners unless ``config.accept_unrouted``.
    """
    config = config or MinerConfig()
    limits = limits or Limits()
    security = security or load_config(SecurityConfig)
    route = axon.route if axon is not None and not config.accept_unrouted else None
    audit = AuditLog(config.home / AUDIT_FILENAME, security.audit_max_rows)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(config.home, config=store_config, limits=limits)
        options: dict[str, Any] = {
            "route": route,
            "served": True,
            "unsigned_public_deletes": security.unsigned_public_deletes,
        }
        node = (
            LocalNode(store, embedder, **options)
            if axon is None
            else SubnetNode(store, embedder, axon, **options)
        )
        pool = ThreadPoolExecutor(config.reader_threads, thread_name_prefix="engram-node")
        app.state.node, app.state.pool = node, pool
        pool.submit(_warm_up, node)
        sync = (
            asyncio.create_task(axon.keep_synced(), name="engram-chain-sync")
            if axon is not None
            else None
        )
        log.info("miner ready", extra={"home": str(config.home), "records": store.count()})
        try:
            audit.open()  # created and migrated now: a bad home fails the start
            yield
        finally:
            if sync is not None:
                sync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sync
            pool.shutdown(wait=True)
            audit.close()
            node.close()
            log.info("miner stopped; store closed")

    app = create_app("Engram miner", __version__, limits, lifespan=lifespan)
    gate = Gate(
        security,
        config.require_signatures,
        hotkey=axon.hotkey if axon is not None else None,
        validators=(lambda: axon.validators) if axon is not None else frozenset,
    )
    routes = NodeRoutes(gate, replicated=False, audit=audit)
    routes.mount(app)
    records_gauge = Gauge("engram_records", "records stored", registry=app.state.metrics.registry)

    def node(request: Request) -> LocalNode:
        return request.app.state.node

    @app.post(
        "/ChallengeSynapse",
        response_model=ChallengeAnswer,
        openapi_extra=json_body_doc(ChallengeRequest),
    )
    async def challenge(request: Request) -> dict[str, str]:
        body = await parse_body(request, ChallengeRequest)
        parse_cid(body.cid)
        caller = await routes.caller(request, Budget.CHALLENGE, body)
        challenge = Challenge(body.cid, body.nonce_hex, body.expires_at)
        answer = await routes.run(request, node(request).challenge, challenge, caller)
        return {"embedding_hash": answer.embedding_hash, "proof": answer.proof}

    @app.get("/commitment", response_model=CommitmentResponse)
    async def commitment(request: Request) -> dict[str, Any]:
        tree = await routes.run(request, node(request).inventory)
        return {"root": tree.root, "count": len(tree)}

    @app.get("/prove/{cid}", response_model=InclusionProofOut)
    async def prove(cid: str, request: Request) -> dict[str, Any]:
        parse_cid(cid)
        root, proof = await routes.run(request, node(request).prove, cid)
        return {**proof.to_dict(), "root": root}

    @app.get("/inventory/{index}", response_model=InclusionProofOut)
    async def inventory(index: int, request: Request) -> dict[str, Any]:
        root, proof = await routes.run(request, node(request).prove_at, index)
        return {**proof.to_dict(), "root": root}

    @app.get("/deletions", response_model=DeletionsResponse)
    async def deletions(
        request: Request,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1)] = limits.max_list_limit,
    ) -> dict[str, Any]:
        """Tombstones this miner kept, with the signed requests that prove them (validators
        hand them to replicas that missed the delete)."""
        caller = await routes.caller(request, Budget.QUERY)
        page = await routes.run(request, node(request).deletions, after, limit, caller)
        return {"deletions": [asdict(d) for d in page], "next": page[-1].seq if page else after}

    @app.post(
        "/deletions",
        response_model=ApplyDeletionsResponse,
        openapi_extra=json_body_doc(ApplyDeletionsRequest),
    )
    async def apply_deletions(request: Request) -> dict[str, Any]:
        """Deletions other replicas kept: each applied here if its proof holds."""
        body = await parse_body(request, ApplyDeletionsRequest)
        await routes.caller(request, Budget.INGEST, cost=max(1, len(body.deletions)))
        given = [Deletion(**d.model_dump()) for d in body.deletions]
        return {"outcomes": await routes.run(request, node(request).apply_deletions, given)}

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        records_gauge.set(await routes.run(request, node(request).store.count))
        return request.app.state.metrics.render()

    return app


def serve_miner(config: MinerConfig, store_config: StoreConfig | None = None) -> None:
    """Run the miner until SIGINT/SIGTERM/SIGHUP; in-flight requests finish, then the store closes.

    The port is taken before the axon is announced, so a miner that cannot
    listen never appears on chain as serving.
    """
    configure_logging(config.log_level)
    with listen(config.host, config.port) as sock:
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
        serve_app(
            create_miner_app(config, store_config, axon=axon),
            sock,
            timeout_graceful_shutdown=config.shutdown_grace_s,
        )
