"""Save and load sparse autoencoders in SAELens's on-disk format.

A saved SAE is a directory holding two files, exactly as SAELens (v6) writes them:

- ``cfg.json``: the configuration, with SAELens's field names (``architecture``, ``d_in``,
  ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``, ``normalize_activations``,
  ``reshape_activations``, ``k`` for TopK, ``metadata``) followed by repscope's own config
  fields (SAELens's loaders drop fields they do not know). ``metadata["repscope"]`` holds the
  repscope architecture name and the unfolded config, so :func:`load_sae` gives back the same
  class;
- ``sae_weights.safetensors``: :meth:`~repscope.sae.SparseAutoencoder.folded_state_dict`, i.e.
  the weights with the input normaliser folded in, under SAELens's tensor names (``W_enc``
  (d_in, d_sae), ``b_enc``, ``W_dec`` (d_sae, d_in), ``b_dec``, plus ``threshold`` for JumpReLU
  and ``b_gate``/``r_mag``/``b_mag`` for gated SAEs). The saved SAE therefore works on raw
  inputs and ``normalize_activations`` is always ``"none"``.

SAELens's ``SAE.load_from_disk`` loads the ``relu`` (as ``standard``), ``topk``, ``jumprelu``
and ``gated`` saves with the same forward. BatchTopK and Matryoshka SAEs are written as SAELens
writes its own training checkpoints of them (``architecture`` ``batchtopk`` /
``matryoshka_batchtopk`` with the scalar ``topk_threshold``), which
``TrainingSAE.load_from_disk`` reads; save ``sae.to_jumprelu()`` for an inference JumpReLU.
Other repscope architectures are written under their own name, for :func:`load_sae` only.

:func:`load_sae` reads these directories and the ones SAELens writes (``save_model`` and
``save_inference_model``, v6 and the older v5 layout with ``activation_fn_str`` /
``activation_fn_kwargs``), mapping SAELens's architectures onto repscope's:

===================================  ==============================================
SAELens ``architecture``             repscope SAE
===================================  ==============================================
``standard``                         ``relu``
``topk``                             ``topk`` (``rescale_acts_by_decoder_norm`` is
                                     folded into the weights, as SAELens's
                                     ``fold_W_dec_norm`` does)
``jumprelu``                         ``jumprelu`` (``threshold``; ``log_threshold``
                                     of older checkpoints is exponentiated)
``gated``                            ``gated``
``batchtopk``,                       ``jumprelu`` at the learned ``topk_threshold``
``matryoshka_batchtopk``             (SAELens's own inference conversion)
===================================  ==============================================

The loaded SAE's :meth:`~repscope.sae.SparseAutoencoder.forward` equals SAELens's forward for
the same file. Only JSON and safetensors are read: nothing is unpickled.

Loading checks before it allocates: the safetensors header (names, dtypes, shapes; the file
must hold every byte it declares) is compared with ``cfg.json`` before any tensor is read or
any module is built, so a config that claims more latents than the file holds fails at once.
Top-level fields that contradict ``metadata["repscope"]`` and non-finite weights are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from repscope._io import atomic_dir
from repscope._version import __version__
from repscope.exceptions import DataNotFoundError, RepscopeTypeError, RepscopeValueError
from repscope.sae.archs._base import SparseAutoencoder, architectures

__all__ = [
    "SAELENS_ARCHITECTURES",
    "SAE_CFG_FILENAME",
    "SAE_WEIGHTS_FILENAME",
    "load_sae",
    "save_sae",
]

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
#: The SAELens config layout the saved ``cfg.json`` follows (``metadata.sae_lens_version``).
SAELENS_FORMAT_VERSION = "6.0.0"
#: Version of the ``metadata["repscope"]`` block.
REPSCOPE_FORMAT_VERSION = 1

#: repscope architecture -> SAELens ``architecture`` written to ``cfg.json``.
_TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}

#: SAELens ``architecture`` -> repscope architecture that reproduces its forward.
SAELENS_ARCHITECTURES: dict[str, str] = {
    "standard": "relu",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "batchtopk": "jumprelu",
    "matryoshka_batchtopk": "jumprelu",
}

#: Tensors each SAELens architecture's state dict holds (besides an optional scaling factor).
_SAELENS_TENSORS: dict[str, tuple[str, ...]] = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "gated": ("W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"),
    "batchtopk": ("W_enc", "b_enc", "W_dec", "b_dec", "topk_threshold"),
    "matryoshka_batchtopk": ("W_enc", "b_enc", "W_dec", "b_dec", "topk_threshold"),
}

#: Our config fields that SAELens knows under the same name with another meaning: they stay in
#: ``metadata["repscope"]["config"]`` only.
_SHADOWED_FIELDS = frozenset({"normalize_decoder", "metadata", "normalize_activations"})

_DTYPE_NAMES = {
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
}


#: safetensors dtype code -> torch dtype, for the codes an SAE file may hold.
_CODES: dict[str, torch.dtype] = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "BOOL": torch.bool,
}
_CODE_OF = {dtype: code for code, dtype in _CODES.items()}
#: The floating-point codes: weights are cast to the config's dtype on load, as SAELens does.
FLOAT_CODES = frozenset({"F16", "BF16", "F32", "F64"})


class TensorInfo(NamedTuple):
    """One tensor as a safetensors header describes it: dtype code (``"F32"``) and shape."""

    dtype: str
    shape: tuple[int, ...]


# ---------------------------------------------------------------------------- helpers


def _shape(t: Tensor | TensorInfo) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def check_tensor_shapes(
    tensors: Mapping[str, Tensor] | Mapping[str, TensorInfo],
    expected: Mapping[str, tuple[int, ...]],
    *,
    file: Path | str,
    source: str,
) -> None:
    """Raise a :class:`RepscopeValueError` naming ``file`` for the first tensor whose shape
    differs from ``expected`` (``source`` says where the expected shape comes from)."""
    for name, want in expected.items():
        if name not in tensors:
            continue
        got = _shape(tensors[name])
        if got != tuple(want):
            raise RepscopeValueError(
                f"SAE file {str(file)!r}: tensor {name!r} has shape {got}, but {source} make "
                f"it {tuple(want)}. The weights do not belong to this config."
            )


def check_expected_d_in(d_in: int, expected_d_in: int | None, *, file: Path | str) -> None:
    """``expected_d_in`` (when given) must equal the file's ``d_in``."""
    if expected_d_in is None:
        return
    if not isinstance(expected_d_in, int) or isinstance(expected_d_in, bool):
        raise RepscopeTypeError(
            f"The 'expected_d_in' parameter must be an int or None. Got "
            f"{type(expected_d_in).__name__} instead."
        )
    if d_in != expected_d_in:
        raise RepscopeValueError(
            f"SAE file {str(file)!r}: field 'd_in' is {d_in}, but expected_d_in={expected_d_in} "
            f"(the width of the features it will encode). This SAE was trained on other "
            f"features."
        )


