"""The validator: score, challenge, repair and set weights, each on its own cadence.

Miners are the announced ones that answer their health probes now (the
network client's :class:`~engram.network.survey.Liveness`, as clients route).
While the chain is unreachable the rounds go on over the last metagraph read,
``/health`` says so, and weights the chain could not take are tried again every
``chain_retry_s`` until it returns.

Every round is a one-shot coroutine (:meth:`Validator.score_round`,
:meth:`~Validator.challenge_round`, :meth:`~Validator.repair_round`,
:meth:`~Validator.set_weights`) so tests and tools can drive it directly;
:meth:`Validator.run` only puts them on timers. Miners are measured all at
once under per-request deadlines, so one slow or dead miner costs the round
at most one deadline and never lowers anyone else's score.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import numpy as np

from engram._version import __version__
from engram.api.calls import Query
from engram.api.exchange import call_node
from engram.chain import open_chain
from engram.chain.base import Chain, Metagraph, Neuron
from engram.chain.keys import identity, open_wallet
from engram.chain.watch import ChainWatch
from engram.config import SPEC_VERSION, ClientConfig, NetworkConfig, ValidatorConfig
from engram.errors import ChainError, ChainUnavailableError, EngramError, UnavailableError
from engram.network.client import Network
from engram.network.routing import REPLICAS, closest
from engram.security.signing import HotkeyAuth
from engram.validator.challenges import challenge_miner
from engram.validator.corpus import Corpus, build_records, corpus_namespace, new_seed
from engram.validator.repair import Repairer, RepairReport
from engram.validator.scoring import (
    LATENCY_ZERO_MS,
    RECALL_K,
    MinerScore,
    ema,
    normalise,
    recall_at_k,
    slashed,
)
from engram.validator.state import ChallengeRecord, MinerState, ScoreRecord, ValidatorState

log = logging.getLogger("engram.validator")


class Validator:
    """One validator hotkey on one subnet, with its state under ``config.home``.

    Construction opens the wallet, the chain and the state database and
    checks the hotkey holds a validator permit, so a misconfigured validator
    fails at once with a message that says what to do.
    """

    def __init__(
        self,
        config: ValidatorConfig,
        *,
        chain: Chain | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        wallet = open_wallet(config.wallet, config.wallet_path)
        self._signer = wallet  # signs the weights on chain
        self.hotkey = identity(wallet).hotkey
        self.chain = chain if chain is not None else open_chain(config.chain)
        self._owns_chain = chain is None
        self.state: ValidatorState | None = None
        self.watch = ChainWatch(self.chain.url, "still scoring on the last metagraph")
        try:
            self._graph = self.chain.metagraph(config.netuid)  # the last one read
            self.uid = self._check_permit(self._graph)
            self.state = ValidatorState(config.home)
            self.namespace = corpus_namespace(self.hotkey)
            self.corpus = self._load_corpus(self.state)
        except BaseException:
            self._close_sync()
            raise
        # Unbounded connections: a pool queue would be counted as the miners' latency.
        self.http = http or httpx.AsyncClient(
            headers={"user-agent": f"engram-validator/{__version__}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
        )
        self._owns_http = http is None
        # Every query, challenge, corpus write and repair copy is signed by the validator's
        # hotkey: miners answer challenges only when signed, and budget validators higher.
        self.http.auth = HotkeyAuth(wallet)
        self.network = Network(
            self.chain,
            NetworkConfig(
                chain=self.chain.url,
                netuid=config.netuid,
                replicas=REPLICAS,
                read_deadline_s=config.request_timeout_s,
                metagraph_ttl_s=1.0,
                probe_interval_s=config.probe_interval_s,
                probe_timeout_s=config.probe_timeout_s,
            ),
            http=self.http,
        )
        self.repairer = Repairer(
            self.network,
            self.http,
            replicas=REPLICAS,
            deadline_s=max(config.request_timeout_s, 5.0),
        )
        self._query_config = ClientConfig(timeout_s=config.request_timeout_s, retries=0)
        log.info(
            "validator ready",
            extra={
                "uid": self.uid,
                "hotkey": self.hotkey,
                "namespace": self.namespace,
                "corpus": len(self.corpus),
                "state": str(self.state.path),
            },
        )

    # --- start-up ------------------------------------------------------------------------

    def _check_permit(self, graph: Metagraph) -> int:
        me = graph.by_hotkey(self.hotkey)
        c = self.config
        where = f"subnet {c.netuid} of {self.chain.url}"
        register = (
            f"`engram chain register {self.chain.url} --wallet {c.wallet} "
            f"--netuid {c.netuid} --stake <amount>`"
        )
        if me is None:
            raise ChainError(
                f"validator hotkey {self.hotkey} ({c.wallet}) is not registered on {where}; "
                f"register it with enough stake for a validator permit: {register}"
            )
        if not me.validator_permit:
            raise ChainError(
                f"validator hotkey {self.hotkey} (uid {me.uid}) has no validator permit on "
                f"{where}: its stake {me.stake} is below the subnet's minimum; add stake with "
                f"{register}"
            )
        return me.uid

    def _load_corpus(self, state: ValidatorState) -> Corpus:
        """The stored corpus (never re-seeded), grown to ``corpus_size`` if that was raised."""
        seed = state.seed(new_seed)
        if state.get_meta("namespace") not in (None, self.namespace):
            log.warning("the validator hotkey changed: the corpus moves to %s", self.namespace)
            state.mark_written([r.cid for r in state.load_corpus(self.namespace)], False)
        state.set_meta(hotkey=self.hotkey, namespace=self.namespace)
        records = state.load_corpus(self.namespace)
        if len(records) < self.config.corpus_size:
            more = build_records(seed, self.namespace, len(records), self.config.corpus_size)
            state.add_corpus(more, start=len(records))
            records.extend(more)
        return Corpus(records[: self.config.corpus_size])

    def _state(self) -> ValidatorState:
        if self.state is None:
            raise UnavailableError("the validator is closed")
        return self.state

    async def write_corpus(self) -> int:
        """Write corpus records not yet written to a quorum of their replicas; how many now are."""
        state = self._state()
        pending = state.unwritten()
        records = [r for r in self.corpus.records if r.cid in pending]
        if not records:
            return 0
        await self.network.metagraph(refresh=True)
        try:
            reports = await self.network.write(records)
        except UnavailableError as exc:
            log.warning("cannot write the corpus yet: %s", exc.message)
            return 0
        state.add_holdings((r.cid, h) for r in reports if r.cid for h in r.acked)
        done = [r.cid for r in reports if r.ok and r.cid]
        state.mark_written(done)
        if len(done) < len(records):
            log.warning("%d corpus records missed their write quorum", len(records) - len(done))
        log.info("corpus written", extra={"records": len(done), "pending": len(records)})
        return len(done)

    # --- shared helpers ------------------------------------------------------------------

    async def _metagraph(self) -> Metagraph:
        """The subnet now; while the chain is unreachable, the last one read (and say so)."""
        try:
            graph = await asyncio.to_thread(self.chain.metagraph, self.config.netuid)
        except EngramError as exc:
            self.watch.failed(exc)
            return self._graph
        self.watch.ok()
        self._graph = graph
        return graph

    async def _serving(self) -> tuple[Metagraph, list[Neuron], list[Neuron]]:
        """The metagraph, the serving miners routing uses (announced, answering their health
        probes), and the miners to measure (all of them but this validator)."""
        graph = await self._metagraph()
        serving = await self.network.liveness.serving(graph.serving())
        return graph, serving, [n for n in serving if n.hotkey != self.hotkey]

    def _assignment(self, serving: Sequence[Neuron]) -> dict[str, list[int]]:
        """hotkey → indexes of the corpus records routing gives it."""
        out: dict[str, list[int]] = {n.hotkey: [] for n in serving}
        for i, record in enumerate(self.corpus.records):
            for n in closest(record.cid, serving, REPLICAS):
                out[n.hotkey].append(i)
        return out

    @staticmethod
    def _carry(old: MinerState | None, neuron: Neuron) -> MinerState | None:
        """The uid's state if it still belongs to the same hotkey (a new hotkey starts at 0)."""
        return old if old is not None and old.hotkey == neuron.hotkey else None

    # --- scoring -------------------------------------------------------------------------

    def truth(
        self, query: np.ndarray, assigned: Sequence[int], returned: Sequence[str]
    ) -> list[str]:
        """The exact top-10 among the corpus records routing assigns to the miner.

        Corpus records the miner returned beyond its assignment (it held them
        before the miners changed, and repair never deletes) join the
        candidates: an honest miner's answer is then exactly the truth, while
        a padded answer still displaces true neighbours and loses recall.
        """
        assigned_set = set(assigned)
        extra = [
            i
            for i in (self.corpus.by_cid.get(c) for c in returned)
            if i is not None and i not in assigned_set
        ]
        return self.corpus.top_k(query, [*assigned, *extra], RECALL_K)

    async def _query(
        self, neuron: Neuron, vector: np.ndarray, assigned: Sequence[int]
    ) -> tuple[float, float, bool]:
        """(recall, round-trip ms, answered) of one query; a failure is recall 0 and ≥ 500 ms.

        The round trip is timed here, by the validator: a miner's own
        ``latency_ms`` is never trusted.
        """
        call = Query(None, vector.tolist(), RECALL_K, None, self.namespace, False)
        started = time.perf_counter()
        try:
            hits = await call_node(
                self.http,
                str(neuron.axon_url),
                call,
                self._query_config,
                self.config.request_timeout_s,
            )
        except (EngramError, httpx.HTTPError, OSError) as exc:
            elapsed = (time.perf_counter() - started) * 1000
            log.debug("miner %s failed a query: %s", neuron.uid, exc)
            return 0.0, max(elapsed, LATENCY_ZERO_MS), False
        elapsed = (time.perf_counter() - started) * 1000
        returned = [h.cid for h in hits]
        return recall_at_k(returned, self.truth(vector, assigned, returned)), elapsed, True

    async def _measure(self, neuron: Neuron, assigned: Sequence[int]) -> tuple[float, float, int]:
        """Mean recall, median latency and failures over fresh queries.

        A miner's queries go one after another (all miners at once), so the
        round trip measures the miner, not a queue of our own requests. A
        miner that misses the deadline is unresponsive for the rest of the
        round: its remaining queries count as failed without waiting again.
        """
        results: list[tuple[float, float, bool]] = []
        for query in self.corpus.queries(assigned, self.config.queries_per_miner):
            if results and not results[-1][2]:
                results.append(results[-1])
                continue
            results.append(await self._query(neuron, query, assigned))
        if not results:
            return 0.0, LATENCY_ZERO_MS, 0
        failed = sum(1 for _, _, answered in results if not answered)
        recall = float(np.mean([r for r, _, _ in results]))
        return recall, float(statistics.median(ms for _, ms, _ in results)), failed

    async def score_round(self) -> dict[int, MinerScore]:
        """Measure every serving miner at once; update EMAs and the score history."""
        state = self._state()
        started, began = time.perf_counter(), time.time()
        _, serving, miners = await self._serving()
        assignment = self._assignment(serving)
        measured = await asyncio.gather(*(self._measure(n, assignment[n.hotkey]) for n in miners))
        round_ = state.next_round()
        previous = state.miners()
        now = time.time()
        scores: dict[int, MinerScore] = {}
        states: list[MinerState] = []
        history: list[ScoreRecord] = []
        for neuron, (recall, latency, failed) in zip(miners, measured, strict=True):
            passed, issued = state.proof_window(neuron.uid, neuron.hotkey, self.config.proof_window)
            result = MinerScore(
                neuron.uid,
                neuron.hotkey,
                recall,
                latency,
                passed,
                issued,
                self.config.queries_per_miner,
                failed,
            )
            old = self._carry(previous.get(neuron.uid), neuron)
            value = result.score
            new_ema = (
                0.0
                if result.slashed
                else ema(old.ema if old else 0.0, value, self.config.ema_alpha)
            )
            scores[neuron.uid] = result
            states.append(
                MinerState(
                    neuron.uid,
                    neuron.hotkey,
                    new_ema,
                    recall,
                    latency,
                    passed,
                    issued,
                    value,
                    old.weight if old else 0.0,
                    now,
                )
            )
            history.append(
                ScoreRecord(
                    neuron.uid, neuron.hotkey, recall, latency, result.proof_rate, value, new_ema
                )
            )
        state.save_miners(states)
        state.add_scores(round_, history)
        duration = time.perf_counter() - started
        state.set_meta(
            last_score_round={
                "at": began,
                "duration_s": duration,
                "round": round_,
                "miners": len(miners),
            }
        )
        log.info(
            "score round %d: %d miners in %.2fs",
            round_,
            len(miners),
            duration,
            extra={
                "round": round_,
                "scores": {uid: round(s.score, 4) for uid, s in scores.items()},
            },
        )
        return scores

    # --- storage proofs ------------------------------------------------------------------

    async def challenge_round(self) -> dict[int, tuple[int, int]]:
        """Challenge every serving miner at once; (passed, issued) of this round per uid.

        A miner whose proof rate over the window falls below 0.5 after at
        least 5 challenges has its EMA set to 0 here, without waiting for the
        next scoring round.
        """
        state = self._state()
        started, began = time.perf_counter(), time.time()
        _, serving, miners = await self._serving()
        assignment = self._assignment(serving)
        holdings = state.holdings()
        records = self.corpus.records

        def candidates(n: Neuron) -> list[Any]:
            held = holdings.get(n.hotkey, set())
            return [records[i] for i in assignment[n.hotkey] if records[i].cid in held]

        outcomes = await asyncio.gather(
            *(
                challenge_miner(
                    self.http,
                    n,
                    candidates(n),
                    challenges=self.config.challenges_per_miner,
                    audit_count=self.config.audits_per_miner,
                    deadline_s=self.config.challenge_deadline_s,
                )
                for n in miners
            )
        )
        flat: list[ChallengeRecord] = [o for per_miner in outcomes for o in per_miner]
        state.add_challenges(flat)
        previous = state.miners()
        now = time.time()
        states: list[MinerState] = []
        result: dict[int, tuple[int, int]] = {}
        for neuron, per_miner in zip(miners, outcomes, strict=True):
            result[neuron.uid] = (sum(o.passed for o in per_miner), len(per_miner))
            passed, issued = state.proof_window(neuron.uid, neuron.hotkey, self.config.proof_window)
            old = self._carry(previous.get(neuron.uid), neuron)
            current = old.ema if old else 0.0
            if slashed(passed, issued):
                if current > 0:
                    log.warning(
                        "miner %s slashed: %d of %d proofs passed", neuron.uid, passed, issued
                    )
                current = 0.0
            states.append(
                MinerState(
                    neuron.uid,
                    neuron.hotkey,
                    current,
                    old.recall if old else None,
                    old.latency_ms if old else None,
                    passed,
                    issued,
                    old.score if old else None,
                    old.weight if old else 0.0,
                    now,
                )
            )
        state.save_miners(states)
        duration = time.perf_counter() - started
        state.set_meta(
            last_challenge_round={"at": began, "duration_s": duration, "miners": len(miners)}
        )
        log.info(
            "challenge round: %d miners, %d of %d proofs passed in %.2fs",
            len(miners),
            sum(o.passed for o in flat),
            len(flat),
            duration,
        )
        return result

    # --- replica repair ------------------------------------------------------------------

    async def repair_round(self) -> RepairReport:
        """Recount the corpus's replicas over the current serving miners and fill the gaps."""
        state = self._state()
        started, began = time.perf_counter(), time.time()
        await self.write_corpus()
        _, serving, _ = await self._serving()
        result = await self.repairer.run(self.corpus, serving)
        state.save_replicas(result.health)
        state.add_holdings(result.held)
        state.mark_written(h.cid for h in result.health if h.status == "healthy")
        state.prune()
        duration = time.perf_counter() - started
        report = result.report
        state.set_meta(
            last_repair=report.to_dict(),
            last_repair_round={"at": began, "duration_s": duration, "miners": len(serving)},
        )
        log.info("repair round in %.2fs", duration, extra={"repair": report.to_dict()})
        return report

    # --- weights -------------------------------------------------------------------------

    async def set_weights(self) -> dict[int, float]:
        """L1-normalised EMAs of serving miners on chain; uids not serving (or slashed) get 0.

        A :class:`ChainUnavailableError` while the chain is unreachable: nothing is stored
        and :meth:`run` tries again every ``chain_retry_s``.
        """
        state = self._state()
        began = time.time()
        graph = await self._metagraph()
        if not self.watch.reachable:
            raise ChainUnavailableError(f"weights wait for the chain: {self.watch.status()}")
        serving = {n.hotkey for n in await self.network.liveness.serving(graph.serving())}
        previous = state.miners()
        uids: list[int] = []
        raw: list[float] = []
        for neuron in graph.neurons:
            if neuron.hotkey == self.hotkey:
                continue
            old = self._carry(previous.get(neuron.uid), neuron)
            counts = old is not None and neuron.axon_url is not None and neuron.hotkey in serving
            if old is not None and slashed(old.proof_passed, old.proof_issued):
                counts = False
            uids.append(neuron.uid)
            raw.append(old.ema if counts and old is not None else 0.0)
        weights = normalise(raw)
        try:
            await asyncio.to_thread(
                self.chain.set_weights,
                self.config.netuid,
                self._signer,
                uids,
                weights,
                version_key=SPEC_VERSION,
            )
        except ChainUnavailableError as exc:
            self.watch.failed(exc)
            raise
        self.watch.ok()
        by_uid = dict(zip(uids, weights, strict=True))
        state.add_weights(graph.block, by_uid)
        state.set_meta(last_weights_round={"at": began, "block": graph.block, "uids": len(uids)})
        log.info(
            "weights set at block %d",
            graph.block,
            extra={"weights": {u: round(w, 4) for u, w in by_uid.items() if w}},
        )
        return by_uid

    # --- the loop ------------------------------------------------------------------------

    async def _every(
        self,
        name: str,
        interval_s: float,
        round_: Callable[[], Awaitable[object]],
        after: asyncio.Event | None = None,
        done: asyncio.Event | None = None,
        chain_retry_s: float | None = None,
    ) -> None:
        """Run ``round_`` every ``interval_s`` (start to start), the first once ``after`` is set.

        A failing round is logged and retried on the next tick (after
        ``chain_retry_s`` when given and the chain was unreachable): a flaky
        chain or network must not stop the validator.
        """
        if after is not None:
            await after.wait()
        while True:
            started = time.monotonic()
            wait_s = interval_s
            try:
                await round_()
            except ChainUnavailableError as exc:
                log.warning("%s round failed: %s", name, exc.message)
                if chain_retry_s is not None:
                    wait_s = min(interval_s, chain_retry_s)
            except EngramError as exc:
                log.warning("%s round failed: %s", name, exc.message)
            except Exception:
                log.exception("%s round failed", name)
            finally:
                if done is not None:
                    done.set()
            await asyncio.sleep(max(0.0, wait_s - (time.monotonic() - started)))

    async def run(self) -> None:
        """Write the corpus, then every cadence on its own timer, until cancelled.

        The first rounds chain up at start: challenges first (so the first
        score has a proof rate), then scores, then weights (so the first
        weights are not all zeros); repair starts at once.
        """
        try:
            await self.write_corpus()
        except EngramError as exc:
            log.warning("corpus write failed, repair will retry: %s", exc.message)
        challenged, scored = asyncio.Event(), asyncio.Event()
        c = self.config
        async with asyncio.TaskGroup() as group:
            group.create_task(self._every("repair", c.repair_interval_s, self.repair_round))
            group.create_task(
                self._every(
                    "challenge", c.challenge_interval_s, self.challenge_round, None, challenged
                )
            )
            group.create_task(
                self._every("score", c.score_interval_s, self.score_round, challenged, scored)
            )
            group.create_task(
                self._every(
                    "weights",
                    c.weights_interval_s,
                    self.set_weights,
                    scored,
                    chain_retry_s=c.chain_retry_s,
                )
            )

    # --- reporting and shutdown ----------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Per uid: hotkey, recall, latency_ms, proof_rate, score, ema, weight; replica health
        counts; last round times (the gateway's ``/api/network`` joins it by uid)."""
        out = self._state().summary()
        out.update(uid=self.uid, netuid=self.config.netuid, chain=self.chain.url)
        return out

    def health(self) -> dict[str, Any]:
        """What ``/health`` says: ready while it runs, and whether the chain answers (it
        keeps scoring while it does not)."""
        return {
            "status": "ok",
            "ready": True,
            "uid": self.uid,
            "version": __version__,
            "chain": self.watch.status(),
        }

    def _close_sync(self) -> None:
        if self.state is not None:
            self.state.close()
            self.state = None
        if self._owns_chain:
            self.chain.close()

    async def close(self) -> None:
        """Close the HTTP client, the chain (if opened here) and the state database."""
        await self.network.close()
        if self._owns_http:
            await self.http.aclose()
        self._close_sync()

    async def __aenter__(self) -> Validator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["Validator"]
