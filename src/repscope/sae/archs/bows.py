r"""The tied autoencoder of the BOWS superposition experiments (Prieto, Stevinson, Barsbey,
Mediano, Birdal, "From Data Statistics to Feature Geometry: How Correlations Shape
Superposition", ICLR 2026). Not an SAE architecture (not registered): a small model for
studying how feature correlations shape the geometry :math:`W^\top W`.

.. math::

    h = x W^\top, \qquad \hat x = \phi(h W + b)

with ``W`` of shape (latent_dim, n_features), no latent nonlinearity by default, and
:math:`\phi` the identity (``output="linear"``) or ReLU (``output="relu"``). Trained with MSE,
AdamW, a cosine learning-rate schedule down to 1e-9, gradient clipping at 1.0
(:func:`train_tied_autoencoder`). On data from :func:`repscope.synthetic.bows` with a circular
latent, the Gram matrix :math:`W^\top W` tracks the feature correlation matrix
(:func:`repscope.sae.metrics.gram_vs_cooccurrence`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from repscope._validation import check_choice, check_positive_int, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["TiedAutoencoder", "TiedFit", "train_tied_autoencoder"]


class TiedAutoencoder(nn.Module):
    """Tied-weight autoencoder ``x_hat = phi(x W^T W + b)`` (see the module docstring).

    Parameters
    ----------
    n_features : int
        Input (and output) dimension.
    latent_dim : int
        Bottleneck width.
    output : {"linear", "relu"}
        Output nonlinearity ``phi``.
    latent_relu : bool
        Apply ReLU to the latent ``h`` as well (off in the paper's default).
    seed : int
        Seed of the initialisation (``nn.Linear``'s: uniform on +-1/sqrt(n_features)).

    Attributes
    ----------
    W : Parameter of shape (latent_dim, n_features)
    b : Parameter of shape (n_features,)
    """

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        *,
        output: Literal["linear", "relu"] = "linear",
        latent_relu: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        caller = "TiedAutoencoder"
        n_features = check_positive_int(n_features, "n_features", caller=caller)
        latent_dim = check_positive_int(latent_dim, "latent_dim", caller=caller)
        self.output = check_choice(output, "output", ("linear", "relu"), caller=caller)
        self.latent_relu = bool(latent_relu)
        gen = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(n_features)
        self.W = nn.Parameter(
            torch.empty(latent_dim, n_features).uniform_(-bound, bound, generator=gen)
        )
        self.b = nn.Parameter(torch.zeros(n_features))

    def encode(self, x: Tensor) -> Tensor:
        """Latent codes ``h = x W^T`` (ReLU'd if ``latent_relu``), shape (n, latent_dim)."""
        h = x @ self.W.T
        return h.relu() if self.latent_relu else h

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` (n, n_features)."""
        out = self.encode(x) @ self.W + self.b
        return out.relu() if self.output == "relu" else out

    def gram(self) -> Tensor:
        """The feature Gram matrix ``W^T W`` (n_features, n_features), detached."""
        w = self.W.detach()
        return w.T @ w


@dataclass(frozen=True, eq=False)
class TiedFit:
    """A trained :class:`TiedAutoencoder` and its per-epoch mean training MSE."""

    model: TiedAutoencoder
    history: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.history[-1] if self.history else math.nan


def _as_tensor(X: Any) -> Tensor:
    if isinstance(X, Tensor):
        t = X.detach().to(torch.float32)
    elif isinstance(X, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    else:
        raise RepscopeTypeError(
            "The 'X' parameter of train_tied_autoencoder must be a numpy array or a torch "
            f"tensor of shape (n, n_features). Got {type(X).__name__} instead."
        )
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise RepscopeValueError(
            "The 'X' parameter of train_tied_autoencoder must have shape (n, n_features) with "
            f"n, n_features >= 1. Got shape {tuple(t.shape)} instead."
        )
    if not bool(torch.isfinite(t).all()):
        raise RepscopeValueError("The 'X' parameter of train_tied_autoencoder contains NaN or inf.")
    return t


def train_tied_autoencoder(
    X: Any,
    latent_dim: int,
    *,
    output: Literal["linear", "relu"] = "linear",
    weight_decay: float = 1.0,
    lr: float = 1e-2,
    epochs: int = 200,
    batch_size: int = 256,
    latent_relu: bool = False,
    seed: int = 0,
) -> TiedFit:
    """Train a :class:`TiedAutoencoder` on ``X`` with the BOWS recipe.

    MSE (mean over entries), AdamW (``lr``, ``weight_decay``), cosine annealing from ``lr`` to
    1e-9 over all steps, gradient-norm clipping at 1.0, shuffled mini-batches (seeded).

    Parameters
    ----------
    X : ndarray or Tensor of shape (n, n_features)
    latent_dim : int
    output : {"linear", "relu"}
    weight_decay : float
        AdamW's decoupled weight decay (the paper uses 1.0 or 6.0 on synthetic data).
    lr : float
    epochs : int
    batch_size : int
    latent_relu : bool
    seed : int
        Seeds the initialisation and the shuffling.

    Returns
    -------
    TiedFit
        The trained model (in eval mode, on the CPU) and its per-epoch training loss.
    """
    caller = "train_tied_autoencoder"
    x = _as_tensor(X)
    latent_dim = check_positive_int(latent_dim, "latent_dim", caller=caller)
    epochs = check_positive_int(epochs, "epochs", caller=caller)
    batch_size = check_positive_int(batch_size, "batch_size", caller=caller)
    weight_decay = float(check_scalar(weight_decay, "weight_decay", caller=caller, min_value=0.0))
    lr = float(check_scalar(lr, "lr", caller=caller, min_value=0.0, include_min=False))
    model = TiedAutoencoder(
        x.shape[1], latent_dim, output=output, latent_relu=latent_relu, seed=seed
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=epochs * steps_per_epoch, eta_min=1e-9
    )
    gen = torch.Generator().manual_seed(int(seed) + 1)
    history: list[float] = []
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, batch_size):
            xb = x[perm[start : start + batch_size]]
            loss = (model(xb) - xb).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.detach().double() * xb.shape[0]
        history.append(float(total) / n)
    model.eval()
    return TiedFit(model, history)
