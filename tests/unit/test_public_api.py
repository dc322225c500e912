"""The public names are a promise: adding or dropping one is a decision, made here."""

from __future__ import annotations

import subprocess
import sys

import engram


def test_public_api_all_is_pinned() -> None:
    assert sorted(engram.__all__) == [
        "AsyncEngramClient",
        "BatchResult",
        "EngramClient",
        "FileIngestReport",
        "QueryResult",
        "Record",
        "SealKey",
        "__version__",
        "errors",
    ]
    for name in engram.__all__:
        assert getattr(engram, name) is not None


def test_public_api_import_is_cheap() -> None:
    """``import engram`` loads no SDK, server or model code until a name is used."""
    code = "import sys, engram; print(sorted(m for m in sys.modules if m.startswith('engram')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['engram', 'engram._version']"
