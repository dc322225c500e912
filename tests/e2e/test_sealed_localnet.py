"""Sealed private records through a real 3-miner localnet: only ciphertext reaches the miners.

Real processes (3 miners, a validator, a gateway) on a LocalChain file, which
stands in for the public Bittensor chain; the client signs with real sr25519
keys and seals with X25519 + HKDF-SHA256 + AES-256-GCM.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bittensor.sp_core import Keypair

from engram import EngramClient, SealKey
from engram.errors import ForbiddenError
from engram.localnet import Localnet
from tests.conftest import localnet_on_free_ports

pytestmark = pytest.mark.slow

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
NAMESPACE = "alice-vault"
SECRETS = [
    "Sealed memo one: the Zanzibar deal closes on the ninth of March",
    "Sealed memo two: our recovery phrase sits in the blue filing cabinet",
    "Sealed memo three: Priya approved the Kestrel budget of 41,000",
]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Localnet]:
    with localnet_on_free_ports(tmp_path_factory.mktemp("sealed-localnet"), 3).running() as net:
        yield net


def _miner_files(net: Localnet) -> list[Path]:
    files = [p for i in range(3) for p in (net.home / f"miner-{i}").rglob("*") if p.is_file()]
    assert any(p.name.startswith("engram.db") for p in files), files
    return files


def test_sealed_records_round_trip_and_miners_hold_only_ciphertext(net: Localnet) -> None:
    key = SealKey.generate()
    with EngramClient.from_network(
        chain=net.chain_url, netuid=net.netuid, keypair=ALICE, seal_key=key, clear_fields=["kind"]
    ) as alice:
        result = alice.batch_ingest(
            [{"text": t, "metadata": {"kind": "memo", "n": i}} for i, t in enumerate(SECRETS)],
            namespace=NAMESPACE,
        )
        assert result.failed == []
        reports = alice.network_report
        assert isinstance(reports, list) and all(len(r.acked) == 3 for r in reports), reports
        hits = alice.query("when does the Zanzibar deal close", namespace=NAMESPACE, top_k=3)
        assert hits[0].text == SECRETS[0] and hits[0].metadata == {"kind": "memo", "n": 0}
        assert {h.text for h in hits} == set(SECRETS)
        assert alice.get(result.cids[1], namespace=NAMESPACE).text == SECRETS[1]
        memos = alice.query("budget", namespace=NAMESPACE, filter={"kind": "memo"}, top_k=3)
        assert len(memos) == 3  # the clear field still filters

    # Every miner's files (SQLite, its WAL, index files) hold no plaintext.
    needles = [s.encode() for s in SECRETS] + [b"Zanzibar", b"Kestrel", b"filing cabinet"]
    files = _miner_files(net)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} in plaintext in {path}"
    assert any(b"_sealed" in p.read_bytes() for p in files)  # the envelopes are there

    # Another hotkey gets nothing, with or without the key.
    with (
        EngramClient.from_network(
            chain=net.chain_url, netuid=net.netuid, keypair=BOB, seal_key=key
        ) as bob,
        pytest.raises(ForbiddenError),
    ):
        bob.query("Zanzibar", namespace=NAMESPACE)