def _as_int(value: Any, *, field: str, file: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise RepscopeValueError(
            f"SAE config {str(file)!r}: field {field!r} must be a positive int. Got {value!r} "
            f"instead."
        )
    if int(value) < 1:
        raise RepscopeValueError(
            f"SAE config {str(file)!r}: field {field!r} must be a positive int. Got {value!r} "
            f"instead."
        )
    return int(value)


def _dtype_name(value: Any, *, file: Path) -> str:
    name = str(value if value is not None else "float32").removeprefix("torch.")
    if name not in _DTYPE_NAMES:
        raise RepscopeValueError(
            f"SAE config {str(file)!r}: field 'dtype' must be one of "
            f"{sorted(set(_DTYPE_NAMES.values()))}. Got {value!r} instead."
        )
    return _DTYPE_NAMES[name]


def _sae_dir(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise RepscopeTypeError(
            f"The 'path' parameter must be a str or os.PathLike. Got {type(path).__name__} instead."
        )
    p = Path(path)
    if p.is_file() and p.name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        p = p.parent
    if not p.exists():
        raise DataNotFoundError(f"No SAE directory at {str(p)!r}.")
    if not p.is_dir():
        raise RepscopeValueError(
            f"The 'path' parameter must be an SAE directory (holding {SAE_CFG_FILENAME} and "
            f"{SAE_WEIGHTS_FILENAME}). Got the file {str(p)!r} instead."
        )
    return p


def _require(file: Path, what: str) -> Path:
    if not file.is_file():
        present = sorted(x.name for x in file.parent.iterdir()) if file.parent.is_dir() else []
        raise DataNotFoundError(
            f"{what} {str(file)!r} is missing (the directory holds {present}). A saved SAE "
            f"needs {SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME}."
        )
    return file


def read_json(file: Path) -> dict[str, Any]:
    """A JSON object from ``file`` (clear errors for a missing, unreadable or non-object file)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RepscopeValueError(f"SAE config {str(file)!r} is not valid JSON: {err}.") from None
    if not isinstance(data, dict):
        raise RepscopeValueError(
            f"SAE config {str(file)!r} must hold a JSON object. Got {type(data).__name__} instead."
        )
    return data


def read_safetensors_header(file: Path) -> dict[str, TensorInfo]:
    """Name -> :class:`TensorInfo` of every tensor in a safetensors file, from its header alone.

    Nothing is allocated: the file is memory-mapped and only its header is parsed. safetensors
    checks that the header is well formed and that the file holds exactly the bytes it declares,
    so the shapes returned are bounded by the file's size.
    """
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            out: dict[str, TensorInfo] = {}
            for name in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                view = f.get_slice(name)
                out[str(name)] = TensorInfo(str(view.get_dtype()), tuple(view.get_shape()))
            return out
    except (SafetensorError, OSError) as err:
        raise RepscopeValueError(
            f"SAE weights {str(file)!r} are not a readable safetensors file: {err}."
        ) from None


def check_float_dtypes(
    header: Mapping[str, TensorInfo], *, file: Path | str, allowed: Mapping[str, str] | None = None
) -> None:
    """Every tensor of ``header`` must be floating point (``allowed`` maps the names of
    non-floating tensors to the one code each may have); a :class:`RepscopeValueError` names
    the file, the tensor and its dtype."""
    for name, info in header.items():
        ok = info.dtype in FLOAT_CODES or (allowed or {}).get(name) == info.dtype
        if not ok:
            raise RepscopeValueError(
                f"SAE file {str(file)!r}: tensor {name!r} is stored as {info.dtype}, but SAE "
                f"weights must be floating point (one of {sorted(FLOAT_CODES)})."
            )


def check_header(
    header: Mapping[str, TensorInfo],
    expected: Mapping[str, TensorInfo],
    *,
    file: Path | str,
    source: str,
) -> None:
    """``header`` must hold exactly the tensors of ``expected``, with the same shapes and dtypes
    (``source`` says where the expectation comes from)."""
    missing = [n for n in expected if n not in header]
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise RepscopeValueError(
            f"SAE file {str(file)!r} does not hold the tensors {source} make: missing "
            f"{missing}, unexpected {extra} (expected {list(expected)})."
        )
    check_tensor_shapes(header, {n: e.shape for n, e in expected.items()}, file=file, source=source)
    for name, want in expected.items():
        got = header[name].dtype
        if got != want.dtype:
            raise RepscopeValueError(
                f"SAE file {str(file)!r}: tensor {name!r} is stored as {got}, but {source} make "
                f"it {want.dtype}. The weights do not belong to this config."
            )


def read_safetensors(file: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file, on the CPU (check its header first)."""
    try:
        return dict(load_file(str(file), device="cpu"))
    except (SafetensorError, OSError) as err:
        raise RepscopeValueError(
            f"SAE weights {str(file)!r} are not a readable safetensors file: {err}."
        ) from None


def check_finite(tensors: Mapping[str, Tensor], *, file: Path | str) -> None:
    """Refuse a checkpoint with NaN or infinite weights, naming the first such tensor."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            continue
        bad = int(t.numel() - torch.isfinite(t).sum())
        if bad:
            raise RepscopeValueError(
                f"SAE file {str(file)!r}: tensor {name!r} holds {bad} non-finite value(s) "
                f"(NaN or inf) of {t.numel()}; the checkpoint is corrupt or its training "
                f"diverged, so it is not loaded."
            )


def _make_config(
    architecture: str, config: Mapping[str, Any]
) -> tuple[type[SparseAutoencoder], Any]:
    cls = architectures.get(architecture)
    cfg_cls = cls.config_class
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    return cls, cfg_cls(**{k: v for k, v in config.items() if k in names})


def expected_tensors(architecture: str, config: Mapping[str, Any]) -> dict[str, TensorInfo]:
    """Name -> :class:`TensorInfo` of what :func:`save_sae` writes for ``architecture`` with
    ``config``, without allocating: the SAE is built on PyTorch's ``meta`` device and its
    :meth:`~repscope.sae.SparseAutoencoder.saved_tensors` read (folding changes values only)."""
    cls, cfg = _make_config(architecture, config)
    with torch.device("meta"):
        state = cls(cfg).saved_tensors()
    return {
        name: TensorInfo(_CODE_OF.get(t.dtype, str(t.dtype)), _shape(t))
        for name, t in state.items()
    }


def build_sae(
    architecture: str,
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
    *,
    file: Path | str,
    device: str | torch.device = "cpu",
) -> SparseAutoencoder:
    """Instantiate ``architecture`` from ``config`` and load ``state`` into it.

    Every parameter must come from ``state`` (the input normaliser's buffers excepted, which
    stay at "none") and every tensor of ``state`` must be used; otherwise a
    :class:`RepscopeValueError` names ``file`` and the tensors.
    """
    cls, cfg = _make_config(architecture, config)
    expected = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "b_enc": (cfg.d_sae,),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_dec": (cfg.d_in,),
    }
    # before the SAE is built: its parameters then take no more memory than the weights
    check_tensor_shapes(state, expected, file=file, source=f"d_in={cfg.d_in}, d_sae={cfg.d_sae}")
    sae = cls(cfg)
    own = dict(sae.state_dict())
    for name, t in state.items():
        ref = own.get(name)
        if ref is not None and _shape(ref) != _shape(t):
            raise RepscopeValueError(
                f"SAE file {str(file)!r}: tensor {name!r} has shape {_shape(t)}, but a "
                f"{cls.__name__} with d_in={cfg.d_in}, d_sae={cfg.d_sae} needs {_shape(ref)}."
            )
    try:
        result = sae.load_state_dict(dict(state), strict=False)
    except RuntimeError as err:
        raise RepscopeValueError(
            f"SAE file {str(file)!r} does not fit a {cls.__name__}: {err}"
        ) from None
    normaliser = {"input_mean", "input_scale", "input_transform", "input_inverse"}
    missing = sorted(set(result.missing_keys) - normaliser)
    if missing or result.unexpected_keys:
        raise RepscopeValueError(
            f"SAE file {str(file)!r} does not fit a {cls.__name__}: missing tensors {missing}, "
            f"unexpected tensors {sorted(result.unexpected_keys)}."
        )
    sae = sae.to(torch.device(device))
    sae.eval()
    return sae


# ---------------------------------------------------------------------------- saving


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def saelens_config(sae: SparseAutoencoder) -> dict[str, Any]:
    """The ``cfg.json`` content :func:`save_sae` writes for ``sae`` (folded weights)."""
    cfg = sae.cfg
    ours = cfg.to_dict()
    name = type(sae).architecture
    out: dict[str, Any] = {
        "architecture": _TO_SAELENS.get(name, name),
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": bool(cfg.apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if name in ("topk", "batchtopk", "matryoshka_batchtopk"):
        # SAELens's training configs default this to True; our decoders are used as they are.
        out["rescale_acts_by_decoder_norm"] = False
    sizes = getattr(cfg, "resolved_group_sizes", None)
    if name == "matryoshka_batchtopk" and isinstance(sizes, list):
        out["matryoshka_widths"] = [int(w) for w in torch.tensor(sizes).cumsum(0).tolist()]
    for key, value in ours.items():
        if key not in out and key not in _SHADOWED_FIELDS:
            out[key] = value
    out.update(sae.extra_config())
    user_meta = dict(cfg.metadata) if isinstance(cfg.metadata, Mapping) else {}
    user_meta.pop("repscope", None)
    # SAELens metadata kept from a loaded SAELens file goes back to the top level.
    saelens_meta = user_meta.pop("saelens", None)
    out["metadata"] = {
        **(dict(saelens_meta) if isinstance(saelens_meta, Mapping) else {}),
        **user_meta,
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "repscope": {
            "format_version": REPSCOPE_FORMAT_VERSION,
            "repscope_version": __version__,
            "architecture": name,
            "folded_normalizer": cfg.normalize_activations,
            "config": ours,
        },
    }
    return dict(_json_safe(out))


#: Architectures whose pre-activations are ``x_in @ W_enc + b_enc`` (gated: two biases).
_PLAIN_ENCODERS = frozenset({"relu", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk"})


@torch.no_grad()
def _shift_encoder_biases(sae: SparseAutoencoder, state: dict[str, Tensor]) -> None:
    """Exact encoder biases of a whitened SAE that encodes ``xn`` rather than ``xn - b_dec``.

    With ``xn = (x - mu) @ P`` such an encoder computes ``x @ (P W_enc) + b_enc - mu P W_enc``,
    so the folded bias must absorb ``-mu @ W_enc'`` (SAELens's ``fold_activation_whitening``
    does the same). The biases are recomputed from the unfolded ones, so the result is right
    whether or not ``folded_state_dict`` already shifted them.
    """
    if sae.cfg.apply_b_dec_to_input or not sae.whitened:
        return
    name = type(sae).architecture
    mu = sae.input_mean.detach().to("cpu", torch.float64)
    w_enc = state["W_enc"].to(torch.float64)
    if name in _PLAIN_ENCODERS:
        pairs = [("b_enc", w_enc)]
    elif name == "gated":
        r_mag = sae.get_parameter("r_mag").detach().to("cpu", torch.float64)
        pairs = [("b_gate", w_enc), ("b_mag", w_enc * torch.exp(r_mag))]
    else:
        return
    for bias, weight in pairs:
        unfolded = sae.get_parameter(bias).detach().to("cpu", torch.float64)
        state[bias] = (unfolded - mu @ weight).to(state[bias].dtype)


def save_sae(sae: SparseAutoencoder, path: str | os.PathLike[str]) -> Path:
    """Save ``sae`` as an SAELens-format directory (``cfg.json`` + ``sae_weights.safetensors``).

    The input normaliser is folded into the weights (see
    :meth:`~repscope.sae.SparseAutoencoder.folded_state_dict`), so the files describe an SAE on
    raw inputs that SAELens's ``SAE.load_from_disk`` can load (for the ``relu``, ``topk``,
    ``jumprelu`` and ``gated`` architectures) and :func:`load_sae` turns back into the same
    repscope class. The directory is written to a temporary sibling and renamed into place, so
    a crash never leaves a half-written SAE; an existing SAE directory at ``path`` is replaced.

    Parameters
    ----------
    sae : SparseAutoencoder
        The SAE to save (any device; tensors are written from the CPU).
    path : str or os.PathLike
        Directory to create or replace.

    Returns
    -------
    Path
        ``path``.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise RepscopeTypeError(
            f"The 'sae' parameter must be a repscope SparseAutoencoder. Got "
            f"{type(sae).__name__} instead."
        )
    if not isinstance(path, (str, os.PathLike)):
        raise RepscopeTypeError(
            f"The 'path' parameter must be a str or os.PathLike. Got {type(path).__name__} instead."
        )
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise RepscopeValueError(
            f"Cannot save an SAE to {str(target)!r}: it is a file; give a directory path."
        )
    if target.is_dir() and any(target.iterdir()) and not (target / SAE_CFG_FILENAME).exists():
        raise RepscopeValueError(
            f"Cannot save an SAE to {str(target)!r}: the directory holds other files and no "
            f"{SAE_CFG_FILENAME}; refusing to replace it. Choose an empty or new directory."
        )
    state = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in sae.folded_state_dict().items()
    }
    _shift_encoder_biases(sae, state)
    config = saelens_config(sae)
    # a temporary sibling directory, fsynced and swapped in: never a half-written SAE
    with atomic_dir(target) as tmp:
        save_file(state, str(tmp / SAE_WEIGHTS_FILENAME), metadata={"format": "pt"})
        (tmp / SAE_CFG_FILENAME).write_text(
            json.dumps(config, indent=2, sort_keys=False) + "\n", "utf-8"
        )
    return target


