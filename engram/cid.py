"""Content identifiers (CID v1): the address of a record is the hash of its bytes.

::

    vec_bytes  = little-endian float32 bytes of the embedding
    meta_bytes = UTF-8 of json.dumps({"model_version": v, **metadata},
                                     sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    cid        = "v1::" + sha256(vec_bytes + meta_bytes [+ b"\\x00" + UTF-8 text]).hexdigest()

A record without text gets exactly the CID of the original Engram network. A
record with text appends a NUL byte and the text: canonical JSON never contains
a raw NUL, so the text cannot be confused with the metadata, and changing one
byte of the text changes the CID.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from engram.config import MODEL_VERSION
from engram.errors import (
    CIDMismatchError,
    DimensionMismatchError,
    InvalidCIDError,
    InvalidRequestError,
)

RESERVED_METADATA_KEYS = frozenset({"model_version"})
_CID_RE = re.compile(r"^(v[0-9]+)::([0-9a-f]{64})$")
_TEXT_SEPARATOR = b"\x00"


class CIDParts(NamedTuple):
    version: str
    digest_hex: str


def vector_bytes(embedding: Sequence[float] | np.ndarray, dim: int | None = None) -> bytes:
    """Little-endian float32 bytes of ``embedding``; rejects NaN/inf, empties and wrong sizes."""
    try:
        if isinstance(embedding, np.ndarray) and embedding.dtype == "<f4":
            arr = embedding
        else:
            with np.errstate(over="ignore"):  # overflow becomes inf, rejected below
                arr = np.asarray(embedding, dtype="<f4")
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError("embedding must be a flat list of numbers") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidRequestError(
            f"embedding must be a non-empty flat list of numbers, got shape {arr.shape}"
        )
    if dim is not None and arr.size != dim:
        raise DimensionMismatchError(f"embedding has {arr.size} dimensions, expected {dim}")
    if not np.isfinite(arr).all():
        raise InvalidRequestError(
            "embedding contains NaN or infinite values (or overflows float32)"
        )
    return arr.tobytes()


_SCALARS = (str, bool, int, type(None))


def _check_plain_json(value: Any, path: str) -> int:
    """Raise unless ``value`` is plain JSON; return its nesting depth (a scalar is 0)."""
    if isinstance(value, _SCALARS):
        return 0
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(f"metadata{path} is {value}: only finite numbers are JSON")
        return 0
    if isinstance(value, list):
        return 1 + max(
            (_check_plain_json(item, f"{path}[{i}]") for i, item in enumerate(value)), default=0
        )
    if isinstance(value, Mapping):
        depth = 0
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRequestError(f"metadata{path} has a non-string key {key!r}")
            if not isinstance(item, _SCALARS):
                depth = max(depth, _check_plain_json(item, f"{path}.{key}"))
        return 1 + depth
    raise InvalidRequestError(
        f"metadata{path} is a {type(value).__name__}; only str, int, float, bool, null, "
        "list and object are allowed"
    )


def metadata_bytes(
    metadata: Mapping[str, Any] | None,
    model_version: str = MODEL_VERSION,
    max_depth: int | None = None,
) -> bytes:
    """The canonical metadata JSON, with ``model_version`` folded in."""
    metadata = metadata or {}
    if not isinstance(metadata, Mapping):
        raise InvalidRequestError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    depth = _check_plain_json(metadata, "")
    if max_depth is not None and depth > max_depth:
        raise InvalidRequestError(
            f"metadata is nested {depth} levels deep, the limit is {max_depth}"
        )
    reserved = RESERVED_METADATA_KEYS.intersection(metadata)
    if reserved:
        raise InvalidRequestError(f"metadata key {sorted(reserved)[0]!r} is reserved")
    if not isinstance(model_version, str) or not model_version:
        raise InvalidRequestError("model_version must be a non-empty string")
    doc = {"model_version": model_version, **metadata}
    return json.dumps(doc, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()


def record_bytes(
    embedding: Sequence[float] | np.ndarray,
    metadata: Mapping[str, Any] | None = None,
    model_version: str = MODEL_VERSION,
    text: str | None = None,
    dim: int | None = None,
) -> bytes:
    """The canonical bytes of a record: what its CID hashes and what proofs are computed over."""
    return vector_bytes(embedding, dim) + metadata_bytes(metadata, model_version) + text_bytes(text)


def text_bytes(text: str | None) -> bytes:
    """The text's share of the canonical bytes: nothing for no (or empty) text."""
    if not text:
        return b""
    if not isinstance(text, str):
        raise InvalidRequestError(f"text must be a string, got {type(text).__name__}")
    try:
        return _TEXT_SEPARATOR + text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError("text is not valid Unicode (lone surrogate?)") from exc


def cid_of_bytes(canonical: bytes, version: str = "v1") -> str:
    return f"{version}::{hashlib.sha256(canonical).hexdigest()}"


def generate_cid(
    embedding: Sequence[float] | np.ndarray,
    metadata: Mapping[str, Any] | None = None,
    model_version: str = MODEL_VERSION,
    text: str | None = None,
    dim: int | None = None,
) -> str:
    """The CID v1 of a record (see the module docstring for the exact bytes)."""
    return cid_of_bytes(record_bytes(embedding, metadata, model_version, text, dim))


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_cid(cid: str) -> CIDParts:
    """Split a CID into version and digest, or raise :class:`InvalidCIDError`."""
    match = _CID_RE.match(cid) if isinstance(cid, str) else None
    if match is None:
        raise InvalidCIDError(
            f"{_short(cid)} is not a CID: expected 'v1::' followed by 64 lowercase hex characters"
        )
    return CIDParts(match.group(1), match.group(2))


def is_valid_cid(cid: object) -> bool:
    return isinstance(cid, str) and _CID_RE.match(cid) is not None


def verify_cid(
    cid: str,
    embedding: Sequence[float] | np.ndarray,
    metadata: Mapping[str, Any] | None = None,
    model_version: str = MODEL_VERSION,
    text: str | None = None,
) -> None:
    """Raise :class:`CIDMismatchError` unless the record hashes to ``cid`` (an audit)."""
    parse_cid(cid)
    actual = generate_cid(embedding, metadata, model_version, text)
    if actual != cid:
        raise CIDMismatchError(f"record hashes to {actual}, not {cid}")
