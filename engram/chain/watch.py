"""Whether the chain answers a process that keeps working without it.

A miner keeps serving and a validator keeps scoring while the chain is
unreachable; :class:`ChainWatch` remembers since when it has been, logs the
change once each way, and gives the line their ``/health`` shows.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from engram.errors import EngramError

log = logging.getLogger("engram.chain")


class ChainWatch:
    """The outcome of a process's latest chain call, and since when calls have failed.

    ``meanwhile`` says what the process does while the chain is away ("still
    serving on the last metagraph"); it ends the warning logged when the chain
    stops answering.
    """

    def __init__(self, url: str, meanwhile: str) -> None:
        self.url = url
        self.meanwhile = meanwhile
        self._lock = threading.Lock()
        self._since: float | None = None  # wall-clock time of the first failure in a row
        self._error = ""

    @property
    def reachable(self) -> bool:
        return self._since is None

    def ok(self) -> None:
        """The chain answered."""
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.info("chain %s reachable again after %.0fs", self.url, time.time() - since)

    def failed(self, exc: EngramError) -> None:
        """A chain call failed; the first failure in a row is logged as a warning."""
        with self._lock:
            first = self._since is None
            if first:
                self._since = time.time()
            self._error = exc.message
        if first:
            log.warning("chain %s unreachable: %s; %s", self.url, exc.message, self.meanwhile)
        else:
            log.debug("chain %s still unreachable: %s", self.url, exc.message)

    def status(self) -> str:
        """``ok``, or ``unreachable since <UTC time>: <last error>``."""
        with self._lock:
            since, error = self._since, self._error
        if since is None:
            return "ok"
        when = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        return f"unreachable since {when.replace('+00:00', 'Z')}: {error}"
