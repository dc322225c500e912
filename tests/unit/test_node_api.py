"""The node API is declared once: every backend, call and route follows :class:`Node`.

Adding an operation to ``Node`` without implementing it in a backend, giving it
a call, or mounting it on the miner and the gateway fails here.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from engram.api import calls
from engram.api.node import OPERATIONS, Node
from engram.config import GatewayConfig, MinerConfig
from engram.gateway.app import create_gateway_app
from engram.miner.app import create_miner_app
from engram.network.node import NetworkNode
from engram.node.local import LocalNode
from engram.sdk.remote import RemoteNode
from engram.server.routes import ROUTES

BACKENDS = [LocalNode, NetworkNode, RemoteNode]


def _params(fn: object) -> list[tuple[str, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.default) for p in sig.parameters.values() if p.name != "self"]


def test_node_api_lists_every_operation() -> None:
    assert set(OPERATIONS) >= {
        "ingest",
        "query",
        "get",
        "delete",
        "list",
        "count",
        "stats",
        "health",
        "set_grant",
        "describe_namespace",
    }


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("operation", [*OPERATIONS, "close"])
def test_node_api_backend_implements_operation(backend: type, operation: str) -> None:
    assert hasattr(backend, operation), f"{backend.__name__} lacks Node.{operation}"
    assert _params(getattr(backend, operation)) == _params(getattr(Node, operation)), (
        f"{backend.__name__}.{operation} takes other arguments than Node.{operation}"
    )


@pytest.mark.parametrize("operation", OPERATIONS)
def test_node_api_operation_has_a_call(operation: str) -> None:
    made = {
        cls.operation
        for _, cls in inspect.getmembers(calls, inspect.isclass)
        if issubclass(cls, calls.Call) and cls is not calls.Call
    }
    assert operation in made, f"no call in engram.api.calls runs Node.{operation}"


def test_node_api_router_serves_every_operation() -> None:
    assert set(ROUTES) == set(OPERATIONS)


def _served(app: object) -> set[str]:
    return {
        f"{method} {route.path}"  # type: ignore[attr-defined]
        for route in app.routes  # type: ignore[attr-defined]
        for method in getattr(route, "methods", None) or ()
    }


@pytest.mark.parametrize("kind", ["miner", "gateway"])
def test_node_api_routes_mounted(kind: str, tmp_path: Path) -> None:
    app = (
        create_miner_app(MinerConfig(home=tmp_path))
        if kind == "miner"
        else create_gateway_app(GatewayConfig(chain=f"local:{tmp_path / 'chain.sqlite'}"))
    )
    served = _served(app)
    for operation, routes in ROUTES.items():
        for route in routes:
            assert route in served, f"the {kind} does not serve {route} (Node.{operation})"


# The SDK method that exposes each operation (the twins may name it for their users).
SDK_METHODS = {
    "ingest": "batch_ingest",
    "query": "query",
    "search": "search",
    "get": "get",
    "delete": "delete",
    "list": "list",
    "count": "count",
    "stats": "stats",
    "health": "health",
    "set_grant": "grant",
    "describe_namespace": "namespace_info",
    # a memory's lifecycle is changed and read through the memory API
    "lifecycle": "memory",
    "set_lifecycle": "memory",
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_node_api_operation_reaches_both_sdk_twins(operation: str) -> None:
    from engram.sdk import AsyncEngramClient, EngramClient

    assert operation in SDK_METHODS, f"no SDK method exposes Node.{operation}"
    for twin in (EngramClient, AsyncEngramClient):
        assert hasattr(twin, SDK_METHODS[operation]), f"{twin.__name__} lacks Node.{operation}"
