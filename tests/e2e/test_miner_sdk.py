"""The SDK (both twins) against a real miner process, as a builder would use it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from bittensor.sp_core import Keypair

from engram import AsyncEngramClient, EngramClient
from engram.errors import DimensionMismatchError, NotFoundError
from tests.conftest import unit_vectors
from tests.e2e.conftest import MinerProcess

ALICE = Keypair.create_from_uri("//Alice")  # signs, so its records are its own to delete

FACTS = [
    ("The Eiffel Tower is in Paris.", {"topic": "travel"}),
    ("Photosynthesis turns sunlight into chemical energy in plants.", {"topic": "biology"}),
    ("The stock market fell sharply after the rate decision.", {"topic": "finance"}),
]


def test_sdk_sync_client_drives_the_real_miner(miner: MinerProcess, tmp_path: Path) -> None:
    with EngramClient(miner.url, namespace="e2e-sdk-sync", keypair=ALICE) as client:
        assert client.health()["ready"] is True
        cids = [client.ingest(text, meta) for text, meta in FACTS]
        vec_cid = client.ingest_embedding(unit_vectors(1, seed=3)[0], {"kind": "vector"})
        hits = client.query("how do plants make energy from light?", top_k=2)
        assert hits[0].cid == cids[1] and hits[0]["text"] == FACTS[1][0]
        assert client.query_by_vector(unit_vectors(1, seed=3)[0], top_k=1)[0].cid == vec_cid
        only = client.query("Paris landmark", top_k=5, filter={"topic": "finance"})
        assert [h.cid for h in only] == [cids[2]]
        record = client.get(cids[0])
        assert record is not None and record.text == FACTS[0][0] and len(record.embedding) == 384
        assert client.count() == 4 and len(client.list(limit=10)) == 4

        corpus = tmp_path / "corpus.jsonl"
        lines = [json.dumps({"text": f"note number {i}"}) for i in range(5)] + ["{not json"]
        corpus.write_text("\n".join(lines) + "\n")
        report = client.batch_ingest_file(corpus, progress=False)
        assert report.ingested == 5 and report.errors and report.errors[0][0] == 6

        with pytest.raises(DimensionMismatchError, match="384"):
            client.ingest_embedding([0.1, 0.2])
        client.delete(vec_cid)
        assert client.get(vec_cid) is None
        with pytest.raises(NotFoundError):
            client.delete(vec_cid)


def test_sdk_async_client_drives_the_real_miner(miner: MinerProcess) -> None:
    async def scenario() -> None:
        async with AsyncEngramClient(miner.url, namespace="e2e-sdk-async", keypair=ALICE) as client:
            result = await client.batch_ingest(
                [{"text": t, "metadata": m} for t, m in FACTS] + [{"embedding": [1.0]}]
            )
            assert [i for i, _ in result.failed] == [3] and all(result.cids[:3])
            hits, count = await asyncio.gather(
                client.query("Where is the Eiffel Tower?", top_k=1), client.count()
            )
            assert hits[0].cid == result.cids[0] and count == 3
            assert (await client.stats())["records"] >= 3

    asyncio.run(scenario())
