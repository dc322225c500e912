import math

import numpy as np
import pytest

from engram.cid import generate_cid, is_valid_cid, metadata_bytes, parse_cid, verify_cid
from engram.errors import (
    CIDMismatchError,
    DimensionMismatchError,
    InvalidCIDError,
    InvalidRequestError,
)

TEST_VECTOR_CID = "v1::7d3481c3bb959f07141a67d7cb1de4f3068625c45b681daf7034d6ba1a12eca1"


def test_cid_design_test_vector() -> None:
    assert generate_cid([0.1, 0.2, 0.3]) == TEST_VECTOR_CID
    assert generate_cid(np.array([0.1, 0.2, 0.3], dtype=np.float64), {}, "v1") == TEST_VECTOR_CID


def test_cid_depends_on_metadata_key_order_not_at_all() -> None:
    assert generate_cid([1.0], {"a": 1, "b": 2}) == generate_cid([1.0], {"b": 2, "a": 1})
    assert generate_cid([1.0], {"a": 1}) != generate_cid([1.0], {"a": 2})
    assert generate_cid([1.0], model_version="v2") != generate_cid([1.0])


def test_cid_covers_every_byte_of_text() -> None:
    base = generate_cid([0.1, 0.2, 0.3], text="hello world")
    assert base != TEST_VECTOR_CID
    assert generate_cid([0.1, 0.2, 0.3], text="hello worle") != base
    assert generate_cid([0.1, 0.2, 0.3], text="") == TEST_VECTOR_CID


def test_cid_text_cannot_be_confused_with_metadata() -> None:
    # Text is appended after a NUL byte that canonical JSON never contains.
    assert b"\x00" not in metadata_bytes({"k": "a\x00b"})
    assert generate_cid([1.0], {"k": "x"}) != generate_cid([1.0], text='{"k":"x"}')


@pytest.mark.parametrize("bad", [[float("nan")], [math.inf, 1.0], [1e39], [], [[1.0, 2.0]]])
def test_cid_rejects_bad_embeddings(bad: list) -> None:
    with pytest.raises(InvalidRequestError):
        generate_cid(bad)


def test_cid_rejects_wrong_dimension() -> None:
    with pytest.raises(DimensionMismatchError, match="expected 384"):
        generate_cid([0.1, 0.2], dim=384)


@pytest.mark.parametrize(
    "metadata",
    [
        {"x": float("nan")},
        {"x": {1, 2}},
        {"x": b"bytes"},
        {"x": (1, 2)},
        {1: "non-string key"},
        {"model_version": "v9"},
        ["not", "an", "object"],
    ],
)
def test_cid_rejects_metadata_that_is_not_plain_json(metadata: object) -> None:
    with pytest.raises(InvalidRequestError):
        generate_cid([1.0], metadata)  # type: ignore[arg-type]


def test_cid_parse_and_validate() -> None:
    parts = parse_cid(TEST_VECTOR_CID)
    assert parts.version == "v1" and len(parts.digest_hex) == 64
    assert is_valid_cid(TEST_VECTOR_CID)
    for bad in ["", "v1::", "v1::" + "g" * 64, TEST_VECTOR_CID.upper(), TEST_VECTOR_CID + "0", 5]:
        assert not is_valid_cid(bad)
    with pytest.raises(InvalidCIDError, match="64 lowercase hex"):
        parse_cid("nope")


def test_cid_verify_detects_tampering() -> None:
    cid = generate_cid([0.5, 0.25], {"a": 1}, text="t")
    verify_cid(cid, [0.5, 0.25], {"a": 1}, text="t")
    with pytest.raises(CIDMismatchError):
        verify_cid(cid, [0.5, 0.25], {"a": 1}, text="T")
