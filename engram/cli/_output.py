"""What the CLI prints and how it exits: the only code in Engram that does either."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from engram.errors import EngramError

EXIT_ERROR = 1
EXIT_USAGE = 2
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
    """Engram errors become one red line and exit 1; Ctrl-C exits 130 quietly."""
    try:
        yield
    except EngramError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
