"""OptFS continuation gates: a learnable gate per input feature, driven to 0/1 by a growing
temperature, then hardened to a selection (a lottery-style ticket).

The mask of feature ``j`` is ``m_j = sigmoid(T w_j) / sigmoid(w_0)`` (1 at the start, with
``w_j = w_0`` and ``T = 1``); training minimises ``loss + lambda * sum_j sigmoid(T w_j)`` while
``T`` grows geometrically from 1 to ``final_temperature`` (learning by continuation): the
sigmoid sharpens into a step, and the kept features are ``w_j > 0``. Use it on probe inputs or
SAE latents (:func:`select_features`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["ContinuationGate", "select_features"]


class ContinuationGate(nn.Module):
    """A per-feature multiplicative gate with a temperature schedule and a hard ticket.

    Parameters
    ----------
    n_features : int
        Width of the gated input.
    init : float, default=0.5
        Initial gate logit ``w_0`` (> 0, so every feature starts kept).
    final_temperature : float, default=200.0
        ``T`` at the end of the search (OptFS's default).

    Attributes
    ----------
    logits : Parameter of shape (n_features,)
        The gate logits ``w``.
    temperature : float
        The current ``T`` (set by :meth:`set_progress`).
    hard : bool
        When True (after :meth:`harden`) the mask is the 0/1 ticket ``w > 0`` and gets no
        gradient.

    Shapes
    ------
    ``x``: (..., n_features) -> (..., n_features).

    Raises
    ------
    RepscopeValueError
        On a non-positive size, ``init`` or ``final_temperature``.

    Examples
    --------
    >>> import torch
    >>> gate = ContinuationGate(3)
    >>> torch.allclose(gate(torch.ones(2, 3)), torch.ones(2, 3))  # every mask starts at 1
    True
    >>> with torch.no_grad():
    ...     _ = gate.logits.copy_(torch.tensor([1.0, -1.0, 0.2]))
    >>> gate.set_progress(1.0).harden().kept().tolist()
    [0, 2]

    References
    ----------
    .. [1] Lyu et al. (2023). Optimizing Feature Set for Click-Through Rate Prediction
       (OptFS). The ACM Web Conference (WWW) 2023.
    """

    def __init__(self, n_features: int, *, init: float = 0.5,
                 final_temperature: float = 200.0) -> None:
        super().__init__()
        if not isinstance(n_features, int) or n_features < 1:
            raise RepscopeValueError(
                f"n_features must be a positive integer; got {n_features!r}.")
        if not float(init) > 0:
            raise RepscopeValueError(
                f"init must be positive (every feature starts kept); got {init!r}.")
        if not float(final_temperature) >= 1:
            raise RepscopeValueError(
                f"final_temperature must be at least 1; got {final_temperature!r}.")
        self.n_features = n_features
        self.init, self.final_temperature = float(init), float(final_temperature)
        self.logits = nn.Parameter(torch.full((n_features,), self.init))
        self.temperature = 1.0
        self.hard = False

    def set_progress(self, fraction: float) -> ContinuationGate:
        """Set ``T = final_temperature ** fraction`` (geometric from 1 at 0 to the final value
        at 1); returns self."""
        if not 0.0 <= float(fraction) <= 1.0:
            raise RepscopeValueError(f"fraction must be in [0, 1]; got {fraction!r}.")
        self.temperature = self.final_temperature ** float(fraction)
        return self

    def mask(self) -> Tensor:
        """The current mask, shape (n_features,): soft ``sigmoid(T w) / sigmoid(w_0)``, or the
        0/1 ticket once hardened."""
        if self.hard:
            return (self.logits.detach() > 0).to(self.logits.dtype)
        scale = 1.0 / float(torch.sigmoid(torch.tensor(self.init)))
        return torch.sigmoid(self.temperature * self.logits) * scale

    def penalty(self) -> Tensor:
        """The sparsity term ``sum_j sigmoid(T w_j)`` (a scalar; 0 once hardened)."""
        if self.hard:
            return self.logits.new_zeros(())
        return torch.sigmoid(self.temperature * self.logits).sum()

    def harden(self) -> ContinuationGate:
        """Freeze the mask to the ticket ``w > 0``; returns self."""
        self.hard = True
        return self

    def kept(self) -> np.ndarray:
        """Indices of the features the ticket keeps (``w > 0``), ascending."""
        return np.flatnonzero(self.logits.detach().cpu().numpy() > 0)

    def forward(self, x: Tensor) -> Tensor:
        """Gate ``x`` of shape (..., n_features)."""
        if not isinstance(x, Tensor):
            raise RepscopeTypeError(f"x must be a torch.Tensor; got {type(x).__name__}.")
        if x.ndim < 1 or x.shape[-1] != self.n_features:
            raise RepscopeValueError(
                f"x must have shape (..., {self.n_features}); got {tuple(x.shape)}.")
        return x * self.mask().to(x.dtype)


def select_features(X: np.ndarray | Tensor, y: np.ndarray | Tensor, *,
                    task: Literal["classification", "regression"] = "classification",
                    penalty: float = 1e-3, epochs: int = 10, final_temperature: float = 200.0,
                    init: float = 0.5, lr: float = 0.05, weight_decay: float = 1e-4,
                    batch_size: int = 1024, seed: int = 0) -> np.ndarray:
    """Choose input features with an OptFS continuation gate in front of a linear model.

    A linear model (logistic / softmax for ``classification``, least squares for
    ``regression``) is trained on gated, standardised ``X`` with
    ``loss + penalty * sum_j sigmoid(T w_j)``, the temperature growing geometrically from 1
    to ``final_temperature`` over ``epochs`` (per step); the kept features are ``w_j > 0``.
    Refit your probe on ``X[:, kept]`` (OptFS's rewind-and-retrain).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Probe inputs or SAE latent codes.
    y : array of shape (n_samples,)
        Class labels (``classification``) or targets (``regression``).
    task : {"classification", "regression"}, default="classification"
    penalty : float, default=1e-3
        ``lambda``, per feature and per sample-averaged loss.
    epochs : int, default=10
    final_temperature : float, default=200.0
    init : float, default=0.5
        Initial gate logit.
    lr : float, default=0.05
        Adam learning rate (model and gates).
    weight_decay : float, default=1e-4
        L2 on the linear weights (so a shrinking gate is not compensated by a growing weight).
    batch_size : int, default=1024
    seed : int, default=0

    Returns
    -------
    ndarray of int
        Kept feature indices, ascending (possibly empty).

    Raises
    ------
    RepscopeValueError
        On mismatched or empty inputs, non-finite values, fewer than two classes, or a
        non-positive ``epochs``/``batch_size``/``lr`` or negative ``penalty``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((2000, 8))
    >>> y = (X[:, 2] - X[:, 5] + 0.3 * rng.standard_normal(2000) > 0).astype(int)
    >>> select_features(X, y, penalty=5e-3).tolist()
    [2, 5]

    References
    ----------
    .. [1] Lyu et al. (2023). Optimizing Feature Set for Click-Through Rate Prediction
       (OptFS). The ACM Web Conference (WWW) 2023.
    """
    if task not in ("classification", "regression"):
        raise RepscopeValueError(
            f"task must be 'classification' or 'regression'; got {task!r}.")
    Xn = np.asarray(X.detach().cpu() if isinstance(X, Tensor) else X, dtype=np.float64)
    yn = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if Xn.ndim != 2 or Xn.shape[0] == 0 or Xn.shape[1] == 0:
        raise RepscopeValueError(
            f"X must be a non-empty 2-D array (n_samples, n_features); got shape {Xn.shape}.")
    if yn.shape != (Xn.shape[0],):
        raise RepscopeValueError(
            f"y must have one value per row of X, shape ({Xn.shape[0]},); got {yn.shape}.")
    if not np.all(np.isfinite(Xn)):
        raise RepscopeValueError("X must be finite; it holds NaN or infinite values.")
    for name, val, ok in (("epochs", epochs, isinstance(epochs, int) and epochs >= 1),
                          ("batch_size", batch_size,
                           isinstance(batch_size, int) and batch_size >= 1),
                          ("lr", lr, float(lr) > 0), ("penalty", penalty, float(penalty) >= 0)):
        if not ok:
            raise RepscopeValueError(
                f"{name} must be {'non-negative' if name == 'penalty' else 'positive'}; "
                f"got {val!r}.")
    n, d = Xn.shape
    Xs = (Xn - Xn.mean(0)) / np.where(Xn.std(0) > 0, Xn.std(0), 1.0)
    g = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(Xs, dtype=torch.float32)
    if task == "classification":
        classes, yi = np.unique(yn, return_inverse=True)
        if len(classes) < 2:
            raise RepscopeValueError(
                f"y must hold at least two classes for classification; got {len(classes)}.")
        yt = torch.as_tensor(yi, dtype=torch.int64)
        n_out = 1 if len(classes) == 2 else len(classes)
    else:
        yf = yn.astype(np.float64)
        if not np.all(np.isfinite(yf)):
            raise RepscopeValueError("y must be finite; it holds NaN or infinite values.")
        yt = torch.as_tensor((yf - yf.mean()) / (yf.std() or 1.0), dtype=torch.float32)
        n_out = 1
    torch.manual_seed(seed)
    gate = ContinuationGate(d, init=init, final_temperature=final_temperature)
    linear = nn.Linear(d, n_out)
    opt = torch.optim.Adam([{"params": [gate.logits], "weight_decay": 0.0},
                            {"params": [linear.weight], "weight_decay": weight_decay},
                            {"params": [linear.bias], "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            gate.set_progress(step / max(total - 1, 1))
            out = linear(gate(xt[idx]))
            if task == "regression":
                loss = nn.functional.mse_loss(out.squeeze(-1), yt[idx])
            elif n_out == 1:
                loss = nn.functional.binary_cross_entropy_with_logits(
                    out.squeeze(-1), yt[idx].to(out.dtype))
            else:
                loss = nn.functional.cross_entropy(out, yt[idx])
            loss = loss + penalty * gate.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return gate.kept()
