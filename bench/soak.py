"""Soak: a localnet under a steady mixed load for minutes, one miner SIGKILLed midway.

Run: ``python bench/soak.py [--minutes 10] [--miners 8] [--rate 5] [--down-s 15]
[--seed 0] [--workdir DIR] [--keep] [--json bench/results/soak.json]``

The claim measured: *a subnet under steady load loses no acknowledged write, even when a miner
is killed and restarted, and no process's memory grows while it runs.* One run, on loopback,
as real processes: ``engram.localnet`` starts a LocalChain, ``--miners`` miners, the validator
(scoring, challenging and repairing on its fast localnet cadences) and a gateway, under a
temporary ``ENGRAM_HOME`` whose ``models/`` links to the current one's. The miners' rate
limits are turned off (``ENGRAM_RATE_LIMITS=false`` in the environment the localnet passes
on): the load is this benchmark's, and a 429 would only measure the budget.

For ``--minutes``, one client (hotkey ``//soak``, every request signed, so the namespace
``soak`` is its own) sends ``--rate`` operations per second through the gateway on an
open-loop schedule (operation *k* is due at ``start + k/rate``, whatever the earlier ones'
latency; at most 64 in flight), drawn at random (seeded) in the mix ingest 35 %, search 35 %,
get 20 %, delete 10 %:

* **ingest** — ``POST /IngestSynapse`` of a new sentence (the gateway embeds it and writes it
  to its 3 replicas); a 200 with a CID is an acknowledged write;
* **search** — ``POST /search`` (hybrid) for the text of an acknowledged record; the answer
  must hold a results list, and the record itself should be among the 10 hits (a miss is
  counted apart: it is a search-quality number, not a lost write);
* **get** — ``GET /retrieve/{cid}`` of an acknowledged record: the same CID and text;
* **delete** — ``DELETE /records/{cid}`` of an acknowledged record no read is waiting on.

Before the load, 200 records are ingested in batches (acknowledged writes too) so every kind
of operation has targets from the first second. At the midpoint one miner (chosen by the
seed) is SIGKILLed; ``--down-s`` later ``Localnet.restart`` starts it again on the same store.
Every answer is checked (:func:`_common.check_answer` plus the checks above); latency is from
each operation's due time, so a stall counts. Failures are split by phase: before the kill,
the outage (from the kill until the restarted miner serves again) and after.

At the end, with the load stopped: every acknowledged, non-deleted CID must be readable
through the gateway with its text (else it is **lost**), and every acknowledged delete must
answer 404 (else it is **resurrected**); each miner's own listing of ``soak`` gives the copies
each live record has and any deleted one a miner still holds. Resident memory of every
process (psutil, else ``/proc/PID/status``) is sampled every 5 s: at start, at end, and the
slope over the second half; growth of more than 10 % and 32 MiB is flagged. A restarted miner
is a new process, measured from its restart.

The benchmark exits with status 1 when an acknowledged write was lost or a delete came back,
or when any operation failed; memory growth is flagged, not failed (a short run still warms
caches). Everything shares this machine's CPUs: the report gives each process's CPU use, the
load average and the rate actually answered, so a saturated subnet or machine shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    RESULTS_DIR,
    BenchFailure,
    check_answer,
    err,
    isolated_home,
    machine_info,
    make_sentences,
    pct_ms,
    run_async,
    server_cpu_s,
    subnet,
    write_json,
)

NAMESPACE = "soak"
OPS = ("ingest", "search", "get", "delete")
MIX = (0.35, 0.35, 0.20, 0.10)
SEED_RECORDS = 200
SEED_BATCH = 100
MAX_SENTENCES = 100_000  # distinct ones drawn; a longer run numbers them again
K = 10
MAX_IN_FLIGHT = 64
REQUEST_TIMEOUT_S = 30.0
RSS_EVERY_S = 5.0
GROWTH_SHARE = 0.10
GROWTH_MIN_BYTES = 32 * 2**20
CHECK_CONCURRENCY = 16
CHECK_RETRIES = 3
"""A final read that fails (not a 404) is retried this often before it counts as lost."""
SERVE_TIMEOUT_S = 120.0
SATURATED = 0.9
"""Answers per second below this share of the operations offered per second: saturated."""
MIB = 2**20
clock = time.perf_counter


# --- what the run saw ------------------------------------------------------------------------


@dataclass
class Sample:
    op: str
    due: float  # seconds after the load started
    latency_s: float  # answer, after it was due
    wait_s: float  # sent, after it was due (queued in this client)
    status: int  # -1: no answer
    failure: str | None  # what was wrong (None: a good answer)
    detail: str | None = None
    found: bool | None = None  # a search: was its record among the hits
    replicas: int | None = None  # an ingest: how many replicas acknowledged


@dataclass
class Ledger:
    """The client's view of the namespace: what was acknowledged, deleted, or is in doubt."""

    live: dict[str, str] = field(default_factory=dict)  # cid -> text, acknowledged, not deleted
    order: list[str] = field(default_factory=list)  # the live CIDs, for a uniform pick
    where: dict[str, int] = field(default_factory=dict)  # cid -> index in order
    reading: Counter[str] = field(default_factory=Counter)  # reads in flight per cid
    deleting: set[str] = field(default_factory=set)
    deleted: dict[str, float] = field(default_factory=dict)  # cid -> when its acked delete was due
    doubtful: set[str] = field(default_factory=set)  # a delete failed: state unknown
    written: dict[str, float] = field(default_factory=dict)  # cid -> when its write was due
    acked_writes: int = 0

    def add(self, cid: str, text: str, due: float) -> None:
        if cid in self.live or cid in self.deleting:
            return
        self.acked_writes += 1
        self.live[cid] = text
        self.written[cid] = due
        self.where[cid] = len(self.order)
        self.order.append(cid)

    def take(self, cid: str) -> str:
        """Remove ``cid`` from the live set (a delete is on its way); its text."""
        i = self.where.pop(cid)
        last = self.order.pop()
        if last != cid:
            self.order[i] = last
            self.where[last] = i
        return self.live.pop(cid)

    def pick(self, rng: random.Random, idle: bool = False) -> str | None:
        """A random live CID (``idle``: one no read is waiting on), or None."""
        for _ in range(10):
            if not self.order:
                return None
            cid = self.order[rng.randrange(len(self.order))]
            if not idle or not self.reading[cid]:
                return cid
        return None


