"""Helpers shared by the benchmarks: seeded data sets, exact ground truth, measurement.

Nothing here imports a vector database, so a benchmark can run each engine in
its own process and measure that process alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where benchmarks cache inputs and write outputs (gitignored)."""

err = Console(stderr=True)
"""Progress and log lines go to stderr; stdout is kept for the result tables."""


def progress() -> Progress:
    """A rich progress bar on stderr, with count, elapsed and remaining time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write a benchmark report (what ``--json PATH`` asks for)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    return info


# --- data ---------------------------------------------------------------------------------


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def clustered_vectors(
    n: int, n_queries: int, dim: int = 384, clusters: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, queries, data cluster labels): unit vectors around ``clusters`` gaussian centres.

    Clusters differ in size (Dirichlet weights) and spread, as topics in real
    corpora do; the queries are fresh draws from the same mixture, so none is in
    the data.
    """
    rng = np.random.default_rng(seed)
    centres = normalize_rows(rng.standard_normal((clusters, dim)))
    weights = rng.dirichlet(np.full(clusters, 2.0))
    spread = rng.uniform(0.6, 1.2, clusters).astype(np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.choice(clusters, size=count, p=weights)
        noise = rng.standard_normal((count, dim), dtype=np.float32)
        noise *= (spread[labels] / np.sqrt(dim))[:, None]
        return normalize_rows(centres[labels] + noise), labels.astype(np.int64)

    data, labels = draw(n)
    queries, _ = draw(n_queries)
    return data, queries, labels


# fmt: off
_SUBJECTS = [
    "the validator", "a small miner", "my grandmother", "the committee", "an old lighthouse keeper",
    "the neural network", "every student", "the quiet librarian", "a hungry fox", "the city council",
    "our startup", "the orchestra", "a tired nurse", "the satellite", "the research team",
    "a retired astronaut", "the night-shift baker", "the school principal", "a curious toddler",
    "the mayor of the village", "a marine biologist", "the chess club", "an anxious investor",
    "the football coach", "a street musician", "the hospital board", "a freelance translator",
    "the museum curator", "an amateur astronomer", "the train conductor",
]
_VERBS = [
    "stores", "forgets", "explains", "repairs", "paints", "measures", "questions", "celebrates",
    "ignores", "translates", "simulates", "protects", "sells", "compresses", "predicts",
    "photographs", "memorises", "rebuilds", "audits", "describes", "borrows", "hides", "cooks",
    "debugs", "teaches",
]
_OBJECTS = [
    "the embeddings", "a broken bicycle", "the tax report", "ancient poems", "the weather forecast",
    "a chocolate cake", "the stock market", "its own memory", "the football match", "quantum states",
    "a lost passport", "the harbour lights", "the migration of birds", "a database index",
    "the election results", "a vintage typewriter", "the coral reef", "a medieval manuscript",
    "the subway map", "a jazz record", "the vaccine trial", "a mountain trail", "the bread recipe",
    "the solar panels", "a children's book", "the shipping schedule", "the river flood",
    "a stolen painting",
]
_TAILS = [
    "", "before sunrise", "without telling anyone", "for the third time this week", "in Lisbon",
    "with surprising accuracy", "because the deadline moved", "using only a pencil",
    "while it rained", "after the power cut", "near the old bridge", "at 3 a.m.", "in Nairobi",
    "during the winter holidays", "for a documentary", "on a crowded train", "in under an hour",
    "to impress the neighbours", "despite the noise", "with help from a stranger",
]
_TEMPLATES = [
    "{s} {v} {o} {t}.", "Yesterday {s} {v} {o} {t}.", "Why {s} {v} {o} {t} is unclear.",
    "Nobody expected that {s} {v} {o} {t}!", "Reportedly, {s} {v} {o} {t}.",
    "{s} {v} {o} {t}, again.", "Does it matter that {s} {v} {o} {t}?",
    "According to the newsletter, {s} {v} {o} {t}.",
]
# fmt: on


def make_sentences(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` distinct sentences (templates x subjects x verbs x objects x tails) and topic labels.

    The topic of a sentence is the index of its object, so records about the
    same thing share a ``cluster`` label. About 3.4 M combinations exist.
    """
    combos = len(_TEMPLATES) * len(_SUBJECTS) * len(_VERBS) * len(_OBJECTS) * len(_TAILS)
    if n > combos // 2:
        raise ValueError(f"at most {combos // 2} distinct sentences can be drawn, asked for {n}")
    rng = random.Random(seed)
    out: list[str] = []
    topics: list[int] = []
    seen: set[str] = set()
    while len(out) < n:
        o = rng.randrange(len(_OBJECTS))
        s = rng.choice(_TEMPLATES).format(
            s=rng.choice(_SUBJECTS), v=rng.choice(_VERBS), o=_OBJECTS[o], t=rng.choice(_TAILS)
        )
        s = " ".join(s.split()).replace(" .", ".").replace(" ,", ",").replace(" ?", "?")
        s = s.replace(" !", "!")
        s = s[0].upper() + s[1:]
        if s not in seen:
            seen.add(s)
            out.append(s)
            topics.append(o)
    return out, np.asarray(topics, dtype=np.int64)


def exact_top_k(
    data: np.ndarray,
    queries: np.ndarray,
    k: int,
    subset: np.ndarray | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """Indices (into ``data``) of each query's ``k`` best rows by inner product, best first.

    With ``subset`` (sorted row indices) only those rows compete: the filtered truth.
    """
    pool = data if subset is None else data[subset]
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ pool.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out[start : start + chunk] = top if subset is None else subset[top]
    return out


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """Mean share of each query's true top-k that was returned."""
    k = truth.shape[1]
    hits = sum(len(set(f[:k]) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


# --- measurement ----------------------------------------------------------------------------


def time_queries(
    fn: Callable[[np.ndarray], list[int]], queries: np.ndarray, warmup: int = 0
) -> tuple[np.ndarray, list[list[int]]]:
    """Run ``fn`` on each query in turn (after ``warmup`` untimed ones); (seconds each, results)."""
    for q in queries[:warmup]:
        fn(q)
    lat = np.empty(len(queries), dtype=np.float64)
    found: list[list[int]] = []
    clock = time.perf_counter
    for i, q in enumerate(queries):
        t0 = clock()
        ids = fn(q)
        lat[i] = clock() - t0
        found.append(ids)
    return lat, found


def latency_summary(lat: np.ndarray) -> dict[str, float]:
    """QPS of back-to-back queries and p50/p99 latency in milliseconds."""
    return {
        "qps": float(len(lat) / lat.sum()),
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "mean_ms": float(lat.mean() * 1e3),
    }


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (or of ``path`` itself when it is a file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_rss_bytes() -> int:
    """This process's peak resident set size since it started (or exec'd).

    On Linux this is ``VmHWM``: ``ru_maxrss`` survives ``exec``, so a child
    spawned by a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_bytes() -> int:
    """This process's current resident set size (psutil, else the peak as an upper bound)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return peak_rss_bytes()


# --- HTTP load generation (aiohttp client, in a process of its own) -------------------------
#
# A load spec is a dict {"base_url", "server_pid", "runs": [run, ...]}; each run is
# {"name", "path", "body": {...}, "concurrency", "requests", "warmup", "time_limit_s"} and
# its body is one of
#   {"kind": "query", "vectors": "q.npy", "top_k": 10}        one query per vector, cycled
#   {"kind": "raw_batch", "vectors": "v.npy", "batch": 1000}  BatchIngestSynapse of raw vectors
#   {"kind": "text_batch", "texts": "t.json", "batch": 64}    BatchIngestSynapse of texts
#   {"kind": "text_single", "texts": "t.json"}                one IngestSynapse per text
# ("namespace" optional for the ingest kinds; "min_results" optional for queries: fewer hits
# count as a failure). The warm-up sends the first ``warmup`` bodies untimed; "requests"
# (default: every body after those) are then timed, cycling through the bodies, with at most
# "concurrency" in flight. Bodies are encoded before the clock starts, with vectors as
# ``ndarray.tolist()`` floats, as the SDK sends them. Every answer, warm-up ones included, is
# checked (:func:`check_answer`): its HTTP status, its body and, for ingest, a CID per item.
# A run's summary counts the requests checked ("requests_checked"), those that failed
# ("failed_requests"), the failures per kind ("failures", e.g. {"http 429": 40}) and the
# first error; ingest runs add "items_sent" (warm-up included), "items_acked" (items given a
# CID) and "cids_distinct".

_LOAD_CLIENT_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from _common import load_client_main; load_client_main(sys.argv[2], sys.argv[3])"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a local subnet for the network benchmarks ---------------------------------------------


class BenchFailure(RuntimeError):
    """The subnet could not be set up as the benchmark needs (nothing measured)."""


def isolated_home(work: Path) -> Path:
    """A fresh ENGRAM_HOME under ``work`` whose ``models/`` is the current home's, if any."""
    from engram.config import engram_home

    models = engram_home() / "models"
    home = work / "engram-home"
    home.mkdir()
    if models.is_dir():
        (home / "models").symlink_to(models.resolve(), target_is_directory=True)
    os.environ["ENGRAM_HOME"] = str(home)
    return home


@contextmanager
def subnet(home: Path, miners: int) -> Iterator[Any]:
    """A localnet on free loopback ports, ready and with every miner serving."""
    from engram.chain.local import LocalChain
    from engram.localnet import Localnet

    net = Localnet(
        home=home / "localnet",
        miners=miners,
        miner_ports=[free_port() for _ in range(miners)],
        gateway_port=free_port(),
        validator_port=free_port(),
    )
    t0 = time.perf_counter()
    net.prepare()
    try:
        net.start()
        net.wait_ready()
        chain = LocalChain(net.home / "chain.sqlite")
        try:
            deadline = time.monotonic() + 60
            while len(chain.metagraph(net.netuid).serving()) < miners:
                if time.monotonic() > deadline:
                    raise BenchFailure(f"not all {miners} miners serve after 60 s")
                time.sleep(0.25)
        finally:
            chain.close()
        err.print(f"  subnet ready in {time.perf_counter() - t0:.1f} s: gateway {net.gateway_url}")
        yield net
    finally:
        net.stop()


def run_async(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed (as the servers do), else asyncio."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def pct_ms(values: list[float], q: float) -> float | None:
    """The ``q``th percentile of durations in seconds, in milliseconds (``None`` for none)."""
    return float(np.percentile(values, q) * 1e3) if values else None


def run_load(spec: dict[str, Any], work: Path, timeout_s: float) -> list[dict[str, Any]]:
    """Run ``spec`` in a fresh client process; one summary dict per run, in order."""
    import json
    import subprocess
    import uuid

    tag = uuid.uuid4().hex[:8]
    spec_path, out_path = work / f"load-{tag}.json", work / f"load-{tag}.out.json"
    spec_path.write_text(json.dumps(spec))
    here = str(Path(__file__).resolve().parent)
    cmd = [sys.executable, "-c", _LOAD_CLIENT_BOOT, here, str(spec_path), str(out_path)]
    subprocess.run(cmd, check=True, timeout=timeout_s)
    return list(json.loads(out_path.read_text()))


def _dumps() -> Callable[[Any], bytes]:
    try:
        import orjson

        return orjson.dumps
    except ImportError:
        import json

        return lambda obj: json.dumps(obj).encode()


def _load_bodies(body: dict[str, Any]) -> tuple[list[bytes], list[int]]:
    """The encoded request bodies of one run and how many items each carries."""
    import json

    dumps = _dumps()
    kind, ns = body["kind"], body.get("namespace")
    if kind in ("query", "raw_batch"):
        vectors = np.load(body["vectors"])
        if kind == "query":
            top_k = int(body.get("top_k", 10))
            out = [dumps({"query_vector": v.tolist(), "top_k": top_k}) for v in vectors]
            return out, [1] * len(out)
        size, out, items = int(body["batch"]), [], []
        for start in range(0, len(vectors), size):
            chunk = vectors[start : start + size]
            docs = [
                {"raw_embedding": v.tolist(), "metadata": {"row": start + i}, "namespace": ns}
                for i, v in enumerate(chunk)
            ]
            out.append(dumps({"items": docs}))
            items.append(len(chunk))
        return out, items
    texts = json.loads(Path(body["texts"]).read_text())
    if kind == "text_single":
        return [dumps({"text": t, "namespace": ns}) for t in texts], [1] * len(texts)
    if kind == "text_batch":
        size = int(body["batch"])
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        out = [dumps({"items": [{"text": t, "namespace": ns} for t in c]}) for c in chunks]
        return out, [len(c) for c in chunks]
    raise ValueError(f"unknown body kind {kind!r}")


def server_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    if pid is None:
        return None
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except Exception:  # psutil missing, or not Linux and no such process
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return None


_CID_PATTERN = r"^v[0-9]+::[0-9a-f]{64}$"


def check_answer(
    kind: str, status: int, raw: bytes, items: int, min_results: int = 0
) -> tuple[list[tuple[str, str]], dict[str, Any] | None, list[str]]:
    """What is wrong with one answer: ([(failure kind, detail), ...], parsed body, its CIDs).

    A request that did not get a 200 fails once, as ``transport`` (no answer at all,
    ``status`` -1) or ``http <status>``; a 200 whose body is not a JSON object fails as
    ``bad json``; that is all kind ``json`` asks. Otherwise every item is checked: a query
    needs no ``error``, a
    ``results`` list and at least ``min_results`` hits; every ingested item needs no
    error (``item error``) and a well-formed CID (``missing cid``). The CIDs returned are
    those of the items that passed.
    """
    import json
    import re

    text = raw[:300].decode(errors="replace")
    if status == -1:
        return [("transport", text)], None, []
    if status != 200:
        return [(f"http {status}", f"{status}: {text}")], None, []
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return [("bad json", f"200 but not a JSON object: {text}")], None, []
    bad: list[tuple[str, str]] = []
    cids: list[str] = []
    well_formed = re.compile(_CID_PATTERN).match
    if kind == "json":  # any JSON object will do
        pass
    elif kind == "query":
        results = doc.get("results")
        if doc.get("error") is not None:
            bad.append(("answer error", f"error: {doc['error']}"))
        elif not isinstance(results, list):
            bad.append(("bad answer", f"no results list: {text}"))
        elif len(results) < min_results:
            bad.append(("short answer", f"{len(results)} results, expected {min_results}"))
    elif kind == "text_single":
        cid = doc.get("cid")
        if doc.get("error") is not None:
            bad.append(("item error", f"error: {doc['error']}"))
        elif not (isinstance(cid, str) and well_formed(cid)):
            bad.append(("missing cid", f"no CID in the answer: {text}"))
        else:
            cids.append(cid)
    else:  # a batch
        got, errors = doc.get("cids"), doc.get("errors")
        if not isinstance(got, list) or len(got) != items:
            n = len(got) if isinstance(got, list) else "no"
            bad.append(("missing cid", f"{n} CIDs for {items} items: {text}"))
        else:
            errors = errors if isinstance(errors, list) and len(errors) == items else [None] * items
            for j, (cid, e) in enumerate(zip(got, errors, strict=True)):
                if e is not None:
                    bad.append(("item error", f"item {j}: {e}"))
                elif not (isinstance(cid, str) and well_formed(cid)):
                    bad.append(("missing cid", f"item {j}: CID {cid!r}"))
                else:
                    cids.append(cid)
    return bad, doc, cids


async def _one_run(base_url: str, server_pid: int | None, run: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    bodies, items = _load_bodies(run["body"])
    kind = run["body"]["kind"]
    min_results = int(run["body"].get("min_results", 0))
    url = base_url + run["path"]
    concurrency = int(run["concurrency"])
    warmup = max(int(run.get("warmup", 0)), 0)
    total = int(run.get("requests") or len(bodies) - warmup)
    time_limit = float(run.get("time_limit_s", 60.0))
    headers = {"Content-Type": "application/json"}
    clock = time.perf_counter
    lat = np.full(total, np.nan)
    server_ms: list[float] = []
    statuses: dict[int, int] = {}
    failures: dict[str, int] = {}
    first_error: list[str] = []
    failed_requests = 0
    checked = 0
    items_sent = 0
    items_acked = 0
    cids: set[str] = set()
    done_items = 0

    def check(i: int, status: int, raw: bytes, timed: bool) -> None:
        """Tally one answer (warm-up ones too); count its items if it is timed."""
        nonlocal failed_requests, checked, items_sent, items_acked, done_items
        n_items = items[i % len(items)]
        checked += 1
        items_sent += n_items
        statuses[status] = statuses.get(status, 0) + 1
        bad, doc, got = check_answer(kind, status, raw, n_items, min_results)
        if bad:
            failed_requests += 1
            for what, _ in bad:
                failures[what] = failures.get(what, 0) + 1
            if not first_error:
                first_error.append(bad[0][1])
        if kind == "query":
            ok = 0 if bad else 1
        else:
            ok = len(got)
            items_acked += ok
            cids.update(got)
        if timed:
            done_items += ok
            if doc is not None and "latency_ms" in doc:
                server_ms.append(float(doc["latency_ms"]))

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=max(time_limit, 30.0))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(i: int) -> tuple[int, bytes]:
            try:
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as resp:
                    return resp.status, await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                return -1, repr(exc).encode()

        # Warm-up: open every connection and wake the server's threads, untimed. It uses
        # the first ``warmup`` bodies and the timed requests the ones after, so ingest
        # runs never time a re-sent (deduplicated) body unless they wrap around.
        for start in range(0, warmup, concurrency):
            idx = range(start, min(start + concurrency, warmup))
            for i, (status, raw) in zip(idx, await asyncio.gather(*map(post, idx)), strict=True):
                check(i, status, raw, timed=False)

        next_i = 0
        deadline = clock() + time_limit

        async def worker() -> None:
            nonlocal next_i
            while next_i < total and clock() < deadline:
                i = next_i
                next_i += 1
                t0 = clock()
                status, raw = await post(warmup + i)
                lat[i] = clock() - t0
                check(warmup + i, status, raw, timed=True)

        cpu0, srv0, t0 = time.process_time(), server_cpu_s(server_pid), clock()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = clock() - t0
        client_cpu = time.process_time() - cpu0
        srv1 = server_cpu_s(server_pid)

    done = lat[~np.isnan(lat)]
    n = len(done)
    answer_failures = sum(
        v for k, v in failures.items() if k != "transport" and not k.startswith("http ")
    )
    out: dict[str, Any] = {
        "name": run.get("name"),
        "concurrency": concurrency,
        "requests": n,
        "planned_requests": total,
        "timed_out": n < total,
        "wall_s": wall,
        "rps": n / wall if wall > 0 else None,
        "items": done_items,
        "items_per_s": done_items / wall if wall > 0 else None,
        "warmup_requests": warmup,
        "requests_checked": checked,
        "failed_requests": failed_requests,
        "failures": failures,
        "statuses": {str(k): v for k, v in statuses.items()},
        "http_errors": sum(v for k, v in statuses.items() if k != 200),
        "item_errors": answer_failures,
        "first_error": first_error[0] if first_error else None,
        "body_bytes_mean": float(np.mean([len(b) for b in bodies])),
        "client_cpu_us_per_request": client_cpu / n * 1e6 if n else None,
        "server_cpu_us_per_request": (srv1 - srv0) / n * 1e6
        if n and srv0 is not None and srv1 is not None
        else None,
        "server_cpu_share": (srv1 - srv0) / wall if srv0 is not None and srv1 is not None else None,
    }
    if kind != "query":
        out.update(items_sent=items_sent, items_acked=items_acked, cids_distinct=len(cids))
    if n:
        out.update(
            p50_ms=float(np.percentile(done, 50) * 1e3),
            p90_ms=float(np.percentile(done, 90) * 1e3),
            p99_ms=float(np.percentile(done, 99) * 1e3),
            max_ms=float(done.max() * 1e3),
            mean_ms=float(done.mean() * 1e3),
        )
    if server_ms:
        out["server_p50_ms"] = float(np.percentile(server_ms, 50))
        out["server_p99_ms"] = float(np.percentile(server_ms, 99))
    return out


def load_client_main(spec_path: str, out_path: str) -> None:
    """Entry point of the client process started by :func:`run_load`."""
    spec = json.loads(Path(spec_path).read_text())

    async def all_runs() -> list[dict[str, Any]]:
        return [
            await _one_run(spec["base_url"], spec.get("server_pid"), run) for run in spec["runs"]
        ]

    results = run_async(all_runs())
    Path(out_path).write_text(json.dumps(results, indent=1))