# ---------------------------------------------------------------------------- loading


def _major_version(value: Any) -> int | None:
    m = re.match(r"\s*(\d+)", str(value)) if value else None
    return int(m.group(1)) if m else None


def _saelens_version(cfg: Mapping[str, Any]) -> int | None:
    version = cfg.get("sae_lens_version")
    meta = cfg.get("metadata")
    if not version and isinstance(meta, Mapping):
        version = meta.get("sae_lens_version")
    return _major_version(version)


def upgrade_saelens_config(cfg: Mapping[str, Any], *, file: Path) -> dict[str, Any]:
    """Bring a pre-6.0 SAELens config to the v6 field names (SAELens's
    ``handle_pre_6_0_config``): ``activation_fn_str`` -> ``activation_fn``, architecture
    ``standard`` unless the activation is ``topk`` with ``activation_fn_kwargs["k"]``, boolean
    ``normalize_activations``."""
    out = dict(cfg)
    major = _saelens_version(cfg)
    if major is not None and major >= 6:
        return out
    if "activation_fn_str" in out and "activation_fn" not in out:
        out["activation_fn"] = out.pop("activation_fn_str")
    out.setdefault("apply_b_dec_to_input", True)
    act = out.get("activation_fn") or "relu"
    kwargs = out.get("activation_fn_kwargs") or {}
    if act == "topk" and isinstance(kwargs, Mapping) and kwargs.get("k") is not None:
        out["architecture"] = "topk"
        out["k"] = kwargs["k"]
    out.setdefault("architecture", "standard")
    if out["architecture"] == "standard" and act not in ("relu", None):
        raise RepscopeValueError(
            f"SAE config {str(file)!r}: activation_fn {act!r} of a pre-6.0 SAELens 'standard' "
            f"SAE is not supported (only 'relu', and 'topk' with activation_fn_kwargs['k'])."
        )
    norm = out.get("normalize_activations")
    if isinstance(norm, bool):
        out["normalize_activations"] = "expected_average_only_in" if norm else "none"
    return out


