r"""Class activation maps (CAM, Grad-CAM) and the critical vs non-critical region split.

Paper: NRR-DD (Tran et al., CVPR 2025, arXiv 2503.18267; checked
against the abstract, which splits inputs into instance-specific and class-general regions):
the only part used here is the CAM-based split of an input into its *critical* region (where
the class evidence sits) and the rest, turned into an attribution-masking analysis.

* **CAM** (Zhou et al. 2016) for a readout that is linear on the global average of a layer's
  feature map :math:`F \in \mathbb{R}^{K \times h \times w}` (a zoo CNN's pooled block features
  read by a :class:`~repscope.probe.LinearProbe`): :math:`M_c(i, j) = \sum_k W_{ck} F_k(i, j)`;
  its spatial mean plus the intercept is the class score.
* **Grad-CAM** (Selvaraju et al. 2017) for any differentiable score:
  :math:`\alpha_k = \frac{1}{hw}\sum_{ij} \partial s_c / \partial F_k(i, j)`,
  :math:`M_c = \mathrm{ReLU}(\sum_k \alpha_k F_k)`. For the linear-on-average readout
  :math:`\alpha_k = W_{ck}/(hw)`, so Grad-CAM is :math:`\mathrm{ReLU}(M_c)/(hw)`.

:func:`cam_masking` upsamples each image's map (bilinear) to the input, takes the top ``area``
fraction of pixels as the critical region, and measures the probe's accuracy when the input is
filled in (i) the critical region, (ii) the same region shifted by half the image (same shape
and area, elsewhere) and (iii) the ``area`` fraction of lowest-map pixels (the non-critical
region).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

if TYPE_CHECKING:
    import torch

__all__ = ["CAMResult", "cam_masking", "class_activation_maps", "grad_cam", "probe_weights"]


@dataclass(frozen=True)
class CAMResult(RecordedResult):
    """Probe accuracy with the critical region, the same region shifted, or the non-critical
    region of each input masked.

    Record keys (one record, layer = the CAM layer): ``method`` ("cam" or "gradcam"), ``area``,
    ``fill``, ``n_samples``, ``map_size`` ([h, w]), ``accuracy``,
    ``accuracy_critical_masked``, ``accuracy_shifted_masked``, ``accuracy_noncritical_masked``,
    ``drop_critical``, ``drop_shifted``, ``drop_noncritical`` (clean minus masked accuracy).

    Attributes
    ----------
    layer : str
    method : str
    area : float
    fill : str
    maps : ndarray (n, h, w)
        The class maps at the layer's resolution (the class of each input's label).
    accuracy, accuracy_critical_masked, accuracy_shifted_masked, accuracy_noncritical_masked
        Probe accuracies.
    """

    analysis: ClassVar[str] = "concepts_cam"

    layer: str
    method: str
    area: float
    fill: str
    maps: np.ndarray
    accuracy: float
    accuracy_critical_masked: float
    accuracy_shifted_masked: float
    accuracy_noncritical_masked: float

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        a = self.accuracy
        return [(self.layer, {
            "method": self.method, "area": float(self.area), "fill": self.fill,
            "n_samples": int(self.maps.shape[0]), "map_size": list(self.maps.shape[1:]),
            "accuracy": a,
            "accuracy_critical_masked": self.accuracy_critical_masked,
            "accuracy_shifted_masked": self.accuracy_shifted_masked,
            "accuracy_noncritical_masked": self.accuracy_noncritical_masked,
            "drop_critical": a - self.accuracy_critical_masked,
            "drop_shifted": a - self.accuracy_shifted_masked,
            "drop_noncritical": a - self.accuracy_noncritical_masked,
        })]


def class_activation_maps(features: Any, weight: Any, classes: Any) -> np.ndarray:
    """CAM :math:`M_c(i,j) = \\sum_k W_{ck} F_k(i,j)` of each input's class.

    Parameters
    ----------
    features : array (n, K, h, w)
    weight : array (C, K)
        The readout on the spatially averaged features (row c scores class index c).
    classes : int array (n,)
        Row of ``weight`` per input.

    Returns
    -------
    ndarray (n, h, w), float64
    """
    from repscope._array import as_float64_numpy

    F = as_float64_numpy(features)
    W = np.asarray(weight, dtype=np.float64)
    c = np.asarray(classes)
    if F.ndim != 4:
        raise RepscopeValueError(
            f"class_activation_maps: features must be (n, channels, h, w); got shape {F.shape}."
        )
    if W.ndim != 2 or W.shape[1] != F.shape[1]:
        raise RepscopeValueError(
            f"class_activation_maps: weight must be (classes, {F.shape[1]}) to match the "
            f"features' channels; got shape {W.shape}."
        )
    if c.shape != (F.shape[0],) or c.dtype.kind not in "iu" or c.min() < 0 or c.max() >= W.shape[0]:
        raise RepscopeValueError(
            f"class_activation_maps: classes must be {F.shape[0]} integer rows of weight in "
            f"[0, {W.shape[0] - 1}]; got shape {c.shape} and dtype {c.dtype}."
        )
    return np.einsum("nk,nkhw->nhw", W[c], F)


def _run_layer(model: torch.nn.Module, inputs: torch.Tensor, layer: str,
               grad: bool) -> tuple[torch.Tensor, Any]:
    """(the layer's output, the model's output); with ``grad`` the layer output is a leaf that
    requires grad and the model output depends on it."""
    import torch

    from repscope.extract._intervene import intervene

    box: list[torch.Tensor] = []

    def keep(t: torch.Tensor) -> torch.Tensor:
        a = t.detach().requires_grad_(grad)
        box.append(a)
        return a

    with intervene(model, {layer: keep}), torch.set_grad_enabled(grad):
        out = model(inputs)
    if not box:
        raise RepscopeValueError(
            f"grad_cam: layer {layer!r} did not run during the forward; expected a module the "
            "model calls."
        )
    return box[0], out


def grad_cam(
    model: torch.nn.Module,
    inputs: Any,
    layer: str,
    classes: Any,
    *,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """Grad-CAM :math:`\\mathrm{ReLU}(\\sum_k \\alpha_k F_k)` at ``layer`` for each input's class.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : Tensor (n, ...)
        What ``model`` takes (a preprocessed float batch for the zoo CNNs).
    layer : str
        Module path whose output (n, K, h, w) is the feature map.
    classes : int array (n,)
        Score index per input.
    head : callable, optional
        Scores (n, C) from the layer's output (e.g. average pooling and a probe); default the
        model's own output.

    Returns
    -------
    ndarray (n, h, w)
    """
    import torch

    act, out = _run_layer(model, inputs, layer, grad=True)
    if act.ndim != 4:
        raise RepscopeValueError(
            f"grad_cam: layer {layer!r} must output (n, channels, h, w); got shape "
            f"{tuple(act.shape)}."
        )
    with torch.enable_grad():
        scores = head(act) if head is not None else out
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        raise RepscopeTypeError(
            "grad_cam: the scores (the head's or the model's output) must be a tensor of shape "
            f"(n, classes); got {type(scores).__name__}."
        )
    c = torch.as_tensor(np.asarray(classes), dtype=torch.long, device=scores.device)
    picked = scores.gather(1, c[:, None]).sum()
    (g,) = torch.autograd.grad(picked, act)
    alpha = g.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * act).sum(1)).detach().double().cpu().numpy()


def probe_weights(probe: Any, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W (C, K), b (C,), classes_ (C,)) of a fitted linear probe (``coef_``, ``intercept_``,
    ``classes_``; a binary probe's single row ``w`` becomes ``[-w, w]``)."""
    try:
        W = np.atleast_2d(np.asarray(probe.coef_, dtype=np.float64))
        b = np.atleast_1d(np.asarray(probe.intercept_, dtype=np.float64))
        classes = np.asarray(probe.classes_)
    except AttributeError as err:
        raise RepscopeTypeError(
            "cam_masking: probe must be a fitted linear classifier with coef_, intercept_ and "
            f"classes_ (a repscope LinearProbe or scikit-learn's); got {type(probe).__name__}."
        ) from err
    if W.shape[0] == 1 and len(classes) == 2:
        W, b = np.vstack([-W, W]), np.concatenate([-b, b])
    if W.shape != (len(classes), n_features):
        raise RepscopeValueError(
            f"cam_masking: the probe's coef_ must be ({len(classes)}, {n_features}) (classes x "
            f"the layer's channels); got {W.shape}."
        )
    return W, b, classes


