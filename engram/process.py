"""How Engram's long-running processes start and stop: ports, one instance per home, orphans.

* :func:`listen` takes a TCP port before a server announces itself anywhere,
  so a taken port is an error that says so, not a node listed on chain that
  nobody can reach.
* :class:`PidLock` lets one process own a directory; the lock is the OS's
  (``flock``), so a file left behind by a killed process blocks nobody.
* :func:`exit_with_parent` makes a child stop itself when its parent is gone,
  however the parent died (SIGKILL included).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from engram.errors import BusyError, InvalidRequestError

log = logging.getLogger("engram.process")

PARENT_POLL_S = 0.5
# After asking itself to stop, how long an orphan may take before it exits hard.
ORPHAN_STOP_TIMEOUT_S = 20.0
_PID_READ_TRIES = 20


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``; :class:`BusyError` if another process holds it.

    Listening at once (not only binding) is what makes the port ours: on Linux
    two sockets with ``SO_REUSEADDR`` may both bind a port nobody listens on.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # reuse after TIME_WAIT
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BusyError(
                f"port {port} on {host} is already in use by another process; stop it or "
                "choose another port"
            ) from exc
        if exc.errno == errno.EACCES:
            raise InvalidRequestError(
                f"not allowed to listen on {host}:{port}: ports below 1024 need privileges; "
                "choose another port"
            ) from exc
        raise InvalidRequestError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; check the host and port"
        ) from exc
    except OverflowError as exc:  # a port outside 0-65535
        sock.close()
        raise InvalidRequestError(f"port {port} is out of range: use 1 to 65535") from exc
    return sock


def check_free(host: str, port: int) -> None:
    """Raise :class:`BusyError` if ``host:port`` cannot be listened on right now."""
    listen(host, port).close()


class PidLock:
    """One process at a time owns a directory: an exclusive ``flock`` on a file holding its pid.

    The OS drops the lock when the process dies, however it dies, so a stale
    file never blocks the next start.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what  # names the owner in the error: "localnet already running ..."
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`BusyError` naming the pid that holds it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise BusyError(
                f"{self.what} already running (pid {pid or 'unknown'}) on {self.path.parent}; "
                "stop it first"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; the file stays (removing it would race a process opening it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    """The holder's pid; it writes it just after locking, so wait a moment for it."""
    for _ in range(_PID_READ_TRIES):
        raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if raw.isdigit():
            return int(raw)
        time.sleep(0.025)
    return None


def exit_with_parent(parent: int) -> None:
    """Stop this process (SIGTERM to itself, a clean stop) once ``parent`` is no longer its parent.

    A process whose parent dies is adopted by another, so ``getppid()``
    changing is the sign, on every POSIX system. If the clean stop has not
    ended the process within :data:`ORPHAN_STOP_TIMEOUT_S`, it exits hard.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        log.warning("parent process %d is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_STOP_TIMEOUT_S)
        os._exit(1)

    threading.Thread(target=watch, name="engram-parent-watch", daemon=True).start()
