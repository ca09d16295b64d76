"""Cross-attention readout (transformer brain encoders, Adeli et al. 2025): learned queries,
one per target, attend to a set of token/patch features; each query's pooled value goes
through its own linear readout to its target.

For tokens :math:`x_{ij}` (sample ``i``, token ``j``), first projected on their leading
principal components and standardised (:math:`z_{ij}`), a learned positional embedding
:math:`p_j` and, when the tokens form a square grid, their centres :math:`g_j \\in [0, 1]^2`
in image coordinates,

.. math::

    k_{ij} = W_k z_{ij} + p_j,\\quad v_{ij} = W_v z_{ij},\\quad
    a_{itj} = \\mathrm{softmax}_j\\bigl(q_t^T k_{ij} / \\sqrt{h}
        - \\lVert g_j - c_t \\rVert^2 / 2\\sigma_t^2\\bigr),\\quad
    \\hat y_{it} = w_t^T \\textstyle\\sum_j a_{itj} v_{ij} + b_t,

so routing is content- and position-dependent and :math:`a_{t\\cdot}` says where target ``t``
reads. The second logit is the dot product of a fixed 2-D positional embedding of the keys,
:math:`(g_j, -\\lVert g_j \\rVert^2 / 2)`, with the positional part of query ``t``,
:math:`(c_t, 1) / \\sigma_t^2`: a learned receptive field (centre :math:`c_t`, width
:math:`\\sigma_t`) per target, as DAB-DETR (Liu et al. 2022) gives its queries anchor points.
The readouts :math:`w_t` start at zero, so a query moves only once its target is read, and a
target that does not vary (a blank image border) leaves its query where it started.
:func:`readout_comparison` scores it on held-out data beside per-target ridge on mean-pooled
features and ridge on the flattened tokens (the paper's linear baselines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from repscope._params import ValidatedEstimator
from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult

__all__ = ["CrossAttentionReadout", "ReadoutResult", "readout_comparison", "region_mass"]


def _tokens(X: Any, name: str, caller: str) -> np.ndarray:
    from repscope._array import is_torch, to_numpy

    x = to_numpy(X) if is_torch(X) else np.asarray(X)
    if x.ndim != 3 or min(x.shape) < 1:
        raise RepscopeValueError(
            f"{name} of {caller} must be tokens of shape (n_samples, n_tokens, n_features); "
            f"got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise RepscopeValueError(f"{name} of {caller} holds NaN or infinite values.")
    return x.astype(np.float32, copy=False)


def _targets(Y: Any, n: int, caller: str) -> np.ndarray:
    y = np.asarray(Y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise RepscopeValueError(
            f"Y of {caller} must have shape ({n}, n_targets), one row per sample; got "
            f"shape {np.shape(Y)}.")
    if not np.isfinite(y).all():
        raise RepscopeValueError(f"Y of {caller} holds NaN or infinite values.")
    return y


class CrossAttentionReadout(RegressorMixin, ValidatedEstimator):
    """Learned queries (one per target) cross-attending to tokens, one linear readout each.

    Parameters
    ----------
    dim : int, default=32
        Width ``h`` of keys, values and queries.
    n_components : int, default=64
        Tokens are first projected on this many principal components of all training tokens
        (capped at the feature count) and scaled to unit average variance.
    receptive_field : bool, default=True
        On a square token grid, add each target's learned receptive field (centre and width)
        to its attention logits; False (or tokens not on a square grid) leaves content and
        the learned positional embedding alone.
    width : float, default=0.15
        Initial width :math:`\\sigma_t` of every receptive field, a share of the image side
        (:func:`readout_comparison` uses half a cell of its ``target_grid``).
    max_iter : int, default=300
        AdamW steps, each on a minibatch of ``batch_size`` samples drawn without replacement
        (a new permutation each epoch).
    batch_size : int, default=64
    learning_rate : float, default=0.02
    weight_decay : float, default=0.01
        Decoupled weight decay (AdamW) on the projections, the positional embedding, the
        queries' content part and the readouts (not on the receptive fields or biases).
    random_state : int, default=0
        Seeds the initialisation (torch's generator; the fit is deterministic on CPU).

    Attributes
    ----------
    n_features_in_, n_tokens_, n_targets_ : int
    loss_ : float
        Final training mean squared error of the standardised targets.
    centres_, widths_ : ndarray of shape (n_targets, 2) and (n_targets,), or None
        The learned receptive fields (image coordinates, row then column), None without
        them.
    started_on_token_ : ndarray of shape (n_targets,) of bool, or None
        Which fields started on the single token that best predicts their target rather
        than at ``target_positions`` (or a random point): see :meth:`fit`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 9, 8)).astype(np.float32)
    >>> Y = X[:, [2, 6], 0]            # target t reads token 2 or 6
    >>> m = CrossAttentionReadout(max_iter=200).fit(X, Y)
    >>> m.attention(X).mean(0).argmax(1).tolist()
    [2, 6]
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "dim": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "receptive_field": ["boolean"],
        "width": [Interval(Real, 0, None, closed="neither")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, *, dim: int = 32, n_components: int = 64, max_iter: int = 300,
                 batch_size: int = 64, learning_rate: float = 0.02, weight_decay: float = 0.01,
                 receptive_field: bool = True, width: float = 0.15,
                 random_state: int = 0) -> None:
        self.dim = dim
        self.n_components = n_components
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.receptive_field = receptive_field
        self.width = width
        self.random_state = random_state

    def fit(self, X: Any, Y: Any, *, target_positions: Any = None,
            progress: ProgressLike = False) -> CrossAttentionReadout:
        """Fit on tokens ``X`` (n, t, d) and targets ``Y`` (n, k) or (n,).

        Each target's receptive field starts on the token whose features alone predict the
        target best (ridge per token, adjusted R^2 >= 0.05 on the training data), so a
        target read far from where it is expected is found. ``target_positions`` (k, 2),
        image coordinates in [0, 1] (row, column), e.g. the centre of each target's image
        cell, is kept as the start instead when a token within ``width`` of it predicts the
        target at least half as well as the best token, and is the start of a target no token
        predicts (a constant one); without it such targets start at random points.
        ``progress=True`` shows a bar over the training steps (or pass a caller's ``advance``
        callback)."""
        import torch

        self._validate_params()
        caller = "CrossAttentionReadout.fit"
        x = _tokens(X, "X", caller)
        y = _targets(Y, x.shape[0], caller)
        if x.shape[0] < 2:
            raise RepscopeValueError(f"X of {caller} needs at least 2 samples; got {x.shape[0]}.")
        n, t, d = x.shape
        flat = x.reshape(-1, d).astype(np.float64)
        mu = flat.mean(0)
        cov = np.cov(flat, rowvar=False).reshape(d, d)
        vals, vecs = np.linalg.eigh(cov)
        p = min(self.n_components, d)
        self.components_ = vecs[:, ::-1][:, :p].copy()
        self.token_mean_ = mu
        self.token_scale_ = float(np.sqrt(max(vals[::-1][:p].mean(), 1e-30)))
        self.y_mean_, self.y_scale_ = y.mean(0), np.where(y.std(0) > 0, y.std(0), 1.0)
        self.n_features_in_, self.n_tokens_, self.n_targets_ = d, t, y.shape[1]
        z = torch.from_numpy(self._project(x))
        ys = torch.from_numpy(((y - self.y_mean_) / self.y_scale_).astype(np.float32))
        gen = torch.Generator().manual_seed(int(self.random_state))
        h, k = self.dim, y.shape[1]

        def init(*shape: int, scale: float) -> torch.Tensor:
            return (torch.randn(*shape, generator=gen) * scale).requires_grad_()

        params = {"Wk": init(p, h, scale=p ** -0.5), "Wv": init(p, h, scale=p ** -0.5),
                  "pos": init(t, h, scale=0.0), "Q": init(k, h, scale=1.0),
                  "W": init(k, h, scale=0.0), "b": torch.zeros(k, requires_grad=True)}
        grid = _grid_positions(t)
        self.started_on_token_ = None
        if self.receptive_field and grid is not None:
            given = None if target_positions is None else _positions(target_positions, k, caller)
            centres, self.started_on_token_ = _field_starts(
                z.numpy(), ys.numpy(), grid, given, float(self.width),
                torch.rand(k, 2, generator=gen).numpy())
            params["centre"] = torch.from_numpy(centres).requires_grad_()
            params["log_width"] = torch.full((k,), math.log(self.width)).requires_grad_()
            params["grid"] = torch.from_numpy(grid)
        decay = [params[n] for n in ("Wk", "Wv", "pos", "Q", "W")]
        free = [params[n] for n in ("b", "centre", "log_width") if n in params]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                 {"params": free, "weight_decay": 0.0}], lr=self.learning_rate)
        loss = torch.tensor(0.0)
        bs = min(self.batch_size, n)
        order, start = torch.randperm(n, generator=gen), 0
        with progress_for(progress, "training steps", int(self.max_iter),
                          prefix="readout") as advance:
            for _ in range(self.max_iter):
                if start + bs > n:
                    order, start = torch.randperm(n, generator=gen), 0
                idx = order[start:start + bs]
                start += bs
                opt.zero_grad()
                pred, _ = _forward(params, z[idx])
                loss = ((pred - ys[idx]) ** 2).mean()
                loss.backward()
                opt.step()
                advance(1)
        self.params_ = {name: v.detach().clone() for name, v in params.items()}
        rf = "centre" in self.params_
        self.centres_ = self.params_["centre"].numpy().astype(np.float64) if rf else None
        self.widths_ = np.exp(self.params_["log_width"].numpy().astype(np.float64)) if rf else None
        self.loss_ = float(loss.detach())
        return self

    def _project(self, x: np.ndarray) -> np.ndarray:
        z = (x.astype(np.float64) - self.token_mean_) @ self.components_ / self.token_scale_
        return z.astype(np.float32)

    def _check(self, X: Any, caller: str) -> Any:
        import torch

        check_is_fitted(self, "params_")
        x = _tokens(X, "X", caller)
        if x.shape[1:] != (self.n_tokens_, self.n_features_in_):
            raise RepscopeValueError(
                f"X of {caller} must have {self.n_tokens_} tokens of {self.n_features_in_} "
                f"features, as in fit; got shape {x.shape}.")
        return torch.from_numpy(self._project(x))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, shape (n, n_targets)."""
        import torch

        z = self._check(X, "CrossAttentionReadout.predict")
        with torch.no_grad():
            pred, _ = _forward(self.params_, z)
        return pred.numpy().astype(np.float64) * self.y_scale_ + self.y_mean_

    def attention(self, X: Any) -> np.ndarray:
        """Attention of every target's query over the tokens, shape (n, n_targets, n_tokens);
        each row sums to 1."""
        import torch

        z = self._check(X, "CrossAttentionReadout.attention")
        with torch.no_grad():
            _, att = _forward(self.params_, z)
        return att.numpy().astype(np.float64)

    def score_targets(self, X: Any, Y: Any) -> np.ndarray:
        """Held-out R^2 of each target (``1 - SSE / SS`` about the targets' own mean)."""
        y = _targets(Y, np.shape(X)[0], "CrossAttentionReadout.score_targets")
        return _r2(y, self.predict(X))


def _positions(P: Any, k: int, caller: str) -> np.ndarray:
    p = np.asarray(P, dtype=np.float64)
    if p.shape != (k, 2) or not np.isfinite(p).all():
        raise RepscopeValueError(
            f"target_positions of {caller} must be {k} finite (row, column) image positions, "
            f"shape ({k}, 2); got shape {p.shape}" + ("" if p.shape != (k, 2) else
                                                      " with NaN or infinite values") + ".")
    return p.astype(np.float32)


#: Adjusted R^2 of the best single token above which a receptive field starts on that token.
_FOUND = 0.05


def _token_fits(z: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Adjusted R^2 (training data) of ridge from each token's features alone to each target,
    shape (n_tokens, n_targets); -inf for a constant target."""
    n, t, p = z.shape
    yc = (ys - ys.mean(0)).astype(np.float64)
    mu = z.mean(0, dtype=np.float64)
    explained = np.empty((t, yc.shape[1]))
    step = max(1, 2 ** 22 // (n * p))                             # tokens per chunk (32 MiB)
    for j in range(0, t, step):
        zt = (z[:, j:j + step] - mu[j:j + step]).transpose(1, 2, 0)          # (c, p, n)
        G = zt @ zt.transpose(0, 2, 1)
        G[:, np.arange(p), np.arange(p)] += 1e-3 * np.trace(G, axis1=1, axis2=2)[:, None] / p
        B = zt @ yc                                               # (c, p, k)
        explained[j:j + step] = (B * np.linalg.solve(G, B)).sum(1)
    ss = (yc ** 2).sum(0)
    r2 = np.where(ss > 0, explained / np.where(ss > 0, ss, 1.0), -np.inf)
    return 1.0 - (1.0 - r2) * (n - 1) / max(n - p - 1, 1)


def _field_starts(z: np.ndarray, ys: np.ndarray, grid: np.ndarray, given: np.ndarray | None,
                  width: float, random: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each target's receptive field starts, and whether that is its best single token.

    A target starts on the token whose features alone predict it best (adjusted R^2 at least
    :data:`_FOUND`) unless it has ``given`` positions and a token within ``width`` (at least
    one token spacing) of its position predicts it at least half as well; otherwise at its
    given position, or at ``random``.
    """
    adj = _token_fits(z, ys)                                      # (t, k)
    k = adj.shape[1]
    best = adj.argmax(0)
    top = adj[best, np.arange(k)]
    found = top >= _FOUND
    start = random.copy() if given is None else given.copy()
    if given is not None:
        dist = np.sqrt(((grid[:, None] - given[None]) ** 2).sum(-1))        # (t, k)
        reach = max(width, 1.0 / math.isqrt(grid.shape[0]))
        near = np.where(dist <= reach, adj, -np.inf).max(0)
        found &= ~(near >= 0.5 * top)
    start[found] = grid[best[found]]
    return start.astype(np.float32), found


def _grid_positions(t: int) -> np.ndarray | None:
    """Centres of a square grid of ``t`` tokens in image coordinates (row-major), or None."""
    side = math.isqrt(t)
    if side * side != t:
        return None
    c = (np.arange(side) + 0.5) / side
    return np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(t, 2).astype(np.float32)


def _forward(params: dict[str, Any], z: Any) -> tuple[Any, Any]:
    import torch

    keys = z @ params["Wk"] + params["pos"]                       # (n, t, h)
    values = z @ params["Wv"]                                     # (n, t, h)
    h = keys.shape[-1]
    logits = (keys @ (params["Q"].T / h ** 0.5)).transpose(1, 2)   # (n, k, t)
    if "centre" in params:                                        # receptive fields
        d2 = ((params["grid"][None] - params["centre"][:, None]) ** 2).sum(-1)   # (k, t)
        logits = logits - d2 / (2 * torch.exp(2 * params["log_width"]))[:, None]
    # floor the logits 60 below each row's largest: keeps the weights of far tokens (down to
    # e^-60) out of float32's subnormal range, where CPU arithmetic runs many times slower
    logits = torch.maximum(logits, logits.detach().amax(-1, keepdim=True) - 60.0)
    att = torch.softmax(logits, dim=-1)
    pooled = att @ values                                         # (n, k, h)
    return (pooled * params["W"]).sum(-1) + params["b"], att


def _r2_weighted(y: np.ndarray, pred: np.ndarray) -> float:
    ss = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else float("nan")


def _r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    ss = ((y - y.mean(0)) ** 2).sum(0)
    sse = ((y - pred) ** 2).sum(0)
    return np.where(ss > 0, 1.0 - sse / np.where(ss > 0, ss, 1.0), np.nan)


def region_mass(attention: Any, target_grid: tuple[int, int], token_grid: tuple[int, int], *,
                margin: int = 1) -> np.ndarray:
    """Share of each target's attention that falls within ``margin`` patches of its region.

    Target ``(r, c)`` of a ``R x C`` grid over the image covers rows ``[r/R, (r+1)/R)`` and
    columns ``[c/C, (c+1)/C)`` of it; on an ``h x w`` token grid that is token rows
    ``floor(r h / R) .. ceil((r+1) h / R) - 1`` (likewise columns), widened by ``margin``.

    Parameters
    ----------
    attention : array-like of shape (n_targets, h * w) or (n_targets, h, w)
        Attention of each target (rows summing to 1), targets in row-major grid order.
    target_grid, token_grid : (int, int)
    margin : int, default=1

    Returns
    -------
    ndarray of shape (n_targets,)
    """
    R, C = target_grid
    h, w = token_grid
    a = np.asarray(attention, dtype=np.float64).reshape(-1, h, w)
    if a.shape[0] != R * C:
        raise RepscopeValueError(
            f"region_mass: {a.shape[0]} targets do not form the target grid {R}x{C} "
            f"({R * C} targets).")
    out = np.empty(R * C)
    for r in range(R):
        r0, r1 = (r * h) // R - margin, -((-(r + 1) * h) // R) + margin
        for c in range(C):
            c0, c1 = (c * w) // C - margin, -((-(c + 1) * w) // C) + margin
            out[r * C + c] = a[r * C + c, max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)].sum()
    return out


# ---------------------------------------------------------------------------- comparison

@dataclass(frozen=True)
class ReadoutResult(RecordedResult):
    """Held-out R^2 of a cross-attention readout beside two ridge baselines, and where it reads.

    Attributes
    ----------
    r2_readout, r2_ridge_pooled, r2_ridge_flat : ndarray of shape (n_targets,)
        Held-out R^2 per target of the readout, of ridge on mean-pooled tokens (one alpha per
        target, 5-fold CV) and of ridge on the flattened tokens (dual form, one alpha per
        target by GCV).
    r2_weighted : dict of str to float
        Held-out R^2 of all targets together, ``1 - sum(SSE) / sum(SS)`` (scikit-learn's
        ``multioutput="variance_weighted"``), for ``"readout"``, ``"ridge_pooled"`` and
        ``"ridge_flat"``. Unlike the mean of per-target R^2 it is not swamped by a target
        that barely varies in the held-out set (a blank image border).
    attention : ndarray of shape (n_targets, n_tokens)
        The readout's attention averaged over the held-out samples.
    token_grid : (int, int) or None
        The tokens' (height, width) when they form a square grid.
    target_grid : (int, int) or None
        The targets' (rows, columns) when they are cells of a grid over the image.
    region_mass : ndarray of shape (n_targets,) or None
        :func:`region_mass` of ``attention`` (within one patch), with both grids.
    n_train, n_test : int
    settings : dict
        The readout's parameters.
    """

    analysis: ClassVar[str] = "readout"

    r2_readout: np.ndarray
    r2_ridge_pooled: np.ndarray
    r2_ridge_flat: np.ndarray
    attention: np.ndarray
    token_grid: tuple[int, int] | None
    target_grid: tuple[int, int] | None
    region_mass: np.ndarray | None
    n_train: int
    n_test: int
    r2_weighted: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``readout`` record: mean, variance-weighted and per-target R^2 of the three
        models, the mean attention map of every target (4 decimals) and the region masses."""
        def lst(a: np.ndarray, digits: int = 6) -> list[float]:
            return [round(float(v), digits) for v in np.ravel(a)]

        return [("", {
            "r2_readout": float(np.nanmean(self.r2_readout)),
            "r2_ridge_pooled": float(np.nanmean(self.r2_ridge_pooled)),
            "r2_ridge_flat": float(np.nanmean(self.r2_ridge_flat)),
            **{f"r2_{k}_weighted": float(v) for k, v in self.r2_weighted.items()},
            "r2_readout_per_target": lst(self.r2_readout),
            "r2_ridge_pooled_per_target": lst(self.r2_ridge_pooled),
            "r2_ridge_flat_per_target": lst(self.r2_ridge_flat),
            "attention": [lst(a, 4) for a in self.attention],
            "token_grid": list(self.token_grid) if self.token_grid else None,
            "target_grid": list(self.target_grid) if self.target_grid else None,
            "region_mass": lst(self.region_mass) if self.region_mass is not None else None,
            "n_train": self.n_train, "n_test": self.n_test, "n_targets": len(self.r2_readout),
            **{f"readout_{k}": v for k, v in self.settings.items()},
        })]


def _ridge_flat(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray) -> np.ndarray:
    """Ridge on flattened tokens in the dual (n x n) form, one alpha per target by GCV."""
    from repscope._kernels.eigenpath import ridge_gcv_path
    from repscope.probe._ridge_dual import dual_problem

    mu = Xtr.mean(0, dtype=np.float64).astype(np.float32)
    A, B = Xtr - mu, Xte - mu
    K = (A @ A.T).astype(np.float64)
    K = (K + K.T) * 0.5
    prob = dual_problem(K, Ytr, fit_intercept=True)
    scale = float(np.trace(K)) / K.shape[0]
    alphas = scale * np.logspace(-4, 3, 15)
    gcv = ridge_gcv_path(prob.basis.values, prob.C, prob.tss, K.shape[0], alphas)
    best = gcv.argmin(0)
    Kte = (B @ A.T).astype(np.float64)
    out = np.empty((Xte.shape[0], Ytr.shape[1]))
    for i in np.unique(best):
        cols = np.flatnonzero(best == i)
        out[:, cols] = Kte @ prob.dual_coefs(float(alphas[i]))[:, cols] + prob.tbar[cols]
    return out


def readout_comparison(
    X: Any,
    Y: Any,
    *,
    test_size: float = 0.25,
    target_grid: tuple[int, int] | None = None,
    random_state: int = 0,
    progress: ProgressLike = False,
    **readout_params: Any,
) -> ReadoutResult:
    """Held-out R^2 of :class:`CrossAttentionReadout` vs ridge on pooled and flattened tokens.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_tokens, n_features)
        Token or patch features (without CLS/register tokens, for a clean grid).
    Y : array-like of shape (n_samples, n_targets)
    test_size : float, default=0.25
        Share of samples held out (a random split seeded by ``random_state``).
    target_grid : (int, int) or None
        The targets are the cells of a grid over the image, in row-major order: the result
        then holds each target's attention mass within one patch of its cell.
    random_state : int, default=0
    progress : bool or callable, default=False
        True shows a bar over the readout's training steps on stderr.
    **readout_params
        Passed to :class:`CrossAttentionReadout`. With ``target_grid``, each target's
        receptive field starts at the centre of its cell, half a cell wide (unless ``width``
        is given).

    Returns
    -------
    ReadoutResult
    """
    from repscope.probe._encoding import EncodingModel

    caller = "readout_comparison"
    x = _tokens(X, "X", caller)
    y = _targets(Y, x.shape[0], caller)
    n, t, _ = x.shape
    if not 0.0 < test_size < 1.0:
        raise RepscopeValueError(f"test_size of {caller} must be in (0, 1); got {test_size!r}.")
    n_test = round(n * test_size)
    if n_test < 2 or n - n_test < 10:
        raise RepscopeValueError(
            f"{caller} needs at least 10 training and 2 held-out samples; {n} samples with "
            f"test_size {test_size} give {n - n_test} and {n_test}.")
    side = math.isqrt(t)
    token_grid = (side, side) if side * side == t else None
    if target_grid is not None:
        if token_grid is None:
            raise RepscopeValueError(
                f"target_grid of {caller} needs tokens on a square grid; got {t} tokens.")
        if target_grid[0] * target_grid[1] != y.shape[1]:
            raise RepscopeValueError(
                f"target_grid {target_grid[0]}x{target_grid[1]} of {caller} needs "
                f"{target_grid[0] * target_grid[1]} targets; Y has {y.shape[1]}.")
    perm = np.random.default_rng(random_state).permutation(n)
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    centres = None
    if target_grid is not None:
        R, C = target_grid
        centres = np.stack(np.meshgrid((np.arange(R) + 0.5) / R, (np.arange(C) + 0.5) / C,
                                       indexing="ij"), -1).reshape(-1, 2)
        readout_params.setdefault("width", 0.5 / max(R, C))
    model = CrossAttentionReadout(random_state=random_state, **readout_params)
    model.fit(x[tr], y[tr], target_positions=centres, progress=progress)
    preds = {"readout": model.predict(x[te])}
    att = model.attention(x[te]).mean(0)
    pooled = x.mean(1, dtype=np.float64)
    enc = EncodingModel(cv=5, random_state=random_state).fit(pooled[tr], y[tr])
    preds["ridge_pooled"] = enc.predict(pooled[te])
    flat = x.reshape(n, -1)
    preds["ridge_flat"] = _ridge_flat(flat[tr], y[tr], flat[te])
    r2_readout, r2_pooled, r2_flat = (_r2(y[te], p) for p in preds.values())
    mass = region_mass(att, target_grid, token_grid) if target_grid and token_grid else None
    return ReadoutResult(
        r2_readout=r2_readout, r2_ridge_pooled=r2_pooled, r2_ridge_flat=r2_flat, attention=att,
        token_grid=token_grid,
        target_grid=(int(target_grid[0]), int(target_grid[1])) if target_grid else None,
        region_mass=mass, n_train=len(tr), n_test=len(te),
        r2_weighted={k: _r2_weighted(y[te], p) for k, p in preds.items()},
        settings={k: v for k, v in model.get_params().items() if k != "random_state"}
        | {"random_state": random_state, "test_size": test_size})
