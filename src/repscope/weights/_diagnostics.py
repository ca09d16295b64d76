"""What a permutation alignment changed: distances, singular values, singular vectors, CKA.

The diagnostics of Ito, Yamada and Kumagai (ICLR 2025, "Analysis of LMC via permutation-based
weight matching"): weight matching barely shortens the distance
between the two models (ratio R close to 1), leaves every weight matrix's singular values
unchanged (a permutation of rows and columns is orthogonal), and aligns the top singular vectors
of the two models, the large-σ directions first, which is why the interpolated model keeps
working.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope._progress import ProgressLike
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

if TYPE_CHECKING:
    import torch

    from repscope.weights._spec import PermutationSpec

__all__ = ["AlignmentDiagnosticsResult", "alignment_diagnostics", "sv_alignment"]

OVERALL = "(all tensors)"


def sv_alignment(
    Ua: np.ndarray, Sa: np.ndarray, Va: np.ndarray,
    Ub: np.ndarray, Sb: np.ndarray, Vb: np.ndarray, top_k: int,
) -> float:
    r"""σ-weighted alignment of the top ``top_k`` singular vector pairs of two matrices.

    .. math::

        \mathrm{align}_k(A, B) = \frac{\sum_{i<k} \sigma_i^A \sigma_i^B
            \, |\langle u_i^A, u_i^B \rangle| \, |\langle v_i^A, v_i^B \rangle|}
            {\sum_{i<k} \sigma_i^A \sigma_i^B}

    with :math:`A = U_A \Sigma_A V_A^\top`, singular values in decreasing order, ``k`` capped
    at the rank dimension ``min(m, n)``. It lies in ``[0, 1]``; 1 when the ``i``-th left and
    right singular vectors of A and B coincide up to sign for every ``i < k``. Absolute values
    make it blind to the sign ambiguity of an SVD. (The recipe gives the summand; the
    normalisation by the summed weights is ours, so matrices of different scales compare.)

    Parameters
    ----------
    Ua, Ub : ndarray of shape (m, r)
        Left singular vectors (columns).
    Sa, Sb : ndarray of shape (r,)
        Singular values, decreasing.
    Va, Vb : ndarray of shape (n, r)
        Right singular vectors (columns).
    top_k : int

    Returns
    -------
    float
    """
    k = min(int(top_k), Sa.shape[0], Sb.shape[0])
    w = Sa[:k] * Sb[:k]
    cu = np.abs(np.sum(Ua[:, :k] * Ub[:, :k], axis=0))
    cv = np.abs(np.sum(Va[:, :k] * Vb[:, :k], axis=0))
    den = float(w.sum())
    return float(np.sum(w * cu * cv) / den) if den > 0 else float("nan")


@dataclass(frozen=True)
class AlignmentDiagnosticsResult(RecordedResult):
    """Per-weight diagnostics of aligning B to A (analysis ``"weights_alignment"``).

    One record per weight tensor with two or more axes (convolution kernels are read as
    ``(out, in * kh * kw)`` matrices), named by its state-dict key, and one record named
    ``"(all tensors)"`` over every floating-point tensor. Record keys (every record has all of
    them; ``None`` where a value does not apply or was not measured):

    - ``distance_before``: ``||a - b||`` (L2, float64).
    - ``distance_after``: ``||a - π(b)||``.
    - ``distance_ratio``: ``distance_after / distance_before`` (R; NaN when a == b).
    - ``max_sigma_diff_before``: ``max_i |σ_i(a) - σ_i(b)|``.
    - ``max_sigma_diff_after``: ``max_i |σ_i(a) - σ_i(π(b))|``; equal to the one before for a
      permutation.
    - ``sigma_change``: ``max_i |σ_i(b) - σ_i(π(b))| / σ_1(b)``, the relative change of B's
      singular values by the alignment (0 up to rounding for a permutation).
    - ``sv_alignment_before``, ``sv_alignment_after``: :func:`sv_alignment` of a with b and
      with π(b) over the top ``top_k`` singular pairs.
    - ``top_k``: the ``k`` used (capped by the matrix's rank dimension).
    - ``cka_before``, ``cka_after``: linear CKA between A's and B's (π(B)'s) activations at the
      output of the module that owns the weight, when a model and batches were given. Linear
      CKA is invariant to reordering units, so for a function-preserving alignment the two are
      equal: a check, not a gain.
    - ``unit_corr_before``, ``unit_corr_after``: mean Pearson correlation of output unit ``i``
      of A with output unit ``i`` of B (π(B)) at the same module: what the alignment raises.

    The ``"(all tensors)"`` record has the three distances (over all floating-point tensors,
    biases included) and ``None`` for the others.

    Attributes
    ----------
    rows : tuple of (str, dict)
        The records' layer names and values, in state-dict order.
    top_k : int
    """

    analysis: ClassVar[str] = "weights_alignment"
    KEYS: ClassVar[tuple[str, ...]] = (
        "distance_before", "distance_after", "distance_ratio", "max_sigma_diff_before",
        "max_sigma_diff_after", "sigma_change", "sv_alignment_before", "sv_alignment_after",
        "top_k", "cka_before", "cka_after", "unit_corr_before", "unit_corr_after")

    rows: tuple[tuple[str, dict[str, Any]], ...]
    top_k: int = 10
    details: dict[str, Any] = field(default_factory=dict)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        from repscope.results import to_jsonable

        return [(layer, {k: to_jsonable(v.get(k)) for k in self.KEYS}) for layer, v in self.rows]

    def __getitem__(self, layer: str) -> dict[str, Any]:
        """The values of one record (a weight key, or ``"(all tensors)"``)."""
        for name, values in self.rows:
            if name == layer:
                return values
        raise RepscopeValueError(
            f"no diagnostics for {layer!r}; known: {[n for n, _ in self.rows][:6]}.")

    @property
    def distance_ratio(self) -> float:
        """R over all floating-point tensors."""
        return float(self[OVERALL]["distance_ratio"])

    @property
    def layers(self) -> list[str]:
        """The weight keys with a record (the ``"(all tensors)"`` record left out)."""
        return [n for n, _ in self.rows if n != OVERALL]


def _svd(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch

    m = w.detach().to("cpu", torch.float64).reshape(w.shape[0], -1)
    U, S, Vh = torch.linalg.svd(m, full_matrices=False)
    return U.numpy(), S.numpy(), Vh.T.numpy()


def _activations(model: torch.nn.Module, states: list[Mapping[str, Any]], batches: list[Any],
                 layers: list[str]) -> list[dict[str, np.ndarray]]:
    """``(samples, units)`` float64 activations at ``layers`` for each state."""
    from repscope.weights._matching import _run_model

    def to_units(_name: str, t: Any) -> np.ndarray:
        import torch

        t = t.detach().to(torch.float64)
        if t.ndim == 4:  # (N, C, H, W): channels are the units
            t = t.movedim(1, -1)
        return t.reshape(-1, t.shape[-1]).numpy()

    out = []
    for s in states:
        got = _run_model(model, s, batches, layers, to_units)
        out.append({name: np.concatenate(v) for name, v in got.items()})
    return out


def alignment_diagnostics(
    spec: PermutationSpec | None,
    a: Any,
    b: Any,
    b_aligned: Any,
    *,
    top_k: int = 10,
    model: torch.nn.Module | None = None,
    batches: Any = None,
    progress: ProgressLike = True,
) -> AlignmentDiagnosticsResult:
    """Distances, singular values, singular-vector alignment and CKA before/after aligning B.

    Parameters
    ----------
    spec : PermutationSpec or None
        When given, the weights it permutes are checked to exist in ``a``; the diagnostics are
        computed for every weight with two or more axes either way.
    a, b, b_aligned : nn.Module, Mapping[str, Tensor] or .safetensors path
        Model A, model B and B after alignment (e.g. ``weight_matching(...).aligned``); same
        keys, shapes and dtypes, finite. Not modified.
    top_k : int, default=10
        Singular pairs in :func:`sv_alignment` (the recipe's 10).
    model : nn.Module, optional
        A module of the architecture; with ``batches``, the three state dicts are run through
        it (``torch.func.functional_call``, eval mode, the module unchanged) and CKA and unit
        correlations are measured at the output of each weight's module.
    batches : Tensor, ndarray or iterable of them, optional
        Inputs for the activations.
    progress : bool or callable, default=True
        A bar over the weight tensors.

    Returns
    -------
    AlignmentDiagnosticsResult

    Raises
    ------
    RepscopeValueError
        Incompatible or non-finite state dicts, ``top_k`` < 1, ``batches`` without ``model``.
    """
    import torch

    from repscope._progress import progress_for
    from repscope.weights._state import as_state_dict, check_compatible

    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise RepscopeValueError(f"top_k must be a positive integer; got {top_k!r}.")
    if (model is None) != (batches is None):
        raise RepscopeValueError(
            "alignment_diagnostics: model and batches go together (CKA needs both); got only "
            + ("batches." if model is None else "model."))
    sa = as_state_dict(a, name="a")
    sb = as_state_dict(b, name="b")
    sc = as_state_dict(b_aligned, name="b_aligned")
    check_compatible(sa, sb, names=("a", "b"))
    check_compatible(sa, sc, names=("a", "b_aligned"))
    if spec is not None:
        from repscope.weights._spec import PermutationSpec

        if not isinstance(spec, PermutationSpec):
            raise RepscopeTypeError(
                f"spec: expected a PermutationSpec or None, got {type(spec).__name__}.")
        spec.check(sa, argument="a")
    floats = [k for k in sa if sa[k].dtype.is_floating_point]
    weights = [k for k in floats if sa[k].ndim >= 2 and min(sa[k].shape) > 0]

    acts: list[dict[str, np.ndarray]] = []
    owners: dict[str, str] = {}
    if model is not None:
        from repscope.weights._matching import _as_batches

        if not isinstance(model, torch.nn.Module):
            raise RepscopeTypeError(f"model: expected an nn.Module, got {type(model).__name__}.")
        names = dict(model.named_modules())
        owners = {k: k[: -len(".weight")] for k in weights
                  if k.endswith(".weight") and k[: -len(".weight")] in names}
        acts = _activations(model, [sa, sb, sc], _as_batches(batches),
                            sorted(set(owners.values())))

    rows: list[tuple[str, dict[str, Any]]] = []
    tot_before = tot_after = 0.0
    with progress_for(progress, "weight tensors", len(floats), prefix="weights") as advance:
        for key in floats:
            ta, tb, tc = (s[key].detach().to("cpu", torch.float64) for s in (sa, sb, sc))
            d_before = float(torch.sum((ta - tb) ** 2))
            d_after = float(torch.sum((ta - tc) ** 2))
            tot_before += d_before
            tot_after += d_after
            if key in weights:
                Ua, Sa, Va = _svd(ta)
                Ub, Sb, Vb = _svd(tb)
                Uc, Sc, Vc = _svd(tc)
                k = min(int(top_k), Sa.shape[0])
                row: dict[str, Any] = {
                    "distance_before": d_before ** 0.5, "distance_after": d_after ** 0.5,
                    "distance_ratio": _ratio(d_after ** 0.5, d_before ** 0.5),
                    "max_sigma_diff_before": float(np.max(np.abs(Sa - Sb))),
                    "max_sigma_diff_after": float(np.max(np.abs(Sa - Sc))),
                    "sigma_change": (float(np.max(np.abs(Sb - Sc)) / Sb[0]) if Sb[0] > 0
                                     else 0.0),
                    "sv_alignment_before": sv_alignment(Ua, Sa, Va, Ub, Sb, Vb, k),
                    "sv_alignment_after": sv_alignment(Ua, Sa, Va, Uc, Sc, Vc, k),
                    "top_k": k,
                }
                if key in owners:
                    row.update(_activation_row(*(x[owners[key]] for x in acts)))
                rows.append((key, row))
            advance(1)
    overall = {"distance_before": tot_before ** 0.5, "distance_after": tot_after ** 0.5,
               "distance_ratio": _ratio(tot_after ** 0.5, tot_before ** 0.5)}
    rows.append((OVERALL, overall))
    return AlignmentDiagnosticsResult(
        rows=tuple(rows), top_k=int(top_k),
        details={"n_weights": len(weights), "activations": bool(acts)})


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _activation_row(xa: np.ndarray, xb: np.ndarray, xc: np.ndarray) -> dict[str, Any]:
    from repscope.similarity import linear_cka
    from repscope.weights._matching import _column_corr

    return {"cka_before": linear_cka(xa, xb), "cka_after": linear_cka(xa, xc),
            "unit_corr_before": float(np.mean(_column_corr(xa, xb))),
            "unit_corr_after": float(np.mean(_column_corr(xa, xc)))}
