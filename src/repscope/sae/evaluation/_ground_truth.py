"""Ground-truth comparisons for SAEs: dictionary recovery, detection precision/recall, stability.

When the data come from a known generative model ``x = s @ D_true + noise`` (synthetic
benchmarks), the learned decoder rows can be matched one-to-one to the true atoms by cosine
(Hungarian assignment, :func:`repscope._kernels.assignment.linear_assignment`):

- :func:`recovery` scores the dictionary (mean matched |cosine| — the *MCC* of the
  identifiability literature — and the share of atoms recovered above a threshold);
- :func:`feature_precision_recall` scores the codes: does the matched latent fire exactly when
  the true feature does?
- :func:`seed_stability` and :func:`matched_cosines` compare two trained SAEs (two seeds, two
  widths) the same way, without any ground truth.

All inputs may be numpy arrays or torch tensors; the maths runs in float64 numpy and results are
numpy arrays and Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._array import as_float64_numpy, is_torch, to_numpy
from repscope._validation import check_features, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result
from repscope.sae.archs._base import SAEOutput

__all__ = [
    "PrecisionRecall",
    "PrecisionRecallResult",
    "RecoveryResult",
    "feature_precision_recall",
    "matched_cosines",
    "recovery",
    "seed_stability",
]


# ---------------------------------------------------------------------------- helpers


def _matrix(x: Any, name: str, *, min_samples: int = 1) -> np.ndarray:
    """A finite 2-D float64 numpy copy of ``x`` (numpy or torch), with messages naming ``name``."""
    if isinstance(x, SAEOutput):
        raise RepscopeTypeError(
            f"{name} must be a 2-D array or tensor; got an SAEOutput. Pass its dense codes "
            "(out.dense()) or the decoder weights as intended."
        )
    x = check_features(x, name=name, min_samples=min_samples)
    return as_float64_numpy(x, name=name)


def _unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm; zero rows stay zero."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1.0)


def _codes_numpy(codes: Any, name: str) -> np.ndarray:
    """Dense float64 codes (n, d_sae) from an SAEOutput, a tensor or an array."""
    if isinstance(codes, SAEOutput):
        codes = codes.dense()
    return _matrix(codes, name)


def _active(codes: Any, name: str) -> np.ndarray:
    """Boolean firing pattern (n, d_sae): code > 0 (an SAEOutput's non-zero entries)."""
    if isinstance(codes, SAEOutput):
        dense = codes.dense()
        check_features(dense, name=name)
        return to_numpy(dense > 0).astype(bool)
    x = check_features(codes, name=name)
    if is_torch(x):
        return to_numpy(x > 0).astype(bool)
    return np.asarray(x) > 0


def _cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m_a, m_b) cosines between the rows of ``a`` and ``b`` (0 for a zero row)."""
    return _unit_rows(a) @ _unit_rows(b).T


def _check_same_width(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape[1] != b.shape[1]:
        raise RepscopeValueError(
            f"{names[0]} and {names[1]} must have the same number of columns (the input "
            f"dimension d); got {names[0]}.shape={a.shape} and {names[1]}.shape={b.shape}. Pass "
            "decoder rows (d_sae, d_in) and atoms (m, d_in) of the same space."
        )


# ---------------------------------------------------------------------------- recovery


@dataclass(frozen=True)
class RecoveryResult(Result):
    """How well learned dictionary atoms recover a ground-truth dictionary.

    Attributes
    ----------
    mcc : float
        Mean over true atoms of the matched ``|cos|`` (0 for a true atom left unmatched when
        there are fewer learned atoms than true ones).
    matched_cos : ndarray of shape (m_true,)
        ``|cos|`` between each true atom and its matched learned atom.
    recovered_fraction : float
        Share of true atoms whose matched ``|cos|`` exceeds ``threshold``.
    max_cos : ndarray of shape (m_true,)
        Best ``|cos|`` of each true atom over *all* learned atoms (no one-to-one constraint);
        ``max_cos >= matched_cos``.
    rows : ndarray of int64, shape (n_matched,)
        Matched true-atom indices (increasing); ``n_matched = min(m_true, m_learned)``.
    cols : ndarray of int64, shape (n_matched,)
        The learned atom matched to each of ``rows``.
    threshold : float
        The recovery threshold used.
    """

    mcc: float
    matched_cos: np.ndarray
    recovered_fraction: float
    max_cos: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    threshold: float

    @property
    def matched_index(self) -> np.ndarray:
        """The learned atom matched to each true atom, shape (m_true,), -1 if unmatched."""
        out = np.full(self.matched_cos.shape[0], -1, dtype=np.int64)
        out[self.rows] = self.cols
        return out


def recovery(learned: Any, true: Any, *, threshold: float = 0.9) -> RecoveryResult:
    r"""Match learned atoms to true atoms one-to-one by ``|cos|`` and score the match.

    With unit-normalised rows, ``C_{ij} = |\langle \hat d_i, d_j \rangle|`` for learned atom
    ``i`` and true atom ``j``; the Hungarian assignment :math:`\pi` maximises
    :math:`\sum_j C_{\pi(j) j}` and

    .. math:: \mathrm{MCC} = \frac{1}{m_\text{true}} \sum_j C_{\pi(j) j}, \qquad
        \text{recovered} = \frac{1}{m_\text{true}} \#\{j : C_{\pi(j) j} > \tau\}.

    Parameters
    ----------
    learned : array-like or Tensor of shape (m_learned, d)
        Learned atoms, e.g. an SAE's ``W_dec`` (any row norms; zero rows match nothing).
    true : array-like or Tensor of shape (m_true, d)
        Ground-truth atoms (non-zero rows).
    threshold : float, default=0.9
        ``|cos|`` above which a true atom counts as recovered, in [0, 1].

    Returns
    -------
    RecoveryResult

    Raises
    ------
    RepscopeValueError
        Non-2-D or non-finite inputs, different widths, a zero true atom, a threshold outside
        [0, 1].

    Notes
    -----
    Invariant to permuting and sign-flipping (and rescaling) the learned rows. Absolute cosines
    are used because a ground-truth atom and its negative span the same feature direction.
    """
    check_scalar(
        threshold, "threshold", caller="recovery", kind=(int, float), min_value=0, max_value=1
    )
    L = _matrix(learned, "learned")
    T = _matrix(true, "true")
    _check_same_width(L, T, ("learned", "true"))
    zero = np.flatnonzero(np.linalg.norm(T, axis=1) == 0)
    if zero.size:
        raise RepscopeValueError(
            f"true must have non-zero rows (ground-truth atoms); got {zero.size} zero row(s), "
            f"the first at index {int(zero[0])}. Drop them first."
        )
    from repscope._kernels.assignment import linear_assignment

    C = np.abs(_cosine_matrix(T, L))  # (m_true, m_learned)
    a = linear_assignment(C, maximize=True)
    matched = np.zeros(T.shape[0])
    matched[a.rows] = C[a.rows, a.cols]
    return RecoveryResult(
        mcc=float(matched.mean()),
        matched_cos=matched,
        recovered_fraction=float((matched > threshold).mean()),
        max_cos=C.max(axis=1),
        rows=a.rows,
        cols=a.cols,
        threshold=float(threshold),
    )


# ---------------------------------------------------------------------------- precision/recall


@dataclass(frozen=True)
class PrecisionRecallResult(Result):
    """Detection of each ground-truth feature's firing by its matched latent.

    Attributes
    ----------
    precision : ndarray of shape (m_true,)
        ``P(true feature fires | matched latent fires)``; 0 when the latent never fires or the
        feature is unmatched.
    recall : ndarray of shape (m_true,)
        ``P(matched latent fires | true feature fires)``; 0 when the feature never fires or is
        unmatched.
    f1 : ndarray of shape (m_true,)
        Harmonic mean of the two (0 when both are 0).
    matched_index : ndarray of int64, shape (m_true,)
        The latent scored for each true feature (-1: unmatched).
    """

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    matched_index: np.ndarray

    @property
    def mean_f1(self) -> float:
        """Mean F1 over true features."""
        return float(self.f1.mean())


#: The former name of :class:`PrecisionRecallResult` (kept for one release).
PrecisionRecall = PrecisionRecallResult


def _matched_index(assignment: Any, m_true: int, d_sae: int) -> np.ndarray:
    if isinstance(assignment, RecoveryResult):
        idx = assignment.matched_index
    elif isinstance(assignment, tuple) and len(assignment) >= 2 and not is_torch(assignment):
        rows = np.asarray(to_numpy(assignment[0]), dtype=np.int64).ravel()
        cols = np.asarray(to_numpy(assignment[1]), dtype=np.int64).ravel()
        if rows.shape != cols.shape or (rows.size and (rows.min() < 0 or rows.max() >= m_true)):
            raise RepscopeValueError(
                "The 'assignment' parameter of feature_precision_recall must hold (rows, cols) "
                f"of equal length with rows (true features) in [0, {m_true}); got rows "
                f"{rows.tolist()[:10]} and cols {cols.tolist()[:10]}."
            )
        idx = np.full(m_true, -1, dtype=np.int64)
        idx[rows] = cols
    else:
        arr = to_numpy(assignment) if is_torch(assignment) else np.asarray(assignment)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise RepscopeTypeError(
                "The 'assignment' parameter of feature_precision_recall must be a "
                "RecoveryResult, a (rows, cols) tuple or an int array of shape (m_true,) giving "
                f"each true feature's latent (-1: none). Got {type(assignment).__name__} "
                f"with shape {getattr(arr, 'shape', None)} instead."
            )
        idx = arr.astype(np.int64)
    if idx.shape != (m_true,):
        raise RepscopeValueError(
            f"The 'assignment' parameter of feature_precision_recall must match {m_true} true "
            f"features; got {idx.shape[0]} entries instead."
        )
    bad = (idx < -1) | (idx >= d_sae)
    if bad.any():
        raise RepscopeValueError(
            f"The 'assignment' parameter of feature_precision_recall must index latents in "
            f"[0, {d_sae}) (or -1); got {int(idx[bad][0])} instead."
        )
    return idx


def _prf(tp: np.ndarray, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 from counts with scikit-learn's ``zero_division=0``."""
    precision = np.where(pred > 0, tp / np.maximum(pred, 1), 0.0)
    recall = np.where(true > 0, tp / np.maximum(true, 1), 0.0)
    den = pred + true
    f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
    return precision, recall, f1


