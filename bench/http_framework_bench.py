"""Choose the miner's HTTP framework by measurement: FastAPI + uvicorn vs aiohttp.web.

Run: ``python bench/http_framework_bench.py [--requests 3000] [--concurrency 1 64]
[--servers fastapi fastapi+thread fastapi-raw aiohttp aiohttp+thread] [--json out.json]``

Every server exposes one endpoint equivalent to the miner's ``POST /QuerySynapse``
with no search behind it: parse a 384-float query body into the miner's own
pydantic model (:class:`engram.api.wire.QueryRequest`) and answer 10 small
results through :class:`engram.api.wire.QueryResponse`. Variants:

* ``fastapi`` — idiomatic, as the miner is written: body model as a parameter
  (stdlib ``json.loads`` + pydantic ``validate_python``) and ``response_model``;
* ``fastapi+thread`` — the same, plus the hop to a thread pool and back that the
  miner makes for every query (``run_in_executor``);
* ``engram-shell`` — ``fastapi+thread`` built with the miner's own
  :func:`engram.server.app.create_app` (error mapping, body limit, the
  ``@app.middleware("http")`` metrics + per-request JSON log line) and the
  miner's logging set-up at its default level, info; ``engram-shell-quiet`` is
  the same at log level warning. Against ``fastapi+thread`` they price the shell;
* ``fastapi-raw`` — FastAPI routing, but ``QueryRequest.model_validate_json`` on
  the raw body and a pre-serialised ``Response``;
* ``aiohttp`` / ``aiohttp+thread`` — aiohttp.web with ``model_validate_json`` and
  ``model_dump_json``, without / with the thread hop.

Each server runs in its own process (uvloop and httptools when installed, no
access log) and the load comes from one more process (aiohttp client,
keep-alive, N requests in flight). Client and server share this machine's
cores, so the absolute numbers are lower than on separate hosts; the ranking
is what this measures.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
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

from _common import err, free_port, machine_info, normalize_rows, run_load, write_json

# Module level: FastAPI resolves the (string) annotations of the routes in these globals.
from fastapi import Request, Response

from engram.api.wire import QueryRequest, QueryResponse

SERVERS = (
    "fastapi",
    "fastapi+thread",
    "engram-shell",
    "engram-shell-quiet",
    "fastapi-raw",
    "aiohttp",
    "aiohttp+thread",
)
DIM = 384
K = 10


def _results() -> list[dict[str, Any]]:
    """Ten small hits, shaped like the miner's."""
    return [
        {
            "cid": f"bafkreigh2akiscaildc{i:02d}qwxyzabcdefghijklmnopqrstuvwxyz234567ab",
            "score": round(0.9 - i * 0.01, 6),
            "metadata": {"cluster": i, "bucket": i % 7},
        }
        for i in range(K)
    ]


# --- servers (each runs in its own process) --------------------------------------------------


