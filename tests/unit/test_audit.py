"""The audit's verdicts on what a replica answered (no sockets)."""

from __future__ import annotations

import dataclasses

import httpx
import numpy as np

from engram.chain.base import Neuron
from engram.config import EMBEDDING_DIM, Limits
from engram.errors import InvalidRequestError, UnavailableError, UpstreamTimeoutError
from engram.network.audit import (
    MISMATCH,
    MISSING,
    REFUSED,
    UNREACHABLE,
    VERIFIED,
    CIDAudit,
    ReplicaAudit,
    judge,
)
from engram.records import Record, make_record
from tests.conftest import unit_vectors


def _record(text: str = "kept byte for byte", metadata: dict | None = None) -> Record:
    vector = unit_vectors(1, EMBEDDING_DIM, seed=7)[0]
    return make_record(vector, metadata or {"k": 1}, text, dim=EMBEDDING_DIM, limits=Limits())


def test_audit_judge_verifies_an_intact_record() -> None:
    record = _record()
    assert judge(record.cid, record)[0] == VERIFIED


def test_audit_judge_catches_a_tampered_record() -> None:
    record = _record()
    for tampered in (
        dataclasses.replace(record, text="kept byte for bytE"),
        dataclasses.replace(record, metadata={"k": 2}),
        dataclasses.replace(record, embedding=np.roll(record.embedding, 1)),
        dataclasses.replace(record, model_version="v2"),
    ):
        verdict, detail = judge(record.cid, tampered)
        assert verdict == MISMATCH and record.cid in detail


def test_audit_judge_names_missing_refused_and_unreachable() -> None:
    cid = _record().cid
    assert judge(cid, None)[0] == MISSING
    assert judge(cid, InvalidRequestError("bad"))[0] == REFUSED
    assert judge(cid, UnavailableError("down")) == (UNREACHABLE, "down")
    assert judge(cid, UpstreamTimeoutError("slow"))[0] == UNREACHABLE
    assert judge(cid, httpx.ConnectError("refused"))[0] == UNREACHABLE


def test_audit_health_follows_the_verified_count() -> None:
    def audit(*verdicts: str) -> CIDAudit:
        node = Neuron(0, "hk", "ck", 0.0, False)
        return CIDAudit(
            "v1::" + "0" * 64,
            tuple(
                ReplicaAudit(i, node.uid, node.hotkey, None, v, None)
                for i, v in enumerate(verdicts)
            ),
        )

    assert audit(VERIFIED, VERIFIED, VERIFIED).health == "healthy"
    assert audit(VERIFIED, MISSING, MISMATCH).health == "degraded"
    assert audit(MISSING, UNREACHABLE, MISMATCH).health == "lost"
    assert audit().health == "lost"
