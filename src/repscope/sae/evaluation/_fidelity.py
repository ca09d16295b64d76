"""Downstream fidelity: the language-model loss with an SAE's reconstruction spliced in.

The figure SAE users trust most. For a causal LM, a layer whose output is the residual stream,
and a set of texts, three next-token cross-entropies are measured over the same real tokens:

- ``clean``: the model as it is;
- ``spliced``: the layer's output replaced by the SAE's reconstruction of it;
- ``zero_ablated``: the layer's output replaced by zeros;

and ``fraction_recovered = (zero - spliced) / (zero - clean)`` (1: the SAE loses nothing;
0: as bad as deleting the residual stream). The model is used in place (eval mode, no gradient)
and the output is replaced through :func:`repscope.extract._intervene.intervene`, whose hook is
removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeValueError
from repscope.extract._intervene import intervene
from repscope.results import Result
from repscope.sae.archs._base import SparseAutoencoder

__all__ = ["LossRecovered",
    "LossRecoveredResult", "spliced_lm_loss"]


@dataclass(frozen=True)
class LossRecoveredResult(Result):
    """Next-token loss of a causal LM, clean, with an SAE spliced in, and zero-ablated.

    Attributes
    ----------
    clean, spliced, zero_ablated : float
        Mean cross-entropy (nats per token) over ``n_tokens`` predicted tokens.
    fraction_recovered : float
        ``(zero_ablated - spliced) / (zero_ablated - clean)``.
    delta : float
        ``spliced - clean`` (the loss the SAE adds).
    n_tokens : int
    layer : str
    positions : str
        Which positions were spliced (``"all"`` or ``"skip_first"``).
    """

    clean: float
    spliced: float
    zero_ablated: float
    fraction_recovered: float
    delta: float
    n_tokens: int
    layer: str
    positions: str


#: The former name of :class:`LossRecoveredResult` (kept for one release).
LossRecovered = LossRecoveredResult


def _token_losses(model: Any, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = ids[:, 1:]
    valid = (mask[:, 1:] * mask[:, :-1]).bool()
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
    ).reshape(target.shape)
    return (ce * valid).sum(), valid.sum()


def spliced_lm_loss(
    model: Any,
    sae: SparseAutoencoder,
    layer: str,
    texts: Sequence[str],
    *,
    tokenizer: Any = None,
    max_length: int = 64,
    batch_size: int = 16,
    positions: Literal["all", "skip_first"] = "all",
    progress: ProgressLike = False,
) -> LossRecoveredResult:
    """Clean, SAE-spliced and zero-ablated next-token loss of a causal LM on ``texts``.

    Parameters
    ----------
    model : transformers causal LM or repscope.zoo LoadedModel
        Called as ``model(input_ids=..., attention_mask=...)`` returning ``.logits``.
    sae : SparseAutoencoder
        Trained on the outputs of ``layer`` (raw activations; its normaliser is applied).
    layer : str
        Module path whose output (the residual stream after a decoder block, e.g.
        ``"model.layers.14"``) is replaced.
    texts : sequence of str
    tokenizer : tokenizer, optional
        Required unless ``model`` is a LoadedModel carrying one.
    max_length, batch_size : int
    positions : {"all", "skip_first"}
        ``"skip_first"`` leaves position 0 untouched (for models whose first position is an
        attention sink with an outsized norm).
    progress : bool or callable, default=False
        True shows a progress bar over the texts (three forward passes each) with an ETA; a
        callable ``advance(k)`` is called with the texts done instead (a caller's bar).

    Returns
    -------
    LossRecoveredResult
    """
    if hasattr(model, "model") and hasattr(model, "kind"):  # a zoo LoadedModel
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        model = model.model
    if tokenizer is None:
        raise RepscopeValueError("spliced_lm_loss needs the model's tokenizer ('tokenizer').")
    if positions not in ("all", "skip_first"):
        raise RepscopeValueError(
            f"The 'positions' parameter of spliced_lm_loss must be 'all' or 'skip_first'. "
            f"Got {positions!r} instead."
        )
    if len(texts) == 0:
        raise RepscopeValueError("The 'texts' parameter of spliced_lm_loss is empty.")
    modules = dict(model.named_modules())
    if layer not in modules:
        from repscope.registry import closest_names

        close = closest_names(layer, list(modules))
        raise RepscopeValueError(
            f"The model has no module {layer!r}."
            + (f" Did you mean {close[0]!r}?" if close else "")
        )
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    was_training = model.training
    model.eval()
    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    n_tok = 0
    device = next(model.parameters()).device

    def splice(h: Tensor) -> Tensor:
        if h.shape[-1] != sae.d_in:
            raise RepscopeValueError(
                f"Layer {layer!r} outputs {h.shape[-1]} features; the SAE's d_in is {sae.d_in}."
            )
        rec = sae(h.to(sae.device)).reconstruction.reshape(h.shape).to(h.dtype).to(h.device)
        if positions == "skip_first":
            rec[:, 0] = h[:, 0]
        return rec

    def zero(h: Tensor) -> Tensor:
        z = torch.zeros_like(h)
        if positions == "skip_first":
            z[:, 0] = h[:, 0]
        return z

    try:
        with torch.inference_mode(), progress_for(
            progress, "LM loss texts", len(texts), prefix="sae eval"
        ) as advance:
            for a in range(0, len(texts), batch_size):
                enc = tokenizer(
                    list(texts[a : a + batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                )
                ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
                s, n = _token_losses(model, ids, mask)
                sums["clean"] += float(s)
                n_tok += int(n)
                with intervene(model, {layer: splice}):
                    sums["spliced"] += float(_token_losses(model, ids, mask)[0])
                with intervene(model, {layer: zero}):
                    sums["zero"] += float(_token_losses(model, ids, mask)[0])
                advance(len(texts[a : a + batch_size]))
    finally:
        model.train(was_training)
    if n_tok == 0:
        raise RepscopeValueError("The texts gave no next-token predictions (all too short).")
    clean, spliced, zero_l = (sums[k] / n_tok for k in ("clean", "spliced", "zero"))
    gap = zero_l - clean
    frac = (zero_l - spliced) / gap if gap != 0 else float("nan")
    return LossRecoveredResult(
        clean=clean,
        spliced=spliced,
        zero_ablated=zero_l,
        fraction_recovered=frac,
        delta=spliced - clean,
        n_tokens=n_tok,
        layer=layer,
        positions=positions,
    )
