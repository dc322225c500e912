"""Replica health and repair (docs/architecture.md, "Routing and replication"): every CID back on the R miners routing names for it.

Routing is recomputed over the *current* serving miners each cycle (announced,
and answering their health probes), so when a miner stops answering its
records' replica sets shift to the next closest miners, and this is what
copies the records there.

* Corpus records: a replica is confirmed when it lists the record (a batched
  ``Get``) and the record hashes to its CID; a miner whose listing cannot be
  read this cycle is no expected replica. HEALTHY (all expected
  replicas confirmed), DEGRADED (some), LOST (none). The validator holds a
  verified copy of every corpus record and stores it on each expected
  replica that lacks it.
* Deletes: a replica that was down while a record was deleted still holds it
  when it returns. Each miner keeps its deletions with the signed request that
  asked for each; every cycle reads the new ones from every serving miner and
  hands each to every serving miner not yet told of it, which deletes its copy
  only if the proof holds there (the signer may delete it, and the copy was
  written before the delete). Miners refuse a validator's copy of a record they
  deleted, and a record whose proof some miner refused is not copied on.
* Everyone else's records: each serving miner's records are paged through
  (every namespace its ``/stats`` reports; a bounded number of CIDs per cycle,
  resumed where the last cycle stopped), each copy is verified against its
  CID, and expected replicas that do not hold it get the verified copy. An
  unverified copy is never propagated.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import httpx

from engram.api.calls import ApplyDeletionsCall, Call, DeletionsCall, Get, ListRecords, Stats
from engram.api.exchange import call_node
from engram.chain.base import Neuron
from engram.cid import generate_cid
from engram.config import ClientConfig, Limits
from engram.errors import EngramError
from engram.network.client import Network
from engram.network.routing import REPLICAS, closest
from engram.records import Record
from engram.store.db import Deletion
from engram.validator.corpus import Corpus
from engram.validator.state import ReplicaHealth

log = logging.getLogger("engram.validator")

MAX_CIDS_PER_CYCLE = 5_000
MAX_KNOWN_DELETIONS = 100_000  # deletions kept to tell returning miners (the oldest go first)
_DELETIONS_PER_REQUEST = 200
PAGE = Limits().max_list_limit
_CONCURRENT_GETS = 64
T = TypeVar("T")

Key = tuple[str, str]  # (namespace, cid): a replica holds a record in a namespace


@dataclass
class RepairReport:
    """What one repair cycle found and did."""

    healthy: int = 0
    degraded: int = 0
    lost: int = 0
    repaired: int = 0  # corpus copies stored on replicas that lacked them
    foreign_checked: int = 0  # other records whose replicas were checked
    foreign_repaired: int = 0  # copies of other records stored
    unverified: int = 0  # listed records that did not hash to their CID (never copied)
    failed: int = 0  # copies, or requests to apply deletions, a replica did not accept (retried)
    deletions_found: int = 0  # deletions miners kept since the last cycle (proven, new)
    deletions_applied: int = 0  # copies deleted on replicas that missed a delete
    unreachable: list[str] = field(default_factory=list)  # serving miners that did not answer

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class RepairResult:
    report: RepairReport
    health: list[ReplicaHealth]
    held: set[tuple[str, str]]  # (corpus cid, hotkey) seen holding or acknowledging a copy


def _verified(record: Record) -> bool:
    try:
        return (
            generate_cid(record.embedding, record.metadata, record.model_version, record.text)
            == record.cid
        )
    except EngramError:
        return False


def _status(confirmed: int, expected: int) -> str:
    """HEALTHY with every expected replica (all serving miners when fewer than R), LOST with
    none, DEGRADED between."""
    if confirmed and confirmed == expected:
        return "healthy"
    return "degraded" if confirmed else "lost"


def _with_copies(health: ReplicaHealth, added: Sequence[str]) -> ReplicaHealth:
    holders = health.holders + tuple(h for h in added if h not in health.holders)
    if len(holders) == len(health.holders):
        return health
    n = len(holders)
    return ReplicaHealth(health.cid, health.expected, n, _status(n, health.expected), holders)


class Repairer:
    """Keeps its paging cursors between cycles, so a big network is covered over several."""

    def __init__(
        self,
        network: Network,
        http: httpx.AsyncClient,
        *,
        replicas: int = REPLICAS,
        deadline_s: float = 5.0,
        max_cids: int = MAX_CIDS_PER_CYCLE,
    ) -> None:
        self.network = network
        self.http = http
        self.replicas = replicas
        self.deadline_s = deadline_s
        self.max_cids = max_cids
        self._config = ClientConfig(timeout_s=deadline_s, retries=1, backoff_s=0.1)
        self._cursors: dict[Key, int] = {}  # (hotkey, namespace) → next offset
        # Deletions: read from each miner after its last seq, kept in the order learnt, and
        # handed to each miner from the position it was last told up to.
        self._read_upto: dict[str, int] = {}  # hotkey → the seq of its deletions read so far
        self._deleted: dict[Key, float] = {}  # (namespace, cid) → deleted_at of the newest
        self._log: list[Deletion] = []
        self._log_start = 0  # the position of _log[0] (older entries were dropped)
        self._told_upto: dict[str, int] = {}  # hotkey → log position told up to
        self._disputed: set[Key] = set()  # deleted, but some miner refused the proof: its
        # copy may be stale, so it is not copied on (until a miner holds a newer write)

    async def _call(self, neuron: Neuron, call: Call[T]) -> T:
        return await call_node(self.http, str(neuron.axon_url), call, self._config, self.deadline_s)

    async def _page(self, neuron: Neuron, namespace: str, offset: int, limit: int) -> list[Record]:
        return await self._call(neuron, ListRecords(limit, offset, namespace))

    async def _list_all(self, neuron: Neuron, namespace: str, most: int) -> list[Record]:
        """Every record of ``namespace`` on ``neuron``, at most ``most`` (the corpus namespace)."""
        out: list[Record] = []
        while len(out) < most:
            page = await self._page(neuron, namespace, len(out), PAGE)
            out.extend(page)
            if len(page) < PAGE:
                break
        return out

    async def _put(
        self, copies: Mapping[str, list[Record]], neurons: Mapping[str, Neuron]
    ) -> tuple[set[tuple[str, str]], int]:
        """Store ``copies`` (hotkey → records); the acknowledged (cid, hotkey) and the failures."""
        hotkeys = [h for h, records in copies.items() if records]
        answers = await asyncio.gather(*(self.network.put(neurons[h], copies[h]) for h in hotkeys))
        acked: set[tuple[str, str]] = set()
        failed = 0
        for hotkey, outcomes in zip(hotkeys, answers, strict=True):
            for record, (cid, error, _code) in zip(copies[hotkey], outcomes, strict=True):
                if cid == record.cid:
                    acked.add((record.cid, hotkey))
                else:
                    failed += 1
                    log.info("replica %s refused %s: %s", hotkey, record.cid, error)
        return acked, failed

    # --- the validator's own records -------------------------------------------------------

    async def corpus(
        self,
        corpus: Corpus,
        serving: Sequence[Neuron],
        report: RepairReport,
    ) -> tuple[list[ReplicaHealth], set[tuple[str, str]]]:
        namespace = corpus.records[0].namespace if len(corpus) else ""
        neurons = {n.hotkey: n for n in serving}
        listings = await asyncio.gather(
            *(self._list_all(n, namespace, len(corpus) + PAGE) for n in serving),
            return_exceptions=True,
        )
        listed: dict[str, set[str]] = {}  # hotkey → corpus CIDs it holds (verified)
        for neuron, listing in zip(serving, listings, strict=True):
            if isinstance(listing, BaseException):
                report.unreachable.append(neuron.hotkey)
                log.info("cannot list miner %s: %s", neuron.uid, listing)
                continue
            held = listed.setdefault(neuron.hotkey, set())
            for record in listing:
                if record.cid in corpus.by_cid and _verified(record):
                    held.add(record.cid)
                elif record.cid in corpus.by_cid:
                    report.unverified += 1
        health: list[ReplicaHealth] = []
        copies: dict[str, list[Record]] = {}
        seen: set[tuple[str, str]] = {(c, h) for h, cids in listed.items() for c in cids}
        # A miner that answered its last probe but not this listing has gone since: routing
        # moves past it, so its records belong on the next closest now.
        reachable = [n for n in serving if n.hotkey not in report.unreachable]
        for record in corpus.records:
            expected = [n.hotkey for n in closest(record.cid, reachable, self.replicas)]
            confirmed = [h for h in expected if record.cid in listed[h]]
            n = len(confirmed)
            status = _status(n, len(expected))
            setattr(report, status, getattr(report, status) + 1)
            health.append(ReplicaHealth(record.cid, len(expected), n, status, tuple(confirmed)))
            for h in expected:
                if h in listed and record.cid not in listed[h]:
                    copies.setdefault(h, []).append(record)
        acked, failed = await self._put(copies, neurons)
        report.repaired += len(acked)
        report.failed += failed
        # The report says what this cycle found; the stored health, what it left behind.
        added: dict[str, list[str]] = {}
        for cid, hotkey in sorted(acked):
            added.setdefault(cid, []).append(hotkey)
        after = [_with_copies(h, added.get(h.cid, ())) for h in health]
        return after, seen | acked

    # --- deletions a replica missed ----------------------------------------------------------

    async def _read_deletions(self, neuron: Neuron) -> list[Deletion]:
        found: list[Deletion] = []
        after = self._read_upto.get(neuron.hotkey, 0)
        while len(found) < self.max_cids:
            page = await self._call(neuron, DeletionsCall(after, PAGE))
            found.extend(page)
            if len(page) < PAGE:
                break
            after = page[-1].seq
        if found:
            self._read_upto[neuron.hotkey] = found[-1].seq
        return found

    async def deletions(self, serving: Sequence[Neuron], report: RepairReport) -> None:
        """Learn the deletions every serving miner kept since the last cycle, then tell each
        miner those it has not been told (a returning miner: all since it went away)."""
        pages = await asyncio.gather(
            *(self._read_deletions(n) for n in serving), return_exceptions=True
        )
        deaf: set[str] = set()  # miners that keep no deletions (older versions): not told
        for neuron, page in zip(serving, pages, strict=True):
            if isinstance(page, EngramError) and 400 <= page.status < 500:
                deaf.add(neuron.hotkey)
                log.info("miner %s shows no deletions: %s", neuron.uid, page.message)
                continue
            if isinstance(page, BaseException):
                if neuron.hotkey not in report.unreachable:
                    report.unreachable.append(neuron.hotkey)
                log.info("cannot read the deletions of miner %s: %s", neuron.uid, page)
                continue
            for deletion in page:
                key = (deletion.namespace, deletion.cid)
                if deletion.deleted_at > self._deleted.get(key, -math.inf):
                    self._deleted[key] = deletion.deleted_at
                    self._log.append(deletion)
                    report.deletions_found += 1
        if len(self._log) > MAX_KNOWN_DELETIONS:
            dropped = self._log[: len(self._log) - MAX_KNOWN_DELETIONS]
            self._log = self._log[len(dropped) :]
            self._log_start += len(dropped)
            for d in dropped:
                if self._deleted.get((d.namespace, d.cid)) == d.deleted_at:
                    del self._deleted[(d.namespace, d.cid)]
        end = self._log_start + len(self._log)
        told = await asyncio.gather(
            *(
                self._tell(n, end, report)
                for n in serving
                if n.hotkey not in report.unreachable and n.hotkey not in deaf
            )
        )
        report.deletions_applied += sum(told)

    async def _tell(self, neuron: Neuron, end: int, report: RepairReport) -> int:
        """Send ``neuron`` the deletions it was not told yet; the copies it deleted."""
        start = max(self._told_upto.get(neuron.hotkey, 0), self._log_start)
        applied = 0
        for at in range(start, end, _DELETIONS_PER_REQUEST):
            chunk = self._log[
                at - self._log_start : min(end, at + _DELETIONS_PER_REQUEST) - self._log_start
            ]
            try:
                outcomes = await self._call(neuron, ApplyDeletionsCall(chunk))
            except EngramError as exc:
                log.info("miner %s was not told of deletions: %s", neuron.uid, exc.message)
                report.failed += 1
                return applied  # from here again next cycle
            applied += outcomes.count("deleted")
            for deletion, outcome in zip(chunk, outcomes, strict=False):
                key = (deletion.namespace, deletion.cid)
                if outcome == "newer":  # written again since: copies of it are wanted
                    self._disputed.discard(key)
                elif outcome.startswith("refused"):
                    self._disputed.add(key)
                    log.info(
                        "miner %s refused deletion of %s: %s", neuron.uid, deletion.cid, outcome
                    )
            self._told_upto[neuron.hotkey] = at + len(chunk)
        return applied

    # --- everyone else's records -----------------------------------------------------------

    async def _scan(
        self, neuron: Neuron, skip: str, budget: int
    ) -> tuple[dict[str, int], list[Record], set[str]]:
        """A miner's namespaces, up to ``budget`` of its records from the cursors on, and the
        namespaces read completely (from the start to the end) in this call."""
        stats = await self._call(neuron, Stats())
        namespaces = {
            str(ns): int(count)
            for ns, count in dict(stats.get("namespaces") or {}).items()
            if ns != skip
        }
        records: list[Record] = []
        complete: set[str] = set()
        for namespace in sorted(namespaces):
            if len(records) >= budget:
                break
            key = (neuron.hotkey, namespace)
            start = offset = self._cursors.get(key, 0)
            while len(records) < budget:
                limit = min(PAGE, budget - len(records))
                page = await self._page(neuron, namespace, offset, limit)
                records.extend(page)
                offset += len(page)
                if len(page) < limit:
                    if start == 0:
                        complete.add(namespace)
                    offset = 0  # the end: start over next cycle
                    break
            self._cursors[key] = offset
        return namespaces, records, complete

    async def foreign(
        self, serving: Sequence[Neuron], skip_namespace: str, report: RepairReport
    ) -> None:
        if not serving:
            return
        neurons = {n.hotkey: n for n in serving}
        share = max(PAGE, self.max_cids // len(serving))
        scans = await asyncio.gather(
            *(self._scan(n, skip_namespace, share) for n in serving), return_exceptions=True
        )
        namespaces: dict[str, dict[str, int]] = {}
        complete: dict[str, set[str]] = {}
        holders: dict[Key, set[str]] = {}
        copy: dict[Key, Record] = {}
        for neuron, scan in zip(serving, scans, strict=True):
            if isinstance(scan, BaseException):
                if neuron.hotkey not in report.unreachable:
                    report.unreachable.append(neuron.hotkey)
                log.info("cannot scan miner %s: %s", neuron.uid, scan)
                continue
            namespaces[neuron.hotkey], records, complete[neuron.hotkey] = scan
            for record in records:
                key = (record.namespace, record.cid)
                if key in self._disputed or (key not in copy and len(copy) >= self.max_cids):
                    continue
                if not _verified(record):
                    report.unverified += 1
                    continue
                copy.setdefault(key, record)
                holders.setdefault(key, set()).add(neuron.hotkey)
        # Which expected replicas lack each record: known from a complete scan, else asked.
        missing: dict[Key, list[str]] = {}
        to_ask: list[tuple[Key, str]] = []
        for key in copy:
            namespace, cid = key
            for neuron in closest(cid, serving, self.replicas):
                h = neuron.hotkey
                if h in holders[key] or h not in namespaces:
                    continue  # holds it, or cannot be reached this cycle
                if namespace not in namespaces[h] or namespace in complete[h]:
                    missing.setdefault(key, []).append(h)
                else:
                    to_ask.append((key, h))
        report.foreign_checked = len(copy)
        limit = asyncio.Semaphore(_CONCURRENT_GETS)

        async def holds(key: Key, hotkey: str) -> bool | None:
            async with limit:
                try:
                    record = await self._call(neurons[hotkey], Get(key[1], key[0]))
                except EngramError as exc:
                    log.info("miner %s did not answer for %s: %s", hotkey, key[1], exc.message)
                    return None
                return isinstance(record, Record) and _verified(record)

        answers = await asyncio.gather(*(holds(key, h) for key, h in to_ask))
        for (key, hotkey), held in zip(to_ask, answers, strict=True):
            if held is False:
                missing.setdefault(key, []).append(hotkey)
        copies: dict[str, list[Record]] = {}
        for key, hotkeys in missing.items():
            for h in hotkeys:
                copies.setdefault(h, []).append(copy[key])
        acked, failed = await self._put(copies, neurons)
        report.foreign_repaired += len(acked)
        report.failed += failed

    async def run(self, corpus: Corpus, serving: Sequence[Neuron]) -> RepairResult:
        """One cycle over the current serving miners."""
        report = RepairReport()
        health, held = await self.corpus(corpus, serving, report)
        namespace = corpus.records[0].namespace if len(corpus) else ""
        reachable = [n for n in serving if n.hotkey not in report.unreachable]
        await self.deletions(reachable, report)  # first: what was deleted is not copied
        reachable = [n for n in reachable if n.hotkey not in report.unreachable]
        await self.foreign(reachable, namespace, report)
        return RepairResult(report, health, held)


__all__ = ["MAX_CIDS_PER_CYCLE", "MAX_KNOWN_DELETIONS", "RepairReport", "RepairResult", "Repairer"]
