"""The gateway's web pages and the JSON routes only they need.

Four pages, hand-written HTML, CSS and JavaScript served from this package
(no build step, nothing fetched from elsewhere; a Content-Security-Policy
holds the pages to this origin):

* ``/`` the playground: store a text, or upload a PDF, text or Markdown file;
* ``/browse`` search by meaning with a metadata filter, and page through records;
* ``/cid/<cid>`` a record and a live audit of the replicas routing names for it;
* ``/dashboard`` neurons, scores, weights and replica health, polled live.

Everything else the pages do goes through the gateway's protocol routes
(``/IngestSynapse``, ``/QuerySynapse``, ``/list``, ``/api/network``).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from engram._version import __version__
from engram.cid import is_valid_cid, parse_cid
from engram.config import GatewayConfig, Limits
from engram.documents import Chunk, split_document
from engram.errors import EngramError, InvalidRequestError, PayloadTooLargeError, QuorumError
from engram.gateway.history import SAMPLE_INTERVAL_S, History
from engram.network.audit import CIDAudit, audit_cid
from engram.network.client import Network, WriteReport
from engram.network.node import NetworkNode
from engram.records import IngestItem, check_namespace

log = logging.getLogger("engram.gateway.web")

Summary = Callable[[Network, str | None], Coroutine[Any, Any, dict[str, Any]]]
_STATIC = resources.files("engram.gateway") / "static"
_NAV = (
    ("playground", "/", "Playground"),
    ("browse", "/browse", "Browse"),
    ("dashboard", "/dashboard", "Dashboard"),
)
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_EMBEDDING_HEAD = 8  # values of the embedding shown on a CID page


def _page(page: str, title: str, **values: str) -> str:
    """A page: the shared layout around ``static/<page>.html``, with ``{{name}}`` filled in."""
    nav = "".join(
        f'<li><a href="{href}"{" aria-current=page" if name == page else ""}>{label}</a></li>'
        for name, href, label in _NAV
    )
    text = (_STATIC / "layout.html").read_text(encoding="utf-8")
    body = (_STATIC / f"{page}.html").read_text(encoding="utf-8")
    fills = {
        "title": html.escape(title),
        "page": page,
        "script": f"{page}.js",
        "nav": nav,
        "main": body,
    }
    for name, value in {**fills, **values}.items():
        text = text.replace("{{" + name + "}}", value)
    return text


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status, headers={"content-security-policy": _CSP})


def _metadata_param(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequestError("metadata must be a JSON object")
    return value


def _audit_doc(audit: CIDAudit) -> dict[str, Any]:
    record = audit.record
    return {
        "cid": audit.cid,
        "expected": len(audit.replicas),
        "verified": audit.verified,
        "health": audit.health,
        "replicas": [
            {
                "rank": r.rank,
                "uid": r.uid,
                "hotkey": r.hotkey,
                "axon": r.axon,
                "verdict": r.verdict,
                "latency_ms": r.latency_ms,
                "detail": r.detail,
            }
            for r in audit.replicas
        ],
        "record": None
        if record is None
        else {
            "namespace": record.namespace,
            "model_version": record.model_version,
            "metadata": record.metadata,
            "text": record.text,
            "dim": int(record.embedding.size),
            "embedding_head": record.embedding[:_EMBEDDING_HEAD].tolist(),
        },
    }


def _chunk_doc(chunk: Chunk, outcome: WriteReport | EngramError) -> dict[str, Any]:
    doc = {"text": chunk.text, **{k: chunk.metadata.get(k) for k in ("chunk", "page", "section")}}
    if isinstance(outcome, EngramError):
        return {**doc, "cid": None, "replicas": [], "error": outcome.message}
    return {
        **doc,
        "cid": outcome.cid if outcome.ok else None,
        "replicas": list(outcome.acked),
        "error": outcome.error,
    }


async def _sample(app: FastAPI, summary: Summary, validator_url: str | None) -> None:
    """Append a snapshot of the subnet to the history every SAMPLE_INTERVAL_S.

    A failed sample is skipped, never fatal: the charts show a gap, the next
    sample comes on time, and ``/api/network`` tells the user what is wrong.
    """
    while True:
        try:
            node: NetworkNode = app.state.node
            app.state.history.add(await node.arun(summary(node.network, validator_url)))
        except EngramError as exc:
            log.debug("no network snapshot for the dashboard: %s", exc.message)
        except Exception:  # a background loop must outlive one odd answer
            log.exception("the dashboard's network snapshot failed")
        await asyncio.sleep(SAMPLE_INTERVAL_S)


def add_web(app: FastAPI, config: GatewayConfig, summary: Summary) -> None:
    """Serve the pages, their static files and JSON routes from the gateway ``app``.

    ``summary`` builds the ``/api/network`` view; the dashboard's history samples it.
    """
    playground = _page(
        "playground",
        "Playground",
        max_upload_bytes=str(config.max_upload_bytes),
        max_upload=f"{config.max_upload_bytes / 2**20:g} MiB",
    )
    browse = _page("browse", "Browse")
    dashboard = _page("dashboard", "Dashboard")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.history = History()
        app.state.audit_http = httpx.AsyncClient(headers={"user-agent": f"engram/{__version__}"})
        sampler = asyncio.create_task(_sample(app, summary, config.validator_url))
        try:
            yield
        finally:
            sampler.cancel()
            await app.state.audit_http.aclose()

    router = APIRouter(lifespan=lifespan)

    def network(request: Request) -> NetworkNode:
        return request.app.state.node

    @router.get("/", include_in_schema=False)
    async def playground_page() -> HTMLResponse:
        return _html(playground)

    @router.get("/browse", include_in_schema=False)
    async def browse_page() -> HTMLResponse:
        return _html(browse)

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard_page() -> HTMLResponse:
        return _html(dashboard)

    @router.get("/cid/{cid}", include_in_schema=False)
    async def cid_page(cid: str) -> HTMLResponse:
        # A bad CID still gets the page (status 400), which shows the API's message.
        page = _page("cid", cid if is_valid_cid(cid) else "Not a CID", cid=html.escape(cid))
        return _html(page, 200 if is_valid_cid(cid) else 400)

    @router.get("/api/cid/{cid}/audit")
    async def audit(cid: str, request: Request) -> dict[str, Any]:
        """Fetch the record from each replica routing names and check it hashes to ``cid``."""
        parse_cid(cid)
        node = network(request)
        replicas = await node.arun(node.network.replicas(cid))
        result = await audit_cid(
            request.app.state.audit_http, cid, replicas, node.network.config.read_deadline_s
        )
        return _audit_doc(result)

    @router.post("/api/upload")
    async def upload(
        request: Request,
        filename: str = Query(min_length=1, max_length=255),
        namespace: str | None = None,
        metadata: str | None = None,
    ) -> dict[str, Any]:
        """Store a PDF, text or Markdown file (the raw request body) as one record per passage."""
        data = await request.body()
        if len(data) > config.max_upload_bytes:
            raise PayloadTooLargeError(
                f"{filename} is {len(data)} bytes, the upload limit is {config.max_upload_bytes}"
            )
        limits: Limits = request.app.state.limits
        namespace = check_namespace(namespace, limits)
        doc = await asyncio.to_thread(
            split_document,
            data,
            filename,
            request.headers.get("content-type"),
            _metadata_param(metadata),
            max_chunks=limits.max_batch_items,
        )
        items = [
            IngestItem(text=c.text, metadata=c.metadata, namespace=namespace) for c in doc.chunks
        ]
        node = network(request)
        outcomes = await node.arun(node.network.ingest(items))
        chunks = [_chunk_doc(c, o) for c, o in zip(doc.chunks, outcomes, strict=True)]
        stored = sum(c["cid"] is not None for c in chunks)
        if not stored:
            first = outcomes[0]
            raise first if isinstance(first, EngramError) else QuorumError(str(first.error))
        return {
            "filename": doc.filename,
            "kind": doc.kind,
            "content_cid": doc.content_cid,
            "pages": doc.pages,
            "namespace": namespace,
            "stored": stored,
            "chunks": chunks,
        }

    @router.get("/api/history")
    async def history(request: Request, since: float = 0.0) -> dict[str, Any]:
        """Snapshots of scores and weights per miner taken after ``since`` (unix seconds)."""
        ring: History = request.app.state.history
        return {
            "interval_s": SAMPLE_INTERVAL_S,
            "size": ring.size,
            "snapshots": ring.since(since),
        }

    app.include_router(router)
    app.mount("/static", StaticFiles(packages=[("engram.gateway", "static")]), name="static")
