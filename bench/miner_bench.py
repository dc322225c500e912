"""The miner over HTTP against the same work in-process: the "Performance yardsticks" section of docs/architecture.md's miner and text yardsticks.

Run: ``python bench/miner_bench.py [--n 100000] [--requests 3000] [--concurrency 1 16 64]
[--sentences 2000] [--profile [CLIENTS ...]] [--parts query batch text] [--json out.json]``

One run, three parts, each against a real ``python -m engram miner`` process with its
per-IP rate limits off (``ENGRAM_RATE_LIMITS=false``: the default token buckets would answer
most of these requests with 429):

* **query** — ``--n`` clustered 384-d unit vectors (seeded) are put into a store
  in-process and ``flush()``-ed; ``Store.search`` is timed in-process with 1, 16
  and 64 threads, then the store is closed, a miner is started on the same home
  and the same queries go to ``POST /QuerySynapse`` with 1, 16 and 64 requests in
  flight (aiohttp client with keep-alive). The miner's answers are checked
  against the in-process ones. Yardsticks: p50 overhead of HTTP over in-process
  at 1 client ≤ 1 ms; p99 ≤ 100 ms at 64 clients.
* **batch ingest** — 1000-item ``BatchIngestSynapse`` batches of raw vectors into
  a fresh miner, 1 and 2 batches in flight: records/s until acknowledged (durable,
  and searchable by exact scan), and until the background HNSW build caught up.
* **text ingest** — ``--sentences`` distinct generated sentences through the bare
  embedder in-process (``encode(all, batch_size=64)``: the yardstick), through
  ``LocalNode.ingest`` in-process, and into a fresh miner as ``BatchIngestSynapse``
  batches of 64 and 256 texts and as single ``IngestSynapse`` requests (4 in
  flight). A bare pass runs before and after every measurement and each is
  compared with those two, because a shared machine's speed drifts. Yardstick:
  HTTP text ingest ≥ 90 % of the bare embedder's sentences/s.

Every answer is checked, warm-up ones included: its HTTP status, its body (a query's
``top_k`` hits and no error; a CID for every ingested item), and after every ingest run the
miner's ``GET /count`` must equal the records sent. Failures are counted per kind (``http
429``, ``transport``, ``missing cid``, ``item error``, ...); the first failing run stops the
benchmark, which then prints how many requests failed and the first error and exits with
status 1 (with ``--json``, the report says so under ``failure`` and ``checks``). The report's
``requests_checked`` is how many requests were checked.

The load generator runs in a process of its own but on this same machine, so
its CPU competes with the miner's: on a 2-core box that caps the QPS seen at 16
and 64 clients below what the miner alone could serve. Each level also reports
the CPU time per request of the miner (all its threads) and of the client.
``--profile`` samples the miner with py-spy (``pip install py-spy``) during an
extra query run at each given client count (default 1 and 64) and prints
where its time goes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import engram  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    check_answer,
    clustered_vectors,
    err,
    free_port,
    machine_info,
    make_sentences,
    progress,
    run_load,
    write_json,
)

K = 10
FILL_BATCH = 1000
INGEST_BATCH = 1000
CHECK_QUERIES = 50
TARGET_OVERHEAD_MS = 1.0
TARGET_P99_MS = 100.0
TARGET_TEXT_SHARE = 0.90
MINER_ENV = {"ENGRAM_RATE_LIMITS": "false"}
"""Set for every miner: the per-IP token buckets (engram.config.SecurityConfig) would answer
most of the benchmark's requests with 429, and the benchmark would time those."""
clock = time.perf_counter


def _loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# --- checking every answer ---------------------------------------------------------------------


class BenchFailure(RuntimeError):
    """A request failed or the miner holds other records than were sent: nothing to report."""


