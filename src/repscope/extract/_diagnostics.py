"""Extractor diagnostics (Wiatowski & Bölcskei, 2018): how much a feature extractor can stretch
input differences, and how each layer reacts to a translation.

* Empirical Lipschitz ratio ``||Phi_l(f) - Phi_l(h)|| / ||f - h||`` over input pairs: pairs of
  different inputs, and each input against a small random perturbation of itself (local).
  For the whole representation, ``sqrt(sum_l ||Phi_l(f) - Phi_l(h)||^2) / ||f - h||``; a
  wavelet-scattering network (:class:`repscope._kernels.scattering.Scattering2D`) is
  non-expansive, so its ratio is at most 1.
* Translation sensitivity ``||Phi_l(T_t f) - Phi_l(f)|| / ||Phi_l(f)||`` per layer and shift
  ``t`` (pixels, circular along the width): how far the layer is from translation invariance.

Norms are taken in the model's input space (after its preprocessing) and over the whole
un-pooled activation of each layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

__all__ = ["LipschitzResult", "extractor_diagnostics"]

LayerFn = Callable[[np.ndarray], dict[str, np.ndarray]]

#: The pseudo-layer of the whole representation (every layer's output together).
ALL_LAYERS = "(all layers)"


@dataclass(frozen=True)
class LipschitzResult(RecordedResult):
    """Lipschitz ratios and translation sensitivity of a feature extractor, per layer.

    Attributes
    ----------
    layers : tuple of str
        The model's layers in depth order, then ``"(all layers)"``.
    lipschitz_max, lipschitz_median : tuple of float
        Over pairs of different inputs.
    local_lipschitz_max : tuple of float
        Over inputs against a perturbation of relative size ``epsilon``.
    shifts : tuple of int
        Translations, in pixels.
    translation_sensitivity : tuple of tuple of float
        ``[layer][shift]``: mean over inputs of the relative change of the layer's output.
    n_inputs : int
    epsilon : float
    model : str
    """

    analysis: ClassVar[str] = "geometry_lipschitz"

    layers: tuple[str, ...]
    lipschitz_max: tuple[float, ...]
    lipschitz_median: tuple[float, ...]
    local_lipschitz_max: tuple[float, ...]
    shifts: tuple[int, ...]
    translation_sensitivity: tuple[tuple[float, ...], ...]
    n_inputs: int
    epsilon: float
    model: str

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``geometry_lipschitz`` record per layer (and one for every layer together)."""
        return [(layer, {
            "depth": i, "lipschitz_max": self.lipschitz_max[i],
            "lipschitz_median": self.lipschitz_median[i],
            "local_lipschitz_max": self.local_lipschitz_max[i], "shifts": list(self.shifts),
            "translation_sensitivity": list(self.translation_sensitivity[i]),
            "n_inputs": self.n_inputs, "epsilon": self.epsilon})
            for i, layer in enumerate(self.layers)]


def _scattering_fn(net: Any) -> tuple[LayerFn, Callable[[Any], np.ndarray], str]:
    def prep(images: Any) -> np.ndarray:
        x = np.asarray(images)
        return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)

    def fn(x: np.ndarray) -> dict[str, np.ndarray]:
        return {f"scattering.{n}": out for n, out in enumerate(net.layers(x))}

    return fn, prep, f"scattering(J={net.J}, L={net.L}, depth={net.depth})"


def _torch_fn(module: Any, layers: Sequence[str] | None, preprocess: Any,
              batch_size: int) -> tuple[LayerFn, Callable[[Any], np.ndarray], list[str]]:
    import torch

    from repscope.extract._hooks import capture
    from repscope.extract._torch import TorchAdapter, model_device

    names = list(layers) if layers is not None else TorchAdapter(module)._default_blocks()
    if not names:
        raise RepscopeValueError("the model has no default blocks; pass layers=[module paths].")
    device = model_device(module)
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)

    def prep(images: Any) -> np.ndarray:
        if preprocess is not None:
            x = preprocess(images)
        else:
            x = images
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=np.float64)

    def fn(x: np.ndarray) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        was_training = module.training
        module.eval()
        try:
            with torch.inference_mode(), capture(module, names) as acts:
                for s in range(0, x.shape[0], batch_size):
                    module(torch.as_tensor(x[s:s + batch_size], dtype=dtype, device=device))
                    for n in names:
                        parts[n].append(acts[n].to(torch.float64).cpu().numpy())
                    acts.clear()
        finally:
            module.train(was_training)
        return {n: np.concatenate(parts[n]) for n in names}

    return fn, prep, names


