import base64
import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engram.config import Limits
from engram.errors import InvalidRequestError, SealError
from engram.records import make_record
from engram.security.sealing import SEALED_KEY, SealKey, add_noise, is_sealed, seal, unseal

DIM = 384
NS = "team:alpha"
TEXT = "Meeting notes — Zürich, 3 p.m.: budget is 1.2 M€ 🚀"
META: dict[str, Any] = {
    "topic": "finance",
    "year": 2024,
    "author": {"name": "Łucja", "tags": ["draft", "q3"], "score": 0.75},
    "secret": "the code is 0451",
}
CLEAR = ("topic", "year")


@pytest.fixture(scope="module")
def key() -> SealKey:
    return SealKey.generate()


@pytest.fixture(scope="module")
def embedding() -> np.ndarray:
    vec = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)
    return vec / np.linalg.norm(vec)


@pytest.fixture
def sealed(key: SealKey, embedding: np.ndarray) -> dict[str, Any]:
    text, meta = seal(
        TEXT, META, namespace=NS, embedding=embedding, public_key=key.public, clear_fields=CLEAR
    )
    assert text is None
    return meta


def _open(meta: dict[str, Any], key: SealKey, embedding: np.ndarray, namespace: str = NS) -> Any:
    return unseal(None, meta, namespace=namespace, embedding=embedding, key=key)