class Checks:
    """Every request the benchmark sends, tallied; the first failing run stops the benchmark.

    Load runs are checked by the load client (:func:`_common.check_answer`: status, body,
    a CID per ingested item) and handed in with :meth:`runs`; the benchmark's own requests
    (answer comparison, ``/count``, ``/stats``) go through :meth:`get` and :meth:`post`.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.failed = 0
        self.failures: Counter[str] = Counter()
        self.first_error: str | None = None
        self.by_run: dict[str, dict[str, Any]] = {}
        self.record_counts: list[dict[str, Any]] = []

    def _tally(self, name: str, checked: int, failed: int, failures: dict[str, int],
               first_error: str | None, statuses: dict[str, int] | None = None) -> None:  # fmt: skip
        self.requests += checked
        self.failed += failed
        self.failures.update(failures)
        if first_error and self.first_error is None:
            self.first_error = f"{name}: {first_error}"
        row = self.by_run.setdefault(
            name, {"requests_checked": 0, "failed_requests": 0, "failures": {}, "statuses": {}}
        )
        row["requests_checked"] += checked
        row["failed_requests"] += failed
        for k, v in failures.items():
            row["failures"][k] = row["failures"].get(k, 0) + v
        for k, v in (statuses or {}).items():
            row["statuses"][k] = row["statuses"].get(k, 0) + v
        if first_error and "first_error" not in row:
            row["first_error"] = first_error

    def message(self) -> str:
        kinds = ", ".join(f"{k}: {v:,}" for k, v in self.failures.most_common())
        return (
            f"{self.failed:,} of {self.requests:,} requests failed ({kinds}); "
            f"first error in {self.first_error}"
        )

    def _raise_if_failed(self) -> None:
        if self.failed:
            raise BenchFailure(self.message())

    def runs(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Load runs' summaries, once every one of their requests was answered as it should be."""
        for r in results:
            self._tally(r["name"], r["requests_checked"], r["failed_requests"], r["failures"],
                        r["first_error"], r["statuses"])  # fmt: skip
        self._raise_if_failed()
        return results

    def _answer(self, name: str, send: Any, kind: str, min_results: int) -> dict[str, Any]:
        import httpx

        try:
            r = send()
            status, raw = r.status_code, r.content
        except httpx.HTTPError as exc:
            status, raw = -1, repr(exc).encode()
        bad, doc, _ = check_answer(kind, status, raw, 1, min_results)
        failures = dict(Counter(what for what, _ in bad))
        self._tally(name, 1, 1 if bad else 0, failures, bad[0][1] if bad else None,
                    {str(status): 1})  # fmt: skip
        self._raise_if_failed()
        assert doc is not None
        return doc

    def get(self, client: Any, path: str, **params: Any) -> dict[str, Any]:
        """``GET path`` on the miner; its JSON object, once it answered 200."""
        return self._answer(f"GET {path}", lambda: client.get(path, params=params), "json", 0)

    def post(self, client: Any, path: str, body: dict[str, Any], kind: str, min_results: int = 0) -> dict[str, Any]:  # fmt: skip
        """``POST path``; its JSON object, once it passed :func:`check_answer` as ``kind``."""
        return self._answer(f"POST {path}", lambda: client.post(path, json=body), kind, min_results)  # fmt: skip

    def record_count(self, client: Any, after: str, sent: int, namespace: str | None = None) -> int:  # fmt: skip
        """The miner's record count (of ``namespace``, else in all), which must equal ``sent``."""
        params = {} if namespace is None else {"namespace": namespace}
        stored = int(self.get(client, "/count", **params)["count"])
        self.record_counts.append(
            {"after": after, "namespace": namespace, "stored": stored, "sent": sent}
        )
        if stored != sent:
            where = "" if namespace is None else f" in namespace {namespace!r}"
            raise BenchFailure(
                f"after {after} the miner holds {stored:,} records{where}, but {sent:,} distinct "
                f"ones were sent and acknowledged ({self.requests:,} requests checked)"
            )
        return stored

    def summary(self) -> dict[str, Any]:
        return {
            "requests_checked": self.requests,
            "failed_requests": self.failed,
            "failures": dict(self.failures),
            "first_error": self.first_error,
            "record_counts": self.record_counts,
            "by_run": self.by_run,
        }


# --- the miner process ---------------------------------------------------------------------


class Miner:
    """A ``python -m engram miner`` child on 127.0.0.1, its output in a log file.

    It runs with :data:`MINER_ENV` on top of this process's environment: rate limits off.
    """

    def __init__(self, home: Path, log: Path, log_level: str | None = None) -> None:
        self.home, self.log_path, self.log_level = home, log, log_level
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 180.0) -> Miner:
        import httpx

        cmd = [sys.executable, "-m", "engram", "miner", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--home", str(self.home)]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        t0 = clock()
        # A session of its own: a Ctrl-C in the terminal reaches only us; we stop it.
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **MINER_ENV},
        )
        while clock() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the miner exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    self.ready_s = clock() - t0
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the miner was not ready after {timeout_s} s:\n{self.log_tail()}")

    def rss_bytes(self) -> int | None:
        try:
            import psutil

            return int(psutil.Process(self.pid).memory_info().rss)
        except Exception:  # psutil missing or process gone
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()


# --- part 1: queries -------------------------------------------------------------------------


def _inprocess_level(store: Any, queries: np.ndarray, clients: int, n: int) -> dict[str, Any]:
    """``n`` searches with ``clients`` threads each searching back to back."""
    lat = np.empty(n, dtype=np.float64)
    counter = itertools.count()  # next() on it is atomic under the GIL

    def worker() -> None:
        while (i := next(counter)) < n:
            q = queries[i % len(queries)]
            t0 = clock()
            store.search(q, top_k=K)
            lat[i] = clock() - t0

    cpu0, t0 = time.process_time(), clock()
    if clients == 1:
        worker()
    else:
        with ThreadPoolExecutor(clients) as pool:
            for f in [pool.submit(worker) for _ in range(clients)]:
                f.result()
    wall = clock() - t0
    cpu = time.process_time() - cpu0
    return {
        "concurrency": clients,
        "requests": n,
        "wall_s": wall,
        "rps": n / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p90_ms": float(np.percentile(lat, 90) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "mean_ms": float(lat.mean() * 1e3),
        "cpu_us_per_request": cpu / n * 1e6,
    }


