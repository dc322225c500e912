"""Every operation of ``/openapi.json`` fuzzed over real HTTP: no 5xx, no lost data.

schemathesis reads the schema from the running server and draws, for each
operation, requests that fit it and requests that break it (wrong types,
missing and extra fields, odd strings and numbers). Two targets: one miner on a
real SQLite store, and a gateway in front of a LocalChain subnet of three
miners. Both embed with the real model, loaded once.

Every answer must be below 500, and every 4xx must be Engram's one error shape,
a JSON object with ``error`` and ``code`` (401, 403 and 429 included). After
every case the servers are still up and answer ``/health``; after every
operation each record seeded before fuzzing comes back byte for byte the same,
in a namespace whose count never went down.

Each operation is its own subtest, driven by ``@given`` over schemathesis's
strategies: ``schemathesis.pytest.from_fixture`` would do the same, but it sets
``Function._nodeid``, which pytest 9 no longer has. Derandomized, so a run
repeats the same cases until the schema or the code changes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from bittensor.sp_core import Keypair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from engram.chain.local import LocalChain
from engram.config import ChainParams, GatewayConfig, MinerConfig
from engram.embed import Embedder, get_embedder
from engram.gateway.app import create_gateway_app
from engram.miner.app import create_miner_app
from engram.miner.axon import Axon
from engram.network.routing import RouteCheck
from tests.conftest import ThreadedServer, free_port, serve_in_thread

NETUID = 1
CASES_PER_OPERATION = 40
SEEDED = [
    ("default", "the lighthouse keeper logs the storm at midnight", {"kind": "log", "n": 1}),
    ("default", "Rezept: zwei Eier, Mehl und eine Prise Salz", {"lang": "de", "tags": ["food"]}),
    ("default", "東京の地下鉄は朝八時にいちばん混む", {"lang": "ja", "nested": {"a": [1, 2.5]}}),
    ("fuzz-notes", "a note kept in a namespace of its own", {"kind": "note", "ok": True}),
    ("fuzz-notes", "emoji survive the round trip 🙂 — and so do dashes", {"score": -0.125}),
    ("fuzz-notes", "a record with empty metadata", {}),
]


@dataclass
class Target:
    """A running server (and those behind it) and the records seeded into it before fuzzing."""

    name: str
    url: str
    http: httpx.Client
    servers: list[ThreadedServer]
    records: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (cid, namespace)
    counts: dict[str, int] = field(default_factory=dict)

    def get(self, path: str, **params: str) -> httpx.Response:
        """A read that waits out a 429: the fuzzing itself may spend this client's budget."""
        deadline = time.monotonic() + 30
        while True:
            r = self.http.get(path, params=params)
            if r.status_code != 429 or time.monotonic() > deadline:
                return r
            time.sleep(min(float(r.headers.get("retry-after", 1)), 2.0))

    def seed(self) -> None:
        for namespace, text, metadata in SEEDED:
            body = {"text": text, "metadata": metadata, "namespace": namespace}
            r = self.http.post("/IngestSynapse", json=body)
            assert r.status_code == 200, (self.name, r.text)
            cid = r.json()["cid"]
            got = self.get(f"/retrieve/{cid}", namespace=namespace)
            assert got.status_code == 200, (self.name, got.text)
            assert got.json()["text"] == text and got.json()["metadata"] == metadata
            self.records[(cid, namespace)] = got.content
        for namespace in sorted({ns for ns, _, _ in SEEDED}):
            self.counts[namespace] = self._count(namespace)
            assert self.counts[namespace] == sum(ns == namespace for ns, _, _ in SEEDED)

    def _count(self, namespace: str) -> int:
        r = self.get("/count", namespace=namespace)
        assert r.status_code == 200, (self.name, r.text)
        return int(r.json()["count"])

    def assert_alive(self, after: str) -> None:
        for server in self.servers:
            assert server.thread.is_alive(), f"{server.name} died after {after}"
        health = self.http.get("/health")
        assert health.status_code == 200, f"{self.name} unhealthy after {after}: {health.text}"

    def assert_intact(self, after: str) -> None:
        self.assert_alive(after)
        for (cid, namespace), before in self.records.items():
            now = self.get(f"/retrieve/{cid}", namespace=namespace)
            assert now.status_code == 200, f"{cid} in {namespace} lost after {after}: {now.text}"
            assert now.content == before, f"{cid} in {namespace} changed after {after}"
        for namespace, before in self.counts.items():
            now = self._count(namespace)
            assert now >= before, f"{namespace} count fell from {before} to {now} after {after}"