@dataclass
class Events:
    """When the kill happened, seconds after the load started."""

    victim: str | None = None
    killed_at: float | None = None
    restarted_at: float | None = None
    healthy_at: float | None = None
    serving_at: float | None = None
    error: str | None = None


# --- memory ----------------------------------------------------------------------------------


def rss_of(pid: int) -> int | None:
    """Resident set size of process ``pid`` in bytes (psutil, else /proc); None if it is gone."""
    try:
        import psutil

        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None
    except ImportError:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def memory_rows(
    samples: list[tuple[float, str, int, int, float | None]],
) -> list[dict[str, Any]]:
    """Per process (name and pid): RSS at start and end, growth, the slope over the second
    half of its samples, whether it grew past the flag, and the CPU cores it used."""
    by: dict[tuple[str, int], list[tuple[float, int, float | None]]] = {}
    for at, name, pid, size, cpu in samples:
        by.setdefault((name, pid), []).append((at, size, cpu))
    rows = []
    for (name, pid), points in by.items():
        t = np.array([p[0] for p in points])
        rss = np.array([p[1] for p in points], dtype=np.float64)
        cpu0, cpu1 = points[0][2], points[-1][2]
        span = float(t[-1] - t[0])
        half = len(points) // 2
        slope = None
        if len(points) - half >= 3 and t[-1] > t[half]:
            slope = float(np.polyfit(t[half:], rss[half:], 1)[0] * 60.0)
        growth = float(rss[-1] - rss[0])
        rows.append(
            {
                "process": name,
                "pid": pid,
                "from_s": float(t[0]),
                "to_s": float(t[-1]),
                "samples": len(points),
                "rss_start": int(rss[0]),
                "rss_end": int(rss[-1]),
                "rss_max": int(rss.max()),
                "growth": int(growth),
                "growth_share": float(growth / rss[0]) if rss[0] else None,
                "slope_second_half_per_min": slope,
                "growing": bool(growth > max(GROWTH_SHARE * rss[0], GROWTH_MIN_BYTES)),
                "cpu_cores": (cpu1 - cpu0) / span
                if cpu0 is not None and cpu1 is not None and span > 0
                else None,
            }
        )
    return rows


# --- the load --------------------------------------------------------------------------------