def serve(kind: str, port: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    results = _results()
    pool = ThreadPoolExecutor(8, thread_name_prefix="reader")

    def answer(body: QueryRequest) -> dict[str, Any]:
        # Touch the parsed vector so nothing is skipped; cost is negligible.
        return {"results": results, "latency_ms": float(len(body.query_vector or ()))}

    if kind.startswith(("fastapi", "engram")):
        import asyncio

        import uvicorn
        from fastapi import FastAPI

        if kind.startswith("engram"):
            from engram.config import Limits
            from engram.server.app import configure_logging, create_app

            configure_logging("warning" if kind.endswith("quiet") else "info")
            app = create_app("bench", "0", Limits())
        else:
            app = FastAPI()

        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        if kind == "fastapi":

            @app.post(
                "/QuerySynapse", response_model=QueryResponse, response_model_exclude_none=True
            )
            async def query(body: QueryRequest) -> dict[str, Any]:
                return answer(body)

        elif kind in ("fastapi+thread", "engram-shell", "engram-shell-quiet"):

            @app.post(
                "/QuerySynapse", response_model=QueryResponse, response_model_exclude_none=True
            )
            async def query_thread(body: QueryRequest) -> dict[str, Any]:
                return await asyncio.get_running_loop().run_in_executor(pool, answer, body)

        else:

            @app.post("/QuerySynapse")
            async def query_raw(request: Request) -> Response:
                body = QueryRequest.model_validate_json(await request.body())
                out = QueryResponse.model_validate(answer(body))
                return Response(
                    out.model_dump_json(exclude_none=True), media_type="application/json"
                )

        if kind.startswith("engram"):  # as engram.miner.app.serve_miner runs it
            uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
        else:
            uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        return

    import asyncio

    from aiohttp import web

    async def a_health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def a_query(request: web.Request) -> web.Response:
        body = QueryRequest.model_validate_json(await request.read())
        if kind == "aiohttp+thread":
            doc = await asyncio.get_running_loop().run_in_executor(pool, answer, body)
        else:
            doc = answer(body)
        out = QueryResponse.model_validate(doc).model_dump_json(exclude_none=True)
        return web.Response(body=out.encode(), content_type="application/json")

    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_get("/health", a_health)
    app.router.add_post("/QuerySynapse", a_query)
    loop = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


# --- parent --------------------------------------------------------------------------------


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout_s} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_server(kind: str, args: argparse.Namespace, work: Path, queries: Path) -> dict[str, Any]:
    port = free_port()
    log = open(work / f"{kind}.log", "wb")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready_s = _wait_ready(f"http://127.0.0.1:{port}/health", proc)
        runs = [
            {
                "name": f"{kind} c={c}",
                "path": "/QuerySynapse",
                "body": {"kind": "query", "vectors": str(queries), "top_k": K},
                "concurrency": c,
                "requests": args.requests,
                "warmup": max(100, 2 * c),
                "time_limit_s": args.time_limit,
            }
            for c in args.concurrency
        ]
        spec = {"base_url": f"http://127.0.0.1:{port}", "server_pid": proc.pid, "runs": runs}
        results = run_load(spec, work, timeout_s=args.time_limit * len(runs) + 120)
    finally:
        _stop(proc)
        log.close()
    return {"server": kind, "ready_s": ready_s, "levels": results}


def render(report: dict[str, Any], console: Console) -> None:
    t = Table(
        title=f"HTTP framework: minimal /QuerySynapse (384-float body, {K} results), "
        f"{report['config']['requests']} requests per level",
        title_justify="left",
    )
    for col in ("server", "clients", "QPS", "p50 ms", "p99 ms", "server CPU µs/req", "client CPU µs/req", "errors"):  # fmt: skip
        t.add_column(col, justify="left" if col == "server" else "right")
    for s in report["servers"]:
        for lv in s["levels"]:
            t.add_row(
                s["server"],
                str(lv["concurrency"]),
                f"{lv['rps']:,.0f}",
                f"{lv.get('p50_ms', float('nan')):.2f}",
                f"{lv.get('p99_ms', float('nan')):.2f}",
                f"{lv['server_cpu_us_per_request'] or 0:,.0f}",
                f"{lv['client_cpu_us_per_request'] or 0:,.0f}",
                str(lv["http_errors"] + lv["item_errors"]),
            )
    console.print(t)
    for s in report["servers"]:
        for lv in s["levels"]:
            if lv["first_error"]:
                console.print(
                    f"[red]{s['server']} c={lv['concurrency']}: {lv['first_error']}[/red]"
                )
    console.print(
        f"[dim]client and servers share this machine ({os.cpu_count()} CPUs): the load "
        "generator's CPU competes with the server's; load average at start "
        f"{report['machine']['load_average_1m']}, at end {report['load_average_end']}; "
        f"wall time {report['wall_s']:.1f} s[/dim]"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--requests", type=int, default=3000, help="timed requests per level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    p.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    p.add_argument("--time-limit", type=float, default=30.0, help="seconds per level at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="engram-http-bench-") as tmp:
        work = Path(tmp)
        queries = work / "queries.npy"
        np.save(queries, normalize_rows(rng.standard_normal((500, DIM), dtype=np.float32)))
        servers = []
        for kind in args.servers:
            err.print(f"[bold]{kind}[/bold]: serving and loading ...")
            servers.append(bench_server(kind, args, work, queries))
    report = {
        "benchmark": "http_framework",
        "machine": machine_info(),
        "config": {k: v for k, v in vars(args).items() if k not in ("serve", "port", "json")},
        "note": "load generator (aiohttp client, separate process) runs on the same machine",
        "servers": servers,
        "wall_s": time.perf_counter() - t0,
        "load_average_end": round(os.getloadavg()[0], 2),
    }
    render(report, Console(width=None if sys.stdout.isatty() else 140))
    if args.json:
        write_json(args.json, report)
        err.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
