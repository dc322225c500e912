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
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

from fastapi import FastAPI, Query, Request, Response

from engram.api.calls import NODE_CALLS, Call, Incoming, Route
from engram.api.memory import MEMORY_CALLS
from engram.api.node import Node
from engram.api.wire import LegacyFields
from engram.network.client import NAMESPACE_KEY_HEADER
from engram.security.access import Caller, SignedRequest
from engram.security.legacy import namespace_signer
from engram.security.ratelimit import Budget
from engram.security.signing import signature_headers
from engram.server.app import json_body_doc, parse_body
from engram.server.gate import Gate, request_target

T = TypeVar("T")

ROUTES: dict[str, tuple[str, ...]] = {}
"""The HTTP routes of each node operation (``"METHOD /path"``), from the calls' own routes."""
for _call in NODE_CALLS:
    ROUTES[_call.operation] = (
        *ROUTES.get(_call.operation, ()),
        *(f"{r.method} {r.path}" for r in _call.routes),
    )


class NodeRoutes:
    """The node API of ``app.state.node``, run on ``app.state.pool``, admitted by ``gate``."""

    def __init__(self, gate: Gate, *, replicated: bool) -> None:
        self.gate = gate
        self.replicated = replicated  # answers name the replicas that acknowledged each write

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
        if self.replicated and caller.signed:  # a gateway: the miners check the signer too
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
        """Add every route of every node call and memory call to ``app``."""
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

    def _endpoint(
        self, call: type[Call[Any]], route: Route
    ) -> Callable[..., Awaitable[dict[str, Any]]]:
        """The handler of one route, with the signature FastAPI reads its parameters from."""
        names = re.findall(r"{(\w+)}", route.path)

        async def endpoint(request: Request, response: Response, **given: Any) -> dict[str, Any]:
            body = None
            if route.body is not None and (not route.body_optional or await request.body()):
                body = await parse_body(request, route.body)
            incoming = Incoming({n: given[n] for n in names}, given.get("params"), body)
            made = call.from_request(incoming)
            caller = None
            if route.budget is not None:
                credentials = call.credentials(incoming)
                caller = await self.caller(request, route.budget, credentials, made.cost())
            node: Node = request.app.state.node
            answer = await self.run(request, made.serve, node, caller, self.replicated)
            response.status_code = made.status(answer)
            return answer

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