def _sentences(n: int, seed: int) -> Iterator[str]:
    """Distinct sentences, then (if the run outlasts them) the same ones numbered."""
    texts, _ = make_sentences(n, seed=seed)
    lap = 0
    while True:
        for t in texts:
            yield t if lap == 0 else f"{t} (take {lap + 1})"
        lap += 1


class Soak:
    """One run: the load, the kill, the memory samples and the final check, in one event loop."""

    def __init__(self, net: Any, args: argparse.Namespace) -> None:
        from bittensor.sp_core import Keypair

        self.net = net
        self.args = args
        self.rng = random.Random(args.seed)
        self.signer = Keypair.create_from_uri("//soak")
        expected = int(args.rate * args.minutes * 60 * MIX[0] * 1.5) + SEED_RECORDS + 100
        self.texts = _sentences(min(expected, MAX_SENTENCES), args.seed)
        self.seq = 0
        self.ledger = Ledger()
        self.samples: list[Sample] = []
        miners = sorted(c.name for c in net.children if c.name.startswith("miner-"))
        self.events = Events(victim=random.Random(args.seed + 1).choice(miners))
        self.memory: list[tuple[float, str, int, int, float | None]] = []
        self.backlog_max = 0  # operations due but not answered, at most
        self.starting: set[str] = set()  # children not to sample: restarting
        self.t0 = clock()

    def now(self) -> float:
        return clock() - self.t0

    def client(self, url: str | None = None) -> Any:
        import httpx

        from engram.security.signing import HotkeyAuth

        return httpx.AsyncClient(
            base_url=url or self.net.gateway_url,
            auth=HotkeyAuth(self.signer),
            timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(
                max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT
            ),
            headers={"accept": "application/json"},
        )

    def next_item(self) -> dict[str, Any]:
        self.seq += 1
        return {"text": next(self.texts), "metadata": {"seq": self.seq}, "namespace": NAMESPACE}

    # --- seeding and memory -----------------------------------------------------------------

    async def seed(self, http: Any) -> None:
        """The first acknowledged records, in batches; every item must be stored."""
        for _ in range(0, SEED_RECORDS, SEED_BATCH):
            items = [self.next_item() for _ in range(SEED_BATCH)]
            r = await http.post("/BatchIngestSynapse", json={"items": items})
            bad, _, cids = check_answer("batch", r.status_code, r.content, len(items))
            if bad:
                raise BenchFailure(f"seeding the namespace failed: {bad[0][1]}")
            for item, cid in zip(items, cids, strict=True):
                self.ledger.add(cid, item["text"], -1.0)

    def sample_memory(self) -> None:
        t = self.now()
        procs = [("load generator", os.getpid())]
        procs += [(c.name, c.process.pid) for c in self.net.children if c.name not in self.starting]
        for name, pid in procs:
            rss = rss_of(pid)
            if rss is not None:
                self.memory.append((t, name, pid, rss, server_cpu_s(pid)))

    async def memory_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample_memory()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RSS_EVERY_S)
        self.sample_memory()

    # --- the kill ---------------------------------------------------------------------------

    async def kill_and_restart(self, at_s: float) -> None:
        """SIGKILL one miner at ``at_s``, restart it ``--down-s`` later, wait until it serves;
        what went wrong is recorded, never raised (the load goes on)."""
        try:
            await self._kill_and_restart(at_s)
        except Exception as exc:
            self.events.error = f"{type(exc).__name__}: {exc}"
            err.print(f"[red]the kill and restart failed: {self.events.error}[/red]")

    async def _kill_and_restart(self, at_s: float) -> None:
        import httpx

        from engram.chain.local import LocalChain

        ev = self.events
        victim = next(c for c in self.net.children if c.name == ev.victim)
        await asyncio.sleep(max(0.0, at_s - self.now()))
        self.starting.add(victim.name)
        os.kill(victim.process.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.process.wait, 10)
        ev.killed_at = self.now()
        err.print(f"  t={ev.killed_at:.0f} s: SIGKILLed {victim.name} (pid {victim.process.pid})")
        await asyncio.sleep(self.args.down_s)
        child = await asyncio.to_thread(self.net.restart, victim.name)
        ev.restarted_at = self.now()
        chain = LocalChain(self.net.home / "chain.sqlite")
        port = child.url.rsplit(":", 1)[1]
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                while ev.serving_at is None:
                    if child.process.poll() is not None:
                        code = child.process.returncode
                        ev.error = f"{victim.name} exited with {code} on restart; see {child.log}"
                        return
                    if time.monotonic() > deadline:
                        ev.error = (
                            f"{victim.name} did not serve {SERVE_TIMEOUT_S:.0f} s after its restart"
                        )
                        return
                    if ev.healthy_at is None:
                        try:
                            if (await http.get(child.url + "/health")).status_code == 200:
                                ev.healthy_at = self.now()
                        except httpx.HTTPError:
                            pass
                    else:
                        graph = await asyncio.to_thread(chain.metagraph, self.net.netuid)
                        if any(str(n.axon_url).endswith(":" + port) for n in graph.serving()):
                            ev.serving_at = self.now()
                    await asyncio.sleep(0.25)
        finally:
            chain.close()
            self.starting.discard(victim.name)
        err.print(f"  t={ev.serving_at:.0f} s: {victim.name} restarted and serving again")

    # --- one operation ----------------------------------------------------------------------

    async def one(self, http: Any, op: str, due: float, gate: asyncio.Semaphore) -> None:
        """Send one operation (its target chosen at dispatch) and record its sample."""
        ledger = self.ledger
        cid = None if op == "ingest" else ledger.pick(self.rng, idle=op == "delete")
        if cid is None:
            op = "ingest"  # nothing to read or delete yet
        item = self.next_item() if op == "ingest" else {}
        text = item.get("text")
        if cid is not None and op == "delete":
            text = ledger.take(cid)
            ledger.deleting.add(cid)
        elif cid is not None:
            text = ledger.live[cid]
            ledger.reading[cid] += 1
        async with gate:
            sent = self.now()
            try:
                if op == "ingest":
                    r = await http.post("/IngestSynapse", json=item)
                elif op == "search":
                    body = {"query": text, "namespace": NAMESPACE, "limit": K, "mode": "hybrid"}
                    r = await http.post("/search", json=body)
                elif op == "get":
                    r = await http.get(f"/retrieve/{cid}", params={"namespace": NAMESPACE})
                else:
                    r = await http.delete(f"/records/{cid}", params={"namespace": NAMESPACE})
                status, raw = r.status_code, r.content
            except Exception as exc:  # httpx errors and anything a dying peer causes
                status, raw = -1, repr(exc).encode()
            done = self.now()
        sample = Sample(op, due, done - due, sent - due, status, None)
        if op == "ingest":
            bad, doc, cids = check_answer("text_single", status, raw, 1)
            if not bad:
                ledger.add(cids[0], item["text"], due)
                sample.replicas = len((doc or {}).get("replicas") or [])
        elif op == "search":
            bad, doc, _ = check_answer("query", status, raw, 1, 1)
            if not bad and doc is not None:
                sample.found = any(h.get("cid") == cid for h in doc["results"])
        else:
            bad, doc, _ = check_answer("json", status, raw, 1)
            if not bad and doc is not None:
                if op == "get" and (doc.get("cid") != cid or doc.get("text") != text):
                    bad = [("wrong record", f"asked {cid}, got {str(doc)[:200]}")]
                if op == "delete" and doc.get("deleted") is not True:
                    bad = [("not deleted", f"200 without deleted: true: {str(doc)[:200]}")]
        if cid is not None and op in ("search", "get"):
            ledger.reading[cid] -= 1
            if not ledger.reading[cid]:
                del ledger.reading[cid]
        if cid is not None and op == "delete":
            ledger.deleting.discard(cid)
            if bad:
                ledger.doubtful.add(cid)
            else:
                ledger.deleted[cid] = due
        if bad:
            sample.failure, sample.detail = bad[0]
        self.samples.append(sample)

    async def load(self, http: Any, seconds: float) -> None:
        """The open-loop schedule: operation k is due at k / rate."""
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        rate = self.args.rate
        start = self.now()
        next_report = start + 30.0
        k = 0
        while (due := start + k / rate) < start + seconds:
            delay = due - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            op = self.rng.choices(OPS, MIX)[0]
            task = asyncio.create_task(self.one(http, op, due, gate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
            self.backlog_max = max(self.backlog_max, len(tasks))
            if self.now() >= next_report:
                failed = sum(1 for s in self.samples if s.failure)
                err.print(
                    f"  t={self.now():.0f} s: {len(self.samples):,} operations answered, "
                    f"{failed} failed, {len(self.ledger.live):,} live records, "
                    f"{len(tasks)} due and unanswered"
                )
                next_report += 30.0
        await asyncio.gather(*tasks)

    # --- the final check --------------------------------------------------------------------

    async def verify(self, http: Any) -> dict[str, Any]:
        """Every live CID readable with its text; every deleted one 404; copies per miner."""
        ledger = self.ledger
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)
        lost: dict[str, str] = {}
        resurrected: dict[str, str] = {}

        async def read(cid: str) -> tuple[int, Any]:
            last: tuple[int, Any] = (-1, None)
            for attempt in range(CHECK_RETRIES):
                async with gate:
                    try:
                        r = await http.get(f"/retrieve/{cid}", params={"namespace": NAMESPACE})
                        last = (r.status_code, r.json() if r.content else None)
                    except Exception as exc:
                        last = (-1, repr(exc))
                if last[0] in (200, 404):
                    return last
                await asyncio.sleep(1.0 + attempt)
            return last

        async def live(cid: str, text: str) -> None:
            status, doc = await read(cid)
            if status != 200:
                lost[cid] = f"{status}: {str(doc)[:200]}"
            elif not isinstance(doc, dict) or doc.get("cid") != cid or doc.get("text") != text:
                lost[cid] = f"wrong record: {str(doc)[:200]}"

        async def gone(cid: str) -> None:
            status, doc = await read(cid)
            if status == 200:
                resurrected[cid] = "readable (200)"
            elif status != 404:
                resurrected[cid] = f"{status}: {str(doc)[:200]}"

        t0 = clock()
        await asyncio.gather(
            *(live(c, t) for c, t in ledger.live.items()), *(gone(c) for c in ledger.deleted)
        )
        read_s = clock() - t0
        held = await self.holdings()
        copies = Counter(sum(cid in cids for cids in held.values()) for cid in ledger.live)
        still_held = {
            cid: sorted(name for name, cids in held.items() if cid in cids)
            for cid in ledger.deleted
            if any(cid in cids for cids in held.values())
        }
        ev = self.events
        back = Counter(phase_at(ledger.deleted[cid], ev) for cid in resurrected)
        holders = Counter(name for cid in resurrected for name in still_held.get(cid, []))
        return {
            "acknowledged_writes": ledger.acked_writes,
            "acknowledged_deletes": len(ledger.deleted),
            "doubtful_deletes": len(ledger.doubtful),
            "live_checked": len(ledger.live),
            "lost": len(lost),
            "lost_examples": dict(list(lost.items())[:10]),
            "lost_by_phase_of_write": dict(
                Counter(phase_at(ledger.written[cid], ev) for cid in lost)
            ),
            "resurrected": len(resurrected),
            "resurrected_examples": {
                cid: f"{why}; held by {', '.join(still_held.get(cid, [])) or 'no miner listing it'}"
                for cid, why in list(resurrected.items())[:10]
            },
            "resurrected_by_phase_of_delete": dict(back),
            "resurrected_held_by": dict(holders),
            "check_s": read_s,
            "copies_of_live_records": {str(k): v for k, v in sorted(copies.items())},
            "deleted_still_held_by_a_miner": len(still_held),
            "deleted_still_held_examples": dict(list(still_held.items())[:10]),
            "holdings_errors": {k: v for k, v in held.items() if isinstance(v, str)},
        }

    async def holdings(self) -> dict[str, Any]:
        """Each miner's own list of the namespace's CIDs (a set), or why it could not say."""

        async def listing(child: Any) -> set[str] | str:
            cids: set[str] = set()
            async with self.client(child.url) as http:
                offset = 0
                while True:
                    params = {"namespace": NAMESPACE, "limit": 1000, "offset": offset}
                    try:
                        r = await http.get("/list", params=params)
                    except Exception as exc:
                        return repr(exc)
                    if r.status_code == 404 and offset == 0:
                        return cids  # it never held the namespace
                    if r.status_code != 200:
                        return f"{r.status_code}: {r.text[:200]}"
                    page = r.json()["records"]
                    cids.update(rec["cid"] for rec in page)
                    if len(page) < 1000:
                        return cids
                    offset += len(page)

        miners = [c for c in self.net.children if c.name.startswith("miner-")]
        found = await asyncio.gather(*(listing(c) for c in miners))
        return {c.name: f for c, f in zip(miners, found, strict=True)}

    # --- the whole run ----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        seconds = self.args.minutes * 60.0
        async with self.client() as http:
            err.print(f"seeding {SEED_RECORDS} records through the gateway ...")
            await self.seed(http)
            self.t0 = clock()
            stop = asyncio.Event()
            sampler = asyncio.create_task(self.memory_loop(stop))
            killer = asyncio.create_task(self.kill_and_restart(seconds / 2))
            err.print(
                f"load: {self.args.rate:g} operations/s for {seconds:.0f} s; "
                f"a miner is killed at {seconds / 2:.0f} s for {self.args.down_s:g} s ..."
            )
            try:
                await self.load(http, seconds)
                await killer  # the restarted miner serves before the end is checked
            finally:
                stop.set()
                await sampler
                killer.cancel()
            load_s = self.now()
            err.print(
                f"checking {len(self.ledger.live):,} live and "
                f"{len(self.ledger.deleted):,} deleted CIDs ..."
            )
            durability = await self.verify(http)
        return {"load_s": load_s, "durability": durability}


# --- the report ------------------------------------------------------------------------------


def phase_at(t: float, ev: Events) -> str:
    """Before the kill, the outage (until the restarted miner serves again), or after."""
    if ev.killed_at is None or t < ev.killed_at:
        return "before"
    if ev.serving_at is None or t < ev.serving_at:
        return "outage"
    return "after"


def op_rows(samples: list[Sample], ev: Events, seconds: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for op in OPS:
        mine = [s for s in samples if s.op == op]
        ok = [s.latency_s for s in mine if s.failure is None]
        failed = [s for s in mine if s.failure is not None]
        row: dict[str, Any] = {
            "sent": len(mine),
            "ok": len(ok),
            "failed": len(failed),
            "per_s": len(mine) / seconds if seconds else None,
            "failures": dict(Counter(s.failure for s in failed)),
            "failed_by_phase": dict(Counter(phase_at(s.due, ev) for s in failed)),
            "statuses": dict(Counter(str(s.status) for s in mine)),
            "p50_ms": pct_ms(ok, 50),
            "p99_ms": pct_ms(ok, 99),
            "max_ms": max(ok) * 1e3 if ok else None,
            "first_error": next((s.detail for s in failed), None),
        }
        if op == "search":
            found = [s.found for s in mine if s.found is not None]
            row["found_own_record"] = sum(found)
            row["missed_own_record"] = len(found) - sum(found)
        if op == "ingest":
            row["replicas_acked"] = {
                str(k): v
                for k, v in sorted(Counter(s.replicas for s in mine if s.replicas).items())
            }
        out[op] = row
    return out


def _f(x: float | None, fmt: str = ",.1f") -> str:
    return "—" if x is None or x != x else format(x, fmt)


def render(report: dict[str, Any], console: Console) -> None:
    cfg, ops, dur, ev = (
        report["config"],
        report["operations"],
        report["durability"],
        report["events"],
    )
    t = Table(
        title=f"Soak: {cfg['miners']} miners, validator and gateway; {cfg['rate']:g} operations/s "
        f"for {cfg['minutes']:g} min through the gateway (signed, open loop); {ev['victim']} "
        f"SIGKILLed at {_f(ev['killed_at'], '.0f')} s, restarted {cfg['down_s']:g} s later, "
        f"serving again at {_f(ev['serving_at'], '.0f')} s",
        title_justify="left",
    )
    for col in (
        "operation",
        "sent",
        "ok",
        "failed (before/outage/after)",
        "p50 ms",
        "p99 ms",
        "max ms",
        "notes",
    ):
        t.add_column(col, justify="left" if col in ("operation", "notes") else "right")
    for op, r in ops.items():
        phases = r["failed_by_phase"]
        notes = ""
        if op == "search":
            notes = (
                f"own record in top {K}: {r['found_own_record']:,}, "
                f"missed {r['missed_own_record']:,}"
            )
        elif op == "ingest":
            notes = "replicas acked: " + ", ".join(
                f"{k}: {v:,}" for k, v in r["replicas_acked"].items()
            )
        if r["failures"]:
            notes += ("; " if notes else "") + ", ".join(
                f"{k}: {v}" for k, v in r["failures"].items()
            )
        t.add_row(
            op,
            f"{r['sent']:,}",
            f"{r['ok']:,}",
            f"{r['failed']:,} ("
            + "/".join(str(phases.get(k, 0)) for k in ("before", "outage", "after"))
            + ")",
            _f(r["p50_ms"]),
            _f(r["p99_ms"]),
            _f(r["max_ms"]),
            notes,
        )
    console.print(t)

    d = Table(title="Durability (checked through the gateway after the load)", title_justify="left")
    d.add_column("")
    d.add_column("", justify="right")
    d.add_row("acknowledged writes", f"{dur['acknowledged_writes']:,}")
    d.add_row("acknowledged deletes", f"{dur['acknowledged_deletes']:,}")
    d.add_row("live records checked", f"{dur['live_checked']:,}")
    d.add_row("[bold]lost acknowledged writes[/bold]", f"[bold]{dur['lost']:,}[/bold]")
    d.add_row("[bold]deleted records readable again[/bold]", f"[bold]{dur['resurrected']:,}[/bold]")
    if dur["resurrected"]:
        phases = dur["resurrected_by_phase_of_delete"]
        d.add_row(
            "  by when the delete was sent (before/outage/after)",
            "/".join(str(phases.get(k, 0)) for k in ("before", "outage", "after")),
        )
    d.add_row("deletes that failed (state unknown, not checked)", f"{dur['doubtful_deletes']:,}")
    d.add_row(
        "copies of live records (miners' own lists)",
        ", ".join(f"{k}: {v:,}" for k, v in dur["copies_of_live_records"].items()),
    )
    d.add_row("deleted records a miner still holds", f"{dur['deleted_still_held_by_a_miner']:,}")
    console.print(d)

    m = Table(
        title=f"Resident memory and CPU per process (sampled every {RSS_EVERY_S:g} s)",
        title_justify="left",
    )
    for col in (
        "process",
        "pid",
        "from s",
        "start MiB",
        "end MiB",
        "max MiB",
        "growth",
        "2nd-half slope MiB/min",
        "CPU cores",
        "flag",
    ):
        m.add_column(col, justify="left" if col in ("process", "flag") else "right")
    for r in report["memory"]:
        share = r["growth_share"]
        slope = r["slope_second_half_per_min"]
        m.add_row(
            r["process"],
            str(r["pid"]),
            f"{r['from_s']:.0f}",
            f"{r['rss_start'] / MIB:,.0f}",
            f"{r['rss_end'] / MIB:,.0f}",
            f"{r['rss_max'] / MIB:,.0f}",
            f"{r['growth'] / MIB:+,.1f} MiB ({_f(None if share is None else 100 * share, '+.1f')}%)",
            _f(None if slope is None else slope / MIB, "+.2f"),
            _f(r["cpu_cores"], ".2f"),
            "[yellow]GROWING[/yellow]" if r["growing"] else "ok",
        )
    console.print(m)
    load = report["load"]
    console.print(
        f"[dim]Latency is from each operation's due time (open loop), so queueing counts. "
        f"Offered {load['offered_per_s']:g} operations/s, answered "
        f"{_f(load['answered_per_s'], '.2f')}/s; at most {load['backlog_max']} due and "
        f"unanswered; wait before sending p99 {_f(load['wait_p99_ms'])} ms. Outage: from the "
        f"kill until the restarted miner serves again. Growth flag: end above start by more than "
        f"{GROWTH_SHARE:.0%} and {GROWTH_MIN_BYTES // MIB} MiB. Load average at start "
        f"{report['machine']['load_average_1m']}, at end {report['load_average_end']}; "
        f"{report['machine']['cpus']} CPUs for everything; wall {report['wall_s']:.0f} s.[/dim]"
    )
    answered = load["answered_per_s"]
    if answered is not None and answered < SATURATED * load["offered_per_s"]:
        console.print(
            f"[yellow]saturated: {answered:.2f} answers/s for {load['offered_per_s']:g} "
            "operations/s offered. The subnet (or this machine) cannot carry this rate, so "
            "latency is mostly queueing and failures may be overload (stale signatures, "
            "deadlines); lower --rate for a soak below saturation[/yellow]"
        )
    for p in report["problems"]:
        console.print(f"[bold red]{p}[/bold red]")
    v = report["verdict"]
    colour = "green" if v["passed"] else "red"
    console.print(
        f"[bold {colour}]{v['claim']}: {'holds' if v['passed'] else 'FAILED'}[/bold {colour}]"
    )


def problems_of(report: dict[str, Any]) -> list[str]:
    dur, ops, ev = report["durability"], report["operations"], report["events"]
    out = []
    if dur["lost"]:
        out.append(
            f"LOST {dur['lost']} ACKNOWLEDGED WRITES (by when they were written: "
            f"{dur['lost_by_phase_of_write']}; e.g. {dur['lost_examples']})"
        )
    if dur["resurrected"]:
        out.append(
            f"{dur['resurrected']} acknowledged deletes are readable again (by when the delete "
            f"was sent: {dur['resurrected_by_phase_of_delete']}; still held by "
            f"{dur['resurrected_held_by']})"
        )
    for op, r in ops.items():
        if r["failed"]:
            out.append(
                f"{op}: {r['failed']} failed operations {r['failures']}; first: {r['first_error']}"
            )
    if ev["error"]:
        out.append(f"the kill and restart did not complete: {ev['error']}")
    return out


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    p.add_argument("--miners", type=int, default=8)
    p.add_argument("--rate", type=float, default=5.0, help="operations per second, in all")
    p.add_argument(
        "--down-s", type=float, default=15.0, help="how long the killed miner stays down"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, help="where the subnet lives (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the subnet's files and logs")
    p.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "soak.json", help="write the report here"
    )
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.miners < 3 or args.down_s < 0:
        p.error("--minutes and --rate must be positive, --down-s not negative, --miners at least 3")
    if args.down_s >= args.minutes * 30:
        p.error("--down-s must end before the load does (it starts at the midpoint)")

    from engram.errors import EngramError

    t_start = clock()
    os.environ["ENGRAM_RATE_LIMITS"] = "false"  # the localnet passes its environment on
    report: dict[str, Any] = {
        "benchmark": "soak",
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mix": dict(zip(OPS, MIX, strict=True)),
        "env": {"ENGRAM_RATE_LIMITS": "false"},
        "note": "the load generator, gateway, miners and validator share this machine's CPUs",
    }
    work = Path(tempfile.mkdtemp(prefix="engram-soak-", dir=args.workdir))
    err.print(f"work dir {work}")
    failure: str | None = None
    soak: Soak | None = None
    result: dict[str, Any] = {}
    try:
        home = isolated_home(work)
        err.print(f"starting a localnet with {args.miners} miners under {home} ...")
        with subnet(home, args.miners) as net:
            soak = Soak(net, args)
            result = run_async(soak.run())
    except (BenchFailure, EngramError) as exc:  # e.g. a child that exited while starting
        failure = str(exc)
    report["wall_s"] = clock() - t_start
    report["load_average_end"] = round(os.getloadavg()[0], 2)
    if failure or soak is None:
        report["failure"] = failure
        write_json(args.json, report)
        err.print(f"kept {work} (the subnet's logs are in engram-home/localnet/logs)")
        err.print(f"[bold red]soak FAILED:[/bold red] {failure}")
        return 1
    report["load_s"] = result["load_s"]
    report["events"] = vars(soak.events)
    report["operations"] = op_rows(soak.samples, soak.events, args.minutes * 60.0)
    last = max((s.due + s.latency_s for s in soak.samples), default=0.0)
    report["load"] = {
        "offered_per_s": args.rate,
        "answered_per_s": len(soak.samples) / last if last else None,
        "backlog_max": soak.backlog_max,
        "wait_p99_ms": pct_ms([s.wait_s for s in soak.samples], 99),
        "wait_max_ms": max(s.wait_s for s in soak.samples) * 1e3 if soak.samples else None,
    }
    report["durability"] = result["durability"]
    report["memory"] = memory_rows(soak.memory)
    report["memory_samples"] = [list(m) for m in soak.memory]
    report["problems"] = problems_of(report)
    report["verdict"] = {
        "claim": f"{args.minutes:g} min of mixed load on {args.miners} miners with one killed "
        "and restarted: no acknowledged write lost, no delete undone, no failed operation",
        "passed": not report["problems"],
        "lost_acknowledged_writes": report["durability"]["lost"],
        "memory_growing": [r["process"] for r in report["memory"] if r["growing"]],
    }
    render(report, Console(width=None if sys.stdout.isatty() else 200))
    write_json(args.json, report)
    err.print(f"wrote {args.json}")
    if args.keep or report["problems"]:
        err.print(f"kept {work} (the subnet's logs are in engram-home/localnet/logs)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
