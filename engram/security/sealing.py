"""Client-side sealing of private records: miners store ciphertext they cannot read.

A namespace key is an X25519 key pair. Writers need only its public half, so a
write-only grantee can seal records it cannot open; readers need the private
half, a :class:`SealKey`. Each record is sealed to the namespace public key
with a fresh ephemeral key::

    shared    = X25519(ephemeral private, namespace public)
    key       = HKDF-SHA256(shared, salt = ephemeral public || namespace public,
                            info = b"engram/seal/v1", length = 32)
    plaintext = canonical JSON of {"text": text, "metadata": {fields not kept clear}}
    aad       = b"engram/seal/v1/aad\\x00" + u32 length of namespace + namespace
                + sha256(float32 embedding bytes) + canonical JSON of the clear fields
    ct        = AES-256-GCM(key, nonce = 12 random bytes, plaintext, aad)

The stored record has no text; its metadata is the clear fields (still
filterable) plus ``"_sealed": {"v": 1, "epk": b64, "nonce": b64, "ct": b64}``.
The record's CID covers that envelope, so its address pins the ciphertext, and
the AAD ties the ciphertext to everything else the CID covers: a ciphertext
copied to another namespace or embedding, or a record whose clear fields were
edited, does not open.

What sealing does not hide: the embedding (search needs it, and it says a lot
about the text; :func:`add_noise` blurs it at a price in recall, see
``bench/noise_bench.py``), the clear fields, the namespace, and the rough size
of the sealed part. Nor does it say who wrote a record: anyone holding the
public key can seal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import numbers
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engram.cid import metadata_bytes, vector_bytes
from engram.errors import InvalidRequestError, SealError

SEALED_KEY = "_sealed"
"""The metadata key that holds the envelope of a sealed record."""
ENVELOPE_VERSION = 1

_HKDF_INFO = b"engram/seal/v1"
_AAD_LABEL = b"engram/seal/v1/aad\x00"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16

_OPEN_FAILED = (
    "cannot open the sealed record: check that the key is this namespace's private seal key; "
    "if it is, the record was altered after sealing or copied from another namespace or "
    "embedding, so do not trust it"
)
_DAMAGED = "the sealed envelope is damaged ({}): the record was altered after sealing"


class SealKey:
    """The private half of a namespace key: it opens what was sealed to :attr:`public`."""

    __slots__ = ("_private",)

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> SealKey:
        """A new random namespace key; hand out :attr:`public` to writers, keep this to read."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, data: bytes) -> SealKey:
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) != _KEY_BYTES:
            raise SealError(f"a seal key is {_KEY_BYTES} raw bytes; got something else")
        return cls(X25519PrivateKey.from_private_bytes(bytes(data)))

    def to_bytes(self) -> bytes:
        """The 32 raw private bytes: whoever has them reads the namespace."""
        return self._private.private_bytes_raw()

    @property
    def public(self) -> bytes:
        """The 32 raw bytes of the public key: enough to seal, not to open."""
        return self._private.public_key().public_bytes_raw()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key as hex to a new file only its owner may read (mode 0600).

        An existing file is never overwritten (``FileExistsError``): losing a
        namespace key makes every record sealed to it unreadable.
        """
        path = Path(path).expanduser()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            os.fchmod(fd, 0o600)  # the umask may have taken the owner's bits too
            fh.write(self.to_bytes().hex() + "\n")
            fh.flush()
            os.fsync(fd)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> SealKey:
        """The key saved at ``path``, generated and saved there (0600) the first time."""
        try:
            return cls.load(path)
        except FileNotFoundError:
            key = cls.generate()
            key.save(path)
            return key

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SealKey:
        """Read a key written by :meth:`save`."""
        bad = SealError(
            f"{os.fspath(path)} is not a seal key file: expected {2 * _KEY_BYTES} hex characters"
        )
        try:
            raw = bytes.fromhex(Path(path).expanduser().read_bytes().decode("ascii").strip())
        except ValueError as exc:
            raise bad from exc
        if len(raw) != _KEY_BYTES:
            raise bad
        return cls.from_bytes(raw)

    def __repr__(self) -> str:
        return f"SealKey(public={self.public.hex()[:16]}...)"


def is_sealed(metadata: Mapping[str, Any] | None) -> bool:
    """Whether a stored record's metadata carries a sealed envelope."""
    return isinstance(metadata, Mapping) and SEALED_KEY in metadata


