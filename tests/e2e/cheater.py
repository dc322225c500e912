"""A DELIBERATELY DISHONEST miner, for the test that the validator catches it.

It speaks the miner protocol over real HTTP but stores nothing real: for each
ingested record it computes the true CID and keeps only
``sha256(embedding bytes)``, the 32-byte digest a cheater hopes will pass a
storage proof. So it:

* acknowledges every write with the right CID (a write quorum counts it);
* answers queries with random CIDs it has seen, with random scores;
* answers HMAC challenges with the stored hash and a random "proof" (the HMAC
  is keyed by a fresh nonce over the whole record, which it threw away);
* commits honestly to the CIDs it claims (a Merkle tree needs only CIDs), but
  cannot return the record behind any of them (``/retrieve`` is a 404).

Run: ``python tests/e2e/cheater.py --port P --chain-path PATH --netuid 1
--wallet NAME/HOTKEY --wallet-path DIR``. It registers its hotkey on the
LocalChain and re-announces its axon every second until it is stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engram import __version__
from engram.api.wire import BatchIngestRequest, ChallengeRequest, IngestRequest, QueryRequest
from engram.chain.keys import identity, open_wallet
from engram.chain.local import LocalChain
from engram.cid import vector_bytes
from engram.config import EMBEDDING_DIM, Limits
from engram.errors import EngramError, InvalidRequestError, NotFoundError
from engram.proofs import MerkleTree
from engram.records import make_record

HEARTBEAT_S = 1.0
_LIMITS = Limits()
_RANDOM = random.Random()

# The cheater's whole "store": CID -> sha256 of the embedding. No vectors, no text.
hashes: dict[str, str] = {}
started = time.monotonic()


def _not_found(message: str) -> JSONResponse:
    return JSONResponse(NotFoundError(message).to_wire(), status_code=404)


def _claim(item: IngestRequest) -> str:
    """The item's true CID; remembers only the hash of its embedding."""
    if item.raw_embedding is None:
        raise InvalidRequestError("this miner has no embedder: send raw_embedding")
    record = make_record(
        item.raw_embedding,
        item.metadata,
        item.text,
        item.namespace,
        dim=EMBEDDING_DIM,
        limits=_LIMITS,
        model_version=item.model_version,
    )
    hashes[record.cid] = hashlib.sha256(vector_bytes(record.embedding)).hexdigest()
    return record.cid


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/IngestSynapse")
    async def ingest(request: Request) -> Any:
        body = IngestRequest.model_validate_json(await request.body())
        try:
            return {"cid": _claim(body), "error": None}
        except EngramError as exc:
            return JSONResponse({"cid": None, **exc.to_wire()}, status_code=exc.status)

    @app.post("/BatchIngestSynapse")
    async def batch_ingest(request: Request) -> dict[str, Any]:
        body = BatchIngestRequest.model_validate_json(await request.body())
        cids: list[str | None] = []
        errors: list[str | None] = []
        for item in body.items:
            try:
                cids.append(_claim(item))
                errors.append(None)
            except EngramError as exc:
                cids.append(None)
                errors.append(exc.message)
        return {"cids": cids, "errors": errors}

    @app.post("/QuerySynapse")
    async def query(request: Request) -> dict[str, Any]:
        # Ignores the query: top_k CIDs it has seen, in random order, with made-up scores.
        body = QueryRequest.model_validate_json(await request.body())
        picked = _RANDOM.sample(list(hashes), min(body.top_k, len(hashes)))
        scores = sorted((_RANDOM.uniform(0.5, 1.0) for _ in picked), reverse=True)
        results = [
            {"cid": c, "score": s, "metadata": {}} for c, s in zip(picked, scores, strict=True)
        ]
        return {"results": results, "latency_ms": 0.1}

    @app.post("/ChallengeSynapse")
    async def challenge(request: Request) -> Any:
        # The real answer is HMAC(nonce, whole record): all it can send is the hash it kept.
        body = ChallengeRequest.model_validate_json(await request.body())
        if body.cid not in hashes:
            return _not_found(f"no record {body.cid} on this miner")
        return {"embedding_hash": hashes[body.cid], "proof": secrets.token_hex(32)}

    @app.get("/commitment")
    async def commitment() -> dict[str, Any]:
        tree = MerkleTree(hashes)
        return {"root": tree.root, "count": len(tree)}

    @app.get("/inventory/{index}")
    async def inventory(index: int) -> Any:
        tree = MerkleTree(hashes)
        if not 0 <= index < len(tree):
            return _not_found(f"inventory index {index} is outside 0..{len(tree) - 1}")
        return {**tree.prove_at(index).to_dict(), "root": tree.root}

    @app.get("/prove/{cid}")
    async def prove(cid: str) -> Any:
        tree = MerkleTree(hashes)
        if cid not in hashes:
            return _not_found(f"{cid} is not in this inventory")
        return {**tree.prove(cid).to_dict(), "root": tree.root}

    @app.get("/retrieve/{cid}")
    async def retrieve(cid: str) -> JSONResponse:
        return _not_found(f"no record {cid} on this miner")  # it never kept one

    @app.get("/list")
    async def list_records(limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return {"records": [], "total": 0, "limit": limit, "offset": offset}

    @app.get("/count")
    async def count(namespace: str | None = None) -> dict[str, Any]:
        return {"count": len(hashes), "namespace": namespace}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "ready": True, "store": True, "model": True, "version": __version__}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(time.monotonic() - started, 3),
            "records": len(hashes),
            "namespaces": {},
            "queries_served": 0,
            "query_latency_p50_ms": None,
            "query_latency_p99_ms": None,
            "index": {},
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chain-path", type=Path, required=True)
    parser.add_argument("--netuid", type=int, default=1)
    parser.add_argument("--wallet", required=True, help="NAME/HOTKEY")
    parser.add_argument("--wallet-path", type=Path, required=True)
    args = parser.parse_args()

    wallet = open_wallet(args.wallet, args.wallet_path)
    me = identity(wallet)
    chain = LocalChain(args.chain_path)
    chain.register(args.netuid, wallet)
    chain.serve_axon(args.netuid, wallet, "127.0.0.1", args.port)
    stop = threading.Event()

    def heartbeat() -> None:  # stays in Metagraph.serving() like an honest miner
        while not stop.wait(HEARTBEAT_S):
            try:
                chain.serve_axon(args.netuid, wallet, "127.0.0.1", args.port)
            except EngramError as exc:
                print(f"heartbeat failed: {exc.message}", flush=True)

    beat = threading.Thread(target=heartbeat, name="heartbeat", daemon=True)
    beat.start()
    print(f"cheater {me.hotkey} serving on 127.0.0.1:{args.port}", flush=True)
    try:
        uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        stop.set()
        beat.join(5)
        chain.close()


if __name__ == "__main__":
    main()
