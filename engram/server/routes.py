"""One router that serves any :class:`~engram.api.node.Node` over HTTP.

The miner mounts it over its :class:`~engram.node.local.LocalNode`, the
gateway over a :class:`~engram.network.node.NetworkNode`; each adds only its
own extras (proofs on the miner, ``/api/*`` and the web pages on the
gateway). The router holds no operation of its own: it mounts every route of
every call in :data:`~engram.api.calls.NODE_CALLS`, and each request is
parsed into the route's wire message, turned into its call
(:meth:`~engram.api.calls.Call.from_request`), admitted by the
:class:`~engram.server.gate.Gate`, and answered by
:meth:`~engram.api.calls.Call.serve` on a worker thread (the storage engine
and the network node block).

The original network's clients keep working here: their ``DELETE
/retrieve/{cid}`` and ``POST /list``, their ``namespace_key`` (see
:mod:`engram.security.access`) and their namespace signature (see
:mod:`engram.security.legacy`).

With an :class:`~engram.server.auditlog.AuditLog`, every request to a route
that changes what the node holds (one that spends the ingest budget) leaves an
entry once it is answered, whatever the answer, and ``GET /audit`` gives a
namespace's owner its entries.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from engram.api.calls import (
    NODE_CALLS,
    Call,
    Incoming,
    IngestMany,
    IngestOne,
    Route,
    SetGrant,
    Stats,
)
from engram.api.memory import MEMORY_CALLS, StoreMemory, UpdateMemory
from engram.api.node import Node
from engram.api.wire import BatchIngestRequest, LegacyFields
from engram.config import DEFAULT_NAMESPACE
from engram.errors import (
    EngramError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from engram.network.client import NAMESPACE_KEY_HEADER
from engram.security.access import ANONYMOUS as ANONYMOUS_CALLER
from engram.security.access import Caller, SignedRequest
from engram.security.apikeys import Scope
from engram.security.legacy import namespace_signer
from engram.security.ratelimit import Budget
from engram.security.signing import signature_headers
from engram.server.app import json_body_doc, parse_body
from engram.server.auditlog import ANONYMOUS, AuditEntry, AuditLog, AuditParams, AuditResponse
from engram.server.gate import Gate, request_target

T = TypeVar("T")
log = logging.getLogger("engram.server")

_CLAIMING = (IngestOne, IngestMany, StoreMemory, UpdateMemory)
"""The writes that store records, so claim an empty namespace on a miner for their signer."""
_UNNAMESPACED = (Stats,)
"""The calls about the whole node rather than a namespace."""

ROUTES: dict[str, tuple[str, ...]] = {}
"""The HTTP routes of each node operation (``"METHOD /path"``), from the calls' own routes."""
for _call in NODE_CALLS:
    ROUTES[_call.operation] = (
        *ROUTES.get(_call.operation, ()),
        *(f"{r.method} {r.path}" for r in _call.routes),
    )


@dataclass
class _Seen:
    """How far one request got before it was answered: what its audit entry can name."""

    incoming: Incoming | None = None
    made: Call[Any] | None = None
    caller: Caller | None = None