def _flip(meta: dict[str, Any], part: str) -> dict[str, Any]:
    raw = bytearray(base64.b64decode(meta[SEALED_KEY][part]))
    raw[len(raw) // 2] ^= 0x01
    envelope = {**meta[SEALED_KEY], part: base64.b64encode(bytes(raw)).decode()}
    return {**meta, SEALED_KEY: envelope}


def test_sealing_round_trip_restores_text_and_nested_metadata(
    sealed: dict[str, Any], key: SealKey, embedding: np.ndarray
) -> None:
    assert _open(sealed, key, embedding) == (TEXT, META)


def test_sealing_survives_the_wire_and_gets_a_cid(
    sealed: dict[str, Any], key: SealKey, embedding: np.ndarray
) -> None:
    wire = json.loads(json.dumps(sealed))
    record = make_record(embedding, wire, None, NS, dim=DIM, limits=Limits())
    assert record.text is None
    assert _open(record.metadata, key, record.embedding) == (TEXT, META)


def test_sealing_keeps_clear_fields_unchanged_and_hides_the_rest(sealed: dict[str, Any]) -> None:
    assert set(sealed) == {"topic", "year", SEALED_KEY}
    assert sealed["topic"] == "finance" and sealed["year"] == 2024
    assert set(sealed[SEALED_KEY]) == {"v", "epk", "nonce", "ct"}
    assert sealed[SEALED_KEY]["v"] == 1
    assert is_sealed(sealed) and not is_sealed(META) and not is_sealed(None)


def test_sealing_ignores_clear_fields_that_are_absent(key: SealKey, embedding: np.ndarray) -> None:
    _, meta = seal(
        TEXT, META, namespace=NS, embedding=embedding, public_key=key.public, clear_fields=["nope"]
    )
    assert set(meta) == {SEALED_KEY}
    assert _open(meta, key, embedding) == (TEXT, META)


def test_sealing_ciphertext_contains_no_plaintext(sealed: dict[str, Any]) -> None:
    stored = json.dumps(sealed, ensure_ascii=False).encode()
    ct = base64.b64decode(sealed[SEALED_KEY]["ct"])
    for secret in ("Meeting notes", "Zürich", "0451", "Łucja", "draft", "secret", "author"):
        assert secret.encode() not in stored
        assert secret.encode() not in ct


def test_sealing_twice_gives_different_envelopes(key: SealKey, embedding: np.ndarray) -> None:
    a = seal(TEXT, META, namespace=NS, embedding=embedding, public_key=key.public)[1][SEALED_KEY]
    b = seal(TEXT, META, namespace=NS, embedding=embedding, public_key=key.public)[1][SEALED_KEY]
    assert a["epk"] != b["epk"] and a["nonce"] != b["nonce"] and a["ct"] != b["ct"]


def test_unsealing_with_another_key_fails(sealed: dict[str, Any], embedding: np.ndarray) -> None:
    with pytest.raises(SealError, match="private seal key"):
        _open(sealed, SealKey.generate(), embedding)


@pytest.mark.parametrize("part", ["ct", "nonce", "epk"])
def test_unsealing_a_tampered_envelope_fails(
    sealed: dict[str, Any], key: SealKey, embedding: np.ndarray, part: str
) -> None:
    with pytest.raises(SealError, match="altered"):
        _open(_flip(sealed, part), key, embedding)


def test_unsealing_in_another_namespace_fails(
    sealed: dict[str, Any], key: SealKey, embedding: np.ndarray
) -> None:
    with pytest.raises(SealError, match="another namespace"):
        _open(sealed, key, embedding, namespace="team:beta")


def test_unsealing_with_another_embedding_fails(
    sealed: dict[str, Any], key: SealKey, embedding: np.ndarray
) -> None:
    other = embedding.copy()
    other[0] = np.nextafter(other[0], np.float32(2))
    with pytest.raises(SealError, match="embedding"):
        _open(sealed, key, other)


@pytest.mark.parametrize(
    "change",
    [{"topic": "public"}, {"year": 2025}, {"extra": 1}],
    ids=["edited", "edited-number", "added"],
)
def test_unsealing_after_a_clear_field_changed_fails(
    sealed: dict[str, Any], key: SealKey, embedding: np.ndarray, change: dict[str, Any]
) -> None:
    with pytest.raises(SealError, match="altered"):
        _open({**sealed, **change}, key, embedding)
    dropped = {k: v for k, v in sealed.items() if k != "topic"}
    with pytest.raises(SealError, match="altered"):
        _open(dropped, key, embedding)


@pytest.mark.parametrize(
    "envelope",
    [
        "not an object",
        {"v": 1, "epk": "AAAA", "nonce": "AAAA"},
        {"v": 1, "epk": "%%%", "nonce": "AAAA", "ct": "AAAA"},
        {"v": 1, "epk": "AAAA", "nonce": "AAAA", "ct": "AAAA"},
    ],
    ids=["not-object", "missing-ct", "not-base64", "wrong-lengths"],
)
def test_unsealing_a_malformed_envelope_fails(
    key: SealKey, embedding: np.ndarray, envelope: Any
) -> None:
    with pytest.raises(SealError, match="damaged"):
        _open({SEALED_KEY: envelope}, key, embedding)


def test_unsealing_a_newer_envelope_version_asks_for_an_upgrade(
    sealed: dict[str, Any], key: SealKey, embedding: np.ndarray
) -> None:
    newer = {**sealed, SEALED_KEY: {**sealed[SEALED_KEY], "v": 2}}
    with pytest.raises(SealError, match="upgrade"):
        _open(newer, key, embedding)


def test_unsealing_a_sealed_record_with_clear_text_fails(
    sealed: dict[str, Any], key: SealKey, embedding: np.ndarray
) -> None:
    with pytest.raises(SealError, match="clear text"):
        unseal("injected", sealed, namespace=NS, embedding=embedding, key=key)


def test_unsealing_passes_plain_records_through(key: SealKey, embedding: np.ndarray) -> None:
    assert unseal(TEXT, META, namespace=NS, embedding=embedding, key=key) == (TEXT, META)
    assert unseal(None, None, namespace=NS, embedding=embedding, key=key) == (None, {})


def test_sealing_without_text_or_metadata_round_trips(key: SealKey, embedding: np.ndarray) -> None:
    text, meta = seal(None, None, namespace=NS, embedding=embedding, public_key=key.public)
    assert text is None and set(meta) == {SEALED_KEY}
    assert _open(meta, key, embedding) == (None, {})


def test_sealing_rejects_the_reserved_key(key: SealKey, embedding: np.ndarray) -> None:
    with pytest.raises(InvalidRequestError, match="'_sealed' is reserved"):
        seal("t", {SEALED_KEY: 1}, namespace=NS, embedding=embedding, public_key=key.public)


def test_sealing_rejects_bad_inputs(key: SealKey, embedding: np.ndarray) -> None:
    with pytest.raises(SealError, match="public seal key"):
        seal("t", {}, namespace=NS, embedding=embedding, public_key=b"short")
    with pytest.raises(SealError, match="public seal key"):  # a low-order point
        seal("t", {}, namespace=NS, embedding=embedding, public_key=bytes(32))
    with pytest.raises(InvalidRequestError, match="not one string"):
        seal(
            "t",
            {"a": 1},
            namespace=NS,
            embedding=embedding,
            public_key=key.public,
            clear_fields="a",
        )
    with pytest.raises(InvalidRequestError, match="finite"):
        seal("t", {"x": float("nan")}, namespace=NS, embedding=embedding, public_key=key.public)


def test_seal_key_save_and_load_round_trip_with_owner_only_mode(
    key: SealKey, tmp_path: Path
) -> None:
    path = tmp_path / "ns.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SealKey.load(path).to_bytes() == key.to_bytes()
    assert SealKey.from_bytes(key.to_bytes()).public == key.public
    with pytest.raises(FileExistsError):
        SealKey.generate().save(path)


def test_seal_key_never_shows_its_private_bytes(key: SealKey, tmp_path: Path) -> None:
    assert key.to_bytes().hex() not in repr(key)
    path = tmp_path / "bad.key"
    path.write_text("zz" * 32)
    with pytest.raises(SealError, match="64 hex characters") as info:
        SealKey.load(path)
    assert "zz" not in str(info.value)
    with pytest.raises(SealError, match="32 raw bytes"):
        SealKey.from_bytes(b"\x01" * 31)


def test_add_noise_returns_unit_vectors(embedding: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    for sigma in (0.05, 0.5, 2.0):
        noisy = add_noise(embedding, sigma, rng)
        assert noisy.dtype == np.float32 and noisy.shape == (DIM,)
        assert abs(float(np.linalg.norm(noisy)) - 1.0) < 1e-6
    assert abs(float(np.linalg.norm(add_noise(3 * embedding, 0.1))) - 1.0) < 1e-6


def test_add_noise_cosine_follows_sigma(embedding: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    for sigma in (0.2, 1.0):
        cos = np.mean([float(add_noise(embedding, sigma, rng) @ embedding) for _ in range(50)])
        assert cos == pytest.approx(1 / np.sqrt(1 + sigma**2), abs=0.02)


def test_add_noise_with_zero_sigma_is_identity(embedding: np.ndarray) -> None:
    np.testing.assert_allclose(add_noise(embedding, 0.0), embedding, rtol=0, atol=1e-7)


def test_add_noise_is_deterministic_with_a_seeded_rng(embedding: np.ndarray) -> None:
    a = add_noise(embedding, 0.3, np.random.default_rng(42))
    b = add_noise(embedding, 0.3, np.random.default_rng(42))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, add_noise(embedding, 0.3, np.random.default_rng(43)))


def test_add_noise_rejects_bad_inputs(embedding: np.ndarray) -> None:
    for sigma in (-0.1, float("nan"), float("inf"), "0.1"):
        with pytest.raises(InvalidRequestError, match="sigma"):
            add_noise(embedding, sigma)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="all zeros"):
        add_noise(np.zeros(DIM), 0.1)
