"""Fair limits through the gateway: many clients at a steady rate, signed against anonymous.

Run: ``python bench/gateway_load_bench.py [--seconds 30] [--clients 64] [--rate 2]
[--miners 3] [--corpus 500] [--op query|search] [--payload vector|text] [--quick]
[--json out.json]``

The claim measured: *64 concurrent clients through the gateway for 30 s at a steady rate get
no 429 that their own budgets do not explain.* The gateway and every miner rate-limit reads per
verified identity (a signing hotkey, an API key), else per client IP (``SecurityConfig``: 50
reads/s, bursts of 200). A gateway relays a signed request unchanged, so the gateway and each
miner count it against its signer's budget. The gateway signs its own calls with its hotkey, an
anonymous caller's as made on its behalf: the miners charge those to the gateway's hotkey, which
they know as a gateway's (``ENGRAM_GATEWAY_HOTKEYS``, 20 times the budget), so anonymous users
are limited by the gateway, per client IP, and never squeezed by a per-IP budget at the miners.

One run, on loopback, as real processes: ``engram.localnet`` starts a LocalChain, ``--miners``
miners at their **default** rate limits (every ``ENGRAM_*`` override of ``SecurityConfig`` is
removed from the environment: the limits are what is measured), a validator and a gateway,
under a temporary ``ENGRAM_HOME`` (its ``models/`` links to the current one's, so the ONNX
export is not redone). ``--corpus`` generated sentences are ingested through the gateway.
Then two scenarios, one after the other, each for ``--seconds``:

* **signed** — client *i* signs every request with its own hotkey (``//load-i``,
  ``engram.security.signing.HotkeyAuth``): each hotkey asks ``--rate`` reads/s, far below its
  50/s, so the budgets explain no 429 at all;
* **anonymous** — the same clients, unsigned, all from one IP: at the gateway they share that
  IP's bucket, so above 50 reads/s in all, 429s are expected: at most
  ``sent - (burst + 50/s x seconds)`` of them (plus one second of refill as slack).

Each client is its own ``httpx.AsyncClient`` (keep-alive) and sends ``POST /QuerySynapse``
(``--op query``) or ``POST /search`` (``--op search``) on an open-loop schedule: client *i*'s
*k*-th request is due at ``start + i/(clients x rate) + k/rate`` and goes out then whatever
the earlier ones' latency, so a slow server cannot hide its latency by slowing the clients.
Latency is measured from the due time (scheduler lag included; its p99 is reported too). No
retries: every status is counted raw. ``--payload vector`` (default) sends each query
embedded once beforehand (``query_vector``), ``text`` sends the text, which the gateway embeds
on every request (what ``EngramClient(gateway).query(text)`` does; far more CPU).

Before each scenario every client sends one untimed warm-up request (its connection opens),
then the benchmark waits until the buckets are full again. Every answer is checked: a 200
must carry ``top_k`` hits and no error (:func:`_common.check_answer`); the miners' own
``/metrics`` are read before and after each scenario, so refusals a gateway 200 hides (it
answers when any miner did) are counted too. The benchmark exits with status 1 when the
signed scenario got any 429 (at the gateway or on a miner), any 5xx or transport error or any
bad answer, or when the anonymous one got more 429s than its budget explains or any other
failure; the report says why.

Everything runs on this machine: the load generator (this process), the gateway, the
miners and the validator share its CPUs. The report gives each one's CPU use, the rate the
clients really sent at and their scheduler lag: if the lag grows, the machine could not drive
the load and the numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
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
    BenchFailure,
    check_answer,
    err,
    isolated_home,
    machine_info,
    make_sentences,
    pct_ms,
    run_async,
    subnet,
    write_json,
)

K = 10
INGEST_BATCH = 100
QUERY_TEXTS = 256
REQUEST_TIMEOUT_S = 30.0
ANON_SLACK_S = 1.0
"""Refill seconds allowed on top of the anonymous budget: when requests reach the miners is
not exactly when they were due."""
LAG_WARN_S = 0.1
SATURATED = 0.9
"""Answers per second below this share of the requests sent per second: a saturated server."""
SCENARIOS = ("signed", "anonymous")
clock = time.perf_counter


# --- the subnet ------------------------------------------------------------------------------


def _default_limits_env() -> dict[str, str]:
    """Remove every ``ENGRAM_*`` override of SecurityConfig (and of require_signatures) from
    this process's environment, which the subnet's processes inherit; what was removed."""
    from engram.config import SecurityConfig

    names = [f"ENGRAM_{f.name.upper()}" for f in dataclasses.fields(SecurityConfig)]
    names.append("ENGRAM_REQUIRE_SIGNATURES")
    return {n: os.environ.pop(n) for n in names if n in os.environ}


def ingest(gateway: str, texts: list[str]) -> dict[str, Any]:
    """The corpus through the gateway, unsigned, in batches; every item must be stored."""
    import httpx

    t0 = clock()
    replicas: Counter[int] = Counter()
    with httpx.Client(base_url=gateway, timeout=120.0) as http:
        for start in range(0, len(texts), INGEST_BATCH):
            chunk = texts[start : start + INGEST_BATCH]
            body = {"items": [{"text": t, "metadata": {"row": start + i}} for i, t in enumerate(chunk)]}  # fmt: skip
            r = http.post("/BatchIngestSynapse", json=body)
            bad, doc, cids = check_answer("batch", r.status_code, r.content, len(chunk))
            if bad:
                raise BenchFailure(f"ingest through the gateway failed: {bad[0][1]}")
            assert doc is not None
            if len(cids) != len(chunk):
                raise BenchFailure(f"ingest: {len(cids)} CIDs for {len(chunk)} items")
            replicas.update(len(acked) for acked in doc.get("replicas") or [])
    seconds = clock() - t0
    return {
        "records": len(texts),
        "seconds": seconds,
        "records_per_s": len(texts) / seconds,
        "replicas_acked": {str(k): v for k, v in sorted(replicas.items())},
    }


_METRIC = re.compile(r'^engram_http_requests_total\{route="([^"]*)",status="(\d+)"\} ([0-9.e+]+)$')


def http_counts(url: str) -> Counter[tuple[str, str]]:
    """A server's ``engram_http_requests_total`` by (route, status)."""
    import httpx

    out: Counter[tuple[str, str]] = Counter()
    for line in httpx.get(url + "/metrics", timeout=10.0).text.splitlines():
        if m := _METRIC.match(line):
            out[(m[1], m[2])] = int(float(m[3]))
    return out


