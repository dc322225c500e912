"""`engram localnet` as a user runs it: prints its URLs, stops everything on Ctrl-C, resumes."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from engram.chain.local import LocalChain
from tests.conftest import free_port
from tests.e2e.conftest import start_localnet

pytestmark = pytest.mark.slow


def test_localnet_stops_on_ctrl_c_and_resumes(tmp_path: Path, model_home: Path) -> None:
    home = tmp_path / "localnet"
    ports = [free_port(), free_port(), free_port()]
    gateway = f"http://127.0.0.1:{ports[1]}"

    proc = start_localnet(home, ports, model_home)
    try:
        with httpx.Client(timeout=10) as http:
            assert http.get(gateway + "/health").status_code == 200
            r = http.post(gateway + "/IngestSynapse", json={"text": "remember this"})
            assert r.status_code == 200, r.text
            cid = r.json()["cid"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "stopping localnet" in out
    with pytest.raises(httpx.TransportError):
        httpx.get(gateway + "/health", timeout=2)
    chain = LocalChain(home / "chain.sqlite")
    neurons = [(n.uid, n.hotkey) for n in chain.metagraph(1).neurons]
    chain.close()

    proc = start_localnet(home, ports, model_home)
    try:
        with httpx.Client(timeout=10) as http:
            record = http.get(f"{gateway}/retrieve/{cid}")
            assert record.status_code == 200 and record.json()["text"] == "remember this"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    chain = LocalChain(home / "chain.sqlite")
    assert [(n.uid, n.hotkey) for n in chain.metagraph(1).neurons] == neurons
    chain.close()
