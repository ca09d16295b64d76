"""Observable propagation (ObsProp) on Llama-style causal LMs (SmolLM2): data-free feature
vectors of attention heads for a token-level task, and the coupling coefficient.

Paper: Dunefsky & Cohan, "Observable Propagation: A Data-Efficient Approach to Uncover Feature
Vectors in Transformers" (the abstract states the observable paradigm, the LayerNorm direction
argument and the coupling coefficient "which estimates the degree to which one feature's output
correlates with another's"; the formulas below follow the authors' notebook).

**Observable.** A linear functional on the logits, ``n`` in R^vocab, e.g.
``logit(" she") - logit(" he")`` (:func:`observable`: positive minus negative one-hots).

**RMSNorm form of the recipe's LayerNorm correction.** The recipe (GPT-Neo) multiplies a
feature vector elementwise by ``gamma * sqrt(d) / mean||x||``: LayerNorm subtracts the mean
(a projection that removes the all-ones direction), scales by ``1/std(x) ~ sqrt(d)/||x||``
and multiplies by ``gamma``. Llama's RMSNorm is ``RMSNorm(x) = gamma * x / rms(x)`` with
``rms(x) = sqrt(mean(x**2) + eps) = ||x|| / sqrt(d)`` (``eps = 1e-5``, negligible): there is no
mean subtraction, so no projection, and the weight multiplies elementwise. So with
``x_hat = x / rms(x)`` (which always lies on the sphere of radius ``sqrt(d)``):

- the final norm gives ``n . logits = (gamma_f * W_U^T n) . r_hat``: the residual-stream normal
  is ``n_f = gamma_f * (W_U^T n)``, acting on the normalised final residual ``r_hat``;
- head ``h`` of layer ``l`` writes ``W_O[:, h] W_V[g(h)] (gamma_l * x_hat_k)`` from each key
  token ``k`` (weighted by its attention ``a_qk``); its direct effect on the observable is
  ``sum_k a_qk (y_lh . x_hat_k) / rms(r)`` with the **feature vector**
  ``y_lh = gamma_l * (W_V[g(h)]^T W_O[:, h]^T n_f)``. GQA: query head ``h`` reads the value
  head ``g(h) = h // (n_heads / n_kv_heads)`` (transformers' ``repeat_kv``), and ``W_O[:, h]``
  are the ``head_dim`` columns of ``o_proj`` that belong to head ``h``.

The scale ``1/rms(x)`` is input-dependent. What we do with it: ``y`` is defined on the
normalised input ``x_hat``, which makes it exact and data-free (``x_hat`` has norm ``sqrt(d)``
whatever the input), and the only input-dependent factor left, ``1/rms(r)`` of the final
residual, is the same for every head at a position, so it changes neither the ranking of heads
by ``||y||`` nor any coupling between two heads' vectors. To express ``y`` on the raw residual
stream (to compare it with directions fitted on raw activations), pass typical residual norms
``input_norms[l] = mean ||x||`` at layer ``l``'s input: ``y_raw = y * sqrt(d) / input_norms[l]``,
the recipe's correction without the mean projection. ``head_norm_raw`` / ``cos_raw`` report the
vector without either norm weight (``W_V^T W_O^T W_U^T n``), the recipe's "direction barely
changes" check.

Measured on SmolLM2-135M, observable ``logit(" she") - logit(" he")``: the top-5 heads by
``||y||`` (normalised-input units) share 4 of 5 with the top-5 by mean ``|DLA|`` on 8 Austen
pronoun prompts (5 of 10 for top-10); in raw-residual units (``input_norms`` from the same
prompts) the top 5 are all layer-0 heads (the embedding-level residual is small, so
``sqrt(d)/||x||`` inflates them) and the overlap is 0, which is why ranking uses the normalised
input. ``cos_raw`` (with vs without the norm weights) exceeds 0.9 for 61 % of the 270 heads
(median 0.91; the recipe's "most heads" is an estimate made for LayerNorm).

**Coupling coefficient.** ``C(y1, y2) = <y1, y2> / ||y1||^2``: for ``x`` uniform on a sphere,
``E[y2 . x | y1 . x = s] = C s`` (the component of ``y2`` orthogonal to ``y1`` averages to 0 by
reflection symmetry), the expected ``y2`` score when the ``y1`` score is 1.

**Direct logit attribution** (:func:`direct_logit_attribution`), the data-based comparison:
for each prompt, the exact direct effect of each head's output at the last position on the
observable through the final norm with its actual ``1/rms(r)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

__all__ = [
    "ObsPropResult",
    "coupling",
    "direct_logit_attribution",
    "head_feature_vectors",
    "observable",
    "obsprop",
]


@dataclass(frozen=True)
class ObsPropResult(RecordedResult):
    """ObsProp head feature vectors of one observable, summarised (``"concepts_obsprop"``).

    Attributes
    ----------
    layers : tuple of str
        Attention modules, ``model.layers.<l>.self_attn``.
    observable, second_observable : str
        Names of the observable and of the optional second one ("" if none).
    head_norm : ndarray (n_layers, n_heads)
        ``||y_lh||`` with the RMSNorm weights (on the normalised input, or on the raw
        residual when ``input_norms`` were given: ``units``).
    head_norm_raw : ndarray (n_layers, n_heads)
        ``||W_V^T W_O^T W_U^T n||`` (no norm weights).
    cos_raw : ndarray (n_layers, n_heads)
        Cosine between the two.
    top_heads : tuple of (layer, head)
        The ``top_k`` heads by ``head_norm``, largest first.
    coupling : ndarray (n_layers, n_heads) or None
        ``C(y_lh, y2_lh)``: the second observable's score per unit first-observable score of
        the same head.
    top_coupling : ndarray (top_k, top_k)
        ``C(y_i, y_j)`` between the top heads' vectors (row i = y1).
    dla : ndarray (n_layers, n_heads) or None
        Mean over prompts of ``|DLA|`` of each head (from :func:`direct_logit_attribution`).
    dla_top_heads : tuple of (layer, head)
        The ``top_k`` heads by ``dla`` (empty without prompts).
    top_overlap : int or None
        ``|top_heads & dla_top_heads|``.
    units : str
        ``"normalised input"`` or ``"raw residual"``.

    Records: one per layer with keys ``head_norm``, ``head_norm_raw``, ``cos_raw``,
    ``top_rank`` (per head its rank among the top heads or None), ``coupling`` (list or None),
    ``dla`` (list or None), ``dla_rank`` (list or None), and the model-level ``observable``,
    ``second_observable``, ``top_k``, ``top_overlap``, ``units``.
    """

    analysis: ClassVar[str] = "concepts_obsprop"

    layers: tuple[str, ...]
    observable: str
    second_observable: str
    head_norm: np.ndarray
    head_norm_raw: np.ndarray
    cos_raw: np.ndarray
    top_heads: tuple[tuple[int, int], ...]
    coupling: np.ndarray | None
    top_coupling: np.ndarray
    dla: np.ndarray | None
    dla_top_heads: tuple[tuple[int, int], ...]
    top_overlap: int | None
    units: str

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``concepts_obsprop`` record per attention layer (keys in the class docstring)."""
        rank = {h: i for i, h in enumerate(self.top_heads)}
        drank = {h: i for i, h in enumerate(self.dla_top_heads)}
        n_heads = self.head_norm.shape[1]
        rows = []
        for li, layer in enumerate(self.layers):
            rows.append((layer, {
                "head_norm": [float(v) for v in self.head_norm[li]],
                "head_norm_raw": [float(v) for v in self.head_norm_raw[li]],
                "cos_raw": [float(v) for v in self.cos_raw[li]],
                "top_rank": [rank.get((li, h)) for h in range(n_heads)],
                "coupling": None if self.coupling is None
                else [float(v) for v in self.coupling[li]],
                "dla": None if self.dla is None else [float(v) for v in self.dla[li]],
                "dla_rank": None if self.dla is None
                else [drank.get((li, h)) for h in range(n_heads)],
                "observable": self.observable,
                "second_observable": self.second_observable,
                "top_k": len(self.top_heads),
                "top_overlap": self.top_overlap,
                "units": self.units,
            }))
        return rows


