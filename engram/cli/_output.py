"""What the CLI prints and how it exits: the only code in Engram that does either."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from engram.errors import BusyError, EngramError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUSY = 4  # a port in use, or a localnet already running on that home
EXIT_INTERRUPTED = 130


def stdout() -> Console:
    # Built per call so a redirected or replaced sys.stdout (pipes, tests) is honoured.
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """One red line on stderr, then exit with ``code``."""
    stderr().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    fail(message, EXIT_USAGE)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, allow_nan=False))


@contextmanager
def cli_errors() -> Iterator[None]:
    """Engram errors become one red line and exit 1 (4 when busy); Ctrl-C exits 130 quietly."""
    try:
        yield
    except BusyError as exc:
        fail(exc.message, EXIT_BUSY)
    except EngramError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


# --- shared rendering and parsing of the data commands -------------------------------

CID_SHORT_HEX = 12
EXCERPT_CHARS = 80


def reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; such values stay strings.
    raise ValueError(name)


def parse_filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        usage_error(f"--filter is not valid JSON: {exc.msg} at column {exc.colno}")
    except ValueError as exc:
        usage_error(f"--filter is not valid JSON: {exc} is not a JSON value")
    if not isinstance(value, dict):
        usage_error(
            f'--filter must be a JSON object such as \'{{"lang": "en"}}\', '
            f"got {type(value).__name__}"
        )
    return value


# --- rendering -------------------------------------------------------------------------------


def short_cid(cid: str) -> str:
    prefix, sep, digest = cid.partition("::")
    if not sep:
        return cid if len(cid) <= CID_SHORT_HEX + 4 else cid[: CID_SHORT_HEX + 4] + "…"
    return f"{prefix}::{digest[:CID_SHORT_HEX]}…" if len(digest) > CID_SHORT_HEX else cid


def excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
