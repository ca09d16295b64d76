"""The optimisers SAE training offers: Adam, sign-SGD and schedule-free sign-SGD.

- ``"adam"``: :class:`torch.optim.Adam` (fused on CPU and CUDA).
- ``"sign_sgd"``: ``w <- w - lr * sign(g)`` (:class:`SignSGD`).
- ``"schedule_free_sign_sgd"`` (the default of :class:`~repscope.sae.TrainSettings`): sign-SGD
  inside schedule-free averaging (Defazio et al. 2024, "The Road Less Scheduled"), the default
  optimiser of EleutherAI sparsify (``ScheduleFreeWrapper(SignSGD(...), momentum=0.95)`` of the
  ``schedulefree`` package) (:class:`ScheduleFreeSignSGD`).

Schedule-free keeps two sequences besides the parameters: ``z``, the base iterate, which takes
the sign steps, and ``x``, a running average of the ``z`` iterates (weights ``lr_max**2``, so
uniform at a constant learning rate). The gradient is evaluated at the interpolation
``y = (1 - momentum) * z + momentum * x``, which is what the module's parameters hold while
training; :meth:`ScheduleFreeSignSGD.eval` puts ``x`` in them (the point to evaluate and keep),
:meth:`ScheduleFreeSignSGD.train` puts ``y`` back. Like the ``schedulefree`` wrapper, only ``z``
is stored and ``x`` is recovered from ``y`` and ``z``, so whatever changes the parameters between
steps (the decoder renormalisation) carries into the average. The update is the wrapper's written
with ``torch._foreach_*`` over all parameters in four passes, with ``x`` eliminated (the
wrapper's swaps and per-tensor loop take about three times as many), and the package is not
needed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from repscope.exceptions import RepscopeValueError
from repscope.sae.training._settings import OPTIMIZERS

__all__ = ["OPTIMIZERS", "ScheduleFreeSignSGD", "SignSGD", "default_lr", "make_optimizer"]


def default_lr(d_sae: int, optimizer: str = "schedule_free_sign_sgd") -> float:
    """The default learning rate of ``optimizer`` (by default the default optimiser,
    schedule-free sign-SGD) for an SAE of ``d_sae`` latents.

    Adam: ``2e-4 * sqrt(2**14 / d_sae)``, the width scaling of Gao et al. (2024). Sign-based
    optimisers: 4.7e-3 at any width, chosen by held-out FVU on SmolLM2-135M layer-14 activations
    (k=32, batch 1,024, 400 steps; ``benchmarks/sae_train.py --time-to-fvu``). repscope trains on
    normalised inputs (mean norm ``sqrt(d_in)``), so sparsify's ``5e-3 * sqrt(2**14 / d_sae)``
    does not carry over: at 8x (d_sae 4,608) 4.7e-3 reached FVU 0.205 where sparsify's 9.4e-3
    reached 0.225 (3.3e-3: 0.208, 6.6e-3: 0.209, 2.4e-3: 0.223), and at 32x (d_sae 18,432)
    4.7e-3 reached 0.200 where the sqrt-scaled 2.4e-3 reached 0.211.

    Examples
    --------
    >>> from repscope.sae import default_lr
    >>> default_lr(2**14), default_lr(4 * 2**14), round(default_lr(2**14, "adam"), 6)
    (0.0047, 0.0047, 0.0002)
    """
    if optimizer not in OPTIMIZERS:
        raise RepscopeValueError(
            f"The 'optimizer' parameter of default_lr must be one of {list(OPTIMIZERS)}. Got "
            f"{optimizer!r} instead."
        )
    lr, exponent = OPTIMIZERS[optimizer]
    return lr * (2**14 / d_sae) ** exponent


def _grads(params: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    with_grad = [p for p in params if p.grad is not None]
    return with_grad, [p.grad for p in with_grad]  # type: ignore[misc]


class SignSGD(torch.optim.Optimizer):
    """``w <- w - lr * sign(g)``: the step of every coordinate is ``lr``, whatever the gradient's
    scale. Gradients are overwritten by their signs.

    Parameters
    ----------
    params : iterable of Tensor or of parameter groups
    lr : float
        Step per coordinate, > 0.
    """

    def __init__(self, params: Any, lr: float = 1e-3) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            ps, gs = _grads(group["params"])
            if ps:
                torch._foreach_sign_(gs)
                torch._foreach_add_(ps, gs, alpha=-group["lr"])
        return loss


class ScheduleFreeSignSGD(torch.optim.Optimizer):
    """Schedule-free sign-SGD (see the module docstring); starts in train mode.

    Parameters
    ----------
    params : iterable of Tensor or of parameter groups
    lr : float
        Sign step of the base iterate ``z``, > 0.
    momentum : float in (0, 1]
        Interpolation ``y = (1 - momentum) * z + momentum * x`` where gradients are taken
        (sparsify: 0.95); 1 evaluates at the average itself.
    weight_lr_power : float
        Averaging weights ``lr_max ** weight_lr_power`` (the package's default, 2).

    Notes
    -----
    One step, with ``c = w_t / sum(w_1..w_t)``::

        x = (y - (1 - momentum) * z) / momentum     # recover the average
        z = z - lr * sign(grad at y)
        x = (1 - c) * x + c * z
        y = (1 - momentum) * z + momentum * x       # the parameters

    computed without forming ``x``: ``y = lerp(y, z, c) - (1 - momentum) (1 - c) lr sign(g)``
    with the new ``z``.
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, momentum: float = 0.95, weight_lr_power: float = 2.0
    ) -> None:
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_lr_power": weight_lr_power}
        )
        self.train_mode = True

    def _z(self, ps: list[Tensor]) -> list[Tensor]:
        zs = []
        for p in ps:
            st = self.state[p]
            if "z" not in st:
                st["z"] = p.detach().clone(memory_format=torch.preserve_format)
            zs.append(st["z"])
        return zs

    @torch.no_grad()
    def _move(self, to_x: bool) -> None:
        for group in self.param_groups:
            beta = group["momentum"]
            ps = [p for p in group["params"] if "z" in self.state[p]]
            if ps:
                zs = [self.state[p]["z"] for p in ps]
                torch._foreach_lerp_(ps, zs, (1 - 1 / beta) if to_x else (1 - beta))

    @torch.no_grad()
    def average(self, p: Tensor) -> Tensor:
        """A copy of the average ``x`` of parameter ``p`` (in train mode; ``p`` itself before its
        first step), with the same arithmetic as :meth:`eval`, leaving ``p`` as it is."""
        st = self.state.get(p, {})
        if not self.train_mode or "z" not in st:
            return p.detach().clone()
        beta = next(g["momentum"] for g in self.param_groups if any(q is p for q in g["params"]))
        return p.detach().clone().lerp_(st["z"], 1 - 1 / beta)

    def eval(self) -> None:
        """Put the average ``x`` in the parameters (evaluate, save)."""
        if self.train_mode:
            self._move(to_x=True)
        self.train_mode = False

    def train(self) -> None:
        """Put the interpolation ``y`` back in the parameters (train)."""
        if not self.train_mode:
            self._move(to_x=False)
        self.train_mode = True

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if not self.train_mode:
            raise RuntimeError(
                "ScheduleFreeSignSGD.step() called in eval mode; call train() first."
            )
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            ps, gs = _grads(group["params"])
            if not ps:
                continue
            lr, beta = group["lr"], group["momentum"]
            zs = self._z(ps)
            lr_max = group["lr_max"] = max(lr, group.get("lr_max", 0.0))
            weight = lr_max ** group["weight_lr_power"]
            weight_sum = group["weight_sum"] = group.get("weight_sum", 0.0) + weight
            c = weight / weight_sum if weight_sum > 0 else 1.0
            # y' = (1 - beta) z' + beta x' with x' = (1 - c) x + c z', x = (y - (1 - beta) z) / beta
            # and z' = z - lr s is y' = lerp(y, z', c) - (1 - beta)(1 - c) lr s: four passes
            # (sign, z, y twice) instead of five
            torch._foreach_sign_(gs)
            torch._foreach_add_(zs, gs, alpha=-lr)
            torch._foreach_lerp_(ps, zs, c)
            torch._foreach_add_(ps, gs, alpha=-(1 - beta) * (1 - c) * lr)
            group["k"] = group.get("k", 0) + 1
        return loss


def make_optimizer(
    name: str,
    params: list[torch.nn.Parameter],
    lr: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    momentum: float = 0.95,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (a key of :data:`OPTIMIZERS`) over ``params``."""
    if name == "sign_sgd":
        return SignSGD(params, lr=lr)
    if name == "schedule_free_sign_sgd":
        return ScheduleFreeSignSGD(params, lr=lr, momentum=momentum)
    kwargs: dict[str, Any] = {"lr": lr, "betas": betas, "weight_decay": weight_decay}
    dev = params[0].device.type
    if dev in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # pragma: no cover - old torch / dtype
            pass
    return torch.optim.Adam(params, foreach=True, **kwargs)