def seal(
    text: str | None,
    metadata: Mapping[str, Any] | None,
    *,
    namespace: str,
    embedding: Sequence[float] | np.ndarray,
    public_key: bytes,
    clear_fields: Collection[str] = (),
) -> tuple[None, dict[str, Any]]:
    """The ``(text, metadata)`` to store for a private record: text and hidden fields encrypted.

    ``embedding`` must be the vector that will be stored (after :func:`add_noise`,
    if used) and ``namespace`` the one it is stored in: both are bound to the
    ciphertext. Metadata fields named in ``clear_fields`` stay readable, so
    filters still work on them; names not in ``metadata`` are ignored. Empty
    text counts as no text, as everywhere in Engram.
    """
    if text is not None and not isinstance(text, str):
        raise InvalidRequestError(f"text must be a string or None, got {type(text).__name__}")
    meta = _user_metadata(metadata)
    if isinstance(clear_fields, str):
        raise InvalidRequestError(
            f"clear_fields is a collection of field names, not one string: write [{clear_fields!r}]"
        )
    keep = frozenset(clear_fields)
    clear = {k: v for k, v in meta.items() if k in keep}
    hidden = {k: v for k, v in meta.items() if k not in keep}
    aad = _aad(namespace, embedding, clear)
    recipient_bytes = _public_key_bytes(public_key)
    ephemeral = X25519PrivateKey.generate()
    epk = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_bytes))
    except ValueError as exc:
        raise SealError(
            "public_key is not a usable X25519 public key: use the namespace's public seal key"
        ) from exc
    nonce = os.urandom(_NONCE_BYTES)
    plaintext = _canonical({"text": text or None, "metadata": hidden})
    ct = AESGCM(_derive_key(shared, epk, recipient_bytes)).encrypt(nonce, plaintext, aad)
    envelope = {"v": ENVELOPE_VERSION, "epk": _b64(epk), "nonce": _b64(nonce), "ct": _b64(ct)}
    return None, {**clear, SEALED_KEY: envelope}


def unseal(
    text: str | None,
    metadata: Mapping[str, Any] | None,
    *,
    namespace: str,
    embedding: Sequence[float] | np.ndarray,
    key: SealKey,
) -> tuple[str | None, dict[str, Any]]:
    """The user's ``(text, metadata)`` of a stored record; records that are not sealed pass through.

    ``namespace`` and ``embedding`` are where the record was found: a
    ciphertext sealed for another namespace or vector does not open.
    """
    meta = dict(metadata or {})
    if SEALED_KEY not in meta:
        return text, meta
    if not isinstance(key, SealKey):
        raise TypeError("key must be a SealKey: the namespace's private key, e.g. SealKey.load()")
    envelope = meta.pop(SEALED_KEY)
    if text:
        raise SealError(_DAMAGED.format("a sealed record stores no clear text, this one has some"))
    epk, nonce, ct = _parse_envelope(envelope)
    aad = _aad(namespace, embedding, meta)
    try:
        shared = key._private.exchange(X25519PublicKey.from_public_bytes(epk))
        plaintext = AESGCM(_derive_key(shared, epk, key.public)).decrypt(nonce, ct, aad)
    except (ValueError, InvalidTag) as exc:
        raise SealError(_OPEN_FAILED) from exc
    hidden_text, hidden = _parse_plaintext(plaintext)
    clash = sorted(meta.keys() & hidden.keys())
    if clash:
        raise SealError(
            f"the sealed record holds field {clash[0]!r} both in clear and sealed: "
            "it was written by a faulty client"
        )
    return hidden_text, {**meta, **hidden}


