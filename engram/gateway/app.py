"""The gateway's HTTP API: the miner protocol, answered by the whole network.

Any Engram client (the SDK's one-node mode included) can point at a gateway
as at a miner; the gateway embeds text once, writes to each CID's replicas,
scatters reads and merges them. A signed request goes on to the miners as
signed; with a wallet, the gateway signs its own calls (for anonymous callers,
as made on their behalf) and acts for the API keys it issued
(:mod:`engram.gateway.keys`). It limits each verified identity (hotkey, API
key, else IP) like a miner does, and sheds load past ``max_in_flight``. ``GET /api/network`` shows the subnet: the
chain's neurons, weights and incentive, and the validator's scores and
replica health when a validator URL is configured. The web pages
(playground, browser, CID pages, dashboard) are in :mod:`engram.gateway.web`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from engram._version import __version__
from engram.chain import open_chain
from engram.chain.keys import open_wallet
from engram.config import GatewayConfig, Limits, NetworkConfig, SecurityConfig, load_config
from engram.embed import Embedder
from engram.errors import EngramError
from engram.gateway.keys import mount_keys
from engram.gateway.web import add_web
from engram.network.client import Network
from engram.network.node import NetworkNode
from engram.process import listen
from engram.security.apikeys import FILENAME as KEYS_FILENAME
from engram.security.apikeys import ApiKeys
from engram.server.app import configure_logging, create_app, serve_app
from engram.server.auditlog import GATEWAY_FILENAME, AuditLog
from engram.server.gate import Gate
from engram.server.routes import NodeRoutes

log = logging.getLogger("engram.gateway")


def _warm_up(node: NetworkNode) -> None:
    """Load the embedding model off the request path; /health is ready once it answers."""
    try:
        node.warm_up()
    except EngramError:
        log.exception("the embedder could not be loaded; text requests will fail")


def create_gateway_app(
    config: GatewayConfig | None = None,
    limits: Limits | None = None,
    embedder: Embedder | None = None,
) -> FastAPI:
    """The gateway over the subnet ``config.netuid`` of ``config.chain``."""
    config = config or GatewayConfig()
    limits = limits or Limits()
    security = load_config(SecurityConfig)  # the gateway's own budgets, per verified identity
    audit = AuditLog(config.home / GATEWAY_FILENAME, security.audit_max_rows)
    wallet = open_wallet(config.wallet, config.wallet_path) if config.wallet else None
    keys = ApiKeys(config.home / KEYS_FILENAME) if wallet is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chain = open_chain(config.chain)
        settings = load_config(NetworkConfig, chain=config.chain, netuid=config.netuid)
        node = NetworkNode(settings, embedder, chain=chain, signer=wallet, served=True)
        pool = ThreadPoolExecutor(config.worker_threads, thread_name_prefix="engram-gateway")
        app.state.node, app.state.pool = node, pool
        pool.submit(_warm_up, node)
        log.info("gateway ready", extra={"chain": config.chain, "netuid": config.netuid})
        try:
            audit.open()  # created and migrated now: a bad home fails the start
            if keys is not None:
                keys.open()
            yield
        finally:
            pool.shutdown(wait=True)
            audit.close()
            if keys is not None:
                keys.close()
            node.close()
            chain.close()

    app = create_app("Engram gateway", __version__, limits, config.max_in_flight, lifespan=lifespan)
    gate = Gate(security, require_signatures=False, keys=keys)
    NodeRoutes(gate, replicated=True, audit=audit).mount(app)
    mount_keys(app, gate, keys, audit)

    def node(request: Request) -> NetworkNode:
        return request.app.state.node

    @app.get("/api/network")
    async def network_view(request: Request) -> dict[str, Any]:
        net = node(request)
        return await net.arun(network_summary(net.network, config.validator_url))

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return request.app.state.metrics.render()

    add_web(app, config, network_summary)
    return app


async def network_summary(network: Network, validator_url: str | None) -> dict[str, Any]:
    """The subnet at a glance: the chain's view, joined with the validator's scores; a
    miner is ``serving`` while it answers its health probes, as routing sees it."""
    graph = await network.metagraph(refresh=True)
    serving = {n.hotkey for n in await network.liveness.serving(graph.serving())}
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
    """Run the gateway until SIGINT/SIGTERM/SIGHUP; a taken port fails before anything starts."""
    configure_logging(config.log_level)
    with listen(config.host, config.port) as sock:
        serve_app(create_gateway_app(config), sock)