def _fold_decoder_norms(state: dict[str, Tensor], *, biases: tuple[str, ...]) -> None:
    """SAELens's ``fold_W_dec_norm``: unit decoder rows, encoder columns and ``biases`` scaled
    by the old row norms (float64 maths, dtype kept)."""
    dt = state["W_dec"].dtype
    norms = torch.linalg.vector_norm(state["W_dec"].to(torch.float64), dim=-1).clamp_min(1e-8)
    state["W_dec"] = (state["W_dec"].to(torch.float64) / norms[:, None]).to(dt)
    state["W_enc"] = (state["W_enc"].to(torch.float64) * norms[None, :]).to(dt)
    for b in biases:
        state[b] = (state[b].to(torch.float64) * norms).to(state[b].dtype)


class _SaelensLayout(NamedTuple):
    """A SAELens ``cfg.json`` checked against its weights' header."""

    cfg: dict[str, Any]
    arch: str
    d_in: int
    d_sae: int


def _check_saelens(
    raw_cfg: Mapping[str, Any],
    header: Mapping[str, TensorInfo],
    *,
    cfg_file: Path,
    weights_file: Path,
) -> _SaelensLayout:
    """Validate a SAELens config and compare the header's tensors with it (names, shapes,
    floating dtypes) before any tensor is read."""
    cfg = upgrade_saelens_config(raw_cfg, file=cfg_file)
    arch = cfg.get("architecture")
    if arch not in SAELENS_ARCHITECTURES:
        raise RepscopeValueError(
            f"SAE config {str(cfg_file)!r}: SAELens architecture {arch!r} is not supported. "
            f"Supported: {sorted(SAELENS_ARCHITECTURES)}."
        )
    d_in = _as_int(cfg.get("d_in"), field="d_in", file=cfg_file)
    d_sae = _as_int(cfg.get("d_sae"), field="d_sae", file=cfg_file)
    norm = cfg.get("normalize_activations") or "none"
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise RepscopeValueError(
            f"SAE config {str(cfg_file)!r}: normalize_activations={norm!r} rescales each input "
            f"by its own norm, which no fixed normaliser reproduces; only 'none' and "
            f"'expected_average_only_in' are supported."
        )
    if norm == "expected_average_only_in":
        warnings.warn(
            f"SAE config {str(cfg_file)!r} has normalize_activations='expected_average_only_in': "
            f"as in SAELens's load_from_disk, inputs are not rescaled; multiply them by the "
            f"release's norm scaling factor yourself (or the SAE sees the wrong scale).",
            UserWarning,
            stacklevel=3,
        )
    elif norm != "none":
        raise RepscopeValueError(
            f"SAE config {str(cfg_file)!r}: unknown normalize_activations {norm!r}."
        )
    # Pre-6.0 files: a finetuning scaling factor, and JumpReLU's log_threshold.
    optional = [k for k in ("scaling_factor", "finetuning_scaling_factor") if k in header]
    names = set(header) - set(optional)
    if arch == "jumprelu" and "log_threshold" in names and "threshold" not in names:
        names = (names - {"log_threshold"}) | {"threshold"}
    needed = _SAELENS_TENSORS[arch]
    missing = [n for n in needed if n not in names]
    extra = sorted(names - set(needed))
    if missing or extra:
        raise RepscopeValueError(
            f"SAE file {str(weights_file)!r} does not hold the tensors of a SAELens {arch!r} "
            f"SAE: missing {missing}, unexpected {extra} (expected {list(needed)})."
        )
    source = f"cfg.json's d_in={d_in}, d_sae={d_sae}"
    check_tensor_shapes(
        header,
        {
            "W_enc": (d_in, d_sae),
            "b_enc": (d_sae,),
            "W_dec": (d_sae, d_in),
            "b_dec": (d_in,),
            "threshold": (d_sae,),
            "log_threshold": (d_sae,),
            "b_gate": (d_sae,),
            "r_mag": (d_sae,),
            "b_mag": (d_sae,),
            "topk_threshold": (),
            **{k: (d_sae,) for k in optional},
        },
        file=weights_file,
        source=source,
    )
    check_float_dtypes(header, file=weights_file)
    return _SaelensLayout(cfg, str(arch), d_in, d_sae)