# ------------------------------------------------------------------------------ model access


def _torch_model(model: Any) -> tuple[Any, Any]:
    """(torch model, tokenizer or None) of a zoo LoadedModel or a bare model."""
    if hasattr(model, "info") and hasattr(model, "kind") and hasattr(model, "model"):
        return model.model, model.tokenizer
    return model, None


def _llama_parts(model: Any) -> dict[str, Any]:
    """Weights ObsProp needs from a Llama-style causal LM (float64 numpy)."""
    net, _ = _torch_model(model)
    inner: Any = getattr(net, "model", None)
    cfg: Any = getattr(net, "config", None)
    layers: Any = getattr(inner, "layers", None)
    ok = (inner is not None and cfg is not None and layers is not None
          and hasattr(net, "lm_head") and hasattr(inner, "norm")
          and all(hasattr(lay, "self_attn") and hasattr(lay, "input_layernorm")
                  for lay in layers))
    if not ok or not hasattr(layers[0].self_attn, "o_proj") or not hasattr(
            layers[0].self_attn, "v_proj"):
        raise RepscopeTypeError(
            f"model: expected a Llama-style causal LM (lm_head, model.norm, model.layers[i] "
            f"with input_layernorm and self_attn.v_proj / o_proj, e.g. SmolLM2); got "
            f"{type(net).__name__}.")
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    d = int(cfg.hidden_size)
    head_dim = int(getattr(cfg, "head_dim", None) or d // n_heads)

    def w(t: Any) -> np.ndarray:
        return t.detach().to("cpu").double().numpy()

    return {
        "net": net, "n_heads": n_heads, "n_kv": n_kv, "d": d, "head_dim": head_dim,
        "W_U": net.lm_head.weight, "gamma_f": w(inner.norm.weight),
        "eps_f": float(getattr(inner.norm, "variance_epsilon", getattr(inner.norm, "eps", 1e-5))),
        "n_layers": len(layers), "layers": layers,
    }


def _unembed_normal(W_U: Any, n: np.ndarray) -> np.ndarray:
    """``W_U^T n`` in float64 from the rows of the observable's non-zero entries only (the
    unembedding is vocab x d; converting all of it costs more than the rest of ObsProp)."""
    idx = np.flatnonzero(n)
    rows = W_U.detach()[idx].to("cpu").double().numpy()
    return np.asarray(rows.T @ n[idx])


def observable(model: Any, positive: Sequence[str | int], negative: Sequence[str | int] = (),
               *, tokenizer: Any = None) -> np.ndarray:
    """A logit observable: the sum of the positive tokens' one-hots minus the negative ones'.

    Tokens are token ids or strings that encode to exactly one token (" she", with its space).

    Returns
    -------
    ndarray (vocab,)
    """
    net, tok = _torch_model(model)
    tokenizer = tokenizer if tokenizer is not None else tok
    W = net.get_output_embeddings().weight if hasattr(net, "get_output_embeddings") else None
    if W is None:
        raise RepscopeTypeError(
            f"model: expected a causal LM with an output embedding; got {type(net).__name__}.")
    n = np.zeros(int(W.shape[0]))
    if not positive:
        raise RepscopeValueError("positive: expected at least one token; got none.")
    for sign, toks, arg in ((1.0, positive, "positive"), (-1.0, negative, "negative")):
        for t in toks:
            if isinstance(t, str):
                if tokenizer is None:
                    raise RepscopeValueError(
                        f"{arg}: token strings need the model's tokenizer; got {t!r} and none.")
                ids = tokenizer.encode(t, add_special_tokens=False)
                if len(ids) != 1:
                    raise RepscopeValueError(
                        f"{arg}: expected strings that are one token each; {t!r} encodes to "
                        f"{len(ids)} tokens {ids}.")
                t = ids[0]
            if not 0 <= int(t) < len(n):
                raise RepscopeValueError(
                    f"{arg}: expected token ids in [0, {len(n)}); got {t}.")
            n[int(t)] += sign
    return n


def _check_observable(n: Any, vocab: int, what: str = "observable") -> np.ndarray:
    arr = np.asarray(n, dtype=np.float64)
    if arr.shape != (vocab,):
        raise RepscopeValueError(
            f"{what}: expected a vector over the vocabulary, shape ({vocab},); got {arr.shape}.")
    if not np.any(arr):
        raise RepscopeValueError(f"{what}: expected a non-zero functional on the logits; got 0.")
    return arr


def head_feature_vectors(
    model: Any,
    observable: Any,
    *,
    input_norms: Sequence[float] | Mapping[int, float] | None = None,
    norm_weights: bool = True,
) -> np.ndarray:
    """ObsProp feature vectors ``y_lh`` of every attention head (module docstring).

    Parameters
    ----------
    model : LlamaForCausalLM (or a zoo LoadedModel holding one)
    observable : array (vocab,)
    input_norms : sequence or mapping of float, optional
        Typical residual norms ``||x||`` at each layer's input; given, the vectors act on the
        raw residual (``y * sqrt(d) / input_norms[l]``); default they act on ``x / rms(x)``.
    norm_weights : bool, default True
        Include the final and input RMSNorm weights (False gives ``W_V^T W_O^T W_U^T n``).

    Returns
    -------
    ndarray (n_layers, n_heads, d), float64
    """
    p = _llama_parts(model)
    n = _check_observable(observable, p["W_U"].shape[0])
    H, hd, d, L = p["n_heads"], p["head_dim"], p["d"], p["n_layers"]
    rep = H // p["n_kv"]
    n_f = _unembed_normal(p["W_U"], n)
    if norm_weights:
        n_f = p["gamma_f"] * n_f
    scale = np.ones(L)
    if input_norms is not None:
        vals = (dict(input_norms) if isinstance(input_norms, Mapping)
                else dict(enumerate(input_norms)))
        if sorted(vals) != list(range(L)) or not all(float(v) > 0 for v in vals.values()):
            raise RepscopeValueError(
                f"input_norms: expected a positive residual norm for each of the {L} layers; "
                f"got {len(vals)} values.")
        scale = np.sqrt(d) / np.asarray([float(vals[i]) for i in range(L)])
    out = np.empty((L, H, d))
    for li, layer in enumerate(p["layers"]):
        attn = layer.self_attn
        Wo = attn.o_proj.weight.detach().double().numpy()  # (d, H * hd)
        Wv = attn.v_proj.weight.detach().double().numpy()  # (n_kv * hd, d)
        gamma = layer.input_layernorm.weight.detach().double().numpy()
        for h in range(H):
            g = h // rep
            v = Wv[g * hd:(g + 1) * hd].T @ (Wo[:, h * hd:(h + 1) * hd].T @ n_f)
            out[li, h] = (gamma * v if norm_weights else v) * scale[li]
    return out


def coupling(y1: Any, y2: Any) -> Any:
    """Coupling coefficient ``C(y1, y2) = <y1, y2> / ||y1||^2`` over the last axis (broadcast):
    the expected ``y2`` score of an input uniform on a sphere whose ``y1`` score is 1."""
    a, b = np.asarray(y1, dtype=np.float64), np.asarray(y2, dtype=np.float64)
    if a.shape[-1:] != b.shape[-1:]:
        raise RepscopeValueError(
            f"y2: expected feature vectors of the width of y1 ({a.shape[-1:]}); got "
            f"{b.shape[-1:]}.")
    den = (a * a).sum(-1)
    if np.any(den == 0):
        raise RepscopeValueError("y1: expected a non-zero feature vector; got 0.")
    c = (a * b).sum(-1) / den
    return float(c) if np.ndim(c) == 0 else c


def direct_logit_attribution(
    model: Any,
    prompts: Sequence[str],
    observable: Any,
    *,
    tokenizer: Any = None,
    progress: Any = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Direct logit attribution of every head at each prompt's last token.

    ``dla[p, l, h] = (W_O[:, h] z_lh) . n_f / rms(r)`` with ``z_lh`` the head's attention output
    (``sum_k a_qk v_k`` of its value group, from the eager attention weights and the
    ``v_proj`` outputs captured with :func:`repscope.extract.capture`), ``n_f`` the normal
    through the final norm weight and ``r`` the final residual (exact, no approximation).
    Prompts run one at a time (no padding).

    Returns
    -------
    dla : ndarray (n_prompts, n_layers, n_heads)
    input_norms : ndarray (n_layers,)
        Mean residual norm ``||x||`` at each layer's input over all prompt tokens (what
        :func:`head_feature_vectors` takes to express vectors on the raw residual).
    """
    import torch

    from repscope._progress import progress_for
    from repscope.concepts._attention import model_attention
    from repscope.extract import capture

    p = _llama_parts(model)
    net = p["net"]
    tok = tokenizer if tokenizer is not None else _torch_model(model)[1]
    if tok is None:
        raise RepscopeValueError("tokenizer: expected the model's tokenizer; got None.")
    n = _check_observable(observable, p["W_U"].shape[0])
    if not prompts or not all(isinstance(s, str) and s for s in prompts):
        raise RepscopeValueError("prompts: expected a non-empty sequence of non-empty str.")
    H, hd, L = p["n_heads"], p["head_dim"], p["n_layers"]
    rep = H // p["n_kv"]
    n_f = p["gamma_f"] * _unembed_normal(p["W_U"], n)
    Wo = [lay.self_attn.o_proj.weight.detach().double().numpy() for lay in p["layers"]]
    names = {f"model.layers.{i}.self_attn.v_proj": i for i in range(L)}
    res_names = ["model.embed_tokens", *(f"model.layers.{i}" for i in range(L))]
    out = np.zeros((len(prompts), L, H))
    norm_sum, norm_n = np.zeros(L), 0
    with progress_for(progress, "prompts", len(prompts)) as advance:
        for pi, text in enumerate(prompts):
            enc = tok(text, return_tensors="pt")
            with capture(net, [*names, *res_names]) as got, torch.no_grad():
                att = model_attention(net, dict(enc))
            resid = [got[k][0].double().numpy() for k in res_names]  # (T, d) each
            r = resid[-1][-1]
            rms = np.sqrt(np.mean(r * r) + p["eps_f"])
            for li in range(L):
                norm_sum[li] += np.linalg.norm(resid[li], axis=-1).sum()
            norm_n += resid[0].shape[0]
            for name, li in names.items():
                v = got[name][0].double().numpy()  # (T, n_kv * hd)
                a = att[li][0, :, -1].double().numpy()  # (H, T): last query's attention
                for h in range(H):
                    g = h // rep
                    z = a[h] @ v[:, g * hd:(g + 1) * hd]
                    out[pi, li, h] = (Wo[li][:, h * hd:(h + 1) * hd] @ z) @ n_f / rms
            advance(1)
    return out, norm_sum / max(norm_n, 1)


def _top(values: np.ndarray, k: int) -> tuple[tuple[int, int], ...]:
    flat = np.argsort(-values, axis=None, kind="stable")[:k]
    H = values.shape[1]
    return tuple((int(i // H), int(i % H)) for i in flat)


def obsprop(
    model: Any,
    observable: Any,
    *,
    second: Any = None,
    prompts: Sequence[str] | None = None,
    input_norms: Sequence[float] | Mapping[int, float] | None = None,
    top_k: int = 5,
    names: tuple[str, str] = ("", ""),
    tokenizer: Any = None,
    progress: Any = False,
) -> ObsPropResult:
    """ObsProp on a Llama-style causal LM: head feature vectors, top heads, couplings and, with
    ``prompts``, their overlap with direct logit attribution.

    Parameters
    ----------
    model : LlamaForCausalLM or zoo LoadedModel
    observable : array (vocab,)
        From :func:`observable`.
    second : array (vocab,), optional
        A second observable: ``coupling[l, h] = C(y_lh, y2_lh)``.
    prompts : sequence of str, optional
        Prompts for direct logit attribution at their last token.
    input_norms : optional
        Residual norms per layer (see :func:`head_feature_vectors`).
    top_k : int, default 5
    names : (str, str)
        Names of the observable and the second one, for records.

    Returns
    -------
    ObsPropResult
    """
    p = _llama_parts(model)
    if not isinstance(top_k, int) or not 1 <= top_k <= p["n_layers"] * p["n_heads"]:
        raise RepscopeValueError(
            f"top_k: expected an int in [1, {p['n_layers'] * p['n_heads']}]; got {top_k!r}.")
    Y = head_feature_vectors(model, observable, input_norms=input_norms)
    Y_raw = head_feature_vectors(model, observable, norm_weights=False)
    norm, norm_raw = np.linalg.norm(Y, axis=-1), np.linalg.norm(Y_raw, axis=-1)
    cos = (Y * Y_raw).sum(-1) / (norm * norm_raw)
    top = _top(norm, top_k)
    cpl = None
    if second is not None:
        Y2 = head_feature_vectors(model, second, input_norms=input_norms)
        cpl = coupling(Y, Y2)
    top_vecs = np.stack([Y[lh] for lh in top])
    top_c = coupling(top_vecs[:, None, :], top_vecs[None, :, :])
    dla = None
    dla_top: tuple[tuple[int, int], ...] = ()
    overlap = None
    if prompts is not None:
        raw, _ = direct_logit_attribution(model, prompts, observable, tokenizer=tokenizer,
                                          progress=progress)
        dla = np.abs(raw).mean(0)
        dla_top = _top(dla, top_k)
        overlap = len(set(top) & set(dla_top))
    return ObsPropResult(
        layers=tuple(f"model.layers.{i}.self_attn" for i in range(p["n_layers"])),
        observable=names[0], second_observable=names[1] if second is not None else "",
        head_norm=norm, head_norm_raw=norm_raw, cos_raw=cos, top_heads=top, coupling=cpl,
        top_coupling=np.asarray(top_c), dla=dla, dla_top_heads=dla_top, top_overlap=overlap,
        units="raw residual" if input_norms is not None else "normalised input")