def _query_runs(queries: Path, args: argparse.Namespace, levels: list[int]) -> list[dict[str, Any]]:
    # Every answer must carry K hits: the store holds far more than K records.
    body = {"kind": "query", "vectors": str(queries), "top_k": K, "min_results": K}
    return [
        {
            "name": f"query c={c}",
            "path": "/QuerySynapse",
            "body": body,
            "concurrency": c,
            "requests": args.requests,
            "warmup": max(100, 2 * c),
            "time_limit_s": args.time_limit,
        }
        for c in levels
    ]


def part_query(args: argparse.Namespace, work: Path, checks: Checks) -> dict[str, Any]:
    import httpx

    from engram.store import Store

    err.print(f"[bold]query[/bold]: {args.n:,} clustered vectors, seed {args.seed}")
    data, queries, labels = clustered_vectors(args.n, args.queries, seed=args.seed)
    home = work / "query-home"
    store = Store(home)
    t0 = clock()
    with progress() as bar:
        task = bar.add_task("fill (in-process put)", total=args.n)
        for start in range(0, args.n, FILL_BATCH):
            stop = min(start + FILL_BATCH, args.n)
            meta = [{"cluster": int(labels[i]), "bucket": i % 100} for i in range(start, stop)]
            store.put([store.record(data[i], metadata=meta[i - start]) for i in range(start, stop)])
            bar.advance(task, stop - start)
    acked_s = clock() - t0
    err.print(f"  put {args.n:,} in {acked_s:.1f} s; flushing the index ...")
    store.flush()
    fill = {
        "records": args.n,
        "put_s": acked_s,
        "put_records_per_s": args.n / acked_s,
        "indexed_s": clock() - t0,
        "batch": FILL_BATCH,
    }

    inproc = []
    for _ in range(200):  # warm caches and the per-thread FAISS setup
        store.search(queries[_ % len(queries)], top_k=K)
    for c in args.concurrency:
        err.print(f"  in-process Store.search, {c} thread(s) ...")
        inproc.append(_inprocess_level(store, queries, c, args.requests))
    reference = [[h.cid for h in store.search(q, top_k=K)] for q in queries[:CHECK_QUERIES]]
    store.close()

    qpath = work / "queries.npy"
    np.save(qpath, queries)
    miner = Miner(home, work / "miner-query.log", args.miner_log_level)
    err.print("  starting the miner on that home ...")
    miner.start()
    try:
        same = 0
        with httpx.Client(base_url=miner.url, timeout=30.0) as client:
            stored = checks.record_count(client, "opening the in-process store", args.n)
            for q, want in zip(queries[:CHECK_QUERIES], reference, strict=True):
                body = {"query_vector": q.tolist(), "top_k": K}
                doc = checks.post(client, "/QuerySynapse", body, "query", min_results=K)
                same += [h["cid"] for h in doc["results"]] == want
        err.print(
            f"  the miner holds {stored:,} records; HTTP answers equal in-process ones for "
            f"{same}/{CHECK_QUERIES} queries"
        )
        spec = {
            "base_url": miner.url,
            "server_pid": miner.pid,
            "runs": _query_runs(qpath, args, args.concurrency),
        }
        err.print(f"  HTTP load: {args.concurrency} clients x {args.requests} requests ...")
        load0 = _loadavg()
        http = checks.runs(run_load(spec, work, args.time_limit * len(args.concurrency) + 300))
        profile = [profile_miner(miner, qpath, args, work, c, checks) for c in args.profile or ()]
        rss = miner.rss_bytes()
    finally:
        miner.stop()
    return {
        "n": args.n,
        "fill": fill,
        "miner_ready_s": miner.ready_s,
        "miner_rss_bytes": rss,
        "records_stored": stored,
        "answers_equal": f"{same}/{CHECK_QUERIES}",
        "in_process": inproc,
        "http": http,
        "loadavg_1m_during_http": [load0, _loadavg()],
        "profile": profile,
    }


# --- profiling (optional) ----------------------------------------------------------------------

# Where a py-spy sample's innermost Python frame is decides its component (first match
# wins). Native code (FAISS, SQLite, pydantic-core, uvloop, httptools) counts for the Python
# frame that called it. Threads blocked in a queue or in uvloop's C loop show up as
# "idle or in C event loop": py-spy cannot always tell idle threads apart.
_COMPONENTS = (
    ("idle or in C event loop", ("_worker (concurrent/futures/thread.py:81)", "Condition.wait (", "Runner.run (asyncio/runners.py", "Thread.join")),
    ("FAISS HNSW search (C++)", ("swigfaiss",)),
    ("store: SQLite hydrate (db.py)", ("engram/store/db.py",)),
    ("store: engine + index (Python)", ("engram/store/", "numpy/")),
    ("request JSON decode (stdlib json)", ("json/decoder.py", "json/__init__.py")),
    ("pydantic validate/serialize", ("pydantic",)),
    ("logging (one line per request)", ("logging/", "engram/server/app.py:2", "JsonLogFormatter")),
    ("prometheus metrics", ("prometheus_client",)),
    ("engram server glue (middleware, routes)", ("engram/server/", "engram/miner/")),
    ("starlette (BaseHTTPMiddleware, routing)", ("starlette/",)),
    ("fastapi (routing, deps, response)", ("fastapi/",)),
    ("anyio (BaseHTTPMiddleware streams)", ("anyio/",)),
    ("uvicorn + httptools", ("uvicorn/",)),
    ("asyncio / thread hand-off", ("asyncio/", "concurrent/futures", "threading.py")),
)  # fmt: skip


