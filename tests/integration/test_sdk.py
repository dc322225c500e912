"""The SDK in every mode: embedded, and a real miner over HTTP, each sync and async.

Every behaviour test runs once per mode through one fixture, so the modes
cannot drift apart. The HTTP modes talk to a real uvicorn server on a free
loopback port; retry tests use a tiny scripted server whose answers we choose.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from bittensor.sp_core import Keypair
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engram import AsyncEngramClient, EngramClient
from engram.api import calls, exchange
from engram.config import ClientConfig, Limits, MinerConfig
from engram.errors import (
    DimensionMismatchError,
    InvalidCIDError,
    InvalidFilterError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    UpstreamTimeoutError,
)
from engram.miner.app import create_miner_app
from engram.records import IngestItem, QueryResult, Record, make_record
from tests.conftest import DIM, HashEmbedder, unit_vectors

MODES = ["embedded", "async-embedded", "http", "async-http"]
MISSING_CID = "v1::" + "0" * 64


# --- a real server in a thread ---------------------------------------------------------------


class LiveServer:
    """An ASGI app under uvicorn on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, ws="none", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        with httpx.Client(base_url=self.url, timeout=1) as http:
            while True:
                try:
                    if http.get("/health").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"server at {self.url} never became healthy")
                time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._sock.close()


def _scripted_app(script: dict[str, list[Any]], hits: Counter[str]) -> Starlette:
    """Answers ``"METHOD /route"`` with the next ``(status, body)`` of its script; the last repeats.

    A body that is a number means: sleep that long, then answer 200 ``{}``.
    """

    async def answer(request: Request) -> JSONResponse:
        key = f"{request.method} /{request.path_params['path'].split('/')[0]}"
        hits[key] += 1
        replies = script.get(key, [(404, {"error": "Not Found", "code": "not_found"})])
        status, body = replies[min(hits[key], len(replies)) - 1]
        if isinstance(body, int | float):
            await asyncio.sleep(body)
            body = {}
        body = dict(body)
        headers = {"Retry-After": str(body.pop("retry_after"))} if "retry_after" in body else {}
        return JSONResponse(body, status_code=status, headers=headers)

    script.setdefault("GET /health", [(200, {"status": "ok", "ready": True})])
    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST", "DELETE"])])


ALICE = Keypair.create_from_uri("//Alice")

# --- one fixture builds the client in every mode ---------------------------------------------


class Blocking:
    """An ``AsyncEngramClient`` whose coroutines run on one event loop, so tests are written once."""

    def __init__(self, client: AsyncEngramClient, runner: asyncio.Runner) -> None:
        self.client, self._runner = client, runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: self._runner.run(attr(*args, **kwargs))


class Harness:
    """Clients of one mode; everything it opens is closed when the test ends."""

    def __init__(self, mode: str, tmp_path: Path, stack: ExitStack) -> None:
        self.mode, self.tmp_path, self.stack = mode, tmp_path, stack
        self.runner = stack.enter_context(asyncio.Runner()) if mode.startswith("async") else None
        self.server: LiveServer | None = None

    @property
    def http(self) -> bool:
        return self.mode.endswith("http")

    def miner(self, embedder: Any) -> str:
        if self.server is None:
            app = create_miner_app(MinerConfig(home=self.tmp_path / "miner"), embedder=embedder)
            self.server = self.stack.enter_context(LiveServer(app))
        return self.server.url

    def serve(self, app: Any) -> str:
        return self.stack.enter_context(LiveServer(app)).url

    def client(self, url: str | None = None, embedder: Any = None, **kwargs: Any) -> Any:
        """A client of this mode: on ``url`` if given, else on the test's miner or store."""
        embedder = embedder or HashEmbedder()
        if url is not None:
            where: dict[str, Any] = {"url": url}
        elif self.http:
            # Signed, as a real user's client would be: its records are its own to delete.
            where = {"url": self.miner(embedder), "keypair": ALICE}
            where.update({k: kwargs.pop(k) for k in ("keypair", "wallet") if k in kwargs})
        else:
            where = {"path": self.tmp_path / "embedded", "embedder": embedder}
        if self.runner is None:
            return self.stack.enter_context(EngramClient(**where, **kwargs))
        client = AsyncEngramClient(**where, **kwargs)
        runner = self.runner
        self.stack.callback(lambda: runner.run(client.close()))
        return Blocking(client, runner)