def _cpu_s(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return float("nan")


# --- load ------------------------------------------------------------------------------------


def _bodies(op: str, payload: str, texts: list[str], vectors: np.ndarray | None) -> list[bytes]:
    import orjson

    out = []
    for i, t in enumerate(texts):
        v = None if vectors is None else vectors[i].tolist()
        if op == "query":
            doc: dict[str, Any] = {"top_k": K}
            doc.update({"query_vector": v} if payload == "vector" else {"query_text": t})
        else:  # hybrid search: the words for BM25; the vector spares the gateway the embedding
            doc = {"query": t, "limit": K, "mode": "hybrid"}
            if payload == "vector":
                doc["query_vector"] = v
        out.append(orjson.dumps(doc))
    return out


@dataclasses.dataclass
class Sample:
    client: int
    warmup: bool
    due: float  # seconds after the scenario's start
    lag_s: float  # when it went out, after it was due
    latency_s: float  # answer, after it was due
    status: int  # -1: no answer
    failure: str | None  # what check_answer found wrong (None: a good 200)
    detail: str | None


async def _scenario(
    gateway: str,
    path: str,
    bodies: list[bytes],
    signers: list[Any] | None,
    clients: int,
    rate: float,
    seconds: float,
    refill_s: float,
) -> tuple[list[Sample], float, float]:
    """Warm-up, a pause for the buckets to refill, then the open-loop run: (samples, wall
    seconds from the first due time to the last answer, client CPU seconds of the run)."""
    import httpx

    from engram.security.signing import HotkeyAuth

    per_client = max(1, round(rate * seconds))
    total_rate = clients * rate
    headers = {"content-type": "application/json", "accept": "application/json"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    http = [
        httpx.AsyncClient(
            base_url=gateway,
            auth=HotkeyAuth(signers[i]) if signers else None,
            timeout=REQUEST_TIMEOUT_S,
            headers=headers,
            limits=limits,
        )
        for i in range(clients)
    ]
    samples: list[Sample] = []

    async def send(i: int, body: bytes, t0: float, due: float, warmup: bool) -> None:
        sent = clock()
        try:
            r = await http[i].post(path, content=body)
            status, raw = r.status_code, r.content
        except httpx.HTTPError as exc:
            status, raw = -1, repr(exc).encode()
        done = clock()
        bad, _, _ = check_answer("query", status, raw, 1, K)
        samples.append(
            Sample(
                i,
                warmup,
                due,
                sent - (t0 + due),
                done - (t0 + due),
                status,
                bad[0][0] if bad else None,
                bad[0][1] if bad else None,
            )
        )

    try:
        t0 = clock()
        await asyncio.gather(*(send(i, bodies[i % len(bodies)], t0, 0.0, True) for i in range(clients)))  # fmt: skip
        await asyncio.sleep(refill_s)

        tasks: list[asyncio.Task[None]] = []

        async def schedule(i: int, t0: float) -> None:
            for k in range(per_client):
                due = i / total_rate + k / rate
                delay = t0 + due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = bodies[(i * per_client + k) % len(bodies)]
                tasks.append(asyncio.create_task(send(i, body, t0, due, False)))

        cpu0 = time.process_time()
        t0 = clock()
        await asyncio.gather(*(schedule(i, t0) for i in range(clients)))
        await asyncio.gather(*tasks)
        wall = clock() - t0
        cpu = time.process_time() - cpu0
    finally:
        await asyncio.gather(*(h.aclose() for h in http))
    return samples, wall, cpu


def run_scenario(name: str, net: Any, args: argparse.Namespace, bodies: list[bytes],
                 limits: Any) -> dict[str, Any]:  # fmt: skip
    """One scenario against the running subnet, summarised and judged."""
    from bittensor.sp_core import Keypair

    signed = name == "signed"
    signers = [Keypair.create_from_uri(f"//load-{i}") for i in range(args.clients)] if signed else None  # fmt: skip
    path = "/QuerySynapse" if args.op == "query" else "/search"
    miners = [c for c in net.children if c.name.startswith("miner-")]
    procs = {c.name: c.process.pid for c in net.children}
    # The warm-up spends tokens (one per client, on every miner's shared bucket when
    # unsigned); the run starts once they are back.
    refill_s = args.clients / limits.query_per_s + 1.0
    err.print(
        f"[bold]{name}[/bold]: {args.clients} clients x {args.rate:g} req/s for {args.seconds:g} s "
        f"(POST {path}, {args.payload}) ..."
    )
    before = {c.name: http_counts(c.url) for c in miners}
    gw_before = http_counts(net.gateway_url)
    cpu_before = {n: _cpu_s(p) for n, p in procs.items()}
    load0 = round(os.getloadavg()[0], 2)
    samples, wall, client_cpu = run_async(
        _scenario(
            net.gateway_url, path, bodies, signers, args.clients, args.rate, args.seconds, refill_s
        )
    )
    cpu_after = {n: _cpu_s(p) for n, p in procs.items()}
    after = {c.name: http_counts(c.url) for c in miners}
    gw_after = http_counts(net.gateway_url)

    timed = [s for s in samples if not s.warmup]
    warm = [s for s in samples if s.warmup]
    statuses = Counter(str(s.status) for s in timed)
    ok = [s for s in timed if s.failure is None]
    failures = Counter(s.failure for s in timed if s.failure is not None)
    n429 = statuses.get("429", 0)
    bad_200 = sum(1 for s in timed if s.status == 200 and s.failure is not None)
    transport = statuses.get("-1", 0)
    server_errors = sum(v for k, v in statuses.items() if k.startswith("5"))
    other = sum(v for k, v in statuses.items() if k not in ("200", "429", "-1"))
    lat = [s.latency_s for s in ok]
    lags = [s.lag_s for s in timed]
    dues = [s.due for s in timed]
    span = max(dues) - min(dues) if len(dues) > 1 else 0.0
    send_span = max(s.due + s.lag_s for s in timed) - min(s.due + s.lag_s for s in timed)

    # What the budgets explain. Each bucket admits at most burst + per_s x span requests.
    per_s, burst = limits.query_per_s, limits.query_burst
    cap = burst + per_s * args.seconds
    if signed:
        per_client = Counter(s.client for s in timed)
        explained = sum(max(0, math.ceil(n - cap)) for n in per_client.values())
        slack = 0
        budget = f"each its own hotkey's: {args.rate:g}/s of {per_s:g}/s"
    else:
        explained = max(0, math.ceil(len(timed) - cap))
        slack = math.ceil(per_s * ANON_SLACK_S)
        budget = f"one, the clients' IP: {args.clients * args.rate:g}/s of {per_s:g}/s"
    unexplained_429 = max(0, n429 - explained - slack)

    miner_rows: dict[str, dict[str, Any]] = {}
    for c in miners:
        d = after[c.name] - before[c.name]
        miner_rows[c.name] = {
            "reads_200": d.get((path, "200"), 0),
            "reads_429": d.get((path, "429"), 0),
            "reads_other": sum(
                v for (r, st), v in d.items() if r == path and st not in ("200", "429")
            ),
            "all_routes": {f"{r} {st}": v for (r, st), v in sorted(d.items())},
        }
    miner_429 = sum(m["reads_429"] for m in miner_rows.values())
    # A gateway 429 needs every miner's refusal; the rest of the miners' refusals sit
    # inside answers the gateway gave with fewer miners (a 200 with a partial merge).
    hidden_429 = max(0, miner_429 - n429 * len(miners))
    if signed:
        miner_unexplained = miner_429
    else:
        per_miner_explained = max(0, math.ceil(len(timed) - cap))
        miner_unexplained = sum(
            max(0, m["reads_429"] - per_miner_explained - slack) for m in miner_rows.values()
        )
    gw = gw_after - gw_before
    cores = {n: (cpu_after[n] - cpu_before[n]) / wall for n in procs}

    problems: list[str] = []
    if signed and n429:
        problems.append(f"{n429} gateway 429s, none explained by the clients' own budgets")
    elif unexplained_429:
        problems.append(
            f"{n429} gateway 429s, {explained} (+{slack} slack) explained by the budget"
        )
    if miner_unexplained:
        problems.append(f"{miner_unexplained} miner-side 429s the budgets do not explain")
    if server_errors or transport:
        problems.append(f"{server_errors} 5xx and {transport} transport errors")
    if other - server_errors:
        problems.append(f"{other - server_errors} other non-200 answers")
    if bad_200:
        problems.append(f"{bad_200} 200s without {K} hits")
    warm_bad = [s for s in warm if s.failure is not None]
    if warm_bad:
        problems.append(f"{len(warm_bad)} of {len(warm)} warm-up requests failed")
    first = next((s for s in timed + warm if s.failure and s.failure != "http 429"), None)
    first_429 = next((s for s in timed if s.status == 429), None)

    return {
        "name": name,
        "signed": signed,
        "budget": budget,
        "path": path,
        "clients": args.clients,
        "rate_per_client": args.rate,
        "seconds": args.seconds,
        "sent": len(timed),
        "planned": args.clients * max(1, round(args.rate * args.seconds)),
        "sent_per_s": len(timed) / send_span if send_span > 0 else None,
        "due_span_s": span,
        "wall_s": wall,
        "statuses": dict(sorted(statuses.items())),
        "failures": dict(failures),
        "ok": len(ok),
        "http_429": n429,
        "server_errors": server_errors,
        "transport_errors": transport,
        "other_non_200": other - server_errors,
        "bad_200": bad_200,
        "explained_429_max": explained,
        "slack_429": slack,
        "unexplained_429": unexplained_429,
        "ok_per_s": len(ok) / wall if wall > 0 else None,
        "answered_per_s": (len(timed) - transport) / wall if wall > 0 else None,
        "p50_ms": pct_ms(lat, 50),
        "p95_ms": pct_ms(lat, 95),
        "p99_ms": pct_ms(lat, 99),
        "max_ms": max(lat) * 1e3 if lat else None,
        "lag_p99_ms": pct_ms(lags, 99),
        "lag_max_ms": max(lags) * 1e3 if lags else None,
        "warmup": {"sent": len(warm), "failed": len(warm_bad), "refill_wait_s": refill_s},
        "miners": miner_rows,
        "miner_reads_429": miner_429,
        "miner_429_hidden_in_gateway_200s": hidden_429,
        "miner_429_unexplained": miner_unexplained,
        "gateway_http": {f"{r} {st}": v for (r, st), v in sorted(gw.items())},
        "cpu_cores": cores,
        "client_cpu_cores": client_cpu / wall if wall > 0 else None,
        "load_average_1m": [load0, round(os.getloadavg()[0], 2)],
        "first_error": None if first is None else first.detail,
        "first_429": None if first_429 is None else first_429.detail,
        "problems": problems,
        "passed": not problems,
    }


# --- report --------------------------------------------------------------------------------


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "—" if x is None or x != x else format(x, fmt)


def render(report: dict[str, Any], console: Console) -> None:
    cfg, runs = report["config"], report["scenarios"]
    lim = report["miner_limits"]
    t = Table(
        title=f"Gateway load: {cfg['clients']} clients x {cfg['rate']:g} req/s "
        f"({cfg['clients'] * cfg['rate']:g}/s in all) for {cfg['seconds']:g} s each, open loop, "
        f"POST {runs[0]['path'] if runs else ''} ({cfg['payload']}); {cfg['miners']} miners at "
        f"default limits ({lim['query_per_s']:g} reads/s, burst {lim['query_burst']:g}, per "
        "hotkey else IP)",
        title_justify="left",
    )
    t.add_column("")
    for r in runs:
        t.add_column(r["name"], justify="right")

    def row(label: str, fn: Any) -> None:
        t.add_row(label, *(fn(r) for r in runs))

    def cores(r: dict[str, Any], prefix: str) -> float:
        return sum(v for k, v in r["cpu_cores"].items() if k.startswith(prefix))

    row("budget that applies", lambda r: r["budget"])
    row("requests sent (planned)", lambda r: f"{r['sent']:,} ({r['planned']:,})")
    row("sent rate, req/s", lambda r: _f(r["sent_per_s"], ",.1f"))
    row("200 with top_k hits", lambda r: f"{r['ok']:,}")
    row("429", lambda r: f"{r['http_429']:,}")
    row("  429s the budget explains (≤)", lambda r: f"{r['explained_429_max']:,}"
        + (f" (+{r['slack_429']} slack)" if r["slack_429"] else ""))  # fmt: skip
    row("  429s unexplained", lambda r: f"{r['unexplained_429']:,}")  # fmt: skip
    row("5xx / transport errors", lambda r: f"{r['server_errors']} / {r['transport_errors']}")
    row("other non-200 / bad 200", lambda r: f"{r['other_non_200']} / {r['bad_200']}")
    row("all statuses", lambda r: ", ".join(f"{k}: {v:,}" for k, v in r["statuses"].items()))
    row("latency of 200s p50 / p95 / p99, ms", lambda r: f"{_f(r['p50_ms'], '.1f')} / "
        f"{_f(r['p95_ms'], '.1f')} / {_f(r['p99_ms'], '.1f')}")  # fmt: skip
    row("throughput: 200s/s (answers/s)", lambda r: f"{_f(r['ok_per_s'], ',.1f')} "
        f"({_f(r['answered_per_s'], ',.1f')})")  # fmt: skip
    row("miner-side reads 200 / 429 (all miners)", lambda r: f"{sum(m['reads_200'] for m in r['miners'].values()):,} / {r['miner_reads_429']:,}")  # fmt: skip
    row("  429 per miner", lambda r: " ".join(f"{m['reads_429']:,}" for m in r["miners"].values()))  # fmt: skip
    row("  miner 429s hidden in gateway 200s", lambda r: f"{r['miner_429_hidden_in_gateway_200s']:,}")  # fmt: skip
    row("scheduler lag p99 / max, ms", lambda r: f"{_f(r['lag_p99_ms'], '.1f')} / {_f(r['lag_max_ms'], '.1f')}")  # fmt: skip
    row("CPU cores: gateway / miners / validator / clients",
        lambda r: f"{cores(r, 'gateway'):.2f} / {cores(r, 'miner-'):.2f} / "
        f"{cores(r, 'validator'):.2f} / {_f(r['client_cpu_cores'], '.2f')}")  # fmt: skip
    row("verdict", lambda r: "[green]pass[/green]" if r["passed"] else "[red]FAIL[/red]")
    console.print(t)
    for r in runs:
        for p in r["problems"]:
            console.print(f"[red]{r['name']}: {p}[/red]")
        if r["first_error"]:
            console.print(f"[red]{r['name']}: first error: {r['first_error']}[/red]")
        sent, answered = r["sent_per_s"], r["answered_per_s"]
        if sent and answered is not None and answered < SATURATED * sent:
            console.print(
                f"[yellow]{r['name']}: {answered:,.1f} answers/s for {sent:,.1f} requests/s sent: "
                f"the gateway (or this machine) is saturated and latency is mostly queueing"
                "[/yellow]"
            )
        if r["first_error"] and "freshness window" in r["first_error"]:
            console.print(
                f"[yellow]{r['name']}: signed requests waited in the gateway longer than the "
                "signature window before it relayed them, and the miners refused them as stale"
                "[/yellow]"
            )
        if r["lag_p99_ms"] is not None and r["lag_p99_ms"] > LAG_WARN_S * 1e3:
            console.print(
                f"[yellow]{r['name']}: the load generator fell behind its schedule (lag p99 "
                f"{r['lag_p99_ms']:.0f} ms): this machine could not drive the load evenly[/yellow]"
            )
    ing = report["ingest"]
    console.print(
        f"[dim]Latency is from each request's due time (open loop), so scheduler lag counts. "
        f"A gateway answers 429 when the caller's own budget there is spent or every miner "
        f"refused, and 200 when any miner answered; "
        f"miner-side counts come from each miner's /metrics and include the warm-up and the "
        f"validator's reads (signed with its own hotkey, 10x budget). Anonymous budget: "
        f"sent - (burst + {lim['query_per_s']:g}/s x {cfg['seconds']:g} s), plus "
        f"{ANON_SLACK_S:g} s of refill as slack. Corpus: {ing['records']:,} sentences "
        f"ingested through the gateway in {ing['seconds']:.1f} s (replicas acked per record: "
        f"{ing['replicas_acked']}). Load average at start "
        f"{report['machine']['load_average_1m']}, at end {report['load_average_end']}; "
        f"{report['machine']['cpus']} CPUs for everything; wall "
        f"{report['wall_s']:.0f} s.[/dim]"
    )
    v = report["verdict"]
    colour = "green" if v["passed"] else "red"
    console.print(f"[bold {colour}]{v['claim']}: {'holds' if v['passed'] else 'FAILED'}[/bold {colour}]")  # fmt: skip


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--seconds", type=float, default=30.0, help="length of each scenario")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients")
    p.add_argument("--rate", type=float, default=2.0, help="requests per second per client")
    p.add_argument("--miners", type=int, default=3)
    p.add_argument("--corpus", type=int, default=500, help="sentences ingested first")
    p.add_argument("--op", choices=("query", "search"), default="query",
                   help="POST /QuerySynapse or POST /search (hybrid)")  # fmt: skip
    p.add_argument("--payload", choices=("vector", "text"), default="vector",
                   help="send each query embedded beforehand, or its text (the gateway embeds)")  # fmt: skip
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--quick", action="store_true", help="smoke run: 5 s, 16 clients")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, help="where the subnet lives (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the subnet's files and logs")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.clients = 5.0, 16
    if min(args.clients, args.miners, args.corpus) < 1 or args.rate <= 0 or args.seconds <= 0:
        p.error("--clients, --miners, --corpus, --rate and --seconds must be positive")

    from engram.config import SecurityConfig
    from engram.errors import EngramError

    t_start = clock()
    removed = _default_limits_env()
    limits = SecurityConfig()
    report: dict[str, Any] = {
        "benchmark": "gateway_load",
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "miner_limits": dataclasses.asdict(limits),
        "env_overrides_removed": removed,
        "note": "the load generator, gateway, miners and validator share this machine's CPUs",
    }
    if removed:
        err.print(f"removed {sorted(removed)} from the environment: the miners run at defaults")
    work = Path(tempfile.mkdtemp(prefix="engram-gateway-bench-", dir=args.workdir))
    err.print(f"work dir {work}")
    failure: str | None = None
    finished = False
    runs: list[dict[str, Any]] = []
    try:
        home = isolated_home(work)
        texts, _ = make_sentences(args.corpus + QUERY_TEXTS, seed=args.seed)
        corpus, queries = texts[: args.corpus], texts[args.corpus :]
        vectors = None
        if args.payload == "vector":
            from engram.embed import get_embedder

            err.print(f"embedding {len(queries)} query sentences once ...")
            vectors = np.asarray(get_embedder().encode(queries), dtype=np.float32)
        bodies = _bodies(args.op, args.payload, queries, vectors)
        err.print(f"starting a localnet with {args.miners} miners under {home} ...")
        with subnet(home, args.miners) as net:
            report["subnet"] = {
                "gateway": net.gateway_url,
                "miners": [c.url for c in net.children if c.name.startswith("miner-")],
                "home": str(net.home),
            }
            err.print(f"ingesting {len(corpus)} sentences through the gateway ...")
            report["ingest"] = ingest(net.gateway_url, corpus)
            for name in args.scenarios:
                time.sleep(limits.query_burst / limits.query_per_s + 1.0)  # full buckets
                runs.append(run_scenario(name, net, args, bodies, limits))
        finished = True
    except (BenchFailure, EngramError) as exc:  # e.g. a child that exited while starting
        failure = str(exc)
    finally:
        if args.keep or not finished or any(not r["passed"] for r in runs):
            err.print(f"kept {work} (the subnet's logs are in localnet/logs)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["scenarios"] = runs
    report["wall_s"] = clock() - t_start
    report["load_average_end"] = round(os.getloadavg()[0], 2)
    if failure:
        report["failure"] = failure
        if args.json:
            write_json(args.json, report)
            err.print(f"wrote {args.json}")
        err.print(f"[bold red]gateway_load_bench FAILED:[/bold red] {failure}")
        return 1
    claim = (
        f"{args.clients} clients through the gateway for {args.seconds:g} s at "
        f"{args.rate:g} req/s each get no 429 their own budgets do not explain"
    )
    report["verdict"] = {
        "claim": claim,
        "passed": all(r["passed"] for r in runs),
        "problems": {r["name"]: r["problems"] for r in runs if r["problems"]},
    }
    render(report, Console(width=None if sys.stdout.isatty() else 180))
    if args.json:
        write_json(args.json, report)
        err.print(f"wrote {args.json}")
    return 0 if report["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
