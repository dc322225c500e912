"""The gateway's API-key routes: each call of :data:`engram.api.keys.KEY_CALLS`, admitted by
the gateway's :class:`~engram.server.gate.Gate` and answered from its key file.

A key acts under the gateway's hotkey, so a gateway started without one
(``--wallet``) refuses to make keys.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request

from engram.api.calls import Incoming, Route
from engram.api.keys import KEY_CALLS, KeyCall
from engram.errors import EngramError, ForbiddenError, UnauthorizedError
from engram.network.node import NetworkNode
from engram.security.access import OPERATOR
from engram.security.apikeys import ApiKeys
from engram.security.ratelimit import Budget
from engram.server.app import json_body_doc, parse_body
from engram.server.auditlog import AuditEntry, AuditLog
from engram.server.gate import Gate
from engram.server.routes import NodeRoutes, actor


def _owner_of(node: NetworkNode) -> Callable[[str], str | None]:
    """A namespace's owner as the miners tell the gateway's own hotkey, which sees it once the
    owner granted it read (``None`` for a public namespace, or one it may not read)."""

    def owner_of(namespace: str) -> str | None:
        try:
            owner = node.describe_namespace(namespace, OPERATOR).get("owner")  # as itself
        except (UnauthorizedError, ForbiddenError):
            return None
        return owner if isinstance(owner, str) else None

    return owner_of


def mount_keys(app: FastAPI, gate: Gate, keys: ApiKeys | None, audit: AuditLog) -> None:
    """Add the key routes to ``app``; without ``keys`` (no gateway hotkey) they refuse."""
    for call in KEY_CALLS:
        for route in call.routes:
            app.add_api_route(
                route.path,
                _endpoint(call, route, gate, keys, audit),
                methods=[route.method],
                response_model=route.response,
                openapi_extra=json_body_doc(route.body) if route.body is not None else None,
                name=f"{call.__name__} ({route.method} {route.path})",
            )


def _endpoint(
    call: type[KeyCall], route: Route, gate: Gate, keys: ApiKeys | None, audit: AuditLog
) -> Callable[..., Awaitable[dict[str, Any]]]:
    names = re.findall(r"{(\w+)}", route.path)

    async def endpoint(request: Request) -> dict[str, Any]:
        if keys is None:
            raise ForbiddenError(
                "this gateway has no hotkey, so it cannot act for API keys: its operator "
                "starts it with --wallet NAME/HOTKEY"
            )
        body = await parse_body(request, route.body) if route.body is not None else None
        incoming = Incoming({n: request.path_params[n] for n in names}, None, body)
        made = call.from_request(incoming)
        assert isinstance(made, KeyCall)
        assert route.budget is not None
        caller = await gate.admit(request, route.budget)
        node: NetworkNode = request.app.state.node
        status, answer = 200, None
        try:
            answer = await NodeRoutes.run(request, made.answer, keys, caller, _owner_of(node))
        except EngramError as exc:
            status = exc.status
            raise
        finally:
            if route.budget is Budget.INGEST:  # a change: audited under each namespace it opens
                named = getattr(made, "namespaces", None) or (answer or {}).get("namespaces")
                entry = AuditEntry(
                    at=time.time(),
                    actor=actor(caller),
                    method=route.method,
                    route=route.path,
                    client_ip=request.client.host if request.client else None,
                    status=status,
                )
                entries = [entry.model_copy(update={"namespace": ns}) for ns in named or [None]]
                await NodeRoutes.run(request, audit.record, *entries)
        return answer

    endpoint.__doc__ = call.__doc__
    return endpoint