class NodeRoutes:
    """The node API of ``app.state.node``, run on ``app.state.pool``, admitted by ``gate``;
    with ``audit``, every change asked of it is recorded there."""

    def __init__(self, gate: Gate, *, replicated: bool, audit: AuditLog | None = None) -> None:
        self.gate = gate
        self.replicated = replicated  # answers name the replicas that acknowledged each write
        self.audit = audit

    @staticmethod
    async def run(request: Request, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the app's worker pool: the node's operations block."""
        pool: Executor = request.app.state.pool
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def caller(
        self, request: Request, budget: Budget, body: LegacyFields | None = None, cost: float = 1.0
    ) -> Caller:
        """The verified caller, with the original clients' namespace credentials it presented:
        a ``namespace_key`` (body, or the header a gateway relays it in) and, on an unsigned
        request, a namespace signature."""
        caller = await self.gate.admit(request, budget, cost)
        if caller.signed:  # a gateway relays it (the miners check the signer too); a node
            # keeps a delete's as the proof for replicas that missed it
            signed = SignedRequest(
                request.method,
                request_target(request),
                await request.body(),
                signature_headers(request.headers),
            )
            caller = replace(caller, signed_request=signed)
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
            hotkey = namespace_signer(
                namespace,
                body.namespace_hotkey,
                body.namespace_sig,
                body.namespace_timestamp_ms,
                self.gate.config.legacy_signature_window_s,
            )
            caller = replace(caller, hotkey=hotkey)
        return caller

    def mount(self, app: FastAPI) -> None:
        """Add every route of every node call and memory call to ``app`` (and ``GET /audit``
        with an audit log)."""
        for call in (*NODE_CALLS, *MEMORY_CALLS):
            for route in call.routes:
                response = (self.replicated and route.replicated_response) or route.response
                app.add_api_route(
                    route.path,
                    self._endpoint(call, route),
                    methods=[route.method],
                    response_model=response,
                    response_model_exclude_none=route.exclude_none,
                    openapi_extra=json_body_doc(route.body) if route.body is not None else None,
                    name=f"{call.operation or call.__name__} ({route.method} {route.path})",
                )
        if self.audit is not None:
            self._mount_audit(app, self.audit)

    def _endpoint(
        self, call: type[Call[Any]], route: Route
    ) -> Callable[..., Awaitable[dict[str, Any]]]:
        """The handler of one route, with the signature FastAPI reads its parameters from."""
        names = re.findall(r"{(\w+)}", route.path)
        audited = self.audit is not None and route.budget is Budget.INGEST

        async def handle(
            request: Request, response: Response, given: dict[str, Any], seen: _Seen
        ) -> dict[str, Any]:
            body = None
            if route.body is not None and (not route.body_optional or await request.body()):
                body = await parse_body(request, route.body)
            incoming = seen.incoming = Incoming(
                {n: given[n] for n in names}, given.get("params"), body
            )
            made = seen.made = call.from_request(incoming)
            caller = None
            if route.budget is not None:
                credentials = call.credentials(incoming)
                caller = await self.caller(request, route.budget, credentials, made.cost())
                seen.caller = caller
                if caller.api_key is not None:
                    caller = _authorized(caller, made, route, _namespaces(seen, given))
            node: Node = request.app.state.node
            answer = await self.run(request, made.serve, node, caller, self.replicated)
            response.status_code = made.status(answer)
            return answer

        async def endpoint(request: Request, response: Response, **given: Any) -> dict[str, Any]:
            seen = _Seen()
            if not audited:
                return await handle(request, response, given, seen)
            try:
                answered = await handle(request, response, given, seen)
            except EngramError as exc:
                await self._audit(request, route, given, seen, exc.status, exc.code)
                raise
            except RequestValidationError:
                await self._audit(request, route, given, seen, 400, InvalidRequestError.code)
                raise
            except Exception:
                await self._audit(request, route, given, seen, 500, EngramError.code)
                raise
            status = response.status_code or 200
            await self._audit(request, route, given, seen, status, None, answered)
            return answered

        kw = inspect.Parameter.KEYWORD_ONLY
        params = [
            inspect.Parameter("request", kw, annotation=Request),
            inspect.Parameter("response", kw, annotation=Response),
            *(inspect.Parameter(n, kw, annotation=str) for n in names),
        ]
        if route.params is not None:
            params.append(
                inspect.Parameter("params", kw, annotation=Annotated[route.params, Query()])
            )
        endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        endpoint.__doc__ = call.__doc__
        return endpoint

    # --- the audit log -------------------------------------------------------------------

    async def _audit(
        self,
        request: Request,
        route: Route,
        given: dict[str, Any],
        seen: _Seen,
        status: int,
        code: str | None,
        answer: dict[str, Any] | None = None,
    ) -> None:
        """Record one answered change; a log that cannot be written never fails the request."""
        assert self.audit is not None
        caller = seen.caller
        at = time.time()
        client_ip = request.client.host if request.client else None
        entries: list[AuditEntry] = []
        claims: dict[str, str | None] = {}
        for namespace, (item_code, stored) in _touched(seen, given, answer, status).items():
            entries.append(
                AuditEntry(
                    at=at,
                    actor=actor(caller),
                    method=route.method,
                    route=route.path,
                    namespace=namespace,
                    cid=given.get("cid"),
                    client_ip=client_ip,
                    status=status,
                    code=code or item_code,
                )
            )
            if self.replicated and stored and namespace and isinstance(seen.made, _CLAIMING):
                # the miners saw the relayed signature, or (a legacy caller too) no signature
                claims[namespace] = _claimant(caller) if namespace != DEFAULT_NAMESPACE else None
        try:
            await self.run(request, _write_audit, self.audit, entries, claims)
        except Exception:
            log.exception("the audit log could not record %s %s", route.method, route.path)

    def _owner(self, node: Node, namespace: str, caller: Caller) -> str | None:
        """The owner of ``namespace`` as this server can tell ``caller``; ``None``: nobody.

        A miner asks its node, which knows. A gateway cannot ask the miners for a private
        namespace on the caller's behalf (a signature is relayed only to the route it was
        made for), so it answers with the hotkey whose signed write first reached the
        namespace through it, ``None`` if that write was unsigned.
        """
        assert self.audit is not None
        if self.replicated:
            return self.audit.claimant(namespace)
        try:
            owner = node.describe_namespace(namespace, caller).get("owner")
        except (UnauthorizedError, ForbiddenError, NotFoundError):
            return None  # the caller may not even read it
        return owner if isinstance(owner, str) else None

    async def _require_owner(self, request: Request, namespace: str, caller: Caller) -> None:
        if not caller.signed:
            raise UnauthorizedError(
                "the audit log of a namespace is its owner's: sign the request with the "
                "owner's hotkey"
            )
        node: Node = request.app.state.node
        owner = await self.run(request, self._owner, node, namespace, caller)
        if owner is None or owner != caller.hotkey:
            where = "through this gateway " if self.replicated else ""
            raise ForbiddenError(
                f"only the owner of namespace {namespace!r} may read its audit log, "
                f"and hotkey {caller.hotkey} is not its owner {where}(a public namespace "
                "has none)"
            )

    def _mount_audit(self, app: FastAPI, audit: AuditLog) -> None:
        async def read_audit(
            request: Request, params: Annotated[AuditParams, Query()]
        ) -> AuditResponse:
            """The audit log of one namespace, newest first: every write, delete, grant change
            and lifecycle change asked there (who, what, when, from where, with what result).
            Only the namespace's owner may read it, with a signed request (or a gateway API key
            with the admin scope there); a public namespace has no owner, so nobody reads its
            log over HTTP."""
            caller = await self.gate.admit(request, Budget.QUERY)
            if caller.api_key is not None:
                caller.api_key.require([params.namespace], Scope.ADMIN)
            else:
                await self._require_owner(request, params.namespace, caller)
            entries = await self.run(
                request, audit.entries, params.namespace, params.limit, params.before_id
            )
            return AuditResponse(namespace=params.namespace, entries=entries)

        app.add_api_route(
            "/audit",
            read_audit,
            methods=["GET"],
            response_model=AuditResponse,
            name="audit (GET /audit)",
        )


def _claimant(caller: Caller | None) -> str | None:
    """Who the miners made the owner of an empty namespace this caller wrote through a
    gateway: a relayed signer, or an API key's owner (the key was made for an owned one)."""
    if caller is None:
        return None
    if caller.api_key is not None:
        return caller.api_key.owner
    return caller.hotkey if caller.signed_request is not None else None


