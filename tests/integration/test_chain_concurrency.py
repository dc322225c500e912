"""Several real processes share one LocalChain file: no "database is locked", ever."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bittensor.sp_core import Keypair

from engram.chain import LocalChain
from engram.config import ChainParams

ROOT = Path(__file__).resolve().parents[2]
DURATION_S = 3.0
MINERS = 4

# Every process waits for the same wall-clock instant, so registrations, heartbeats,
# weights and lazily processed epochs all overlap despite staggered interpreter start-up.
WORKER = r"""
import json, random, sys, time
from bittensor.sp_core import Keypair
from engram.chain import LocalChain
from engram.config import SPEC_VERSION

role, path, name, start_at, duration = sys.argv[1:6]
start_at, duration = float(start_at), float(duration)
signer = Keypair.create_from_uri("//" + name)
hotkey = signer.ss58_address
chain = LocalChain(path)
time.sleep(max(0.0, start_at - time.time()))
deadline = time.monotonic() + duration
coldkey = "5Cold-" + name
calls = 0
if role == "miner":
    uid = chain.register(1, signer, coldkey=coldkey)
    while time.monotonic() < deadline:
        chain.serve_axon(1, signer, "127.0.0.1", 9000 + uid)
        assert chain.metagraph(1).by_hotkey(hotkey).uid == uid
        if calls % 20 == 0:
            assert chain.register(1, signer, coldkey=coldkey) == uid
        calls += 1
else:
    uid = chain.register(1, signer, stake=1000.0, coldkey=coldkey)
    rng = random.Random(0)
    while time.monotonic() < deadline:
        miners = [n.uid for n in chain.metagraph(1).neurons if n.uid != uid]
        if miners:
            weights = [rng.random() + 0.01 for _ in miners]
            chain.set_weights(1, signer, miners, weights, version_key=SPEC_VERSION)
        calls += 1
        time.sleep(0.005)
chain.close()
sys.stdout.write(json.dumps({"hotkey": hotkey, "uid": uid, "calls": calls}))
"""


@pytest.mark.slow
def test_processes_share_one_chain_file(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    params = ChainParams(block_time_s=0.05, tempo=5, axon_ttl_blocks=20, min_validator_stake=1000.0)
    LocalChain.create(path, params=params).close()

    roles = [("miner", f"miner-{i}") for i in range(MINERS)] + [("validator", "validator")]
    hotkeys = {name: Keypair.create_from_uri(f"//{name}").ss58_address for _, name in roles}
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                role,
                str(path),
                name,
                repr(start_at),
                str(DURATION_S),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, name in roles
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert "locked" not in err.lower(), err
        assert proc.returncode == 0, err
        results.append(json.loads(out))

    assert all(r["calls"] > 10 for r in results), results
    with LocalChain(path) as chain:
        mg = chain.metagraph(1)
        assert sorted(n.hotkey for n in mg.neurons) == sorted(hotkeys.values())
        assert len({n.uid for n in mg.neurons}) == len(roles)
        assert {r["hotkey"]: r["uid"] for r in results} == {n.hotkey: n.uid for n in mg.neurons}

        history = chain.epochs(1, limit=1000)
        assert len(history) >= 3
        blocks = [e["block"] for e in history]
        assert blocks == sorted(set(blocks))
        assert all(b % params.tempo == 0 for b in blocks)
        latest = history[-1]["neurons"]
        assert sum(e["incentive"] for e in latest) == pytest.approx(1.0)
        validator = mg.by_hotkey(hotkeys["validator"])
        assert validator is not None
        assert validator.validator_permit
        assert set(mg.weights) == {validator.uid}
