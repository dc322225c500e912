"""Every setting and default of Engram, in one place.

Names carry their units (``timeout_s``, ``max_body_bytes``). Precedence is
defaults < ``ENGRAM_*`` environment < explicit arguments (CLI flags). This is
the only module that reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engram.errors import InvalidRequestError

DEFAULT_NAMESPACE = "default"
MODEL_VERSION = "v1"
EMBEDDING_DIM = 384
EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def engram_home() -> Path:
    """Where the embedded store and cached models live: ``ENGRAM_HOME`` or ``~/.engram``."""
    return Path(os.environ.get("ENGRAM_HOME") or Path.home() / ".engram").expanduser()


def engram_url() -> str | None:
    """The node the CLI talks to when ``--url`` is not given (``ENGRAM_URL``)."""
    return os.environ.get("ENGRAM_URL") or None


@dataclass(frozen=True)
class Limits:
    """What one request may carry; breaking a limit is a 4xx with a message."""

    max_text_chars: int = field(default=8_192, metadata={"help": "characters of text per record"})
    max_metadata_bytes: int = field(
        default=16 * 1024, metadata={"help": "bytes of canonical metadata JSON per record"}
    )
    max_metadata_depth: int = field(default=8, metadata={"help": "nesting depth of metadata"})
    max_body_bytes: int = field(
        default=10 * 1024 * 1024, metadata={"help": "bytes of one HTTP request body"}
    )
    max_batch_items: int = field(default=1_000, metadata={"help": "items per batch request"})
    max_top_k: int = field(default=100, metadata={"help": "largest top_k of a query"})
    max_namespace_chars: int = field(default=64, metadata={"help": "characters of a namespace"})
    max_list_limit: int = field(default=1_000, metadata={"help": "records per list page"})


@dataclass(frozen=True)
class StoreConfig:
    """Storage engine knobs; the HNSW build parameters are saved with each index."""

    dim: int = field(default=EMBEDDING_DIM, metadata={"help": "embedding dimension"})
    hnsw_m: int = field(default=32, metadata={"help": "HNSW graph degree (M)"})
    hnsw_ef_construction: int = field(default=64, metadata={"help": "HNSW build beam width"})
    hnsw_ef_search: int = field(default=48, metadata={"help": "HNSW query beam width"})
    index_batch_rows: int = field(
        default=4_096,
        metadata={"help": "unindexed rows that trigger a background move into HNSW"},
    )
    exact_search_max_rows: int = field(
        default=2_048,
        metadata={"help": "filters matching at most this many rows are searched exactly"},
    )
    filtered_hnsw_min_selectivity: float = field(
        default=0.05,
        metadata={"help": "filters matching less than this share of a namespace search exactly"},
    )
    compact_tombstone_ratio: float = field(
        default=0.2, metadata={"help": "deleted share of an index that triggers compaction"}
    )
    index_threads: int = field(
        default=0,
        metadata={"help": "cores the background indexer may use (0 = all but one; flush uses all)"},
    )
    row_cache_rows: int = field(
        default=50_000, metadata={"help": "recently returned rows kept in memory (0 = none)"}
    )
    checkpoint_interval_s: float = field(
        default=30.0, metadata={"help": "how often a changed index is written to disk"}
    )
    synchronous: str = field(
        default="NORMAL",
        metadata={
            "help": "SQLite synchronous mode: NORMAL survives a killed process, "
            "FULL also a power cut"
        },
    )


@dataclass(frozen=True)
class ClientConfig:
    """How the SDK talks to a node over HTTP."""

    timeout_s: float = field(default=30.0, metadata={"help": "per-request timeout"})
    retries: int = field(default=3, metadata={"help": "retries on connection errors and 5xx"})
    backoff_s: float = field(default=0.2, metadata={"help": "first retry delay, doubled each try"})


@dataclass(frozen=True)
class MinerConfig:
    """The miner HTTP server."""

    host: str = field(default="0.0.0.0", metadata={"help": "address to listen on"})
    port: int = field(default=8091, metadata={"help": "TCP port"})
    home: Path = field(default_factory=engram_home, metadata={"help": "data directory"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    reader_threads: int = field(default=8, metadata={"help": "threads that serve queries"})
    shutdown_grace_s: float = field(
        default=10.0, metadata={"help": "how long in-flight requests may finish on SIGTERM"}
    )


_ENV_PREFIX = "ENGRAM_"
T = TypeVar("T")


def _coerce(value: str, typ: Any, name: str, problems: list[str]) -> Any:
    try:
        if typ in (int, "int"):
            return int(value)
        if typ in (float, "float"):
            return float(value)
        if typ in (Path, "Path"):
            return Path(value).expanduser()
        return value
    except ValueError:
        problems.append(f"{name}={value!r} is not a valid {typ}")
        return None


def load_config(cls: type[T], **overrides: Any) -> T:
    """Build a config of ``cls``: defaults, then ``ENGRAM_<FIELD>`` variables, then ``overrides``.

    ``None`` overrides are ignored so CLI options can pass through untouched.
    Every problem is reported at once.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        env_name = _ENV_PREFIX + f.name.upper()
        if env_name in os.environ:
            coerced = _coerce(os.environ[env_name], f.type, env_name, problems)
            if coerced is not None:
                values[f.name] = coerced
        if overrides.get(f.name) is not None:
            values[f.name] = overrides[f.name]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    problems.extend(f"unknown setting {name!r}" for name in sorted(unknown))
    if problems:
        raise InvalidRequestError("invalid configuration: " + "; ".join(problems))
    return cls(**values)
