"""Steering a causal LM by adding (or projecting out) a direction at one layer.

The effect is measured on the next-token distribution after each prompt: for every steering
coefficient ``c`` the residual output of ``layer`` becomes ``h + c * direction`` (through
:func:`repscope.extract._intervene.intervene`), and against the unsteered forward we report

- the mean KL divergence ``KL(p_steered || p_clean)`` of the next-token distributions;
- the mean log-probability of a target token.

The control is a random direction of the same norm (Gaussian, then rescaled; averaged over
``n_random`` draws): a direction that carries the concept raises the target's log-probability
above what any vector of its size does. Ablation (``h - (h . u) u``, ``u`` the unit direction,
at every position) is measured once, as the concept's necessity rather than sufficiency.

:func:`next_token_direction` builds a direction from data: the difference of mean residuals at
``layer`` between positions whose next token is the target and all other positions (the
contrastive "mean difference" of activation addition). We chose it over the unembedding row of
the target mapped back through the final RMSNorm gain, because the mean difference is a
direction *of that layer's residual stream* at any depth, while the unembedding row is only
read out at the end of the stack and mixes with whatever the later blocks write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

if TYPE_CHECKING:
    import torch

__all__ = ["SteeringResult", "next_token_direction", "steering_effect"]


@dataclass(frozen=True)
class SteeringResult(RecordedResult):
    """The effect of steering a causal LM along a direction at one layer, with its control.

    Record keys (one record per coefficient, at ``layer``): ``coefficient``,
    ``target_logprob``, ``kl``, ``random_target_logprob``, ``random_kl``,
    ``clean_target_logprob``, ``ablation_target_logprob``, ``ablation_kl``, ``target_token``,
    ``direction_norm``, ``n_prompts``, ``n_random``, ``positions``.

    Attributes
    ----------
    layer : str
        The module whose output was steered.
    target_token : str
        The token whose log-probability is tracked (decoded text).
    target_id : int
    coefficients : tuple of float
        In the order given.
    target_logprob, kl : tuple of float
        Per coefficient: the mean next-token log-probability of the target and the mean
        ``KL(p_steered || p_clean)`` (nats) over the prompts.
    random_target_logprob, random_kl : tuple of float
        The same for random directions of the same norm (mean over ``n_random`` draws); empty
        when ``baseline`` was None.
    clean_target_logprob : float
        Unsteered.
    ablation_target_logprob, ablation_kl : float
        With the direction projected out of the layer's output.
    direction_norm : float
    n_prompts, n_random : int
    positions : str
        ``"all"`` (every position was steered) or ``"last"`` (only each prompt's last token).
    """

    layer: str
    target_token: str
    target_id: int
    coefficients: tuple[float, ...]
    target_logprob: tuple[float, ...]
    kl: tuple[float, ...]
    random_target_logprob: tuple[float, ...]
    random_kl: tuple[float, ...]
    clean_target_logprob: float
    ablation_target_logprob: float
    ablation_kl: float
    direction_norm: float
    n_prompts: int
    n_random: int
    positions: str

    analysis: ClassVar[str] = "concepts_steering"

    @property
    def monotonic(self) -> bool:
        """Whether the target's log-probability never falls as the coefficient grows."""
        order = np.argsort(self.coefficients, kind="stable")
        lp = np.asarray(self.target_logprob)[order]
        return bool(np.all(np.diff(lp) >= 0))

    @property
    def above_random(self) -> bool:
        """Whether every positive coefficient raises the target more than the random control."""
        if not self.random_target_logprob:
            return False
        pairs = [(lp, r) for c, lp, r in zip(self.coefficients, self.target_logprob,
                                               self.random_target_logprob) if c > 0]
        return bool(pairs) and all(lp > r for lp, r in pairs)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        rows = []
        for i, c in enumerate(self.coefficients):
            rows.append((self.layer, {
                "coefficient": float(c),
                "target_logprob": _num(self.target_logprob[i]),
                "kl": _num(self.kl[i]),
                "random_target_logprob": (_num(self.random_target_logprob[i])
                                          if self.random_target_logprob else None),
                "random_kl": _num(self.random_kl[i]) if self.random_kl else None,
                "clean_target_logprob": _num(self.clean_target_logprob),
                "ablation_target_logprob": _num(self.ablation_target_logprob),
                "ablation_kl": _num(self.ablation_kl),
                "target_token": self.target_token,
                "direction_norm": _num(self.direction_norm),
                "n_prompts": int(self.n_prompts),
                "n_random": int(self.n_random),
                "positions": self.positions,
            }))
        return rows


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _unwrap(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    import torch

    if not isinstance(model, torch.nn.Module) and hasattr(model, "model") and hasattr(
            model, "kind"):  # a zoo LoadedModel
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        model = model.model
    if not isinstance(model, torch.nn.Module):
        raise RepscopeTypeError(
            f"model: expected a torch causal LM (or a repscope.zoo LoadedModel); got "
            f"{type(model).__name__}."
        )
    return model, tokenizer


def _target_id(target_token: Any, tokenizer: Any, vocab: int) -> tuple[int, str]:
    if isinstance(target_token, (int, np.integer)) and not isinstance(target_token, bool):
        tid = int(target_token)
        if not 0 <= tid < vocab:
            raise RepscopeValueError(
                f"target_token: expected a token id in [0, {vocab}); got {tid}."
            )
        text = tokenizer.decode([tid]) if tokenizer is not None else str(tid)
        return tid, text
    if not isinstance(target_token, str) or not target_token:
        raise RepscopeTypeError(
            f"target_token: expected a token id (int) or a one-token string such as ' she'; got "
            f"{target_token!r}."
        )
    if tokenizer is None:
        raise RepscopeValueError(
            "target_token: a string target needs the model's tokenizer (pass tokenizer, or a zoo "
            "LoadedModel); pass the token id instead."
        )
    ids = tokenizer(target_token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise RepscopeValueError(
            f"target_token: expected a string that is one token; {target_token!r} is "
            f"{len(ids)} tokens {ids}. Mind the leading space (' she' vs 'she')."
        )
    return int(ids[0]), target_token


def _batches(inputs: Any, tokenizer: Any, max_length: int, batch_size: int,
             device: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(input_ids, attention_mask)`` batches, right-padded."""
    import torch

    if isinstance(inputs, str):
        raise RepscopeValueError(
            f"inputs: expected a list of prompts; got the single string {inputs[:40]!r}. Wrap it "
            "in a list."
        )
    if isinstance(inputs, torch.Tensor) or (isinstance(inputs, Mapping) and "input_ids" in inputs):
        ids = inputs if isinstance(inputs, torch.Tensor) else inputs["input_ids"]
        ids = torch.as_tensor(ids)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise RepscopeValueError(
                f"inputs: token ids must have shape (n_prompts, seq_len); got {tuple(ids.shape)}."
            )
        mask = (torch.as_tensor(inputs["attention_mask"]) if isinstance(inputs, Mapping)
                and "attention_mask" in inputs else torch.ones_like(ids))
        if mask.shape != ids.shape:
            raise RepscopeValueError(
                f"inputs: attention_mask has shape {tuple(mask.shape)}, input_ids "
                f"{tuple(ids.shape)}."
            )
        if bool((mask.sum(1) == 0).any()):
            raise RepscopeValueError("inputs: a prompt has no tokens (an all-zero mask row).")
        if bool((mask[:, :-1] < mask[:, 1:]).any()):
            raise RepscopeValueError(
                "inputs: prompts must be right-padded (the attention mask is 1s then 0s)."
            )
        return [(ids[a:a + batch_size].to(device), mask[a:a + batch_size].to(device))
                for a in range(0, ids.shape[0], batch_size)]
    texts = list(inputs)
    if not texts:
        raise RepscopeValueError("inputs: expected at least one prompt; got none.")
    if not all(isinstance(t, str) for t in texts):
        raise RepscopeTypeError(
            "inputs: expected prompts (a list of str) or token ids (a tensor or a mapping with "
            "input_ids); got a list holding non-strings."
        )
    if tokenizer is None:
        raise RepscopeValueError(
            "tokenizer: text prompts need the model's tokenizer (pass tokenizer, or a zoo "
            "LoadedModel, or token ids)."
        )
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    side = getattr(tokenizer, "padding_side", "right")
    out = []
    try:
        tokenizer.padding_side = "right"
        for a in range(0, len(texts), batch_size):
            enc = tokenizer(texts[a:a + batch_size], return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length)
            out.append((enc["input_ids"].to(device), enc["attention_mask"].to(device)))
    finally:
        tokenizer.padding_side = side
    return out


def _check_layer(model: Any, layer: Any) -> None:
    from repscope.extract._hooks import resolve_modules

    if not isinstance(layer, str):
        raise RepscopeTypeError(
            f"layer: expected a module path such as 'model.layers.14'; got {layer!r}."
        )
    resolve_modules(model, [layer])


def _direction(direction: Any, width: int | None) -> torch.Tensor:
    import torch

    from repscope.extract._intervene import _as_vector

    v = _as_vector(direction, "direction").to(torch.float32)
    if width is not None and v.shape[0] != width:
        raise RepscopeValueError(
            f"direction: expected width {width} (the model's hidden size); got a vector of "
            f"width {v.shape[0]}."
        )
    if float(v.norm()) == 0.0:
        raise RepscopeValueError("direction: got the zero vector.")
    return v


def _last_logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float64 log-softmax of the logits at each prompt's last real token."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits
    last = mask.sum(1).long() - 1
    rows = logits[torch.arange(ids.shape[0], device=ids.device), last]
    return torch.log_softmax(rows.double(), dim=-1)


def _steer_edit(vector: torch.Tensor, positions: str, last: torch.Tensor) -> Any:
    """``h + vector`` at every position or only at each row's last real token."""
    import torch

    from repscope.extract._intervene import add_direction

    if positions == "all":
        return add_direction(vector, 1.0)

    def edit(h: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] != vector.shape[0]:
            add_direction(vector, 1.0)(h)  # raises the width error
        out = h.clone()
        rows = torch.arange(h.shape[0], device=h.device)
        out[rows, last.to(h.device)] += vector.to(device=h.device, dtype=h.dtype)
        return out

    return edit


def steering_effect(
    model: Any,
    inputs: Any,
    layer: str,
    direction: Any,
    coefficients: Sequence[float],
    *,
    target_token: int | str,
    tokenizer: Any = None,
    baseline: Literal["random"] | None = "random",
    n_random: int = 3,
    positions: Literal["all", "last"] = "all",
    max_length: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    progress: ProgressLike = True,
) -> SteeringResult:
    """Add ``c * direction`` to a layer's output for each ``c``; the next-token effect.

    Parameters
    ----------
    model : transformers causal LM or repscope.zoo LoadedModel
        Called as ``model(input_ids=..., attention_mask=...)`` returning ``.logits``. Used in
        place (eval mode restored afterwards, no gradients).
    inputs : list of str, tensor of token ids, or mapping with ``input_ids``
        The prompts; the next token after each prompt's last real token is measured. Token ids
        must be right-padded (``attention_mask`` 1s then 0s).
    layer : str
        Module path whose output is the residual stream (``"model.layers.14"`` on SmolLM2).
    direction : 1-D array or tensor of the model's hidden width
        Added as given (not normalised): ``coefficients`` scale it.
    coefficients : sequence of float
    target_token : int or str
        A token id, or a string that is exactly one token (``" she"``).
    tokenizer : tokenizer, optional
        Needed for text prompts and string targets unless ``model`` is a LoadedModel.
    baseline : {"random", None}, default "random"
        ``"random"`` repeats every coefficient with ``n_random`` Gaussian directions rescaled to
        ``direction``'s norm (the control); None skips it.
    n_random : int, default 3
    positions : {"all", "last"}, default "all"
        Steer every position (activation addition) or only each prompt's last token.
    max_length, batch_size : int
    seed : int
        Seeds the random directions.
    progress : bool or callable, default True

    Returns
    -------
    SteeringResult

    Raises
    ------
    UnknownNameError
        ``layer`` is not a module of the model (close names suggested).
    RepscopeValueError
        A direction of the wrong width or zero, no coefficients, a target that is not one
        token, empty prompts.
    """
    import torch

    from repscope.extract._intervene import ablate_direction, intervene

    net, tokenizer = _unwrap(model, tokenizer)
    _check_layer(net, layer)
    width = getattr(getattr(net, "config", None), "hidden_size", None)
    v = _direction(direction, width)
    try:
        coefs = tuple(float(c) for c in coefficients)
    except (TypeError, ValueError) as err:
        raise RepscopeTypeError(
            f"coefficients: expected a sequence of numbers; got {coefficients!r}."
        ) from err
    if not coefs or not all(math.isfinite(c) for c in coefs):
        raise RepscopeValueError(
            f"coefficients: expected at least one finite number; got {coefficients!r}."
        )
    if baseline not in ("random", None):
        raise RepscopeValueError(f"baseline: expected 'random' or None; got {baseline!r}.")
    if positions not in ("all", "last"):
        raise RepscopeValueError(f"positions: expected 'all' or 'last'; got {positions!r}.")
    if baseline == "random" and (not isinstance(n_random, int) or n_random < 1):
        raise RepscopeValueError(f"n_random: expected an integer >= 1; got {n_random!r}.")
    vocab = getattr(getattr(net, "config", None), "vocab_size", None) or 2**62
    tid, ttext = _target_id(target_token, tokenizer, int(vocab))
    device = next(net.parameters()).device
    batches = _batches(inputs, tokenizer, max_length, batch_size, device)
    n_prompts = sum(int(ids.shape[0]) for ids, _ in batches)

    norm = float(v.norm())
    randoms: list[torch.Tensor] = []
    if baseline == "random":
        g = torch.Generator().manual_seed(int(seed))
        for _ in range(n_random):
            r = torch.randn(v.shape[0], generator=g, dtype=torch.float32)
            randoms.append(r * (norm / float(r.norm())))

    def stats(lp: torch.Tensor, clean: torch.Tensor) -> tuple[float, float]:
        kl = (lp.exp() * (lp - clean)).sum(-1)
        return float(lp[:, tid].sum()), float(kl.clamp_min(0).sum())

    sums = {"clean": 0.0, "abl_lp": 0.0, "abl_kl": 0.0}
    lp_s = np.zeros(len(coefs))
    kl_s = np.zeros(len(coefs))
    rlp_s = np.zeros(len(coefs))
    rkl_s = np.zeros(len(coefs))
    per_batch = 2 + len(coefs) * (1 + len(randoms))
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(), progress_for(
            progress, "steering forwards", per_batch * len(batches), prefix="concepts"
        ) as advance:
            for ids, mask in batches:
                last = mask.sum(1).long() - 1
                clean = _last_logprobs(net, ids, mask)
                sums["clean"] += float(clean[:, tid].sum())
                advance(1)
                for i, c in enumerate(coefs):
                    with intervene(net, {layer: _steer_edit(c * v, positions, last)}):
                        a, b = stats(_last_logprobs(net, ids, mask), clean)
                    lp_s[i] += a
                    kl_s[i] += b
                    advance(1)
                    for r in randoms:
                        with intervene(net, {layer: _steer_edit(c * r, positions, last)}):
                            a, b = stats(_last_logprobs(net, ids, mask), clean)
                        rlp_s[i] += a / len(randoms)
                        rkl_s[i] += b / len(randoms)
                        advance(1)
                with intervene(net, {layer: ablate_direction(v)}):
                    a, b = stats(_last_logprobs(net, ids, mask), clean)
                sums["abl_lp"] += a
                sums["abl_kl"] += b
                advance(1)
    finally:
        net.train(was_training)
    n = float(n_prompts)
    return SteeringResult(
        layer=layer,
        target_token=ttext,
        target_id=tid,
        coefficients=coefs,
        target_logprob=tuple(float(x) / n for x in lp_s),
        kl=tuple(float(x) / n for x in kl_s),
        random_target_logprob=tuple(float(x) / n for x in rlp_s) if randoms else (),
        random_kl=tuple(float(x) / n for x in rkl_s) if randoms else (),
        clean_target_logprob=sums["clean"] / n,
        ablation_target_logprob=sums["abl_lp"] / n,
        ablation_kl=sums["abl_kl"] / n,
        direction_norm=norm,
        n_prompts=n_prompts,
        n_random=len(randoms),
        positions=positions,
    )


def next_token_direction(
    model: Any,
    texts: Sequence[str],
    layer: str,
    target_token: int | str,
    *,
    tokenizer: Any = None,
    max_length: int = 64,
    batch_size: int = 16,
    skip_first: bool = True,
) -> np.ndarray:
    """Mean residual before the target token minus the mean residual elsewhere, at ``layer``.

    Every real token position ``t`` of ``texts`` (except the last of each text, and position 0
    when ``skip_first``: SmolLM2's first position is an attention sink whose norm is ~40x the
    others') is a positive when token ``t + 1`` is ``target_token`` and a negative otherwise;
    the direction is ``mean(h_t | positive) - mean(h_t | negative)`` of the layer's output,
    read with :func:`repscope.extract.capture`.

    Returns
    -------
    ndarray of shape (hidden,), float32

    Raises
    ------
    RepscopeValueError
        No position is followed by the target, or every position is.
    """
    import torch

    from repscope.extract._hooks import capture

    net, tokenizer = _unwrap(model, tokenizer)
    _check_layer(net, layer)
    vocab = getattr(getattr(net, "config", None), "vocab_size", None) or 2**62
    tid, ttext = _target_id(target_token, tokenizer, int(vocab))
    device = next(net.parameters()).device
    batches = _batches(texts, tokenizer, max_length, batch_size, device)
    pos_sum: torch.Tensor | None = None
    neg_sum: torch.Tensor | None = None
    n_pos = n_neg = 0
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            for ids, mask in batches:
                with capture(net, [layer]) as acts:
                    net(input_ids=ids, attention_mask=mask)
                h = acts[layer][:, :-1].double()
                valid = (mask[:, 1:] * mask[:, :-1]).bool()
                if skip_first:
                    valid[:, 0] = False
                hit = (ids[:, 1:] == tid) & valid
                miss = valid & ~hit
                ps, ns = h[hit].sum(0), h[miss].sum(0)
                pos_sum = ps if pos_sum is None else pos_sum + ps
                neg_sum = ns if neg_sum is None else neg_sum + ns
                n_pos += int(hit.sum())
                n_neg += int(miss.sum())
    finally:
        net.train(was_training)
    if n_pos == 0 or n_neg == 0 or pos_sum is None or neg_sum is None:
        raise RepscopeValueError(
            f"texts: the target {ttext!r} follows {n_pos} of {n_pos + n_neg} positions; a mean "
            "difference needs both positions before it and others. Pass more (or other) texts."
        )
    return (pos_sum / n_pos - neg_sum / n_neg).float().cpu().numpy()
