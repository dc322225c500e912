"""Every setting and default of Engram, in one place.

Names carry their units (``timeout_s``, ``max_body_bytes``). Precedence is
defaults < ``ENGRAM_*`` environment < explicit arguments (CLI flags). This is
the only module that reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engram._version import __version__
from engram.errors import InvalidRequestError

DEFAULT_NAMESPACE = "default"
MODEL_VERSION = "v1"
EMBEDDING_DIM = 384
EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
NAMESPACE_KEY_MIN_CHARS = 16  # a legacy namespace_key, as the original network required
NAMESPACE_KEY_PBKDF2_ROUNDS = 100_000  # for a new key's stored hash (the rounds are stored too)
API_KEY_MAX_NAMESPACES = 64  # namespaces one gateway API key may open
MCP_MAX_KEYED_CLIENTS = 256  # gateway clients an `engram mcp --api-keys` server keeps open
ON_BEHALF_PARAM = "on_behalf"  # query parameter a gateway signs: "anonymous" (see Gate)


def spec_version(version: str) -> int:
    """``MAJOR.MINOR.PATCH`` as one integer, as Bittensor subnets compute ``__spec_version__``.

    ``10000 * major + 100 * minor + patch``: 0.1.0 -> 100, 1.2.3 -> 10203. A
    validator sends it as ``set_weights``' ``version_key``.
    """
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    major, minor, patch = (int(part) for part in match.groups())
    return 10_000 * major + 100 * minor + patch


SPEC_VERSION = spec_version(__version__)


def engram_home() -> Path:
    """Where the embedded store and cached models live: ``ENGRAM_HOME`` or ``~/.engram``."""
    return Path(os.environ.get("ENGRAM_HOME") or Path.home() / ".engram").expanduser()


def model_cache_dir() -> Path:
    """Where exported models are kept, shared by every home of this user so a model is
    exported once per machine: ``ENGRAM_MODEL_CACHE``, else ``$XDG_CACHE_HOME/engram``,
    else ``~/.cache/engram``."""
    explicit = os.environ.get("ENGRAM_MODEL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "engram"


def parent_pid() -> int | None:
    """The process whose exit this one follows (``ENGRAM_PARENT_PID``, set by ``engram localnet``
    for its children), so a killed localnet leaves no orphan behind."""
    raw = os.environ.get("ENGRAM_PARENT_PID", "").strip()
    return int(raw) if raw.isdigit() else None


def default_chain() -> str:
    """The LocalChain file under ENGRAM_HOME: the chain used when none is named."""
    return f"local:{engram_home() / 'chain.sqlite'}"


def default_wallet_path() -> Path:
    """Bittensor's own wallet folder, so keys made with ``btcli`` are found as they are."""
    return Path.home() / ".bittensor" / "wallets"


def engram_url() -> str | None:
    """The node the CLI talks to when ``--url`` is not given (``ENGRAM_URL``)."""
    return os.environ.get("ENGRAM_URL") or None


PORT_RANGE = (1, 65_535)
_PORT = {"range": PORT_RANGE}  # field metadata: load_config checks the value is a TCP port


def _probe_interval_s() -> Any:
    """How long a miner's observed answer is trusted (a field of every config that routes)."""
    return field(
        default=3.0,
        metadata={
            "help": "a miner that stops answering GET /health is routed around, and one that "
            "answers again routed to, within this (an answer, or silence, is trusted for it "
            "less probe_timeout_s)",
            "range": (0.01, 3_600.0),
        },
    )


def _probe_timeout_s() -> Any:
    return field(
        default=1.0,
        metadata={
            "help": "how long a GET /health probe of a miner waits for it (shorter than "
            "probe_interval_s)",
            "range": (0.01, 600.0),
        },
    )


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
    max_dim: int = field(default=8_192, metadata={"help": "dimensions of an embedding"})
    max_ef: int = field(
        default=4_096, metadata={"help": "largest per-query HNSW beam width (ef) a search may ask"}
    )


