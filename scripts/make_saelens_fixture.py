"""Write the small SAELens-format SAE fixtures under ``tests/data/`` (how they were made).

Two directories, each laid out exactly as SAELens v6's ``SAE.save_model`` writes them
(``cfg.json`` = ``SAEConfig.to_dict()``, i.e. the dataclass fields plus ``architecture`` and a
``metadata`` object; ``sae_weights.safetensors`` = the module's ``state_dict()``):

- ``saelens_topk_fixture/``: a SAELens ``topk`` SAE (``TopKSAE`` / ``TopKSAEConfig``),
  d_in=16, d_sae=64, k=4, ``apply_b_dec_to_input=True``, ``rescale_acts_by_decoder_norm=False``;
  tensors ``W_enc`` (16, 64), ``b_enc`` (64,), ``W_dec`` (64, 16) (rows deliberately not unit
  norm), ``b_dec`` (16,);
- ``saelens_jumprelu_fixture/``: a SAELens ``jumprelu`` SAE (``JumpReLUSAE``), d_in=16,
  d_sae=64, ``apply_b_dec_to_input=False`` (the Gemma Scope convention), with the extra
  ``threshold`` (64,) tensor.

Beside the SAE files each directory holds ``inputs.npy`` (32, 16) float32 and the outputs of a
naive re-implementation of SAELens's inference forward for that architecture, written below with
plain torch ops that mirror ``sae_lens/saes/sae.py::SAE.process_sae_in`` and the architecture's
``encode``/``decode`` (SAELens 6.x):

- ``expected_feature_acts.npy`` (32, 64): the dense codes ``SAE.encode(x)``;
- ``expected_output.npy`` (32, 16): ``SAE.forward(x) = decode(encode(x))``.

Weights come from a seeded generator, so rerunning the script rewrites identical files. Inputs
are chosen so that no pre-activation sits within 1e-3 of a TopK cut or a JumpReLU threshold,
which keeps the expected codes stable under float32 rounding differences between
implementations.

Usage::

    python scripts/make_saelens_fixture.py [--out tests/data]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

D_IN, D_SAE, K, N = 16, 64, 4, 32
SAELENS_VERSION = "6.54.12"  # the SAELens release whose layout and forward this mirrors
MARGIN = 1e-3


def base_config(architecture: str, *, apply_b_dec_to_input: bool) -> dict[str, object]:
    """``SAEConfig.to_dict()`` of SAELens 6.x for an inference SAE."""
    return {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_VERSION,
            "sae_lens_training_version": SAELENS_VERSION,
            "model_name": "repscope-synthetic",
            "hook_name": "blocks.0.hook_resid_post",
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": 128,
            "dataset_path": "synthetic",
        },
        "architecture": architecture,
    }


# ---------------------------------------------------------------------------- naive forwards
def process_sae_in(x: torch.Tensor, b_dec: torch.Tensor, apply: bool) -> torch.Tensor:
    """SAELens ``process_sae_in``: ``x - b_dec * apply_b_dec_to_input`` (no normaliser)."""
    return x - b_dec * apply


def topk_encode(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """SAELens ``TopKSAE.encode`` with ``rescale_acts_by_decoder_norm=False``: ``topk`` of the
    pre-activations (unsorted), ReLU on the kept values, scattered into zeros."""
    hidden_pre = process_sae_in(x, w["b_dec"], True) @ w["W_enc"] + w["b_enc"]
    vals, idx = torch.topk(hidden_pre, k=K, dim=-1, sorted=False)
    return torch.zeros_like(hidden_pre).scatter_(-1, idx, vals.relu())


def jumprelu_encode(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """SAELens ``JumpReLUSAE.encode``: ``relu(pre) * (pre > threshold)``."""
    hidden_pre = process_sae_in(x, w["b_dec"], False) @ w["W_enc"] + w["b_enc"]
    return torch.relu(hidden_pre) * (hidden_pre > w["threshold"]).to(hidden_pre.dtype)


def decode(acts: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """SAELens ``decode``: ``acts @ W_dec + b_dec``."""
    return acts @ w["W_dec"] + w["b_dec"]


# ---------------------------------------------------------------------------- weights / inputs
def topk_weights(gen: torch.Generator) -> dict[str, torch.Tensor]:
    w_dec = torch.randn(D_SAE, D_IN, generator=gen)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * (0.5 + torch.rand(D_SAE, 1, generator=gen))
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=gen) / D_IN**0.5,
        "b_enc": 0.1 * torch.randn(D_SAE, generator=gen),
        "W_dec": w_dec,
        "b_dec": 0.5 + 0.2 * torch.randn(D_IN, generator=gen),
    }


def jumprelu_weights(gen: torch.Generator) -> dict[str, torch.Tensor]:
    w = topk_weights(gen)
    w["b_enc"] = w["b_enc"] - 0.2
    w["threshold"] = 0.05 + 0.4 * torch.rand(D_SAE, generator=gen)
    return w


def safe_inputs(gen: torch.Generator, w: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """Rows drawn until every kept row is at least ``MARGIN`` away from a decision boundary."""
    rows: list[torch.Tensor] = []
    while len(rows) < N:
        x = 0.5 + torch.randn(D_IN, generator=gen)
        if kind == "topk":
            pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
            srt = pre.sort(descending=True).values
            ok = float(srt[K - 1] - srt[K]) > MARGIN and float(srt[K - 1]) > MARGIN
        else:
            pre = x @ w["W_enc"] + w["b_enc"]
            ok = bool(((pre - w["threshold"]).abs() > MARGIN).all()) and bool(
                (pre.abs() > MARGIN).all()
            )
        if ok:
            rows.append(x)
    return torch.stack(rows)


def write(
    out: Path,
    cfg: dict[str, object],
    w: dict[str, torch.Tensor],
    x: torch.Tensor,
    acts: torch.Tensor,
    y: torch.Tensor,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in w.items()}, str(out / "sae_weights.safetensors"))
    np.save(out / "inputs.npy", x.numpy().astype(np.float32))
    np.save(out / "expected_feature_acts.npy", acts.numpy().astype(np.float32))
    np.save(out / "expected_output.npy", y.numpy().astype(np.float32))
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "data"))
    args = ap.parse_args()
    root = Path(args.out)
    torch.set_num_threads(1)

    gen = torch.Generator().manual_seed(20240607)
    w = topk_weights(gen)
    x = safe_inputs(gen, w, "topk")
    acts = topk_encode(x, w)
    cfg = base_config("topk", apply_b_dec_to_input=True)
    cfg.update(k=K, rescale_acts_by_decoder_norm=False)
    write(root / "saelens_topk_fixture", cfg, w, x, acts, decode(acts, w))

    gen = torch.Generator().manual_seed(20240731)
    w = jumprelu_weights(gen)
    x = safe_inputs(gen, w, "jumprelu")
    acts = jumprelu_encode(x, w)
    cfg = base_config("jumprelu", apply_b_dec_to_input=False)
    write(root / "saelens_jumprelu_fixture", cfg, w, x, acts, decode(acts, w))


if __name__ == "__main__":
    main()