def actor(caller: Caller | None) -> str:
    """Who the audit log says asked: a hotkey, an API key's id, or anonymous."""
    if caller is None:
        return ANONYMOUS
    if caller.api_key is not None:
        return caller.api_key.actor
    return caller.hotkey or ANONYMOUS


def _authorized(
    caller: Caller, made: Call[Any], route: Route, namespaces: list[str] | None
) -> Caller:
    """An API key's caller, once its key allows the call in every namespace it names; a call
    about no namespace (stats) is answered as for anyone."""
    assert caller.api_key is not None
    if isinstance(made, SetGrant):
        raise ForbiddenError(
            "grants are changed by the namespace owner's signed request, not with an API key"
        )
    if namespaces is None:
        return ANONYMOUS_CALLER
    scope = Scope.WRITE if route.budget is Budget.INGEST else Scope.READ
    caller.api_key.require(namespaces, scope)
    return caller


def _write_audit(audit: AuditLog, entries: list[AuditEntry], claims: dict[str, str | None]) -> None:
    audit.record(*entries)
    for namespace, owner in claims.items():
        audit.claim(namespace, owner)


def _namespaces(seen: _Seen, given: dict[str, Any]) -> list[str] | None:
    """The namespaces a request names (each batch item its own); ``None`` when it names none
    (stats) or did not parse that far."""
    incoming, made = seen.incoming, seen.made
    body = incoming.body if incoming is not None else None
    if isinstance(body, BatchIngestRequest):
        return [item.namespace or DEFAULT_NAMESPACE for item in body.items]
    namespace: str | None
    if isinstance(made, IngestOne):
        namespace = made.item.namespace
    elif made is not None and hasattr(made, "namespace"):
        namespace = made.namespace
    elif "namespace" in given:
        namespace = given["namespace"]
    elif incoming is not None:
        namespace = getattr(incoming.params, "namespace", None) or getattr(body, "namespace", None)
    else:
        return None
    if namespace is None and isinstance(made, _UNNAMESPACED):
        return None
    return [namespace or DEFAULT_NAMESPACE]


def _touched(
    seen: _Seen, given: dict[str, Any], answer: dict[str, Any] | None, status: int
) -> dict[str | None, tuple[str | None, bool]]:
    """The namespaces a change named, each with the first error code of its batch items and
    whether anything was stored there; ``None`` when the request did not parse that far."""
    namespaces = _namespaces(seen, given)
    if namespaces is None:
        return {None: (None, False)}
    body = seen.incoming.body if seen.incoming is not None else None
    if not isinstance(body, BatchIngestRequest):
        return {namespaces[0]: (None, status < 400)}
    cids = (answer or {}).get("cids") or []
    codes = (answer or {}).get("codes") or []
    touched: dict[str | None, tuple[str | None, bool]] = {}
    for i, ns in enumerate(namespaces):
        code, stored = touched.get(ns, (None, False))
        item_code = codes[i] if i < len(codes) else None
        item_cid = cids[i] if i < len(cids) else None
        touched[ns] = (code or item_code, stored or item_cid is not None)
    return touched