def feature_precision_recall(codes: Any, true_codes: Any, assignment: Any) -> PrecisionRecallResult:
    """Precision and recall of each matched latent as a detector of its true feature.

    A latent *fires* on a sample when its code is > 0; a true feature fires when its
    coefficient is non-zero.

    Parameters
    ----------
    codes : SAEOutput, array-like or Tensor of shape (n, d_sae)
        Learned codes.
    true_codes : array-like or Tensor of shape (n, m_true)
        Ground-truth coefficients ``s`` of the same samples.
    assignment : RecoveryResult, (rows, cols) tuple or int array of shape (m_true,)
        Which latent stands for each true feature: the result of :func:`recovery` (``rows``
        are true features, ``cols`` latents), or the matched latent per feature (-1: none).

    Returns
    -------
    PrecisionRecallResult

    Raises
    ------
    RepscopeValueError
        Different numbers of samples, non-finite values, an assignment out of range.
    """
    fires = _active(codes, "codes")
    t = check_features(true_codes, name="true_codes")
    truth = to_numpy(t != 0).astype(bool) if is_torch(t) else np.asarray(t) != 0
    if fires.shape[0] != truth.shape[0]:
        raise RepscopeValueError(
            f"codes and true_codes must have the same number of samples (rows); got "
            f"codes.shape={fires.shape} and true_codes.shape={truth.shape}."
        )
    m_true = truth.shape[1]
    idx = _matched_index(assignment, m_true, fires.shape[1])
    ok = idx >= 0
    pred = np.zeros_like(truth)
    pred[:, ok] = fires[:, idx[ok]]
    tp = (pred & truth).sum(0).astype(np.float64)
    precision, recall, f1 = _prf(tp, pred.sum(0).astype(np.float64), truth.sum(0).astype(float))
    precision[~ok] = recall[~ok] = f1[~ok] = 0.0
    return PrecisionRecallResult(precision, recall, f1, idx)