def _from_saelens(
    layout: _SaelensLayout, tensors: dict[str, Tensor], *, cfg_file: Path
) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """The repscope architecture, config and state of a checked SAELens file."""
    cfg, arch, d_in, d_sae = layout
    state = dict(tensors)
    # Pre-6.0 finetuning scaling factor: codes were multiplied by it before decoding.
    for key in ("scaling_factor", "finetuning_scaling_factor"):
        if key in state:
            sf = state.pop(key)
            if not torch.all(sf == 1):
                w = state["W_dec"]
                state["W_dec"] = (w.to(torch.float64) * sf.to(torch.float64)[:, None]).to(w.dtype)
    if arch == "jumprelu" and "log_threshold" in state and "threshold" not in state:
        state["threshold"] = torch.exp(state.pop("log_threshold"))
    ours = SAELENS_ARCHITECTURES[arch]
    config: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": _dtype_name(cfg.get("dtype"), file=cfg_file),
        "normalize_activations": "none",
        "apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", True)),
    }
    meta = cfg.get("metadata")
    config["metadata"] = {"saelens": _json_safe(dict(meta))} if isinstance(meta, Mapping) else {}
    training = arch in ("batchtopk", "matryoshka_batchtopk")
    rescale = bool(cfg.get("rescale_acts_by_decoder_norm", training))
    if arch == "topk":
        config["k"] = _as_int(cfg.get("k"), field="k", file=cfg_file)
        if rescale:
            _fold_decoder_norms(state, biases=("b_enc",))
    elif arch == "jumprelu":
        # SAELens gates on threshold.relu(): a negative threshold acts as 0.
        state["threshold"] = state["threshold"].clamp_min(0)
    elif training:
        thr = state.pop("topk_threshold").to(torch.float64)
        if rescale:
            _fold_decoder_norms(state, biases=("b_enc",))
        state["threshold"] = thr.clamp_min(0).expand(d_sae).to(state["b_enc"].dtype).clone()
    return ours, config, state