def _harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield Harness(request.param, tmp_path, stack)


@pytest.fixture(params=MODES)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(request, tmp_path)


@pytest.fixture
def client(harness: Harness) -> Any:
    return harness.client()


@pytest.fixture(params=["http", "async-http"])
def http_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(request, tmp_path)


@pytest.fixture(params=["async-embedded", "async-http"])
def async_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(request, tmp_path)


def _cid(vector: Any, metadata: dict[str, Any] | None = None, text: str | None = None) -> str:
    return make_record(vector, metadata, text, dim=DIM, limits=Limits()).cid


# --- the API, in every mode ------------------------------------------------------------------


def test_sdk_ingest_query_get_list_count_delete(client: Any) -> None:
    cid = client.ingest("the quick brown fox", {"kind": "animal", "n": 1})
    assert client.ingest("the quick brown fox", {"kind": "animal", "n": 1}) == cid  # idempotent
    vec = unit_vectors(1, seed=7)[0]
    cid2 = client.ingest_embedding(vec, {"kind": "vector"}, text="seven")
    assert cid2 == _cid(vec, {"kind": "vector"}, "seven")  # content-addressed in every mode
    doubles = vec.astype(np.float64) * 1.1  # not float32 values: every mode rounds them alike
    doubles[:3] = [-0.0, 1e-40, 1]  # a signed zero, a float32 subnormal, an integer
    assert client.ingest_embedding(list(doubles), namespace="f64") == _cid(doubles)

    (hit,) = client.query("the quick brown fox", top_k=1)
    assert isinstance(hit, QueryResult)
    assert hit.cid == hit["cid"] == cid
    assert hit.text == "the quick brown fox" and hit["metadata"] == {"kind": "animal", "n": 1}
    assert hit.score == pytest.approx(1.0, abs=1e-5) and hit.embedding is None
    (hit,) = client.query_by_vector(vec.tolist(), top_k=1, include_embedding=True)
    assert hit.cid == cid2 and np.allclose(hit.embedding, vec, atol=1e-6)

    record = client.get(cid2)
    assert isinstance(record, Record)
    assert record.cid == record["cid"] == cid2
    assert (record.text, record.metadata, record.namespace) == (
        "seven",
        {"kind": "vector"},
        "default",
    )
    assert record.embedding.dtype == np.float32 and np.array_equal(record.embedding, vec)
    assert [r.cid for r in client.list()] == [cid, cid2]
    assert [r["cid"] for r in client.list(limit=1, offset=1)] == [cid2]
    assert (client.count("default"), client.count()) == (2, 3)  # no namespace: the whole store

    assert client.delete(cid) is None
    assert client.get(cid) is None
    assert client.count("default") == 1
    with pytest.raises(NotFoundError, match=f"no record {cid}"):
        client.delete(cid)


def test_sdk_query_filters(client: Any) -> None:
    vecs = unit_vectors(6, seed=3)
    metas = [{"year": 2018 + i, "lang": "en" if i % 2 else "fr"} for i in range(6)]
    result = client.batch_ingest(
        [{"embedding": v, "metadata": m} for v, m in zip(vecs, metas, strict=True)]
    )
    assert not result.failed
    hits = client.query_by_vector(vecs[0], top_k=10, filter={"year": {"$gte": 2020}, "lang": "en"})
    assert sorted(h.metadata["year"] for h in hits) == [2021, 2023]
    hits = client.query_by_vector(vecs[0], top_k=10, filter={"year": {"$in": [2018, 2019]}})
    assert [h.cid for h in hits] == [result.cids[0], result.cids[1]]
    assert client.query_by_vector(vecs[0], filter={"lang": "de"}) == []
    with pytest.raises(InvalidFilterError, match="needs a number"):
        client.query_by_vector(vecs[0], filter={"year": {"$gt": "x"}})


