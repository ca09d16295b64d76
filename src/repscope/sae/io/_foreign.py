"""Load SAEs trained by EleutherAI's sparsify and by saprmarks/dictionary_learning.

Each loader maps the checkpoint onto the repscope architecture whose forward equals the
library's own (codes and reconstruction), with ``normalize_activations="none"``:

- :func:`load_sparsify`: ``SparseCoder.save_to_disk`` output (``cfg.json`` with ``d_in``,
  ``k``, ``num_latents`` / ``expansion_factor``; ``sae.safetensors`` with ``encoder.weight``
  (num_latents, d_in), ``encoder.bias``, ``W_dec`` (num_latents, d_in), ``b_dec``). sparsify
  encodes ``TopK(ReLU((x - b_dec) @ encoder.weight.T + encoder.bias))`` and decodes
  ``sum_i a_i W_dec[i] + b_dec``: a :class:`~repscope.sae.archs.topk.TopKSAE`.
- :func:`load_dictionary_learning`: ``ae.pt`` (``torch.save(ae.state_dict())``, read with
  ``torch.load(weights_only=True)``, so nothing is unpickled) and the ``config.json`` beside it
  (``trainer.dict_class``, ``activation_dim``, ``dict_size``, ``k``). Supported classes
  (dictionary-learning 0.1.0): ``AutoEncoder`` and ``AutoEncoderNew`` (ReLU),
  ``AutoEncoderTopK`` (TopK), ``BatchTopKSAE`` and ``MatryoshkaBatchTopKSAE`` (their inference
  rule ``ReLU(pre) * 1[ReLU(pre) > threshold]``, a JumpReLU at the learned threshold),
  ``JumpReluAutoEncoder`` and ``GatedAutoEncoder``. Codes are the library's ``encode`` output;
  releases before 0.1.0 multiplied the JumpReLU and gated codes by the decoder norms in
  ``forward(output_features=True)``, which leaves the reconstruction unchanged.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from repscope.exceptions import DataNotFoundError, RepscopeTypeError, RepscopeValueError
from repscope.sae.archs._base import SparseAutoencoder
from repscope.sae.io._saelens import (
    build_sae,
    check_expected_d_in,
    check_finite,
    check_float_dtypes,
    check_tensor_shapes,
    read_json,
    read_safetensors,
    read_safetensors_header,
)

__all__ = ["load_dictionary_learning", "load_sparsify"]

SPARSIFY_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
DL_WEIGHTS = "ae.pt"
DL_CONFIG = "config.json"


def _as_path(path: Any, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise RepscopeTypeError(
            f"The {name!r} parameter must be a str or os.PathLike. Got {type(path).__name__} "
            f"instead."
        )
    return Path(path)


def _dtype_of(t: Tensor) -> str:
    return {
        torch.float32: "float32",
        torch.float64: "float64",
        torch.bfloat16: "bfloat16",
        torch.float16: "float16",
    }.get(t.dtype, "float32")


def _positive_int(value: Any, *, field: str, file: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RepscopeValueError(
            f"Config {str(file)!r}: field {field!r} must be a positive int. Got {value!r} instead."
        )
    return value


# ---------------------------------------------------------------------------- sparsify


def _sparsify_dir(root: Path, hookpoint: str | None) -> Path:
    if root.is_file() and root.name in (SPARSIFY_CFG, SPARSIFY_WEIGHTS):
        root = root.parent
    if not root.exists():
        raise DataNotFoundError(f"No sparsify checkpoint at {str(root)!r}.")
    if hookpoint is not None:
        if not isinstance(hookpoint, str):
            raise RepscopeTypeError(
                f"The 'hookpoint' parameter must be a str or None. Got "
                f"{type(hookpoint).__name__} instead."
            )
        sub = root / hookpoint
        if not sub.is_dir():
            found = sorted(p.name for p in root.iterdir() if (p / SPARSIFY_CFG).is_file())
            raise RepscopeValueError(
                f"The 'hookpoint' parameter names no checkpoint under {str(root)!r}: got "
                f"{hookpoint!r}; the hookpoints there are {found}."
            )
        return sub
    if (root / SPARSIFY_CFG).is_file() or (root / SPARSIFY_WEIGHTS).is_file():
        return root
    found = sorted(p.name for p in root.iterdir() if (p / SPARSIFY_CFG).is_file())
    if len(found) == 1:
        return root / found[0]
    if not found:
        raise DataNotFoundError(
            f"{str(root / SPARSIFY_CFG)!r} is missing and no hookpoint directory under "
            f"{str(root)!r} holds one: not a sparsify checkpoint."
        )
    raise RepscopeValueError(
        f"{str(root)!r} holds sparse coders for several hookpoints {found}; pass one as "
        f"hookpoint=..."
    )


def load_sparsify(
    path_or_dir: str | os.PathLike[str],
    hookpoint: str | None = None,
    *,
    device: str | torch.device = "cpu",
    expected_d_in: int | None = None,
) -> SparseAutoencoder:
    """Load an EleutherAI sparsify sparse coder as a repscope TopK SAE.

    Parameters
    ----------
    path_or_dir : str or os.PathLike
        A hookpoint directory (``cfg.json`` + ``sae.safetensors``), its parent (a run holding
        one directory per hookpoint; then ``hookpoint`` picks one unless there is only one), or
        one of the two files.
    hookpoint : str, optional
        Sub-directory name, e.g. ``"layers.6"``.
    device : str or torch.device
        Where to put the SAE.
    expected_d_in : int, optional
        The input width the caller will feed; a checkpoint with another ``d_in`` raises.

    Returns
    -------
    TopKSAE
        In eval mode; ``cfg.metadata["sparsify"]`` holds sparsify's config. Its forward equals
        ``SparseCoder.forward``'s ``sae_out`` and its codes equal ``latent_acts`` /
        ``latent_indices`` (as dense codes).

    Raises
    ------
    DataNotFoundError
        A missing directory or file.
    RepscopeValueError
        Transcoders, skip connections, ``groupmax`` activations, or shapes that do not match
        ``d_in`` / ``num_latents`` (the message names the file and the field).
    """
    root = _sparsify_dir(_as_path(path_or_dir, "path_or_dir"), hookpoint)
    cfg_file, weights_file = root / SPARSIFY_CFG, root / SPARSIFY_WEIGHTS
    for f in (cfg_file, weights_file):
        if not f.is_file():
            raise DataNotFoundError(
                f"sparsify file {str(f)!r} is missing; a sparsify checkpoint directory holds "
                f"{SPARSIFY_CFG} and {SPARSIFY_WEIGHTS}."
            )
    cfg = read_json(cfg_file)
    d_in = _positive_int(cfg.get("d_in"), field="d_in", file=cfg_file)
    check_expected_d_in(d_in, expected_d_in, file=cfg_file)
    num_latents = cfg.get("num_latents") or 0
    if num_latents:
        d_sae = _positive_int(num_latents, field="num_latents", file=cfg_file)
    else:
        d_sae = d_in * _positive_int(
            cfg.get("expansion_factor"), field="expansion_factor", file=cfg_file
        )
    k = _positive_int(cfg.get("k"), field="k", file=cfg_file)
    unsupported = [
        what
        for what, bad in (
            ("transcoders (transcode=True)", bool(cfg.get("transcode"))),
            ("skip connections (skip_connection=True)", bool(cfg.get("skip_connection"))),
            (
                f"the {cfg.get('activation')!r} activation",
                cfg.get("activation", "topk") != "topk",
            ),
            ("signed codes (signed=True)", bool(cfg.get("signed"))),
        )
        if bad
    ]
    if unsupported:
        raise RepscopeValueError(
            f"sparsify config {str(cfg_file)!r}: {', '.join(unsupported)} not supported; only "
            f"TopK sparse autoencoders load as repscope SAEs."
        )
    # the header is checked against cfg.json before a tensor is read
    header = read_safetensors_header(weights_file)
    needed = ("encoder.weight", "encoder.bias", "W_dec", "b_dec")
    missing = [n for n in needed if n not in header]
    extra = sorted(set(header) - set(needed))
    if missing or extra:
        raise RepscopeValueError(
            f"sparsify weights {str(weights_file)!r}: missing tensors {missing}, unexpected "
            f"tensors {extra} (a TopK sparse coder holds {list(needed)})."
        )
    check_tensor_shapes(
        header,
        {
            "encoder.weight": (d_sae, d_in),
            "encoder.bias": (d_sae,),
            "W_dec": (d_sae, d_in),
            "b_dec": (d_in,),
        },
        file=weights_file,
        source=f"cfg.json's d_in={d_in} and num_latents={d_sae}",
    )
    check_float_dtypes(header, file=weights_file)
    tensors = read_safetensors(weights_file)
    check_finite(tensors, file=weights_file)
    state = {
        "W_enc": tensors["encoder.weight"].T.contiguous(),
        "b_enc": tensors["encoder.bias"],
        "W_dec": tensors["W_dec"],
        "b_dec": tensors["b_dec"],
    }
    config = {
        "d_in": d_in,
        "d_sae": d_sae,
        "k": k,
        "dtype": _dtype_of(tensors["encoder.weight"]),
        "normalize_activations": "none",
        "apply_b_dec_to_input": True,
        "normalize_decoder": bool(cfg.get("normalize_decoder", True)),
        "metadata": {"sparsify": dict(cfg), "hookpoint": root.name},
    }
    return build_sae("topk", config, state, file=weights_file, device=device)


# ---------------------------------------------------------------------------- dictionary_learning

#: dictionary_learning class -> tensor names of its state dict.
_DL_TENSORS: dict[str, tuple[str, ...]] = {
    "AutoEncoder": ("encoder.weight", "encoder.bias", "decoder.weight", "bias"),
    "AutoEncoderNew": ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"),
    "AutoEncoderTopK": (
        "encoder.weight",
        "encoder.bias",
        "decoder.weight",
        "b_dec",
        "k",
        "threshold",
    ),
    "BatchTopKSAE": ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"),
    "MatryoshkaBatchTopKSAE": ("W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"),
    "JumpReluAutoEncoder": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "GatedAutoEncoder": (
        "encoder.weight",
        "decoder.weight",
        "decoder_bias",
        "gate_bias",
        "mag_bias",
        "r_mag",
    ),
}


#: dictionary_learning buffers that hold integers (TopK's ``k``, Matryoshka's ``group_sizes``).
_DL_INTEGER_BUFFERS = frozenset({"k", "group_sizes"})


def _dl_files(path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        weights = path / DL_WEIGHTS
    else:
        weights = path
    if not weights.is_file():
        raise DataNotFoundError(
            f"dictionary_learning weights {str(weights)!r} are missing (trainSAE writes "
            f"{DL_WEIGHTS} and {DL_CONFIG} into each trainer directory)."
        )
    config = weights.parent / DL_CONFIG
    return weights, (config if config.is_file() else None)


def _read_state(file: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise RepscopeValueError(
            f"{str(file)!r} is not a plain state dict readable with "
            f"torch.load(weights_only=True) (repscope never unpickles arbitrary objects): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}."
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise RepscopeValueError(
            f"{str(file)!r} must hold a state dict (names -> tensors), as "
            f"torch.save(ae.state_dict()) writes. Got {type(obj).__name__} instead."
        )
    return {str(k): v for k, v in obj.items()}


def _dl_class(state: Mapping[str, Tensor], trainer: Mapping[str, Any], file: Path) -> str:
    name = trainer.get("dict_class")
    if isinstance(name, str):
        # dictionary_learning writes the class name; older configs wrote its repr.
        name = name.rsplit(".", 1)[-1].strip("'<>")
        if name in _DL_TENSORS:
            return name
        raise RepscopeValueError(
            f"dictionary_learning class {name!r} (from {DL_CONFIG}) is not supported. "
            f"Supported: {sorted(_DL_TENSORS)}."
        )
    keys = set(state)
    matches = [c for c, names in _DL_TENSORS.items() if set(names) == keys]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RepscopeValueError(
            f"{str(file)!r} fits several dictionary_learning classes {matches}; put its "
            f"{DL_CONFIG} (with trainer.dict_class) beside it."
        )
    raise RepscopeValueError(
        f"{str(file)!r} does not hold a supported dictionary_learning state dict: its tensors "
        f"are {sorted(keys)}. Supported classes: {sorted(_DL_TENSORS)}."
    )


def load_dictionary_learning(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    expected_d_in: int | None = None,
) -> SparseAutoencoder:
    """Load a saprmarks/dictionary_learning checkpoint as a repscope SAE.

    Parameters
    ----------
    path : str or os.PathLike
        A trainer directory (``ae.pt`` + ``config.json``) or the ``ae.pt`` file (its
        ``config.json`` is read when it sits beside it; without one the class is inferred from
        the tensor names).
    device : str or torch.device
        Where to put the SAE.
    expected_d_in : int, optional
        The input width the caller will feed; a checkpoint with another width raises.

    Returns
    -------
    SparseAutoencoder
        In eval mode: ``relu`` for ``AutoEncoder``/``AutoEncoderNew``, ``topk`` for
        ``AutoEncoderTopK``, ``jumprelu`` for ``BatchTopKSAE`` (threshold rule) and
        ``JumpReluAutoEncoder``, ``gated`` for ``GatedAutoEncoder``; ``cfg.metadata`` holds the
        library's config under ``"dictionary_learning"``.

    Raises
    ------
    DataNotFoundError
        ``ae.pt`` is missing.
    RepscopeValueError
        A file that is not a plain state dict, an unsupported class, or shapes that disagree
        with ``activation_dim`` / ``dict_size`` / ``expected_d_in``.
    """
    weights, config_file = _dl_files(_as_path(path))
    config = read_json(config_file) if config_file is not None else {}
    raw_trainer = config.get("trainer")
    trainer: Mapping[str, Any] = raw_trainer if isinstance(raw_trainer, Mapping) else {}
    state = _read_state(weights)
    cls = _dl_class(state, trainer, weights)
    for name, t in state.items():
        integer = name in _DL_INTEGER_BUFFERS and not t.is_complex() and t.dtype != torch.bool
        if not (t.is_floating_point() or integer):
            raise RepscopeValueError(
                f"SAE file {str(weights)!r}: tensor {name!r} is stored as {t.dtype}, but SAE "
                f"weights must be floating point."
            )
    check_finite(state, file=weights)
    needed = _DL_TENSORS[cls]
    missing = [n for n in needed if n not in state]
    extra = sorted(set(state) - set(needed))
    if missing or extra:
        raise RepscopeValueError(
            f"{str(weights)!r} does not hold a dictionary_learning {cls}: missing tensors "
            f"{missing}, unexpected tensors {extra}."
        )
    if "W_enc" in needed:
        d_in, d_sae = (int(s) for s in state["W_enc"].shape)
    else:
        d_sae, d_in = (int(s) for s in state["encoder.weight"].shape)
    src = config_file if config_file is not None else weights
    for field, value in (("activation_dim", d_in), ("dict_size", d_sae)):
        if field in trainer and trainer[field] != value:
            raise RepscopeValueError(
                f"dictionary_learning config {str(src)!r}: field {field!r} is "
                f"{trainer[field]!r} but the weights in {str(weights)!r} have {value} "
                f"(d_in={d_in}, d_sae={d_sae})."
            )
    check_expected_d_in(d_in, expected_d_in, file=src)
    s = {k: v.detach() for k, v in state.items()}
    base: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": d_sae,
        "normalize_activations": "none",
        "metadata": {"dictionary_learning": {"dict_class": cls, **dict(config)}},
    }
    if cls in ("AutoEncoder", "AutoEncoderNew"):
        shapes = {
            "encoder.bias": (d_sae,),
            "decoder.weight": (d_in, d_sae),
            "bias": (d_in,),
            "decoder.bias": (d_in,),
        }
        check_tensor_shapes(s, shapes, file=weights, source=f"d_in={d_in}, d_sae={d_sae}")
        new = cls == "AutoEncoderNew"
        out = {
            "W_enc": s["encoder.weight"].T.contiguous(),
            "b_enc": s["encoder.bias"],
            "W_dec": s["decoder.weight"].T.contiguous(),
            "b_dec": s["decoder.bias"] if new else s["bias"],
        }
        config_out = {**base, "apply_b_dec_to_input": not new}
        arch = "relu"
    elif cls in ("AutoEncoderTopK", "BatchTopKSAE"):
        shapes = {"encoder.bias": (d_sae,), "decoder.weight": (d_in, d_sae), "b_dec": (d_in,)}
        check_tensor_shapes(s, shapes, file=weights, source=f"d_in={d_in}, d_sae={d_sae}")
        out = {
            "W_enc": s["encoder.weight"].T.contiguous(),
            "b_enc": s["encoder.bias"],
            "W_dec": s["decoder.weight"].T.contiguous(),
            "b_dec": s["b_dec"],
        }
        config_out = {**base, "apply_b_dec_to_input": True}
        if cls == "AutoEncoderTopK":
            k = int(s["k"])
            if not 1 <= k <= d_sae:
                raise RepscopeValueError(
                    f"{str(weights)!r}: buffer 'k' is {k}, outside [1, dict_size={d_sae}]."
                )
            config_out["k"] = k
            arch = "topk"
        else:
            # inference: relu(pre) * (relu(pre) > threshold) == pre * (pre > max(threshold, 0))
            thr = float(s["threshold"])
            out["threshold"] = torch.full((d_sae,), max(thr, 0.0), dtype=torch.float32)
            arch = "jumprelu"
    elif cls == "MatryoshkaBatchTopKSAE":
        shapes = {"b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        check_tensor_shapes(s, shapes, file=weights, source=f"d_in={d_in}, d_sae={d_sae}")
        out = {k: s[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        thr = float(s["threshold"])
        out["threshold"] = torch.full((d_sae,), max(thr, 0.0), dtype=torch.float32)
        config_out = {**base, "apply_b_dec_to_input": True}
        arch = "jumprelu"
    elif cls == "JumpReluAutoEncoder":
        shapes = {
            "b_enc": (d_sae,),
            "W_dec": (d_sae, d_in),
            "b_dec": (d_in,),
            "threshold": (d_sae,),
        }
        check_tensor_shapes(s, shapes, file=weights, source=f"d_in={d_in}, d_sae={d_sae}")
        out = {k: s[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        # relu(pre * 1[pre > t]) == pre * 1[pre > max(t, 0)]
        out["threshold"] = s["threshold"].clamp_min(0)
        # apply_b_dec_to_input is an attribute, not a buffer: False unless set by hand.
        config_out = {**base, "apply_b_dec_to_input": False}
        arch = "jumprelu"
    else:  # GatedAutoEncoder
        shapes = {
            "decoder.weight": (d_in, d_sae),
            "decoder_bias": (d_in,),
            "gate_bias": (d_sae,),
            "mag_bias": (d_sae,),
            "r_mag": (d_sae,),
        }
        check_tensor_shapes(s, shapes, file=weights, source=f"d_in={d_in}, d_sae={d_sae}")
        out = {
            "W_enc": s["encoder.weight"].T.contiguous(),
            "W_dec": s["decoder.weight"].T.contiguous(),
            "b_dec": s["decoder_bias"],
            "b_gate": s["gate_bias"],
            "b_mag": s["mag_bias"],
            "r_mag": s["r_mag"],
        }
        config_out = {**base, "apply_b_dec_to_input": True}
        arch = "gated"
    config_out["dtype"] = _dtype_of(out["W_enc"])
    return build_sae(arch, config_out, out, file=weights, device=device)