def _resolve(model: Any, layers: Sequence[str] | None, batch_size: int
             ) -> tuple[LayerFn, Callable[[Any], np.ndarray], str]:
    from repscope._kernels.scattering import Scattering2D

    if isinstance(model, Scattering2D):
        return _scattering_fn(model)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        torch = None  # type: ignore[assignment]
    from repscope.zoo import LoadedModel

    if isinstance(model, LoadedModel):
        if model.info.modality != "image" or torch is None or not isinstance(model.model,
                                                                              torch.nn.Module):
            raise RepscopeTypeError(
                f"extractor_diagnostics needs an image model run by torch; zoo model "
                f"{model.name!r} is a {model.info.modality} model of kind {model.kind!r}.")
        fn, prep, _ = _torch_fn(model.model, layers, model.preprocess, batch_size)
        return fn, prep, model.name
    if torch is not None and isinstance(model, torch.nn.Module):
        fn, prep, _ = _torch_fn(model, layers, None, batch_size)
        return fn, prep, type(model).__name__
    if callable(model):
        def prep(images: Any) -> np.ndarray:
            return np.asarray(images, dtype=np.float64)

        def fn(x: np.ndarray) -> dict[str, np.ndarray]:
            out = model(x)
            if not isinstance(out, Mapping):
                raise RepscopeTypeError(
                    "a callable model of extractor_diagnostics must return a mapping of layer "
                    f"name to array; got {type(out).__name__}.")
            return {str(k): np.asarray(v, dtype=np.float64) for k, v in out.items()}

        return fn, prep, getattr(model, "__name__", type(model).__name__)
    raise RepscopeTypeError(
        "model of extractor_diagnostics must be a Scattering2D, a zoo image model, a "
        f"torch.nn.Module or a callable returning per-layer arrays; got {type(model).__name__}.")


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1)


def extractor_diagnostics(
    model: Any,
    images: Any,
    *,
    layers: Sequence[str] | None = None,
    shifts: Sequence[int] = (1, 2, 4),
    epsilon: float = 0.01,
    seed: int = 0,
    batch_size: int = 32,
) -> LipschitzResult:
    """Empirical Lipschitz ratios and per-layer translation sensitivity of a feature extractor.

    Parameters
    ----------
    model : Scattering2D, LoadedModel, torch.nn.Module or callable
        A zoo image model (its ``preprocess`` maps the images to its input space), a module
        taking float tensors, a :class:`~repscope._kernels.scattering.Scattering2D`, or
        ``fn(x) -> {layer: array}`` on float arrays.
    images : array-like of shape (n, ...)
        At least two inputs (uint8 images for a zoo model or the scattering network).
    layers : sequence of str, optional
        Module paths (torch models; default: the model's blocks).
    shifts : sequence of int, default=(1, 2, 4)
        Circular translations along the width, in pixels (of the model's input).
    epsilon : float, default=0.01
        Relative size of the random perturbation for the local ratio.
    seed : int, default=0
    batch_size : int, default=32

    Returns
    -------
    LipschitzResult
    """
    if not (isinstance(epsilon, (int, float)) and epsilon > 0):
        raise RepscopeValueError(
            f"The 'epsilon' parameter of extractor_diagnostics must be > 0. Got {epsilon!r} "
            "instead.")
    shifts = tuple(int(t) for t in shifts)
    fn, prep, name = _resolve(model, layers, batch_size)
    x = prep(images)
    n = x.shape[0]
    if n < 2 or x.ndim < 3:
        raise RepscopeValueError(
            f"images must hold at least two images of shape (H, W) or (C, H, W); got shape "
            f"{tuple(x.shape)}.")
    rng = np.random.default_rng(seed)
    base = fn(x)
    names = list(base)
    other = np.roll(np.arange(n), 1)
    noise = rng.standard_normal(x.shape)
    scale = np.sqrt((_flat(x) ** 2).mean(axis=1))
    per = (epsilon * scale / np.sqrt((_flat(noise) ** 2).mean(axis=1)))
    noisy = x + noise * per.reshape((n,) + (1,) * (x.ndim - 1))
    near = fn(noisy)
    d_pairs = np.linalg.norm(_flat(x - x[other]), axis=1)
    d_local = np.linalg.norm(_flat(noisy - x), axis=1)
    if np.any(d_pairs == 0):
        raise RepscopeValueError("images holds duplicate inputs: a Lipschitz ratio needs pairs "
                                 "of different inputs; drop the duplicates.")
    moved = {t: fn(np.roll(x, t, axis=-1)) for t in shifts}
    lip_max, lip_med, loc_max, sens = [], [], [], []
    tot_pairs = np.zeros(n)
    tot_local = np.zeros(n)
    tot_sens = {t: np.zeros(n) for t in shifts}
    tot_norm = np.zeros(n)
    for layer in names:
        F = _flat(base[layer])
        dp = np.linalg.norm(F - F[other], axis=1)
        dl = np.linalg.norm(_flat(near[layer]) - F, axis=1)
        r = dp / d_pairs
        lip_max.append(float(r.max()))
        lip_med.append(float(np.median(r)))
        loc_max.append(float((dl / d_local).max()))
        norm = np.linalg.norm(F, axis=1)
        row = []
        for t in shifts:
            dt = np.linalg.norm(_flat(moved[t][layer]) - F, axis=1)
            row.append(float(np.mean(dt / np.where(norm > 0, norm, 1.0))))
            tot_sens[t] += dt**2
        sens.append(tuple(row))
        tot_pairs += dp**2
        tot_local += dl**2
        tot_norm += norm**2
    r_all = np.sqrt(tot_pairs) / d_pairs
    lip_max.append(float(r_all.max()))
    lip_med.append(float(np.median(r_all)))
    loc_max.append(float((np.sqrt(tot_local) / d_local).max()))
    den = np.sqrt(np.where(tot_norm > 0, tot_norm, 1.0))
    sens.append(tuple(float(np.mean(np.sqrt(tot_sens[t]) / den)) for t in shifts))
    return LipschitzResult(
        layers=(*names, ALL_LAYERS), lipschitz_max=tuple(lip_max),
        lipschitz_median=tuple(lip_med), local_lipschitz_max=tuple(loc_max), shifts=shifts,
        translation_sensitivity=tuple(sens), n_inputs=n, epsilon=float(epsilon), model=name)