def test_sdk_searches_take_a_beam_width(client: Any) -> None:
    vecs = unit_vectors(40, seed=11)
    result = client.batch_ingest(
        [{"embedding": v, "text": f"note {i}"} for i, v in enumerate(vecs)]
    )
    assert client.query_by_vector(vecs[3], top_k=1, ef=200)[0].cid == result.cids[3]
    assert client.query("note 3", top_k=1, ef=64)
    assert client.search("note 3", top_k=2, ef=32)
    for bad in (0, 10**6):
        with pytest.raises(InvalidRequestError, match="ef"):
            client.query_by_vector(vecs[0], ef=bad)
        with pytest.raises(InvalidRequestError, match="ef"):
            client.search("note", ef=bad)


def test_sdk_namespaces(harness: Harness) -> None:
    client = harness.client(namespace="notes")
    assert client.namespace == "notes"
    in_notes = client.ingest("alpha")
    in_default = client.ingest("beta", namespace="default")
    assert client.ingest("alpha", namespace="other") == in_notes  # same content, same CID
    assert (client.count("notes"), client.count("default"), client.count("other")) == (1, 1, 1)
    assert client.count() == 1  # the client's namespace

    assert client.get(in_notes).namespace == "notes"
    assert client.get(in_default) is None  # the client's namespace is "notes"
    assert client.get(in_default, namespace="default").text == "beta"
    assert [r.text for r in client.list(namespace="default")] == ["beta"]
    assert [h.cid for h in client.query("beta", top_k=5)] == [in_notes]  # only "notes" searched
    with pytest.raises(NotFoundError):
        client.delete(in_default)
    client.delete(in_default, namespace="default")
    with pytest.raises(InvalidRequestError, match="namespace"):
        client.count("not a namespace!")
    with pytest.raises(InvalidRequestError, match="namespace"):
        harness.client(namespace="no spaces")


def test_sdk_batch_reports_each_failed_item(client: Any) -> None:
    vec = unit_vectors(1, seed=1)[0]
    items: list[Any] = [
        {"text": "one"},
        {"embedding": vec, "metadata": {"i": 1}},
        {"nope": 1},
        {"embedding": [0.1, 0.2]},
        "not an object",
        {"text": "two", "metadata": {"model_version": "v9"}},
        {"embedding": [math.nan] * DIM},
        {"text": "three"},
    ]
    result = client.batch_ingest(items)
    assert len(result) == len(items)
    assert [i for i, _ in result.failed] == [2, 3, 4, 5, 6]
    assert result[1] == _cid(vec, {"i": 1}) and all(result.cids[i] for i in (0, 1, 7))
    errors = dict(result.failed)
    assert "unknown item field" in errors[2]
    assert errors[3] == "embedding has 2 dimensions, expected 384"
    assert "reserved" in errors[5] and "NaN" in errors[6]
    assert client.count() == 3


def test_sdk_batch_ingest_file_reports_bad_lines(client: Any, tmp_path: Path) -> None:
    vec = unit_vectors(1, seed=2)[0].tolist()
    path = tmp_path / "items.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                json.dumps({"text": "first", "metadata": {"line": 1}}).encode(),
                b"",
                b'{"text": ',
                b"\xff\xfe not utf-8",
                json.dumps({"embedding": [1.0, 2.0]}).encode(),
                json.dumps({"text": 5}).encode(),
                json.dumps({"embedding": vec, "text": "last"}).encode(),
            ]
        )
    )
    report = client.batch_ingest_file(path, batch_size=2, progress=False)
    assert (report.ingested, report.failed, report.path) == (2, 4, str(path))
    assert [line for line, _ in report.errors] == [3, 4, 5, 6]
    assert "not valid JSON" in report.errors[0][1]
    assert report.errors[1][1] == "line is not valid UTF-8"
    assert report.errors[2][1] == "embedding has 2 dimensions, expected 384"
    assert report.cids[1] == _cid(vec, None, "last")
    assert client.count() == 2
    with pytest.raises(InvalidRequestError, match="not a file"):
        client.batch_ingest_file(tmp_path / "missing.jsonl", progress=False)