def profile_miner(miner: Miner, qpath: Path, args: argparse.Namespace, work: Path, clients: int, checks: Checks) -> dict[str, Any]:  # fmt: skip
    """Sample the miner with py-spy during a query run with ``clients`` in flight."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {"clients": clients, "error": "py-spy not installed (pip install py-spy)"}
    raw = work / f"miner-c{clients}.pyspy.txt"
    seconds = max(5, int(args.profile_seconds))
    cmd = [spy, "record", "--pid", str(miner.pid), "--duration", str(seconds), "--rate", "250"]
    cmd += ["--format", "raw", "--nonblocking", "--output", str(raw)]
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let py-spy attach
    runs = _query_runs(qpath, args, [clients])
    runs[0].update(name=f"profiled query c={clients}", requests=10**7, time_limit_s=seconds - 1)
    err.print(f"  profiling the miner with py-spy for {seconds} s at {clients} client(s) ...")
    spec = {"base_url": miner.url, "server_pid": miner.pid, "runs": runs}
    loaded = checks.runs(run_load(spec, work, 300))
    _, spy_err = spy_proc.communicate(timeout=120)
    if spy_proc.returncode != 0 or not raw.exists():
        return {"clients": clients, "error": f"py-spy failed: {spy_err.decode(errors='replace')[-500:]}"}  # fmt: skip
    return {"clients": clients, "load": loaded[0], "raw_file": str(raw), **summarize_pyspy(raw)}


def summarize_pyspy(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self time per component and per thread kind, and the top innermost frames."""
    total = 0
    threads: Counter[str] = Counter()
    components: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        # Pool threads start in Thread._bootstrap; the event loop's stacks (some of them
        # coroutine stacks without the loop's frames) are everything else.
        threads[
            "worker threads" if frames[0].startswith("Thread._bootstrap") else "event loop"
        ] += n
        leaf = frames[-1]
        leaves[leaf] += n
        name = next(
            (c for c, needles in _COMPONENTS if any(x in leaf for x in needles)), "other Python"
        )
        components[name] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "threads": {k: round(v / total, 4) for k, v in threads.most_common()},
        "self_by_component": {k: round(v / total, 4) for k, v in components.most_common()},
        "top_self": [(f, round(v / total, 4)) for f, v in leaves.most_common(top)],
    }


# --- part 2: raw-vector batch ingest -----------------------------------------------------------


def part_batch_ingest(args: argparse.Namespace, work: Path, checks: Checks) -> dict[str, Any]:
    import httpx

    levels = args.ingest_concurrency
    per_level = (args.ingest_batches + 1) * INGEST_BATCH  # + one warm-up batch
    err.print(
        f"[bold]batch ingest[/bold]: {args.ingest_batches} x {INGEST_BATCH} raw vectors "
        f"per level, {levels} batches in flight, fresh miner"
    )
    vectors, _, _ = clustered_vectors(per_level * len(levels), 0, seed=args.seed + 1)
    runs = []
    for j, c in enumerate(levels):
        path = work / f"ingest-{c}.npy"
        np.save(path, vectors[j * per_level : (j + 1) * per_level])
        body = {"kind": "raw_batch", "vectors": str(path), "batch": INGEST_BATCH}
        runs.append(
            {
                "name": f"batch ingest c={c}",
                "path": "/BatchIngestSynapse",
                "body": body,
                "concurrency": c,
                "warmup": 1,
                "time_limit_s": args.time_limit,
            }
        )
    miner = Miner(work / "ingest-home", work / "miner-ingest.log", args.miner_log_level).start()
    http = []
    sent = stored = 0
    try:
        with httpx.Client(base_url=miner.url, timeout=30.0) as client:
            for run in runs:
                spec = {"base_url": miner.url, "server_pid": miner.pid, "runs": [run]}
                (result,) = checks.runs(run_load(spec, work, args.time_limit + 300))
                # Let the background indexer catch up, so the next level starts quiet.
                t0 = clock()
                caught_up = _wait_indexed(client, checks, timeout_s=args.time_limit)
                result["index_catch_up_s"] = clock() - t0 if caught_up else None
                if caught_up:
                    result["indexed_records_per_s"] = result["items"] / (
                        result["wall_s"] + result["index_catch_up_s"]
                    )
                # Every vector is distinct: one record per item sent (warm-up included).
                sent += result["items_sent"]
                stored = checks.record_count(client, f"'{run['name']}'", sent)
                http.append(result)
    finally:
        miner.stop()
    return {
        "batch": INGEST_BATCH,
        "http": http,
        "records_stored": stored,
        "records_sent": sent,
        "records_planned": len(levels) * per_level,
        "miner_ready_s": miner.ready_s,
    }