def _check_repscope_config(
    raw: Mapping[str, Any], ours: Mapping[str, Any], *, file: Path
) -> tuple[str, dict[str, Any]]:
    """The architecture and config of ``metadata["repscope"]``, after checking that the
    top-level fields repeating them agree (a :class:`RepscopeValueError` names both)."""
    arch = str(ours["architecture"])
    if not isinstance(ours["config"], Mapping):
        raise RepscopeValueError(
            f"SAE config {str(file)!r}: metadata.repscope.config must be a JSON object. Got "
            f"{type(ours['config']).__name__} instead."
        )
    config = dict(ours["config"])
    written = _TO_SAELENS.get(arch, arch)
    if "architecture" in raw and raw["architecture"] != written:
        raise RepscopeValueError(
            f"SAE config {str(file)!r}: field 'architecture' is {raw['architecture']!r} but "
            f"metadata.repscope.architecture is {arch!r} (written as {written!r}); the file was "
            f"edited inconsistently."
        )
    for key, value in config.items():
        if key in _SHADOWED_FIELDS or key not in raw:
            continue
        if raw[key] != _json_safe(value):
            raise RepscopeValueError(
                f"SAE config {str(file)!r}: field {key!r} is {raw[key]!r} but "
                f"metadata.repscope.config.{key} is {value!r}; the file was edited "
                f"inconsistently."
            )
    _as_int(config.get("d_in"), field="metadata.repscope.config.d_in", file=file)
    _as_int(config.get("d_sae"), field="metadata.repscope.config.d_sae", file=file)
    config["normalize_activations"] = "none"
    return arch, config