def test_sdk_batches_over_the_server_limit_are_split(client: Any, tmp_path: Path) -> None:
    n = Limits().max_batch_items + 1  # one request this big is refused by a node (400)
    vecs = unit_vectors(2 * n, seed=11)
    result = client.batch_ingest({"embedding": v} for v in vecs[:n])
    assert len(result) == n and not result.failed
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"embedding": v.tolist()}) + "\n" for v in vecs[n:]))
    report = client.batch_ingest_file(path, batch_size=10 * n, progress=False)
    assert (report.ingested, report.failed) == (n, 0)
    assert report.cids[-1] == _cid(vecs[-1])
    assert client.count() == 2 * n


def test_sdk_split_batch_respects_item_and_byte_limits() -> None:
    items = [IngestItem(text=f"t{i}") for i in range(5)]
    by_count, _ = calls.split_batch(items, calls.BatchLimits(max_items=2, max_bytes=10**6))
    assert [indices for indices, _ in by_count] == [[0, 1], [2, 3], [4]]
    by_bytes, rejected = calls.split_batch(
        [*items, IngestItem(text="x" * 500)], calls.BatchLimits(max_items=100, max_bytes=200)
    )
    assert [indices for indices, _ in by_bytes] == [[0, 1], [2, 3], [4]]
    assert [i for i, _ in rejected] == [5] and "over the node's 200-byte limit" in rejected[0][1]
    for indices, call in by_bytes:
        body = call.request().body or b""
        assert len(body) <= 200 and len(json.loads(body)["items"]) == len(indices)
    assert calls.split_batch(items, calls.BatchLimits())[0][0][0] == [0, 1, 2, 3, 4]


def test_sdk_errors_are_typed_and_keep_the_message(client: Any) -> None:
    client.ingest("The first write fixes the namespace's dimension: 384 for text.")
    with pytest.raises(DimensionMismatchError) as exc:
        client.ingest_embedding([0.1, 0.2, 0.3])
    assert exc.value.message == "embedding has 3 dimensions, expected 384"
    with pytest.raises(DimensionMismatchError, match="query vector has 3 dimensions"):
        client.query_by_vector([0.1, 0.2, 0.3])
    with pytest.raises(InvalidRequestError, match="top_k"):
        client.query("anything", top_k=0)
    with pytest.raises(InvalidRequestError, match="reserved"):
        client.ingest("text", {"model_version": "v2"})
    with pytest.raises(InvalidRequestError, match="non-empty"):
        client.ingest("   ")
    with pytest.raises(InvalidCIDError, match="is not a CID"):
        client.get("not-a-cid")
    with pytest.raises(NotFoundError, match=MISSING_CID):
        client.delete(MISSING_CID)
    assert client.get(MISSING_CID) is None
    assert client.count() == 1


def test_sdk_namespaces_hold_vectors_of_any_model(client: Any) -> None:
    """A namespace's dimension is fixed by its first write: another model's 6-d vectors live
    beside the canonical model's 384-d ones, and a mismatch says which is which."""
    six = np.eye(6, dtype=np.float32)
    cids = [client.ingest_embedding(v, {"i": i}, namespace="six") for i, v in enumerate(six)]
    assert client.query_by_vector(six[3], top_k=1, namespace="six")[0].cid == cids[3]
    assert client.namespace_info("six")["dim"] == 6
    client.ingest("canonical text", namespace="text")
    assert client.namespace_info("text")["dim"] == 384
    assert client.namespace_info("empty")["dim"] is None
    with pytest.raises(DimensionMismatchError, match="expected 6"):
        client.ingest("text is embedded to 384 dimensions", namespace="six")
    with pytest.raises(DimensionMismatchError, match="expected 6"):
        client.query("text queries embed to 384 dimensions", namespace="six")
    with pytest.raises(DimensionMismatchError, match="expected 384"):
        client.ingest_embedding(six[0], namespace="text")
    assert client.count("six") == 6


def test_sdk_health_and_stats(client: Any) -> None:
    client.ingest("something")
    health = client.health()
    assert health["ready"] is True and health["status"] == "ok"
    stats = client.stats()
    assert stats["records"] == 1 and stats["mode"] in ("embedded", "http")