def _wait_indexed(client: Any, checks: Checks, timeout_s: float) -> bool:
    """Wait until no namespace has a full indexing batch pending (the indexer is idle)."""
    from engram.config import StoreConfig

    threshold = StoreConfig().index_batch_rows
    t0 = clock()
    while clock() - t0 < timeout_s:
        index = checks.get(client, "/stats")["index"]
        if all(ns["pending"] < threshold for ns in index.values()):
            return True
        time.sleep(0.1)
    return False


# --- part 3: text ingest ----------------------------------------------------------------------


def _rate(n: int, seconds: float) -> dict[str, Any]:
    return {"sentences": n, "seconds": seconds, "sentences_per_s": n / seconds}


def part_text_ingest(args: argparse.Namespace, work: Path, checks: Checks) -> dict[str, Any]:
    """Bare-embedder passes interleaved with every other measurement.

    On a shared machine the embedder's speed drifts by tens of percent within
    minutes, so each measurement is compared with the mean of the bare passes
    just before and just after it.
    """
    import httpx

    from engram.embed import get_embedder
    from engram.node.local import LocalNode
    from engram.records import IngestItem
    from engram.store import Store

    warm_n = max(max(args.text_batches), 2 * args.single_clients)
    texts, _ = make_sentences(args.sentences + warm_n, seed=args.seed)
    main, warm = texts[: args.sentences], texts[args.sentences :]
    n = len(main)
    err.print(f"[bold]text ingest[/bold]: {n} distinct sentences, bare embedder interleaved")
    emb = get_embedder()
    emb.encode(warm[:64], batch_size=64)
    bare_passes: list[dict[str, Any]] = []

    def bare_pass() -> dict[str, Any]:
        t0 = clock()
        emb.encode(main, batch_size=64)
        bare_passes.append(_rate(n, clock() - t0))
        return bare_passes[-1]

    def against_adjacent(rate: float) -> dict[str, Any]:
        before, after = bare_passes[-2], bare_passes[-1]
        adjacent = n / ((before["seconds"] + after["seconds"]) / 2)
        return {"bare_adjacent_sentences_per_s": adjacent, "share_of_bare": rate / adjacent}

    diagnostics: dict[str, Any] = {}
    bare_pass()
    if args.text_diagnostics:
        for b in args.text_batches:
            t0 = clock()
            for i in range(0, n, b):
                emb.encode(main[i : i + b], batch_size=64)
            diagnostics[f"encode per {b}-text chunk"] = _rate(n, clock() - t0)
        singles = main[: min(n, args.single_requests)]
        t0 = clock()
        for s in singles:
            emb.encode([s])
        diagnostics["encode one text at a time"] = _rate(len(singles), clock() - t0)
        bare_pass()

    b = min(args.text_batches)
    store = Store(work / "text-inproc-home")
    node = LocalNode(store, emb)
    t0 = clock()
    for i in range(0, n, b):
        out = node.ingest([IngestItem(text=t, namespace="inproc") for t in main[i : i + b]])
        bad = [o for o in out if isinstance(o, Exception)]
        if bad:
            raise RuntimeError(f"in-process ingest failed: {bad[0]}")
    inproc = {"name": f"LocalNode.ingest, {b}-text batches", **_rate(n, clock() - t0)}
    store.close()
    bare_pass()
    inproc.update(against_adjacent(inproc["sentences_per_s"]))

    runs = []
    for b in args.text_batches:
        for c in args.text_concurrency:
            path = work / f"texts-b{b}.json"  # a distinct warm-up batch, then the n sentences
            path.write_text(json.dumps(warm[:b] + main))
            body = {"kind": "text_batch", "texts": str(path), "batch": b, "namespace": f"b{b}c{c}"}
            runs.append(
                {
                    "name": f"BatchIngestSynapse {b} texts, {c} in flight",
                    "path": "/BatchIngestSynapse",
                    "body": body,
                    "concurrency": c,
                    "warmup": 1,
                    "time_limit_s": args.time_limit,
                }
            )
    if args.single_requests:
        sw = 2 * args.single_clients
        path = work / "texts-single.json"
        path.write_text(json.dumps(warm[:sw] + main[: args.single_requests]))
        runs.append(
            {
                "name": f"IngestSynapse 1 text, {args.single_clients} in flight",
                "path": "/IngestSynapse",
                "body": {"kind": "text_single", "texts": str(path), "namespace": "single"},
                "concurrency": args.single_clients,
                "warmup": sw,
                "time_limit_s": args.time_limit,
            }
        )
    err.print(f"  {len(runs)} HTTP runs into a fresh miner, each followed by a bare pass ...")
    miner = Miner(work / "text-home", work / "miner-text.log", args.miner_log_level).start()
    http = []
    sent = stored = 0
    try:
        with httpx.Client(base_url=miner.url, timeout=30.0) as client:
            for run in runs:
                spec = {"base_url": miner.url, "server_pid": miner.pid, "runs": [run]}
                (result,) = checks.runs(run_load(spec, work, args.time_limit + 300))
                # Each run writes distinct sentences into a namespace of its own.
                ns = run["body"]["namespace"]
                checks.record_count(client, f"'{run['name']}'", result["items_sent"], ns)
                sent += result["items_sent"]
                bare_pass()
                result.update(against_adjacent(result["items_per_s"] or 0.0))
                http.append(result)
            stored = checks.record_count(client, "all text runs", sent)
    finally:
        miner.stop()
    seconds = float(np.mean([p["seconds"] for p in bare_passes]))
    return {
        "sentences": n,
        "embedder": repr(emb),
        "bare": _rate(n, seconds),
        "bare_passes": bare_passes,
        "diagnostics": diagnostics,
        "in_process": inproc,
        "http": http,
        "records_stored": stored,
        "records_sent": sent,
        "miner_ready_s": miner.ready_s,
    }