def add_noise(
    embedding: Sequence[float] | np.ndarray,
    sigma: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The unit vector of ``embedding`` plus Gaussian noise of length about ``sigma``, renormalised.

    Each dimension gets noise of standard deviation ``sigma / sqrt(dim)``, so the
    noise vector is about ``sigma`` long whatever the dimension and the cosine to
    the clean vector is about ``1 / sqrt(1 + sigma**2)``. The result is float32
    and unit length; ``sigma = 0`` returns the input's unit vector.
    """
    if not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma < 0:
        raise InvalidRequestError(f"sigma must be a finite number >= 0, got {sigma!r}")
    vec = np.frombuffer(vector_bytes(embedding), dtype="<f4").astype(np.float64)
    norm = np.linalg.norm(vec)
    if norm == 0:
        raise InvalidRequestError("embedding is all zeros: it has no direction to add noise to")
    vec /= norm
    if sigma > 0:
        rng = rng if rng is not None else np.random.default_rng()
        vec += rng.normal(0.0, float(sigma) / math.sqrt(vec.size), vec.size)
        vec /= np.linalg.norm(vec)
    return vec.astype(np.float32)


def _user_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidRequestError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    if SEALED_KEY in metadata:
        raise InvalidRequestError(
            f"metadata key {SEALED_KEY!r} is reserved for the sealed envelope: rename it"
        )
    metadata_bytes(metadata)  # the same plain-JSON rules as any record, same messages
    return dict(metadata)


def _public_key_bytes(public_key: bytes) -> bytes:
    if not isinstance(public_key, bytes | bytearray | memoryview) or len(public_key) != _KEY_BYTES:
        raise SealError(
            f"public_key must be the {_KEY_BYTES} raw bytes of the namespace's public seal key "
            "(SealKey.public)"
        )
    return bytes(public_key)


def _canonical(value: Any) -> bytes:
    # Lone surrogates are legal in metadata (its canonical form escapes them), so
    # they pass through here too instead of failing to encode.
    doc = json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    return doc.encode("utf-8", "surrogatepass")


def _aad(
    namespace: str, embedding: Sequence[float] | np.ndarray, clear: Mapping[str, Any]
) -> bytes:
    """Everything the ciphertext is bound to besides itself."""
    if not isinstance(namespace, str) or not namespace:
        raise InvalidRequestError("namespace must be the name of the namespace the record is in")
    ns = namespace.encode("utf-8", "surrogatepass")
    return (
        _AAD_LABEL
        + len(ns).to_bytes(4, "big")
        + ns
        + hashlib.sha256(vector_bytes(embedding)).digest()
        + _canonical(clear)
    )


def _derive_key(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=epk + recipient, info=_HKDF_INFO)
    return hkdf.derive(shared)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_envelope(envelope: Any) -> tuple[bytes, bytes, bytes]:
    """(ephemeral public key, nonce, ciphertext) of a stored envelope, checked for shape."""
    if not isinstance(envelope, Mapping):
        raise SealError(_DAMAGED.format("it is not an object"))
    version = envelope.get("v")
    if version != ENVELOPE_VERSION:
        raise SealError(
            f"the record was sealed with envelope version {version!r}; this Engram opens "
            f"version {ENVELOPE_VERSION}: upgrade it, or the record was altered"
        )
    parts: list[bytes] = []
    for name in ("epk", "nonce", "ct"):
        value = envelope.get(name)
        if not isinstance(value, str):
            raise SealError(_DAMAGED.format(f"{name!r} is missing or not a string"))
        try:
            parts.append(base64.b64decode(value, validate=True))
        except ValueError as exc:
            raise SealError(_DAMAGED.format(f"{name!r} is not base64")) from exc
    epk, nonce, ct = parts
    if len(epk) != _KEY_BYTES or len(nonce) != _NONCE_BYTES or len(ct) < _TAG_BYTES:
        raise SealError(_DAMAGED.format("a part has the wrong length"))
    return epk, nonce, ct


def _parse_plaintext(plaintext: bytes) -> tuple[str | None, dict[str, Any]]:
    """The sealed text and fields, once the ciphertext opened (so its writer held the public key)."""
    faulty = "the sealed record opened but does not hold seal v1 contents: a faulty client wrote it"
    try:
        doc = json.loads(plaintext.decode("utf-8", "surrogatepass"))
    except ValueError as exc:
        raise SealError(faulty) from exc
    if (
        not isinstance(doc, dict)
        or doc.keys() != {"text", "metadata"}
        or not isinstance(doc["metadata"], dict)
        or not (doc["text"] is None or isinstance(doc["text"], str))
    ):
        raise SealError(faulty)
    return doc["text"], doc["metadata"]