@dataclass(frozen=True)
class StoreConfig:
    """Storage engine knobs; the HNSW build parameters are saved with each index."""

    dim: int | None = field(
        default=None,
        metadata={
            "help": "the one embedding dimension of every namespace; unset, each namespace's "
            "is fixed by its first write (384 for text the canonical model embeds)"
        },
    )
    hnsw_m: int = field(default=32, metadata={"help": "HNSW graph degree (M)"})
    hnsw_ef_construction: int = field(default=64, metadata={"help": "HNSW build beam width"})
    hnsw_ef_search: int = field(
        default=48,
        metadata={
            "help": "HNSW query beam width (ef) of a namespace until its index is calibrated, "
            "and the least it is calibrated to"
        },
    )
    calibration_recall: float = field(
        default=0.96,
        metadata={
            "help": "recall@10 that each namespace's default ef is calibrated to reach against "
            "exact search, on queries made from a sample of its own vectors (0: no "
            "calibration, hnsw_ef_search always); a search may still ask for its own ef"
        },
    )
    calibration_queries: int = field(
        default=200, metadata={"help": "sampled vectors a calibration measures recall on"}
    )
    calibration_min_rows: int = field(
        default=1_000, metadata={"help": "indexed rows a namespace needs before it is calibrated"}
    )
    calibration_max_ef: int = field(
        default=1_024,
        metadata={"help": "widest default beam a calibration may choose (its recall is reported)"},
    )
    index_batch_rows: int = field(
        default=4_096,
        metadata={"help": "unindexed rows that trigger a background move into HNSW"},
    )
    index_segment_rows: int = field(
        default=262_144,
        metadata={
            "help": "rows per HNSW segment: new rows go into a copy of the last segment until it "
            "holds this many, so one indexing cycle copies at most one segment"
        },
    )
    index_step_s: float = field(
        default=0.25,
        metadata={
            "help": "target duration of one background indexing step; the indexer stops, "
            "publishes and checkpoints only between steps"
        },
    )
    exact_search_max_rows: int = field(
        default=2_048,
        metadata={"help": "filters matching at most this many rows are searched exactly"},
    )
    filtered_hnsw_min_selectivity: float = field(
        default=0.05,
        metadata={"help": "filters matching less than this share of a namespace search exactly"},
    )
    deletion_retention_s: float = field(
        default=30 * 86_400.0,
        metadata={
            "help": "how long a deleted record's tombstone is kept and handed to replicas that "
            "missed the delete; a replica down for longer may serve the record again"
        },
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
    checkpoint_rows: int = field(
        default=20_000,
        metadata={"help": "rows indexed since the last checkpoint that make the next one due"},
    )
    close_timeout_s: float = field(
        default=2.0,
        metadata={
            "help": "longest close() waits for the indexer to stop and checkpoint; unindexed "
            "rows are durable in SQLite and indexed again on the next open"
        },
    )
    synchronous: str = field(
        default="NORMAL",
        metadata={
            "help": "SQLite synchronous mode: NORMAL survives a killed process, "
            "FULL also a power cut"
        },
    )
    search_fusion: str = field(
        default="relative",
        metadata={
            "help": "how hybrid search fuses its channels: relative (min-max normalised "
            "scores, weighted; measured best), rrf (reciprocal rank, k = 60) or dbsf "
            "(scores scaled by mean and standard deviation)"
        },
    )
    search_vector_weight: float = field(
        default=0.5, metadata={"help": "weight of the vector channel in hybrid search"}
    )
    search_keyword_weight: float = field(
        default=0.5, metadata={"help": "weight of the keyword (BM25) channel in hybrid search"}
    )
    search_neighbour_weight: float = field(
        default=0.3,
        metadata={
            "help": "share of the fused score of the records written just before and after a "
            "hit that it gains in hybrid search (conversational memory: the turns around a "
            "match often hold the answer); 0 turns it off"
        },
    )
    search_candidates: int = field(
        default=50,
        metadata={"help": "hits each channel of hybrid search contributes before fusion"},
    )


@dataclass(frozen=True)
class MemoryConfig:
    """The agent-memory layer (``client.memory``): duplicates, links, decay and context."""

    duplicate_similarity: float = field(
        default=0.95,
        metadata={
            "help": "cosine similarity at which a new memory is a near-duplicate of an active "
            "one, which is returned instead of storing a second copy"
        },
    )
    link_similarity: float = field(
        default=0.6, metadata={"help": "cosine similarity at which a new memory links to another"}
    )
    max_links: int = field(default=5, metadata={"help": "similar memories a new memory links to"})
    decay_weight: float = field(
        default=0.3,
        metadata={
            "help": "share of a search score that memory strength (FSRS retrievability, with "
            "importance as its floor) decides; 0 ranks by relevance alone"
        },
    )
    search_candidates: int = field(
        default=30, metadata={"help": "hits a memory search reranks by strength"}
    )
    context_candidates: int = field(
        default=20, metadata={"help": "memories a context block is packed from"}
    )
    default_importance: float = field(default=0.5, metadata={"help": "importance of a memory"})


MEMORY_STATES = ("active", "archived", "forgotten", "expired", "superseded")
"""A memory's lifecycle: set by the caller (archived, forgotten) or by time and updates."""


@dataclass(frozen=True)
class ClientConfig:
    """How the SDK talks to a node over HTTP."""

    timeout_s: float = field(default=30.0, metadata={"help": "per-request timeout"})
    retries: int = field(default=3, metadata={"help": "retries on connection errors and 5xx"})
    backoff_s: float = field(default=0.2, metadata={"help": "first retry delay, doubled each try"})
    max_retry_after_s: float = field(
        default=10.0,
        metadata={"help": "longest Retry-After of a 429 (or a busy 503) waited out before a retry"},
    )
    api_key: str | None = field(
        default=None,
        repr=False,
        metadata={"help": "a gateway API key, sent as Authorization: Bearer (URL mode only)"},
    )


@dataclass(frozen=True)
class MinerConfig:
    """The miner HTTP server."""

    host: str = field(default="0.0.0.0", metadata={"help": "address to listen on"})
    port: int = field(default=8091, metadata={"help": "TCP port", **_PORT})
    home: Path = field(default_factory=engram_home, metadata={"help": "data directory"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    reader_threads: int = field(default=8, metadata={"help": "threads that serve queries"})
    shutdown_grace_s: float = field(
        default=10.0, metadata={"help": "how long in-flight requests may finish on SIGTERM"}
    )
    chain: str | None = field(
        default=None,
        metadata={
            "help": "chain to join: local:PATH, or Bittensor's finney, test, local or ws://…; "
            "unset runs a standalone node"
        },
    )
    netuid: int = field(default=1, metadata={"help": "subnet to serve on"})
    wallet: str = field(
        default="default/default", metadata={"help": "wallet as NAME/HOTKEY (Bittensor layout)"}
    )
    wallet_path: Path = field(
        default_factory=default_wallet_path, metadata={"help": "folder holding the wallets"}
    )
    external_ip: str = field(
        default="127.0.0.1", metadata={"help": "address announced on chain for clients"}
    )
    accept_unrouted: bool = field(
        default=False,
        metadata={"help": "store writes even when routing sends their CID to other miners"},
    )
    sync_interval_s: float = field(
        default=12.0,
        metadata={
            "help": "how often the metagraph is re-read; the axon is announced again only when "
            "the chain lists another address for it"
        },
    )
    probe_interval_s: float = _probe_interval_s()
    probe_timeout_s: float = _probe_timeout_s()
    require_signatures: bool = field(
        default=False,
        metadata={"help": "refuse unsigned requests, public reads and ingest included"},
    )


@dataclass(frozen=True)
class SecurityConfig:
    """A node's signature window and token buckets (per verified hotkey, else per IP)."""

    rate_limits: bool = field(default=True, metadata={"help": "apply the rate limits at all"})
    ingest_per_s: float = field(default=200.0, metadata={"help": "records ingested per second"})
    ingest_burst: float = field(default=2_000.0, metadata={"help": "records ingested at once"})
    query_per_s: float = field(default=50.0, metadata={"help": "reads per second"})
    query_burst: float = field(default=200.0, metadata={"help": "reads at once"})
    challenge_per_s: float = field(default=20.0, metadata={"help": "challenges per second"})
    challenge_burst: float = field(default=100.0, metadata={"help": "challenges at once"})
    validator_factor: float = field(
        default=10.0, metadata={"help": "budget multiplier of a hotkey with a validator permit"}
    )
    gateway_hotkeys: str = field(
        default="",
        metadata={
            "help": "comma-separated hotkeys of known gateways, which serve many users: they get "
            "gateway_factor times the budgets"
        },
    )
    gateway_factor: float = field(
        default=20.0, metadata={"help": "budget multiplier of a known gateway's hotkey"}
    )
    signature_max_age_s: float = field(
        default=10.0, metadata={"help": "how old a signed request may be (its replay window)"}
    )
    max_tracked_callers: int = field(
        default=100_000, metadata={"help": "callers whose buckets are remembered"}
    )
    legacy_signature_window_s: float = field(
        default=60.0,
        metadata={"help": "how far an original client's namespace_timestamp_ms may be from now"},
    )
    unsigned_public_deletes: bool = field(
        default=False,
        metadata={
            "help": "let anyone delete a public record written without a signature, as the "
            "original network did (its clients cannot sign a delete); off: such records "
            "are permanent"
        },
    )
    audit_max_rows: int = field(
        default=100_000,
        metadata={
            "help": "entries the audit log of writes, deletes and grant changes keeps (the "
            "newest; owners read theirs with GET /audit)"
        },
    )


@dataclass(frozen=True)
class ChainParams:
    """A LocalChain subnet's hyperparameters, fixed when it is created."""

    block_time_s: float = field(default=12.0, metadata={"help": "seconds per block"})
    tempo: int = field(default=360, metadata={"help": "blocks between two consensus epochs"})
    axon_ttl_blocks: int = field(
        default=100,
        metadata={
            "help": "kept with the subnet for files and scripts of earlier versions; routing no "
            "longer uses it (miners announce once and are probed)"
        },
    )
    max_uids: int = field(default=256, metadata={"help": "neurons a subnet holds"})
    min_validator_stake: float = field(
        default=1_000.0, metadata={"help": "stake that earns a validator permit"}
    )
    emission_per_block: float = field(
        default=1.0, metadata={"help": "emission shared by the miners each block"}
    )


@dataclass(frozen=True)
class SubtensorConfig:
    """How Engram talks to Bittensor's subtensor (``finney``, ``test``, ``local``, ``ws://…``)."""

    subtensor_timeout_s: float = field(
        default=15.0,
        metadata={"help": "longest wait for one chain read (block, metagraph, hyperparameters)"},
    )
    subtensor_extrinsic_timeout_s: float = field(
        default=60.0,
        metadata={"help": "longest wait for one signed write (weights, axon, registration)"},
    )
    subtensor_retries: int = field(
        default=2, metadata={"help": "retries of a read or write the connection failed"}
    )
    subtensor_backoff_s: float = field(
        default=1.0, metadata={"help": "first retry delay, doubled each try"}
    )


PROBE_TIMEOUT_S = 3.0  # a miner's /health (and /stats) in `engram status --live` and from_subnet
PROBE_TOP_N = 5  # miners from_subnet checks, best incentive first, as the original SDK did


@dataclass(frozen=True)
class NetworkConfig:
    """How a client reaches the whole network: routing, replication and scatter-gather."""

    chain: str = field(
        default_factory=default_chain,
        metadata={"help": "chain: local:PATH, or Bittensor's finney, test, local or ws://…"},
    )
    netuid: int = field(default=1, metadata={"help": "subnet"})
    replicas: int = field(default=3, metadata={"help": "miners that hold each CID (R)"})
    write_quorum: int = field(default=2, metadata={"help": "acknowledgements a write needs"})
    read_deadline_s: float = field(
        default=3.0, metadata={"help": "how long a read waits for the slowest miner"}
    )
    write_timeout_s: float = field(default=30.0, metadata={"help": "per-replica write timeout"})
    metagraph_ttl_s: float = field(
        default=5.0, metadata={"help": "how long a metagraph snapshot is reused"}
    )
    probe_interval_s: float = _probe_interval_s()
    probe_timeout_s: float = _probe_timeout_s()


@dataclass(frozen=True)
class ValidatorConfig:
    """The validator: its ground truth, cadences and scoring."""

    chain: str = field(
        default_factory=default_chain,
        metadata={"help": "chain: local:PATH, or Bittensor's finney, test, local or ws://…"},
    )
    netuid: int = field(default=1, metadata={"help": "subnet to validate"})
    wallet: str = field(
        default="default/default", metadata={"help": "wallet as NAME/HOTKEY (Bittensor layout)"}
    )
    wallet_path: Path = field(
        default_factory=default_wallet_path, metadata={"help": "folder holding the wallets"}
    )
    home: Path = field(default_factory=engram_home, metadata={"help": "data directory"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    corpus_size: int = field(default=256, metadata={"help": "ground-truth records it writes"})
    queries_per_miner: int = field(default=8, metadata={"help": "recall queries per round"})
    challenges_per_miner: int = field(
        default=5, metadata={"help": "HMAC challenges per miner per challenge round"}
    )
    audits_per_miner: int = field(
        default=2, metadata={"help": "inventory audits per miner per challenge round"}
    )
    score_interval_s: float = field(default=120.0, metadata={"help": "scoring round cadence"})
    challenge_interval_s: float = field(default=300.0, metadata={"help": "challenge round cadence"})
    weights_interval_s: float = field(default=600.0, metadata={"help": "set_weights cadence"})
    repair_interval_s: float = field(default=300.0, metadata={"help": "replica repair cadence"})
    request_timeout_s: float = field(
        default=2.0, metadata={"help": "deadline of one query to one miner"}
    )
    challenge_deadline_s: float = field(
        default=2.0, metadata={"help": "how long a miner has to answer a challenge"}
    )
    chain_retry_s: float = field(
        default=12.0,
        metadata={
            "help": "how soon weights the unreachable chain could not take are tried again, so "
            "they are set soon after it returns"
        },
    )
    probe_interval_s: float = _probe_interval_s()
    probe_timeout_s: float = _probe_timeout_s()
    ema_alpha: float = field(default=0.1, metadata={"help": "weight of a new score in the EMA"})
    proof_window: int = field(
        default=50, metadata={"help": "challenges per miner the proof rate is taken over"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address of the status API"})
    port: int = field(
        default=8092, metadata={"help": "TCP port of the status API (/api/scores)", **_PORT}
    )


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway: the miner protocol in front of the whole network."""

    host: str = field(default="0.0.0.0", metadata={"help": "address to listen on"})
    port: int = field(default=8090, metadata={"help": "TCP port", **_PORT})
    chain: str = field(
        default_factory=default_chain,
        metadata={"help": "chain: local:PATH, or Bittensor's finney, test, local or ws://…"},
    )
    netuid: int = field(default=1, metadata={"help": "subnet"})
    home: Path = field(default_factory=engram_home, metadata={"help": "data directory"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    validator_url: str | None = field(
        default=None, metadata={"help": "a validator's HTTP address, for scores in /api/network"}
    )
    max_upload_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata={"help": "bytes of one file (PDF, text, Markdown) uploaded in the web playground"},
    )
    worker_threads: int = field(
        default=32, metadata={"help": "requests served at once (each mostly waits on miners)"}
    )
    wallet: str | None = field(
        default=None,
        metadata={
            "help": "wallet as NAME/HOTKEY: its hotkey signs the gateway's own calls to miners "
            "(so they budget it as one known caller) and acts for API keys; none: calls go "
            "unsigned and API keys are off"
        },
    )
    wallet_path: Path = field(
        default_factory=default_wallet_path, metadata={"help": "folder holding the wallets"}
    )
    max_in_flight: int = field(
        default=256,
        metadata={
            "help": "requests handled at once; more are answered 503 with Retry-After at once "
            "rather than queued until their signatures are too old to relay"
        },
    )


_ENV_PREFIX = "ENGRAM_"
T = TypeVar("T")


def _coerce(value: str, typ: Any, name: str, problems: list[str]) -> Any:
    try:
        if typ in (int, "int"):
            return int(value)
        if typ in (float, "float"):
            return float(value)
        if typ in (bool, "bool"):
            return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[
                value.strip().lower()
            ]
        if typ in (Path, "Path"):
            return Path(value).expanduser()
        return value
    except (ValueError, KeyError):
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
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        low, high = f.metadata.get("range", (None, None))
        value = values.get(f.name)
        if low is not None and value is not None and not low <= value <= high:
            problems.append(f"{f.name} {value} is out of range: use {low} to {high}")
    if problems:
        raise InvalidRequestError("invalid configuration: " + "; ".join(problems))
    return cls(**values)