# --- report ------------------------------------------------------------------------------------


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    q = report.get("query")
    if q:
        inp = {r["concurrency"]: r for r in q["in_process"]}
        http = {r["concurrency"]: r for r in q["http"]}
        if 1 in inp and 1 in http and "p50_ms" in http[1]:
            over = http[1]["p50_ms"] - inp[1]["p50_ms"]
            rows.append(
                {
                    "what": "miner HTTP query: p50 overhead over in-process (1 client)",
                    "goal": f"≤ {TARGET_OVERHEAD_MS:g} ms",
                    "value": over,
                    "shown": f"{over:.3f} ms ({http[1]['p50_ms']:.3f} vs {inp[1]['p50_ms']:.3f})",
                    "met": over <= TARGET_OVERHEAD_MS,
                }
            )
            cpu = http[1].get("server_cpu_us_per_request")
            if cpu is not None:
                extra = cpu - inp[1]["cpu_us_per_request"]
                rows.append(
                    {
                        "what": "  (context) miner CPU per query minus in-process CPU per search",
                        "goal": "—",
                        "value": extra,
                        "shown": f"{extra / 1e3:.3f} ms ({cpu / 1e3:.3f} vs "
                        f"{inp[1]['cpu_us_per_request'] / 1e3:.3f}); less sensitive to other load",
                        "met": None,
                    }
                )
        top = max(http) if http else None
        if top is not None and top >= 64 and "p99_ms" in http[top]:
            p99 = http[top]["p99_ms"]
            rows.append(
                {
                    "what": f"miner HTTP query: p99 at {top} concurrent clients",
                    "goal": f"≤ {TARGET_P99_MS:g} ms",
                    "value": p99,
                    "shown": f"{p99:.1f} ms",
                    "met": p99 <= TARGET_P99_MS and not http[top]["http_errors"],
                }
            )
    t = report.get("text_ingest")
    if t:
        batched = [r for r in t["http"] if r["name"].startswith("BatchIngestSynapse")]
        best = max(batched, key=lambda r: r["share_of_bare"], default=None)
        if best is not None:
            rows.append(
                {
                    "what": f"text ingest over HTTP ({best['name']}) vs bare embedder",
                    "goal": f"≥ {TARGET_TEXT_SHARE:.0%}",
                    "value": best["share_of_bare"],
                    "shown": f"{best['share_of_bare']:.1%} ({best['items_per_s']:,.0f} vs "
                    f"{best['bare_adjacent_sentences_per_s']:,.0f} sentences/s)",
                    "met": best["share_of_bare"] >= TARGET_TEXT_SHARE and not best["item_errors"],
                }
            )
    return rows


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def render(report: dict[str, Any], console: Console) -> None:
    cfg = report["config"]
    q = report.get("query")
    if q:
        t = Table(
            title=f"Query, {q['n']:,} x 384 (top_k={K}): in-process Store.search vs miner "
            f"POST /QuerySynapse, {cfg['requests']} requests per level",
            title_justify="left",
        )
        cols = ("clients", "in-proc QPS", "in-proc p50", "in-proc p99", "HTTP QPS", "HTTP p50",
                "HTTP p99", "server p50", "p50 overhead", "miner CPU µs/req",
                "client CPU µs/req", "in-proc CPU µs/q", "errors")  # fmt: skip
        for c in cols:
            t.add_column(c, justify="right")
        inp = {r["concurrency"]: r for r in q["in_process"]}
        for h in q["http"]:
            i = inp.get(h["concurrency"], {})
            t.add_row(
                str(h["concurrency"]),
                _f(i.get("rps"), ",.0f"),
                _f(i.get("p50_ms"), ".3f"),
                _f(i.get("p99_ms"), ".3f"),
                _f(h.get("rps"), ",.0f"),
                _f(h.get("p50_ms"), ".3f"),
                _f(h.get("p99_ms"), ".2f"),
                _f(h.get("server_p50_ms"), ".3f"),
                _f(h["p50_ms"] - i["p50_ms"] if i and "p50_ms" in h else None, ".3f"),
                _f(h.get("server_cpu_us_per_request"), ",.0f"),
                _f(h.get("client_cpu_us_per_request"), ",.0f"),
                _f(i.get("cpu_us_per_request"), ",.0f"),
                str(h["http_errors"] + h["item_errors"]),
            )
        console.print(t)
        f = q["fill"]
        console.print(
            f"[dim]latencies in ms; 'server p50' is the miner's own latency_ms (the search in "
            f"its reader thread). Fill: {f['records']:,} records put in-process at "
            f"{f['put_records_per_s']:,.0f}/s, indexed in {f['indexed_s']:.1f} s; miner ready "
            f"in {q['miner_ready_s']:.1f} s, RSS {(q['miner_rss_bytes'] or 0) / 2**20:,.0f} MiB; "
            f"HTTP answers equal in-process: {q['answers_equal']}; load average during HTTP "
            f"{q['loadavg_1m_during_http']}[/dim]"
        )
        for prof in q.get("profile") or []:
            if "error" in prof:
                console.print(f"[yellow]profile at {prof['clients']} clients: {prof['error']}[/yellow]")  # fmt: skip
                continue
            t = Table(
                title=f"Miner profile at {prof['clients']} client(s), {prof['load']['rps']:,.0f} "
                f"QPS (py-spy, {prof['samples']:,} samples): self time by component",
                title_justify="left",
            )
            t.add_column("component (innermost Python frame)")
            t.add_column("share", justify="right")
            for k, v in prof["threads"].items():
                t.add_row(f"thread: {k}", f"{v:.1%}")
            for k, v in prof["self_by_component"].items():
                t.add_row(k, f"{v:.1%}")
            console.print(t)
            t = Table(title="  top innermost frames", title_justify="left")
            t.add_column("frame")
            t.add_column("share", justify="right")
            for frame, v in prof["top_self"][:12]:
                t.add_row(frame[:110], f"{v:.1%}")
            console.print(t)
    b = report.get("batch_ingest")
    if b:
        t = Table(
            title=f"Batch ingest of raw vectors ({b['batch']}-item BatchIngestSynapse, fresh miner)",
            title_justify="left",
        )
        for c in ("how", "records", "records/s (acked)", "index catch-up s", "records/s (indexed)",
                  "p50 ms/batch", "p99 ms/batch", "MB/batch", "miner CPU ms/batch", "errors"):  # fmt: skip
            t.add_column(c, justify="left" if c == "how" else "right")
        if q:
            f = q["fill"]
            t.add_row("in-process Store.put (query fill)", f"{f['records']:,}",
                      f"{f['put_records_per_s']:,.0f}", "", f"{f['records'] / f['indexed_s']:,.0f}",
                      "", "", "", "", "")  # fmt: skip
        for h in b["http"]:
            t.add_row(
                f"HTTP, {h['concurrency']} batch(es) in flight",
                f"{h['items']:,}",
                _f(h.get("items_per_s"), ",.0f"),
                _f(h.get("index_catch_up_s"), ".1f"),
                _f(h.get("indexed_records_per_s"), ",.0f"),
                _f(h.get("p50_ms"), ",.0f"),
                _f(h.get("p99_ms"), ",.0f"),
                f"{h['body_bytes_mean'] / 1e6:.1f}",
                _f((h.get("server_cpu_us_per_request") or 0) / 1e3, ",.0f"),
                str(h["http_errors"] + h["item_errors"]),
            )
        console.print(t)
        console.print(
            f"[dim]records stored {b['records_stored']:,} of {b['records_sent']:,} sent "
            "(warm-up batches included; GET /count checked after each level); acknowledged = durable (searchable at once by exact "
            "scan); 'indexed' adds the wait until the background HNSW build has no full batch "
            "pending; the fill row is put + flush()[/dim]"
        )
    tx = report.get("text_ingest")
    if tx:
        base = tx["bare"]["sentences_per_s"]
        t = Table(
            title=f"Text ingest, {tx['sentences']:,} distinct sentences ({tx['embedder']}); "
            "'% of bare' is against the bare passes just before and after each row",
            title_justify="left",
        )
        for c in ("how", "sentences/s", "% of bare", "p50 ms/req", "p99 ms/req",
                  "miner CPU ms/req", "errors"):  # fmt: skip
            t.add_column(c, justify="left" if c == "how" else "right")
        passes = ", ".join(f"{p['sentences_per_s']:,.0f}" for p in tx["bare_passes"])
        t.add_row("bare embedder: encode(all, batch_size=64), mean", f"{base:,.0f}", "100%",
                  "", "", "", "")  # fmt: skip
        t.add_row(f"  each pass, in order: {passes}", "", "", "", "", "", "")
        for name, r in tx["diagnostics"].items():
            t.add_row(f"bare embedder: {name}", f"{r['sentences_per_s']:,.0f}",
                      f"{r['sentences_per_s'] / base:.0%} of mean", "", "", "", "")  # fmt: skip
        r = tx["in_process"]
        t.add_row(f"in-process: {r['name']}", f"{r['sentences_per_s']:,.0f}",
                  f"{r['share_of_bare']:.0%}", "", "", "", "")  # fmt: skip
        for h in tx["http"]:
            t.add_row(
                f"HTTP: {h['name']}",
                _f(h.get("items_per_s"), ",.0f"),
                f"{h['share_of_bare']:.0%}",
                _f(h.get("p50_ms"), ",.1f"),
                _f(h.get("p99_ms"), ",.1f"),
                _f((h.get("server_cpu_us_per_request") or 0) / 1e3, ",.1f"),
                str(h["http_errors"] + h["item_errors"]),
            )
        console.print(t)
        console.print(
            f"[dim]records stored {tx['records_stored']:,} of {tx['records_sent']:,} sent over "
            "HTTP (warm-up requests included; GET /count checked per run's namespace)[/dim]"
        )
    t = Table(title="performance yardsticks", title_justify="left")
    for c in ("what", "goal", "measured", "met"):
        t.add_column(c)
    for r in report["targets"]:
        met = "" if r["met"] is None else "[green]met[/green]" if r["met"] else "[red]missed[/red]"
        t.add_row(r["what"], r["goal"], r["shown"], met)
    console.print(t)
    for part in ("query", "batch_ingest", "text_ingest"):
        for h in (report.get(part) or {}).get("http", []):
            if h.get("first_error"):
                console.print(f"[red]{h['name']}: {h['first_error']}[/red]")
    chk = report["checks"]
    console.print(
        f"[bold]Checked:[/bold] {chk['requests_checked']:,} requests (warm-up ones included) to "
        f"miners with rate limits off: each answer's HTTP status, its body (queries: {K} "
        f"hits, no error; ingest: a CID per item) and {len(chk['record_counts'])} record counts; "
        f"{chk['failed_requests']:,} failed."
    )
    m = report["machine"]
    console.print(
        f"[bold]Note:[/bold] the load generator (aiohttp client, keep-alive, its own process) "
        f"runs on the same {m['cpus']}-CPU machine as the miner and competes with it for CPU; "
        f"QPS at 16/64 clients is therefore a floor. Load average at start "
        f"{m['load_average_1m']}, at end {report['load_average_end']}. "
        f"Wall time {report['wall_s']:.0f} s."
    )


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--n", type=int, default=100_000, help="vectors in the query store")
    p.add_argument("--queries", type=int, default=2000, help="distinct query vectors (cycled)")
    p.add_argument("--requests", type=int, default=3000, help="timed queries per level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--ingest-batches", type=int, default=20, help="1000-item batches per level")
    p.add_argument("--ingest-concurrency", type=int, nargs="+", default=[1, 2])
    p.add_argument("--sentences", type=int, default=2000)
    p.add_argument("--text-batches", type=int, nargs="+", default=[64, 256, 1000])
    p.add_argument("--text-concurrency", type=int, nargs="+", default=[1])
    p.add_argument("--single-clients", type=int, default=4, help="IngestSynapse clients")
    p.add_argument("--single-requests", type=int, default=500, help="IngestSynapse requests")
    p.add_argument("--text-diagnostics", action="store_true", help="bare embedder per chunk too")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per HTTP run at most")
    p.add_argument("--parts", nargs="+", choices=("query", "batch", "text"), default=["query", "batch", "text"])  # fmt: skip
    p.add_argument("--miner-log-level", help="--log-level for the miners (default: theirs)")
    p.add_argument("--profile", type=int, nargs="*", metavar="CLIENTS",
                   help="py-spy the miner at these client counts (bare flag: 1 and 64)")  # fmt: skip
    p.add_argument("--profile-seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, help="where the stores go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the stores and logs")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    if args.profile == []:
        args.profile = [1, 64]

    t_start = clock()
    report: dict[str, Any] = {
        "benchmark": "miner",
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "note": "the load generator runs in its own process on the same machine as the miner",
    }
    work = Path(tempfile.mkdtemp(prefix="engram-miner-bench-", dir=args.workdir))
    err.print(f"work dir {work}")
    checks = Checks()
    failure: str | None = None
    try:
        if "query" in args.parts:
            report["query"] = part_query(args, work, checks)
        if "batch" in args.parts:
            report["batch_ingest"] = part_batch_ingest(args, work, checks)
        if "text" in args.parts:
            report["text_ingest"] = part_text_ingest(args, work, checks)
    except BenchFailure as exc:
        failure = str(exc)
    finally:
        if args.keep or failure:
            err.print(f"kept {work} (the miners' logs are there)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["requests_checked"] = checks.requests
    report["checks"] = checks.summary()
    report["wall_s"] = clock() - t_start
    report["load_average_end"] = _loadavg()
    if failure:
        # Nothing measured is what it claims to be: no tables, only what went wrong.
        report["failure"] = failure
        if args.json:
            write_json(args.json, report)
            err.print(f"wrote {args.json}")
        err.print(f"[bold red]miner_bench FAILED:[/bold red] {failure}")
        return 1
    report["targets"] = targets(report)
    render(report, Console(width=None if sys.stdout.isatty() else 160))
    if args.json:
        write_json(args.json, report)
        err.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