def load_sae(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    expected_d_in: int | None = None,
) -> SparseAutoencoder:
    """Load an SAE saved by :func:`save_sae` or by SAELens.

    Parameters
    ----------
    path : str or os.PathLike
        The SAE directory (or its ``cfg.json`` / ``sae_weights.safetensors``).
    device : str or torch.device
        Where to put the SAE.
    expected_d_in : int, optional
        The input width the caller will feed; a file with another ``d_in`` raises.

    Returns
    -------
    SparseAutoencoder
        In eval mode, with ``normalize_activations="none"`` (the saved weights work on raw
        inputs). For a repscope save, the original class and config (``metadata["repscope"]``);
        for a SAELens file, the architecture in :data:`SAELENS_ARCHITECTURES` with a forward
        equal to SAELens's, and SAELens's metadata under ``cfg.metadata["saelens"]``.

    Raises
    ------
    DataNotFoundError
        The directory or one of its two files is missing.
    RepscopeValueError
        Unreadable files, an unsupported architecture or normaliser, tensors whose shapes or
        dtypes do not match the config (checked on the safetensors header, before anything is
        allocated), top-level fields that contradict ``metadata["repscope"]``, NaN or infinite
        weights, or ``d_in != expected_d_in`` (the message names the file, the field or
        tensor, what was expected and what was found).
    """
    root = _sae_dir(path)
    cfg_file = _require(root / SAE_CFG_FILENAME, "SAE config")
    weights_file = _require(root / SAE_WEIGHTS_FILENAME, "SAE weights")
    raw = read_json(cfg_file)
    # Everything is checked against the header before a tensor is read or a module is built.
    header = read_safetensors_header(weights_file)
    meta = raw.get("metadata")
    ours = meta.get("repscope") if isinstance(meta, Mapping) else None
    if isinstance(ours, Mapping) and "architecture" in ours and "config" in ours:
        arch, config = _check_repscope_config(raw, ours, file=cfg_file)
        d_in, d_sae = int(config["d_in"]), int(config["d_sae"])
        source = f"cfg.json's d_in={d_in}, d_sae={d_sae}, dtype={config.get('dtype')!r}"
        # the shapes that scale with the config first, then (allocation-free) everything
        core = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in)}
        check_tensor_shapes(header, core, file=weights_file, source=source)
        check_expected_d_in(d_in, expected_d_in, file=cfg_file)
        check_header(header, expected_tensors(arch, config), file=weights_file,
                     source=f"{arch!r} with {source}")
        tensors = read_safetensors(weights_file)
        check_finite(tensors, file=weights_file)
        return build_sae(arch, config, tensors, file=weights_file, device=device)
    layout = _check_saelens(raw, header, cfg_file=cfg_file, weights_file=weights_file)
    check_expected_d_in(layout.d_in, expected_d_in, file=cfg_file)
    tensors = read_safetensors(weights_file)
    check_finite(tensors, file=weights_file)
    arch, config, state = _from_saelens(layout, tensors, cfg_file=cfg_file)
    return build_sae(arch, config, state, file=weights_file, device=device)