def _masks(maps: np.ndarray, size: tuple[int, int], area: float) -> tuple[np.ndarray, ...]:
    import torch
    import torch.nn.functional as F

    up = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear",
                       align_corners=False)[:, 0].numpy()
    n = up.shape[0]
    flat = up.reshape(n, -1)
    m = max(1, round(area * flat.shape[1]))
    order = np.argsort(-flat, axis=1, kind="stable")
    crit = np.zeros_like(flat, dtype=bool)
    low = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(crit, order[:, :m], True, axis=1)
    np.put_along_axis(low, order[:, -m:], True, axis=1)
    crit = crit.reshape(up.shape)
    shifted = np.roll(crit, (size[0] // 2, size[1] // 2), axis=(1, 2))
    return crit, shifted, low.reshape(up.shape)


def cam_masking(
    model: torch.nn.Module,
    inputs: Any,
    labels: Any,
    layer: str,
    probe: Any,
    *,
    method: Literal["cam", "gradcam"] = "cam",
    area: float = 0.25,
    fill: float | Literal["min", "mean"] = "min",
    batch_size: int = 100,
) -> CAMResult:
    """Mask each input's critical CAM region, the same region shifted, or its non-critical
    region, and read the probe's accuracy on the layer's averaged features.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode; ``inputs`` go straight in.
    inputs : Tensor (n, C, H, W)
        A preprocessed float batch (masks act on it).
    labels : array (n,)
        True classes (values of ``probe.classes_``); the maps are those of the true class.
    layer : str
        Module path whose output (n, K, h, w), averaged over space, the probe reads.
    probe : fitted linear classifier
        ``coef_`` (classes, K), ``intercept_``, ``classes_``, trained on the layer's averaged
        features of other inputs.
    method : {"cam", "gradcam"}
    area : float in (0, 1)
        Fraction of the input's pixels in each masked region.
    fill : float, "min" or "mean"
        What masked pixels become: a value, or each input's minimum (the background of dark
        images such as MNIST) or mean over all its pixels and channels.
    batch_size : int

    Returns
    -------
    CAMResult
    """
    import torch

    from repscope.extract._hooks import resolve_modules

    if method not in ("cam", "gradcam"):
        raise RepscopeValueError(f"cam_masking: method must be 'cam' or 'gradcam'; got {method!r}.")
    if not 0 < float(area) < 1:
        raise RepscopeValueError(f"cam_masking: area must be in (0, 1); got {area!r}.")
    if not (fill in ("min", "mean") or (isinstance(fill, (int, float)) and not isinstance(fill, bool))):
        raise RepscopeValueError(
            f"cam_masking: fill must be a number, 'min' or 'mean'; got {fill!r}."
        )
    x = torch.as_tensor(inputs)
    if x.ndim != 4 or not x.is_floating_point():
        raise RepscopeValueError(
            "cam_masking: inputs must be a preprocessed float batch (n, channels, H, W); got "
            f"dtype {x.dtype} and shape {tuple(x.shape)}."
        )
    resolve_modules(model, [layer])  # unknown names -> close-name suggestions
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise RepscopeValueError(
            f"cam_masking: labels must have one entry per input ({x.shape[0]}); got shape "
            f"{y.shape}."
        )

    def pooled(batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        feats, means = [], []
        for s in range(0, batch.shape[0], batch_size):
            act, _ = _run_layer(model, batch[s:s + batch_size], layer, grad=False)
            if act.ndim != 4:
                raise RepscopeValueError(
                    f"cam_masking: layer {layer!r} must output (n, channels, h, w); got shape "
                    f"{tuple(act.shape)}."
                )
            feats.append(act.double().cpu().numpy())
            means.append(feats[-1].mean(axis=(2, 3)))
        return np.concatenate(feats), np.concatenate(means)

    F_clean, X_clean = pooled(x)
    W, b, classes = probe_weights(probe, F_clean.shape[1])
    row = {c: i for i, c in enumerate(classes.tolist())}
    missing = sorted({v for v in y.tolist() if v not in row})
    if missing:
        raise RepscopeValueError(
            f"cam_masking: labels {missing[:5]} are not among the probe's classes "
            f"{classes.tolist()[:10]}."
        )
    ci = np.array([row[v] for v in y.tolist()])
    if method == "cam":
        maps = class_activation_maps(F_clean, W, ci)
    else:
        Wt = torch.as_tensor(W, dtype=x.dtype)
        bt = torch.as_tensor(b, dtype=x.dtype)
        parts = []
        for s in range(0, x.shape[0], batch_size):
            parts.append(grad_cam(model, x[s:s + batch_size], layer, ci[s:s + batch_size],
                                  head=lambda a: a.mean(dim=(2, 3)).to(Wt.dtype) @ Wt.T + bt))
        maps = np.concatenate(parts)

    crit, shifted, low = _masks(maps, (int(x.shape[2]), int(x.shape[3])), float(area))
    flat = x.reshape(x.shape[0], -1)
    if fill == "min":
        value = flat.min(dim=1).values[:, None, None, None]
    elif fill == "mean":
        value = flat.mean(dim=1)[:, None, None, None]
    else:
        value = torch.full((x.shape[0], 1, 1, 1), float(fill), dtype=x.dtype)

    def acc(X: np.ndarray) -> float:
        pred = classes[np.argmax(X @ W.T + b, axis=1)]
        return float(np.mean(pred == y))

    def masked(mask: np.ndarray) -> float:
        m = torch.from_numpy(mask)[:, None].to(x.device)
        return acc(pooled(torch.where(m, value.to(x.dtype), x))[1])

    return CAMResult(
        layer=layer, method=method, area=float(area), fill=str(fill), maps=maps,
        accuracy=acc(X_clean), accuracy_critical_masked=masked(crit),
        accuracy_shifted_masked=masked(shifted), accuracy_noncritical_masked=masked(low),
    )