# ---------------------------------------------------------------------------- stability


def matched_cosines(W_dec_a: Any, W_dec_b: Any) -> np.ndarray:
    r"""Cosine of each latent of run ``a`` with its Hungarian-matched latent of run ``b``.

    The assignment maximises the total *signed* cosine of decoder rows: SAE codes are
    non-negative, so a row and its negative are different features.

    Parameters
    ----------
    W_dec_a : array-like or Tensor of shape (m_a, d)
    W_dec_b : array-like or Tensor of shape (m_b, d)
        Decoder rows of two SAEs on the same inputs (e.g. two seeds).

    Returns
    -------
    ndarray of shape (m_a,)
        Matched cosine per latent of ``a``; NaN for latents left unmatched when
        ``m_a > m_b``.

    Raises
    ------
    RepscopeValueError
        Non-2-D or non-finite inputs, different widths ``d``.
    """
    A = _matrix(W_dec_a, "W_dec_a")
    B = _matrix(W_dec_b, "W_dec_b")
    _check_same_width(A, B, ("W_dec_a", "W_dec_b"))
    from repscope._kernels.assignment import linear_assignment

    C = _cosine_matrix(A, B)
    a = linear_assignment(C, maximize=True)
    out = np.full(A.shape[0], np.nan)
    out[a.rows] = C[a.rows, a.cols]
    return out


def seed_stability(W_dec_a: Any, W_dec_b: Any) -> float:
    """Mean matched decoder cosine between two SAEs (cosine-Hungarian stability).

    The mean of :func:`matched_cosines` over the ``min(m_a, m_b)`` matched pairs; symmetric in
    its arguments, 1 for identical dictionaries up to a permutation of the latents.

    Parameters
    ----------
    W_dec_a : array-like or Tensor of shape (m_a, d)
    W_dec_b : array-like or Tensor of shape (m_b, d)

    Returns
    -------
    float
    """
    return float(np.nanmean(matched_cosines(W_dec_a, W_dec_b)))