def test_sdk_paraphrase_query_finds_the_meaning(harness: Harness, model: Any) -> None:
    client = harness.client(embedder=model)
    docs = [
        "Resetting the admin password on your home wifi router",
        "A recipe for slow-cooked lamb with rosemary and garlic",
        "The central bank raised interest rates by half a point",
        "Tips for training a puppy to walk on a leash",
    ]
    cids = client.batch_ingest({"text": d} for d in docs).cids
    hits = client.query("how do I change the login for my wireless modem?", top_k=2)
    assert hits[0].cid == cids[0] and hits[0].text == docs[0]
    assert hits[0].score > hits[1].score


# --- HTTP only: retries, timeouts, a server that is down -------------------------------------


def test_sdk_down_server_is_unavailable_after_retries(http_harness: Harness) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed
    client = http_harness.client(url=url, retries=2, backoff_s=0.05)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="3 attempts") as exc:
        client.count()
    elapsed = time.monotonic() - started
    assert 0.05 + 0.1 <= elapsed < 2  # two backoffs (0.05 s, then 0.1 s), no more
    assert isinstance(exc.value.__cause__, httpx.ConnectError)


def test_sdk_waits_out_a_429_as_its_retry_after_says(http_harness: Harness) -> None:
    hits: Counter[str] = Counter()
    limited = (429, {"error": "slow down", "code": "rate_limited", "retry_after": 1})
    url = http_harness.serve(
        _scripted_app({"GET /count": [limited, limited, (200, {"count": 3})]}, hits)
    )
    started = time.monotonic()
    assert http_harness.client(url=url, retries=2, backoff_s=0.01).count() == 3
    assert 2.0 <= time.monotonic() - started < 5  # one second each, as told
    hits.clear()
    with pytest.raises(RateLimitedError):  # the retries are bounded
        http_harness.client(url=url, retries=1, backoff_s=0.01).count()
    assert hits["GET /count"] == 2


def test_sdk_retries_5xx_then_succeeds(http_harness: Harness) -> None:
    hits: Counter[str] = Counter()
    busy = (503, {"error": "node is restarting", "code": "unavailable"})
    url = http_harness.serve(_scripted_app({"GET /count": [busy, busy, (200, {"count": 7})]}, hits))
    assert http_harness.client(url=url, retries=3, backoff_s=0.01).count() == 7
    assert hits["GET /count"] == 3


def test_sdk_gives_up_on_5xx_with_the_servers_message(http_harness: Harness) -> None:
    hits: Counter[str] = Counter()
    busy = (503, {"error": "node is restarting", "code": "unavailable"})
    url = http_harness.serve(_scripted_app({"GET /count": [busy]}, hits))
    with pytest.raises(UnavailableError, match=r"^node is restarting$"):
        http_harness.client(url=url, retries=1, backoff_s=0.01).count()
    assert hits["GET /count"] == 2


def test_sdk_never_retries_4xx(http_harness: Harness) -> None:
    hits: Counter[str] = Counter()
    bad = (400, {"error": "embedding has 3 dimensions, expected 384", "code": "dimension_mismatch"})
    url = http_harness.serve(_scripted_app({"POST /IngestSynapse": [bad]}, hits))
    with pytest.raises(DimensionMismatchError, match="expected 384"):
        http_harness.client(url=url, retries=3, backoff_s=0.01).ingest("x")
    assert hits["POST /IngestSynapse"] == 1


def test_sdk_retried_delete_that_finds_nothing_succeeds(http_harness: Harness) -> None:
    hits: Counter[str] = Counter()
    gone = (404, {"error": f"no record {MISSING_CID}", "code": "not_found"})
    url = http_harness.serve(_scripted_app({"DELETE /records": [(502, {}), gone]}, hits))
    # The first attempt may have deleted it before the 502; a 404 now means it is gone.
    assert http_harness.client(url=url, retries=1, backoff_s=0.01).delete(MISSING_CID) is None
    assert hits["DELETE /records"] == 2


def test_sdk_timeout_is_upstream_timeout(http_harness: Harness) -> None:
    hits: Counter[str] = Counter()
    url = http_harness.serve(_scripted_app({"GET /stats": [(200, 0.3)]}, hits))
    with pytest.raises(UpstreamTimeoutError, match=r"within 0\.1s"):
        http_harness.client(url=url, timeout_s=0.1, retries=0).stats()
    # retries=0: never a second attempt (on a loaded machine the first may time out before
    # the server even counts it)
    assert hits["GET /stats"] <= 1