def error_shape(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx is ``{"error": <message>, "code": <code>, ...}``."""
    if not 400 <= response.status_code < 500:
        return
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"the {response.status_code} body is not JSON") from exc
    assert isinstance(body, dict), f"the {response.status_code} body is not an object: {body!r}"
    assert isinstance(body.get("error"), str) and body["error"], f"no error message: {body!r}"
    assert isinstance(body.get("code"), str) and body["code"], f"no error code: {body!r}"


def _openapi(url: str) -> dict[str, Any]:
    """The server's schema, with request bodies' local ``#/$defs/...`` refs made resolvable.

    Pydantic's ``model_json_schema()`` keeps nested models under the body schema's
    own ``$defs``; inside the OpenAPI document ``#`` is the document, so the refs
    are re-pointed at where those ``$defs`` actually sit.
    """
    doc = httpx.get(url + "/openapi.json", timeout=30).json()
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                if "$defs" not in content.get("schema", {}) or "$defs" in doc:
                    continue
                where = "/".join(
                    part.replace("~", "~0").replace("/", "~1")
                    for part in ("paths", path, method, "requestBody", "content", media, "schema")
                )
                content["schema"] = json.loads(
                    json.dumps(content["schema"]).replace('"#/$defs/', f'"#/{where}/$defs/')
                )
    return doc


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis keeps its caches (constants, Unicode tables) in the session's temp dir."""
    set_hypothesis_home_dir(tmp_path_factory.getbasetemp() / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedder]:
    """The real model, loaded once, its cache in the session's ENGRAM_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENGRAM_HOME", str(tmp_path_factory.getbasetemp() / "engram-home"))
        model = get_embedder()
        model.encode(["warm up"])
        yield model


@pytest.fixture(scope="module")
def miner_target(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Target]:
    home: Path = tmp_path_factory.mktemp("fuzz-miner")
    port = free_port()
    app = create_miner_app(MinerConfig(home=home, port=port), embedder=embedder)
    server = serve_in_thread(app, port, "fuzz-miner")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            target = Target("miner", server.url, http, [server])
            target.seed()
            yield target
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway_target(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[Target]:
    """A gateway over a LocalChain subnet of three miners, each refusing writes routed elsewhere."""
    root: Path = tmp_path_factory.mktemp("fuzz-subnet")
    params = ChainParams(block_time_s=1.0, axon_ttl_blocks=10_000)
    chain = LocalChain.create(root / "chain.sqlite", NETUID, params)
    servers: list[ThreadedServer] = []
    try:
        axons = []
        for i in range(3):
            signer = Keypair.create_from_uri(f"//fuzz-miner-{i}")
            hotkey = signer.ss58_address
            uid = chain.register(NETUID, signer, coldkey=f"fuzz-coldkey-{i}")
            port = free_port()
            chain.serve_axon(NETUID, signer, "127.0.0.1", port)
            axon = Axon(chain, NETUID, signer, uid, "127.0.0.1", port, 0.5, RouteCheck(hotkey))
            config = MinerConfig(home=root / f"miner{i}", port=port, reader_threads=2)
            app = create_miner_app(config, embedder=embedder, axon=axon)
            servers.append(serve_in_thread(app, port, f"fuzz-subnet-miner-{i}"))
            axons.append(axon)
        for axon in axons:
            axon.announce()
        port = free_port()
        config = GatewayConfig(chain=chain.url, netuid=NETUID, port=port, home=root / "gateway")
        gateway = create_gateway_app(config, embedder=embedder)
        servers.append(serve_in_thread(gateway, port, "fuzz-gateway"))
        with httpx.Client(base_url=servers[-1].url, timeout=30) as http:
            target = Target("gateway", servers[-1].url, http, servers)
            target.seed()
            yield target
    finally:
        for server in reversed(servers):
            server.stop()
        chain.close()


def _fuzz(target: Target, operation: schemathesis.APIOperation, sent: dict[str, int]) -> None:
    """Send ``operation`` valid and invalid requests, counting them in ``sent``."""

    @settings(
        max_examples=CASES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of([operation.as_strategy(mode) for mode in GenerationMode]))
    def fuzz(case: schemathesis.Case) -> None:
        sent[operation.label] += 1
        case.call_and_validate(checks=[not_a_server_error, error_shape], timeout=30)
        target.assert_alive(after=case.as_curl_command())

    fuzz()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["miner", "gateway"])
def test_fuzz_every_operation_answers_below_500_and_loses_nothing(
    name: str, request: pytest.FixtureRequest, subtests: pytest.Subtests
) -> None:
    target: Target = request.getfixturevalue(f"{name}_target")
    doc = _openapi(target.url)
    schema = schemathesis.openapi.from_dict(
        doc, config=schemathesis.Config.from_dict({"base-url": target.url})
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    declared = {(m.upper(), p) for p, methods in doc["paths"].items() for m in methods}
    assert {(op.method.upper(), op.path) for op in operations} == declared
    sent = dict.fromkeys((op.label for op in operations), 0)
    for operation in operations:
        with subtests.test(msg=operation.label):
            _fuzz(target, operation, sent)
            target.assert_intact(after=f"fuzzing {operation.label}")
    assert all(sent.values()), f"operations never called: {sent}"
