"""The contract every sparse autoencoder in :mod:`repscope.sae` follows.

An architecture is one module (``topk.py``, ``relu.py``, ...) holding a config dataclass (a
:class:`SAEConfig` subclass) and an ``nn.Module`` (a :class:`SparseAutoencoder` subclass),
registered by name in :data:`architectures`. The base class owns what all of them share:

- the SAELens parameter names and shapes: ``W_enc`` (d_in, d_sae), ``b_enc`` (d_sae,),
  ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in,);
- the input normaliser (``"none"``, ``"scale"`` so that E||x|| = sqrt(d_in), or ``"whiten"``
  with a shrunk covariance), applied inside :meth:`~SparseAutoencoder.forward` and folded into
  the weights by :meth:`~SparseAutoencoder.folded_state_dict` (exactly: the folded SAE on raw
  inputs gives the same codes and the same reconstruction);
- initialisation from data: decoder bias at the geometric median of a sample, unit-norm decoder
  rows, ``W_enc = W_dec.T``;
- the training hooks the trainer calls, in this order, once per step::

      out = sae.forward_normalized(xn)       # SAEOutput in normalised space
      loss = sae.loss(xn, out, state)        # SAELoss(total, terms)
      loss.total.backward()
      sae.before_optimizer_step()            # e.g. drop the decoder-norm gradient component
      optimizer.step()
      sae.after_optimizer_step()             # explicit decoder renormalisation, U re-orthonormalisation
      state.observe(out)                     # firing counts by bincount, no host sync

Codes come back sparse (``values`` and ``indices`` of shape (n, k)) for the TopK family and
matching pursuit, and dense (``indices is None``, ``values`` of shape (n, d_sae)) for the
threshold family; :meth:`SAEOutput.dense` gives the dense (n, d_sae) codes either way.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.registry import Registry

__all__ = [
    "SAEConfig",
    "SAELoss",
    "SAEOutput",
    "SparseAutoencoder",
    "TrainState",
    "architectures",
    "create_sae",
    "geometric_median",
    "register_architecture",
    "residual_variance",
]

NormalizeMode = Literal["none", "scale", "whiten"]

#: Architectures by name; each entry's object is the ``SparseAutoencoder`` subclass and its
#: metadata holds ``config`` (the config class), ``sparse_codes`` (bool) and ``family``.
architectures: Registry[type[SparseAutoencoder]] = Registry("SAE architecture")


_S = TypeVar("_S", bound="type[SparseAutoencoder]")


def register_architecture(name: str, *, family: str, sparse_codes: bool) -> Callable[[_S], _S]:
    """Class decorator: register an SAE module under ``name`` (its ``architecture``)."""

    def deco(cls: _S) -> _S:
        cls.architecture = name
        architectures.add(
            name, cls, config=cls.config_class, family=family, sparse_codes=sparse_codes
        )
        return cls

    return deco


# ---------------------------------------------------------------------------- outputs


class SAEOutput(NamedTuple):
    """What an SAE forward returns.

    Attributes
    ----------
    values : Tensor of shape (n, k) or (n, d_sae)
        Latent activations: the k active values (sparse architectures), or the dense codes
        when ``indices`` is None.
    indices : Tensor of int64, shape (n, k), or None
        Which latents ``values`` belong to; None for dense codes.
    pre_acts : Tensor of shape (n, d_sae)
        Encoder pre-activations (after the encoder bias, before the sparsifier). For matching
        pursuit: the first step's correlations with the dictionary.
    reconstruction : Tensor of shape (n, d_in)
        The decoded input (in the input's space for :meth:`SparseAutoencoder.forward`, in the
        normalised space for :meth:`SparseAutoencoder.forward_normalized`).
    """

    values: Tensor
    indices: Tensor | None
    pre_acts: Tensor
    reconstruction: Tensor

    @property
    def d_sae(self) -> int:
        return int(self.pre_acts.shape[-1])

    def dense(self) -> Tensor:
        """Dense codes of shape (n, d_sae)."""
        if self.indices is None:
            return self.values
        out = self.values.new_zeros((*self.values.shape[:-1], self.d_sae))
        return out.scatter_add_(-1, self.indices, self.values)

    def active(self) -> Tensor:
        """Boolean (n, d_sae): which latents are non-zero for each sample."""
        if self.indices is None:
            return self.values != 0
        mask = torch.zeros(
            (*self.values.shape[:-1], self.d_sae), dtype=torch.bool, device=self.values.device
        )
        return mask.scatter_(-1, self.indices, self.values != 0)

    def l0(self) -> Tensor:
        """Number of non-zero latents per sample, shape (n,)."""
        return (self.values != 0).sum(-1)


class SAELoss(NamedTuple):
    """A training loss: the scalar to differentiate and its named parts (detached)."""

    total: Tensor
    terms: dict[str, Tensor]


# ---------------------------------------------------------------------------- config


@dataclass
class SAEConfig:
    """Settings every architecture shares (SAELens field names where SAELens has one).

    Parameters
    ----------
    d_in : int
        Input dimension.
    d_sae : int
        Number of latents (dictionary width).
    normalize_activations : {"none", "scale", "whiten"}
        Input normaliser fitted on the first data: ``"scale"`` multiplies by one scalar so the
        mean input norm is ``sqrt(d_in)``; ``"whiten"`` centres and whitens with a shrunk
        covariance. Folded into the weights on save.
    b_dec_init : {"geometric_median", "mean", "zeros"}
        Where the decoder bias starts.
    tied_init : bool
        Start with ``W_enc = W_dec.T`` (unit-norm decoder rows).
    normalize_decoder : bool
        Renormalise decoder rows to unit norm after every optimiser step (and remove the
        gradient component parallel to each row before it).
    apply_b_dec_to_input : bool
        Encode ``x - b_dec`` (SAELens's flag; always on for repscope-trained SAEs).
    seed : int
        Seed of the parameter initialisation (and, through the trainer, of shuffling).
    dtype : str
        Parameter dtype (``"float32"`` unless you know better).
    """

    d_in: int
    d_sae: int
    normalize_activations: NormalizeMode = "scale"
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    tied_init: bool = True
    normalize_decoder: bool = True
    apply_b_dec_to_input: bool = True
    seed: int = 0
    dtype: str = "float32"
    metadata: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise a clear error for an impossible setting (called by the module's constructor)."""
        name = type(self).__name__
        for f in ("d_in", "d_sae"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RepscopeValueError(
                    f"The {f!r} parameter of {name} must be a positive int. Got {v!r} instead."
                )
        allowed = {
            "normalize_activations": ("none", "scale", "whiten"),
            "b_dec_init": ("geometric_median", "mean", "zeros"),
            "dtype": ("float32", "float64", "bfloat16", "float16"),
        }
        for f, opts in allowed.items():
            if getattr(self, f) not in opts:
                raise RepscopeValueError(
                    f"The {f!r} parameter of {name} must be one of {list(opts)}. "
                    f"Got {getattr(self, f)!r} instead."
                )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SAEConfig:
        """Build from a dict, ignoring unknown fields (SAELens ``filter_valid_dataclass_fields``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def check_k(k: Any, d_sae: int, *, name: str = "k", owner: str) -> int:
    """``k`` must be an int in [1, d_sae]."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= d_sae:
        raise RepscopeValueError(
            f"The {name!r} parameter of {owner} must be an int in [1, d_sae={d_sae}] (the number "
            f"of active latents cannot exceed the width). Got {k!r} instead."
        )
    return k


def check_coefficient(value: Any, *, name: str, owner: str, positive: bool = False) -> float:
    """A finite real number ``>= 0`` (``> 0`` with ``positive=True``); else a clear error."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise RepscopeValueError(
            f"The {name!r} parameter of {owner} must be a finite float {bound}. "
            f"Got {value!r} instead."
        )
    return float(value)


def check_count(value: Any, *, name: str, owner: str) -> int:
    """An int ``>= 0`` (a number of steps); else a clear error."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RepscopeValueError(
            f"The {name!r} parameter of {owner} must be an int >= 0. Got {value!r} instead."
        )
    return value


def warmup_factor(step: int, warmup_steps: int) -> float:
    """``min(1, step / warmup_steps)``; 1 when there is no warm-up."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def dense_codes(values: Tensor, indices: Tensor | None, d_sae: int) -> Tensor:
    """Dense (n, d_sae) codes from dense codes (``indices`` None) or sparse (values, indices)."""
    if indices is None:
        return values
    out = values.new_zeros((*values.shape[:-1], d_sae))
    return out.scatter_add_(-1, indices, values)


def encoder_input(sae: SparseAutoencoder, xn: Tensor) -> Tensor:
    """``xn - b_dec`` when the SAE subtracts the decoder bias before encoding, else ``xn``."""
    return xn - sae.b_dec if sae.cfg.apply_b_dec_to_input else xn


# ---------------------------------------------------------------------------- training state


class TrainState:
    """Per-SAE training bookkeeping kept on the SAE's device, never synced per step.

    Attributes
    ----------
    step : int
        Optimiser steps taken.
    n_seen : int
        Training vectors seen.
    since_fired : Tensor of int64, shape (d_sae,)
        Vectors since each latent last fired.
    fire_count : Tensor of int64, shape (d_sae,)
        Total firings over training.
    dead : Tensor of bool, shape (d_sae,)
        Latents that had not fired for ``dead_after`` vectors at the last :meth:`refresh`
        (the trainer refreshes every ``check_every`` steps, so losses that need the dead set,
        such as AuxK, never force a host sync per step).
    n_dead : int
        ``dead.sum()`` at the last refresh.
    """

    def __init__(self, d_sae: int, device: torch.device, *, dead_after: int = 10_000_000) -> None:
        self.step = 0
        self.n_seen = 0
        self.dead_after = int(dead_after)
        self.since_fired = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.fire_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.dead = torch.zeros(d_sae, dtype=torch.bool, device=device)
        self.n_dead = 0

    def dead_mask(self) -> Tensor:
        """Latents dead now (no firing in the last ``dead_after`` vectors)."""
        return self.since_fired >= self.dead_after

    def refresh(self) -> None:
        """Recompute :attr:`dead` and :attr:`n_dead` (one host sync)."""
        self.dead = self.dead_mask()
        self.n_dead = int(self.dead.sum())

    def observe(self, out: SAEOutput, n: int, *, counts: Tensor | None = None) -> None:
        """Update firing counters from one batch of ``n`` vectors (``counts``: firing counts
        already all-reduced across ranks)."""
        if counts is None:
            counts = firing_counts(out)
        self.fire_count += counts
        self.since_fired += n
        self.since_fired.masked_fill_(counts > 0, 0)
        self.n_seen += n
        self.step += 1


def firing_counts(out: SAEOutput) -> Tensor:
    """How many samples each latent fired on, shape (d_sae,), int64 (bincount on indices)."""
    d_sae = out.d_sae
    if out.indices is None:
        return (out.values != 0).sum(0).to(torch.int64)
    idx = out.indices[out.values != 0]
    return torch.bincount(idx.reshape(-1), minlength=d_sae)


# ---------------------------------------------------------------------------- helpers


def residual_variance(residual: Tensor) -> tuple[Tensor, int]:
    """Total variance ``sum ||e - mean(e)||^2`` of a (detached) residual batch, over all ranks.

    Returns the variance (clamped away from 0) and the world size. Under ``torch.distributed``
    the sums are all-reduced, so a loss ``world * local_sum / variance`` averaged over ranks by
    DDP equals the single-process loss on the global batch exactly (AuxK uses this).
    """
    e = residual.detach().reshape(-1, residual.shape[-1]).to(torch.float64)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        packed = torch.cat([e.sum(0), e.pow(2).sum().reshape(1), e.new_tensor([e.shape[0]])])
        dist.all_reduce(packed)
        s, sq, n = packed[:-2], packed[-2], packed[-1]
        var = sq - s.pow(2).sum() / n
        world = dist.get_world_size()
    else:
        var = (e - e.mean(0)).pow(2).sum()
        world = 1
    return var.clamp_min(1e-12).to(residual.dtype), world


def geometric_median(
    x: Tensor, *, max_iter: int = 100, tol: float = 1e-5, max_rows: int = 4096
) -> Tensor:
    """Geometric median of the rows of ``x`` (Weiszfeld's algorithm, float64).

    The point minimising the sum of Euclidean distances to the rows: a robust centre that
    outliers (a few huge-norm tokens, such as a language model's first position) do not drag.
    At most ``max_rows`` evenly spaced rows are used (an initialisation needs no more).
    """
    if x.shape[0] > max_rows:
        x = x[torch.linspace(0, x.shape[0] - 1, max_rows, device=x.device).long()]
    xd = x.detach().to(torch.float64)
    med = xd.mean(0)
    for _ in range(max_iter):
        dist = torch.linalg.vector_norm(xd - med, dim=1).clamp_min(1e-12)
        w = 1.0 / dist
        new = (w[:, None] * xd).sum(0) / w.sum()
        shift = torch.linalg.vector_norm(new - med)
        med = new
        if float(shift) <= tol * (1.0 + float(torch.linalg.vector_norm(med))):
            break
    return med.to(x.dtype)


_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


# ---------------------------------------------------------------------------- the module


class SparseAutoencoder(nn.Module, abc.ABC):
    """Base class: parameters, normaliser, initialisation, folding, training hooks.

    Subclasses implement :meth:`encode_normalized` and :meth:`decode_normalized` (and
    :meth:`loss` where the objective is more than MSE), set ``config_class``, and register
    with :func:`register_architecture`.
    """

    architecture: ClassVar[str] = ""
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    input_mean: Tensor
    input_scale: Tensor
    input_transform: Tensor
    input_inverse: Tensor
    #: Extra SAELens-format tensor names this architecture saves besides W_enc/b_enc/W_dec/b_dec.
    extra_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise RepscopeTypeError(
                f"The 'cfg' parameter of {type(self).__name__} must be a "
                f"{self.config_class.__name__}. Got {type(cfg).__name__} instead."
            )
        cfg.validate()
        self.cfg = cfg
        dtype = torch_dtype(cfg.dtype)
        d, m = cfg.d_in, cfg.d_sae
        gen = torch.Generator().manual_seed(int(cfg.seed))
        w_dec = torch.empty(m, d, dtype=torch.float32)
        bound = 1.0 / math.sqrt(d)
        w_dec.uniform_(-bound, bound, generator=gen)
        w_dec /= torch.linalg.vector_norm(w_dec, dim=1, keepdim=True).clamp_min(1e-12)
        w_enc = (
            w_dec.T.clone()
            if cfg.tied_init
            else torch.empty(d, m).uniform_(-bound, bound, generator=gen)
        )
        self.W_enc = nn.Parameter(w_enc.to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(m, dtype=dtype))
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.b_dec = nn.Parameter(torch.zeros(d, dtype=dtype))
        # Input normaliser: xn = (x - input_mean) @ input_transform  (or * input_scale).
        self.register_buffer("input_mean", torch.zeros(d, dtype=torch.float32))
        self.register_buffer("input_scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("input_transform", torch.empty(0, dtype=torch.float32))
        self.register_buffer("input_inverse", torch.empty(0, dtype=torch.float32))
        self._generator = gen

    # ------------------------------------------------------------------ properties
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one training sample; leading dimensions beyond it are flattened."""
        return (self.d_in,)

    @property
    def whitened(self) -> bool:
        return self.input_transform.numel() > 0

    # ------------------------------------------------------------------ normaliser
    def fit_normalizer(self, sample: Tensor, *, shrinkage: float = 1e-3) -> None:
        """Fit the input normaliser on a sample of inputs (n, d_in)."""
        mode = self.cfg.normalize_activations
        if mode == "none":
            return
        if mode == "scale":
            norms = torch.linalg.vector_norm(sample.detach().float(), dim=1)
            mean_norm = norms.to(torch.float64).mean()
            if not float(mean_norm) > 0:
                raise RepscopeValueError(
                    "Cannot fit the 'scale' normaliser: every sampled input is zero. Use "
                    "normalize_activations='none' or check the data."
                )
            self.input_scale.fill_(float(math.sqrt(self.d_in) / float(mean_norm)))
            return
        # whiten: ZCA with a covariance shrunk towards its mean eigenvalue
        xs = sample.detach().to(torch.float64)
        if xs.shape[0] < 2:
            raise RepscopeValueError("Whitening needs at least 2 samples to fit.")
        mu = xs.mean(0)
        cov = torch.cov(xs.T).reshape(self.d_in, self.d_in)
        avg = torch.trace(cov) / self.d_in
        if not float(avg) > 0:
            raise RepscopeValueError("Cannot whiten inputs with zero variance.")
        cov = (1 - shrinkage) * cov + shrinkage * avg * torch.eye(self.d_in, dtype=torch.float64)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(float(avg) * 1e-8)
        p = (evecs * evals.rsqrt()) @ evecs.T
        pinv = (evecs * evals.sqrt()) @ evecs.T
        dev = self.input_mean.device
        self.input_mean.copy_(mu.to(torch.float32))
        self.input_transform = p.to(torch.float32).to(dev)
        self.input_inverse = pinv.to(torch.float32).to(dev)

    def normalize(self, x: Tensor) -> Tensor:
        """Map raw inputs into the space the SAE works in."""
        x = x.to(self.dtype)
        if self.whitened:
            return (x - self.input_mean.to(x.dtype)) @ self.input_transform.to(x.dtype)
        if self.cfg.normalize_activations == "none":
            return x
        return x * self.input_scale.to(x.dtype)

    def denormalize(self, xn: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`."""
        if self.whitened:
            return xn @ self.input_inverse.to(xn.dtype) + self.input_mean.to(xn.dtype)
        if self.cfg.normalize_activations == "none":
            return xn
        return xn / self.input_scale.to(xn.dtype)

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_from_data(self, xn: Tensor) -> None:
        """Data-dependent initialisation on a normalised sample (n, d_in)."""
        how = self.cfg.b_dec_init
        if how == "geometric_median":
            self.b_dec.copy_(geometric_median(xn.to(torch.float32)).to(self.dtype))
        elif how == "mean":
            self.b_dec.copy_(xn.to(torch.float64).mean(0).to(self.dtype))

    # ------------------------------------------------------------------ forward
    @abc.abstractmethod
    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        """Codes for normalised inputs; ``reconstruction`` may be left empty by subclasses that
        fill it in :meth:`forward_normalized`."""

    @abc.abstractmethod
    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        """Reconstruction (normalised space) from codes."""

    def forward_normalized(self, xn: Tensor) -> SAEOutput:
        out = self.encode_normalized(xn)
        recon = self.decode_normalized(out.values, out.indices)
        return out._replace(reconstruction=recon)

    def _flatten(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if not isinstance(x, Tensor):
            raise RepscopeTypeError(
                f"{type(self).__name__} expects a torch.Tensor of shape (..., {self.d_in}). "
                f"Got {type(x).__name__} instead; use torch.as_tensor(x)."
            )
        if x.ndim < 1 or x.shape[-1] != self.d_in:
            raise RepscopeValueError(
                f"{type(self).__name__} expects inputs of shape (..., d_in={self.d_in}). Got "
                f"shape {tuple(x.shape)} instead."
            )
        lead = tuple(x.shape[:-1])
        return x.reshape(-1, self.d_in), lead

    def forward(self, x: Tensor) -> SAEOutput:
        """Encode and decode raw inputs of shape (..., d_in); leading dimensions are flattened
        into the sample dimension (the output has shape (prod(...), ...))."""
        flat, _ = self._flatten(x)
        out = self.forward_normalized(self.normalize(flat))
        return out._replace(reconstruction=self.denormalize(out.reconstruction).to(x.dtype))

    def encode(self, x: Tensor) -> SAEOutput:
        """Codes of raw inputs (``reconstruction`` is an empty tensor)."""
        flat, _ = self._flatten(x)
        out = self.encode_normalized(self.normalize(flat))
        return out._replace(reconstruction=flat.new_empty(0))

    def decode(self, values: Tensor, indices: Tensor | None = None) -> Tensor:
        """Reconstruction in the input space from codes."""
        return self.denormalize(self.decode_normalized(values.to(self.dtype), indices))

    # ------------------------------------------------------------------ training hooks
    def loss(self, xn: Tensor, out: SAEOutput, state: TrainState) -> SAELoss:
        """Default objective: squared error summed over features, averaged over samples."""
        mse = (out.reconstruction - xn).pow(2).sum(-1).mean()
        return SAELoss(mse, {"mse": mse.detach()})

    def decoder_rows(self) -> Tensor:
        """The decoder directions whose norm the renormalisation fixes (W_dec by default)."""
        return self.W_dec

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Remove the gradient component parallel to each unit-norm decoder row."""
        if not self.cfg.normalize_decoder or self.W_dec.grad is None:
            return
        w, g = self.W_dec, self.W_dec.grad
        # row-wise dots by vecdot: einsum's batched 1 x d products took 4x as long on a CPU
        g.addcmul_(torch.linalg.vecdot(g, w)[:, None], w, value=-1.0)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Renormalise decoder rows to unit norm (the explicit post-step)."""
        if self.cfg.normalize_decoder:
            self.W_dec.div_(
                torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12)
            )

    # ------------------------------------------------------------------ folding / saving
    @torch.no_grad()
    def saved_tensors(self) -> dict[str, Tensor]:
        """Copies of the tensors a save writes, before folding: every parameter and the
        ``extra_tensors``. Folding changes values only, so these have the saved names, shapes
        and dtypes (on the ``meta`` device, without allocating anything)."""
        state = {k: v.detach().clone() for k, v in self.named_parameters()}
        for name in self.extra_tensors:
            if name not in state:
                state[name] = getattr(self, name).detach().clone()
        return state

    @torch.no_grad()
    def folded_state_dict(self) -> dict[str, Tensor]:
        """Weights with the input normaliser folded in (the SAE then works on raw inputs).

        With ``xn = (x - mu) @ P`` the folded weights are ``W_enc' = P @ W_enc``,
        ``W_dec' = W_dec @ P^-1``, ``b_dec' = b_dec @ P^-1 + mu``; codes and reconstructions
        are unchanged.
        """
        state = self.saved_tensors()
        if self.cfg.normalize_activations == "none" and not self.whitened:
            return state
        if self.whitened:
            p = self.input_transform.to(torch.float64)
            pinv = self.input_inverse.to(torch.float64)
            mu = self.input_mean.to(torch.float64)
        else:
            s = float(self.input_scale)
            p = torch.eye(self.d_in, dtype=torch.float64) * s
            pinv = torch.eye(self.d_in, dtype=torch.float64) / s
            mu = torch.zeros(self.d_in, dtype=torch.float64)
        p, pinv, mu = (t.to(self.device) for t in (p, pinv, mu))
        self._fold(state, p, pinv, mu)
        return state

    def _fold(self, state: dict[str, Tensor], p: Tensor, pinv: Tensor, mu: Tensor) -> None:
        """Fold ``xn = (x - mu) @ p`` into ``state`` in place (float64 maths, dtype kept)."""
        dt = state["W_enc"].dtype
        if not self.cfg.apply_b_dec_to_input and state.get("b_enc") is not None:
            # the encoder sees (x - mu) @ p: its bias absorbs -mu @ p @ W_enc
            shift = mu @ p @ state["W_enc"].to(torch.float64)
            state["b_enc"] = (state["b_enc"].to(torch.float64) - shift).to(dt)
        state["W_enc"] = (p @ state["W_enc"].to(torch.float64)).to(dt)
        state["W_dec"] = (state["W_dec"].to(torch.float64) @ pinv).to(dt)
        state["b_dec"] = (state["b_dec"].to(torch.float64) @ pinv + mu).to(dt)

    def extra_config(self) -> dict[str, Any]:
        """Fields beyond the dataclass to write to ``cfg.json`` (e.g. a JumpReLU export)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d_in={self.d_in}, d_sae={self.d_sae})"


def create_sae(architecture: str, /, **params: Any) -> SparseAutoencoder:
    """Build an SAE by architecture name, e.g. ``create_sae("topk", d_in=384, d_sae=3072, k=32)``.

    Unknown names raise :class:`~repscope.exceptions.UnknownNameError` listing the registered
    ones; unknown parameters raise a :class:`~repscope.exceptions.RepscopeTypeError` listing the
    architecture's fields.
    """
    cls = architectures.get(architecture)
    cfg_cls = cls.config_class
    names = [f.name for f in dataclasses.fields(cfg_cls)]
    if "width" in params and "d_sae" not in params:
        params["d_sae"] = params.pop("width")
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise RepscopeTypeError(
            f"Unknown parameter(s) {unknown} for SAE architecture {architecture!r}; its "
            f"parameters are {names}."
        )
    return cls(cfg_cls(**params))