def test_sdk_health_reports_a_starting_node(http_harness: Harness) -> None:
    ready = (200, {"status": "ok", "ready": True})  # answers the harness's own readiness poll
    starting = (503, {"status": "starting", "ready": False, "store": True, "model": False})
    down = (503, {"error": "down for maintenance", "code": "unavailable"})
    hits: Counter[str] = Counter()
    url = http_harness.serve(_scripted_app({"GET /health": [ready, starting, down]}, hits))
    # A 503 with a health body is an answer, not a failure to retry; one without it is an error.
    client = http_harness.client(url=url, retries=0)
    assert client.health()["ready"] is False
    with pytest.raises(UnavailableError, match="down for maintenance"):
        client.health()


# --- construction, the twins, async with -----------------------------------------------------


@pytest.mark.parametrize("cls", [EngramClient, AsyncEngramClient])
@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("http://127.0.0.1:1",), {"path": "/tmp/x"}, "not both"),
        (("ftp://example.com",), {}, "not an http"),
        (("127.0.0.1:8091",), {}, "not an http"),
        (("http://",), {}, "not an http"),
        (("http://127.0.0.1:1",), {"embedder": HashEmbedder()}, "embedded mode only"),
        (("http://127.0.0.1:1",), {"retries": -1}, "retries"),
        (("http://127.0.0.1:1",), {"timeout_s": 0}, "timeout_s"),
    ],
)
def test_sdk_rejects_bad_arguments(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        cls(*args, **kwargs)


def test_sdk_twins_have_the_same_methods_and_signatures() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(fn)
            for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")
        }

    sync, async_ = public(EngramClient), public(AsyncEngramClient)
    assert sync.keys() == async_.keys()
    assert {"ingest", "query", "batch_ingest_file", "health", "close"} <= sync.keys()
    for name, signature in sync.items():
        assert async_[name] == signature, name
        assert inspect.iscoroutinefunction(getattr(AsyncEngramClient, name)), name
    assert inspect.signature(EngramClient.__init__) == inspect.signature(AsyncEngramClient.__init__)


def test_sdk_async_client_supports_async_with(async_harness: Harness) -> None:
    h = async_harness
    where = {"url": h.miner(HashEmbedder())} if h.http else {"path": h.tmp_path / "store"}

    async def main() -> tuple[str, Record | None, list[int]]:
        async with AsyncEngramClient(**where, embedder=None if h.http else HashEmbedder()) as c:
            cid = await c.ingest("hello")
            counts = await asyncio.gather(*(c.count() for _ in range(5)))  # concurrent calls
            return cid, await c.get(cid), counts

    assert h.runner is not None
    cid, record, counts = h.runner.run(main())
    assert record is not None and record.cid == cid and counts == [1] * 5


def test_sdk_exchange_steps_are_io_free() -> None:
    """The retry schedule is plain data: a plan can be driven by hand, no sockets."""
    config = ClientConfig(timeout_s=1, retries=2, backoff_s=0.5)
    steps = exchange.exchange(calls.Count(None), "http://node", config)
    assert next(steps) == exchange.HttpRequest("GET", "/count")
    assert steps.send(exchange.HttpReply(500, b"oops")) == exchange.Sleep(0.5)
    assert steps.send(None) == exchange.HttpRequest("GET", "/count")
    assert steps.send(httpx.ConnectError("refused")) == exchange.Sleep(1.0)
    assert steps.send(None) == exchange.HttpRequest("GET", "/count")
    with pytest.raises(StopIteration) as done:
        steps.send(exchange.HttpReply(200, b'{"count": 3}'))
    assert done.value.value == 3


# --- the real model, loaded once ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from engram.embed import get_embedder

    with pytest.MonkeyPatch.context() as mp:  # the session's ENGRAM_HOME, never ~/.engram
        mp.setenv("ENGRAM_HOME", str(tmp_path_factory.getbasetemp() / "engram-home"))
        yield get_embedder()
