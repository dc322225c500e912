"""Token buckets per identity and budget: a flood from one caller never starves another."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from enum import StrEnum

from engram.config import SecurityConfig
from engram.errors import PayloadTooLargeError, RateLimitedError
from engram.security.access import Caller


class Budget(StrEnum):
    INGEST = "ingest"  # costs one token per item
    QUERY = "query"  # every read
    CHALLENGE = "challenge"


class RateLimiter:
    """Buckets keyed by (budget, verified identity or else client IP), least recently used
    evicted. The identity is a signing hotkey, an API key, or the gateway that signed an
    anonymous caller's request (see :attr:`Caller.budget_id`).

    A bucket holds ``burst`` tokens and refills at ``per_s``; a hotkey with a
    validator permit gets ``validator_factor`` times both, a known gateway's
    (``gateway_hotkeys``) ``gateway_factor`` times.
    """

    def __init__(self, limits: SecurityConfig) -> None:
        self.limits = limits
        self.gateways = frozenset(h.strip() for h in limits.gateway_hotkeys.split(",") if h.strip())
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _rate(self, budget: Budget, caller: Caller) -> tuple[float, float]:
        per_s, burst = {
            Budget.INGEST: (self.limits.ingest_per_s, self.limits.ingest_burst),
            Budget.QUERY: (self.limits.query_per_s, self.limits.query_burst),
            Budget.CHALLENGE: (self.limits.challenge_per_s, self.limits.challenge_burst),
        }[budget]
        factor = 1.0
        if caller.validator:
            factor = self.limits.validator_factor
        elif caller.budget_id in self.gateways:
            factor = self.limits.gateway_factor
        return per_s * factor, burst * factor

    def admit(self, budget: Budget, caller: Caller, client_ip: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens or raise :class:`RateLimitedError` saying when to retry."""
        if not self.limits.rate_limits or caller.operator:
            return
        per_s, burst = self._rate(budget, caller)
        who = caller.budget_id or f"ip:{client_ip}"
        key = (budget.value, who)
        now = time.monotonic()
        with self._lock:
            tokens, updated = self._buckets.pop(key, (burst, now))
            tokens = min(burst, tokens + (now - updated) * per_s)
            if cost > burst:
                self._buckets[key] = (tokens, now)
                raise PayloadTooLargeError(
                    f"this request costs {cost:g} {budget.value} tokens, more than the "
                    f"{burst:g} a caller may spend at once; send smaller batches"
                )
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                wait = (cost - tokens) / per_s
                raise RateLimitedError(
                    f"{budget.value} rate limit for {who}: {per_s:g}/s with bursts of {burst:g}; "
                    f"retry in {math.ceil(wait)} s",
                    retry_after_s=wait,
                )
            self._buckets[key] = (tokens - cost, now)
            while len(self._buckets) > self.limits.max_tracked_callers:
                self._buckets.popitem(last=False)
