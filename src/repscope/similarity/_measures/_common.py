"""Helpers shared by the measure families: validation, paired sufficient statistics, reduction.

``PairStats`` is the fixed-size state behind every Moments-based measure: a paired
:class:`~repscope.stats.Moments` (``n``, means, ``X^T X``, ``X^T Y``, ``Y^T Y`` in float64), plus,
when asked, the row-norm sums that the unbiased HSIC needs (:class:`RowNormSums`). The measure
functions build it from arrays and call the same ``_compute`` helper that
:class:`~repscope.similarity.StreamingSimilarity` calls after streaming updates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from repscope._array import as_float64_numpy, is_torch
from repscope.exceptions import RepscopeValueError
from repscope.stats import Moments

__all__ = [
    "PairStats",
    "RowNormSums",
    "centered_f64",
    "centered_gram",
    "gram_row_space",
    "pow2_exponent",
    "pow2_rescaled",
    "row_space",
]

#: columns converted to float64 at a time when forming a Gram matrix of a wide input.
GRAM_BLOCK = 2048


#: inputs whose largest absolute entry ``a`` has ``a = m 2^e`` (``0.5 <= m < 1``) with
#: ``|e| > SAFE_EXPONENT`` are rescaled before products are formed; inside this range the
#: eighth powers that a CKA ratio forms stay far from float64 overflow and underflow.
SAFE_EXPONENT = 32


def pow2_exponent(A: Any) -> int:
    """Power of two that brings ``max |A|`` into ``[0.5, 1)``, or 0 when no rescale is needed.

    Returns the ``e`` of ``max |A| = m 2^e`` when ``|e| > SAFE_EXPONENT`` (the magnitude is
    outside ``[2^-33, 2^32)``), and 0 otherwise, for an all-zero or a non-finite ``A``.
    """
    if is_torch(A):
        a = A.detach()
        if a.numel() == 0:
            return 0
        amax = max(abs(float(a.max())), abs(float(a.min())))
    else:
        arr = np.asarray(A)
        if arr.size == 0:
            return 0
        amax = max(abs(float(arr.max())), abs(float(arr.min())))
    if not (amax > 0 and math.isfinite(amax)):
        return 0
    e = math.frexp(amax)[1]
    return e if abs(e) > SAFE_EXPONENT else 0


def pow2_rescaled(A: Any, *, exponent: int | None = None) -> Any:
    """``A * 2^-e`` with ``e = pow2_exponent(A)`` (or ``exponent``); ``A`` itself when ``e == 0``.

    Multiplying by a power of two is exact, so every product formed from the result is the
    product of ``A`` times a power of two, bit for bit, unless it overflowed or underflowed;
    a scale-invariant measure is unchanged, and extreme scales (1e-100, 1e76) stay finite.
    A numpy input gives a new array (integers become float64); a torch tensor keeps its
    dtype and device.
    """
    e = pow2_exponent(A) if exponent is None else exponent
    if e == 0:
        return A
    if is_torch(A):
        out = A.detach()
        while e:  # steps of at most 2^64 stay exact in float32 and bfloat16
            step = max(-64, min(64, e))
            out = out * 2.0 ** -step
            e -= step
        return out
    arr = np.asarray(A)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return np.ldexp(arr, -e)


def centered_f64(A: Any, name: str) -> np.ndarray:
    """Column-centred float64 numpy copy of ``A``."""
    a = as_float64_numpy(A, name=name)
    return np.asarray(a - a.mean(axis=0))


def centered_gram(A: Any, name: str = "X", *, block: int = GRAM_BLOCK) -> np.ndarray:
    """Float64 Gram matrix ``X~ X~^T`` of the column-centred ``A`` (``n x n``).

    Columns are converted to float64 and centred ``block`` at a time (centring is per column),
    so a wide float32 input never gets a full float64 copy; one BLAS ``syrk`` per block.
    """
    a = A.detach().cpu().numpy() if is_torch(A) else np.asarray(A)
    n, d = a.shape
    K = np.zeros((n, n))
    for s in range(0, d, block):
        blk = as_float64_numpy(a[:, s:s + block], name=name)
        blk = blk - blk.mean(axis=0)
        K += blk @ blk.T
    return K


def gram_row_space(K: np.ndarray) -> np.ndarray:
    """``B`` (``n x r``) with ``B B^T = K`` for a PSD Gram matrix (float64 eigendecomposition;
    eigenvalues below ``1e-12`` of the largest dropped)."""
    w, U = np.linalg.eigh(K)
    keep = w > max(float(w[-1]), 0.0) * 1e-12
    return np.asarray(U[:, keep] * np.sqrt(w[keep]))


def row_space(Ac: np.ndarray) -> np.ndarray:
    """An ``n x r`` matrix ``B`` (``r <= min(n, d)``) with ``B B^T = Ac Ac^T``.

    Every measure invariant to orthogonal transforms of the features depends on ``Ac`` only
    through its Gram matrix, so it can be computed on ``B``: with ``d > n`` this is the QR-style
    reduction that makes ``d = 16,384`` at ``n = 1,000`` cost ``O(n^2 d)``. Computed from the
    float64 Gram matrix (``O(n^2 d)``, one BLAS ``syrk``) and its eigendecomposition; directions
    with eigenvalues below ``1e-12`` of the largest are dropped.
    """
    n, d = Ac.shape
    if d <= n:
        return Ac
    return gram_row_space(Ac @ Ac.T)


class RowNormSums:
    """Row-norm sums for the unbiased HSIC with linear kernels, accumulated about a shift.

    With ``u_i = x_i - c``, ``v_i = y_i - e``, ``k_i = |u_i|^2``, ``l_i = |v_i|^2`` the state is
    ``sum k l``, ``sum k^2``, ``sum l^2`` (scalars) and ``sum k u``, ``sum l u`` (``d_x``),
    ``sum k v``, ``sum l v`` (``d_y``). Re-expressing them about another shift needs only the
    paired first and second moments (exact algebra), so shards with different shifts merge and
    the final value is computed about the exact mean.
    """

    def __init__(self) -> None:
        self.c: np.ndarray | None = None
        self.e: np.ndarray | None = None
        self.kl = 0.0
        self.kk = 0.0
        self.ll = 0.0
        self.ku: np.ndarray | None = None
        self.lu: np.ndarray | None = None
        self.kv: np.ndarray | None = None
        self.lv: np.ndarray | None = None
        #: True when the sums are about the exact mean and hold only the scalars (in-memory path)
        self.about_mean = False

    def update(self, X: Any, Y: Any, c: np.ndarray, e: np.ndarray, *, centred: bool = False) -> None:
        """Add rows; ``centred=True`` means ``X, Y`` are float64 rows already minus ``c, e``."""
        if self.c is None:
            self.c, self.e = np.array(c, dtype=np.float64), np.array(e, dtype=np.float64)
            self.ku, self.lu = np.zeros(self.c.shape[0]), np.zeros(self.c.shape[0])
            self.kv, self.lv = np.zeros(self.e.shape[0]), np.zeros(self.e.shape[0])
        assert self.e is not None
        U = X if centred else as_float64_numpy(X, name="X") - self.c
        V = Y if centred else as_float64_numpy(Y, name="Y") - self.e
        k = np.einsum("ij,ij->i", U, U)
        l_ = np.einsum("ij,ij->i", V, V)
        self.kl += float(k @ l_)
        self.kk += float(k @ k)
        self.ll += float(l_ @ l_)
        self.ku += U.T @ k
        self.lu += U.T @ l_
        self.kv += V.T @ k
        self.lv += V.T @ l_

    def rebased(self, m: Moments, c_new: np.ndarray, e_new: np.ndarray) -> RowNormSums:
        """These sums re-expressed about ``(c_new, e_new)``; ``m`` holds the same rows'
        moments."""
        assert self.c is not None
        assert self.e is not None
        assert self.ku is not None
        assert self.lu is not None
        assert self.kv is not None
        assert self.lv is not None
        n = m.n
        dx, dy = m.mean - self.c, m.mean_y - self.e
        su, sv = n * dx, n * dy
        suu = m.scatter() + n * np.outer(dx, dx)
        svv = m.scatter_y() + n * np.outer(dy, dy)
        suv = m.cross_scatter() + n * np.outer(dx, dy)
        sk, sl = float(np.trace(suu)), float(np.trace(svv))
        a, b = c_new - self.c, e_new - self.e
        A, B = float(a @ a), float(b @ b)
        out = RowNormSums()
        out.c, out.e = np.array(c_new, dtype=np.float64), np.array(e_new, dtype=np.float64)
        out.kl = (
            self.kl - 2 * b @ self.kv + B * sk - 2 * a @ self.lu + 4 * a @ suv @ b
            - 2 * B * (a @ su) + A * sl - 2 * A * (b @ sv) + n * A * B
        )
        out.kk = self.kk - 4 * a @ self.ku + 2 * A * sk + 4 * a @ suu @ a - 4 * A * (a @ su) + n * A**2
        out.ll = self.ll - 4 * b @ self.lv + 2 * B * sl + 4 * b @ svv @ b - 4 * B * (b @ sv) + n * B**2
        out.ku = self.ku - a * sk - 2 * suu @ a + 2 * a * (a @ su) + A * su - n * A * a
        out.lv = self.lv - b * sl - 2 * svv @ b + 2 * b * (b @ sv) + B * sv - n * B * b
        out.kv = self.kv - b * sk - 2 * suv.T @ a + 2 * b * (a @ su) + A * sv - n * A * b
        out.lu = self.lu - a * sl - 2 * suv @ b + 2 * a * (b @ sv) + B * su - n * B * a
        return out

    def copy_from(self, other: RowNormSums) -> None:
        for k, v in other.__dict__.items():
            self.__dict__[k] = v.copy() if isinstance(v, np.ndarray) else v


class PairStats:
    """Fixed-size paired statistics: a paired ``Moments`` and, optionally, row-norm sums.

    Parameters
    ----------
    row_norms : bool
        Also keep :class:`RowNormSums` (for the unbiased/debiased linear HSIC).
    """

    def __init__(self, *, row_norms: bool = False) -> None:
        self.moments = Moments()
        self.norms: RowNormSums | None = RowNormSums() if row_norms else None
        self._scatters: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def scatters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centred ``(S_xx, S_yy, S_xy)``."""
        if self._scatters is not None:
            return self._scatters
        m = self.moments
        return m.scatter(), m.scatter_y(), m.cross_scatter()

    @property
    def n(self) -> int:
        return self.moments.n

    def update(self, X: Any, Y: Any) -> PairStats:
        self._scatters = None
        self.moments.update(X, Y)
        if self.norms is not None and int(X.shape[0]) > 0:
            m = self.moments
            assert m.shift is not None
            assert m.shift_y is not None
            self.norms.update(X, Y, m.shift, m.shift_y)
        return self

    def merge(self, other: PairStats) -> PairStats:
        if other.n == 0:
            return self
        self._scatters = None
        if any(x is not None and x.about_mean for x in (self.norms, other.norms)):
            raise RepscopeValueError(
                "PairStats built by from_arrays keep only mean-centred scalars and cannot be "
                "merged; accumulate with update() instead."
            )
        if self.norms is not None:
            if other.norms is None:
                raise RepscopeValueError("cannot merge PairStats with and without row-norm sums.")
            if self.n == 0:
                self.norms.copy_from(other.norms)
            else:
                assert self.norms.c is not None
                assert self.norms.e is not None
                mine = other.norms.rebased(other.moments, self.norms.c, self.norms.e)
                n = self.norms
                n.kl += mine.kl
                n.kk += mine.kk
                n.ll += mine.ll
                for key in ("ku", "lu", "kv", "lv"):
                    setattr(n, key, getattr(n, key) + getattr(mine, key))
        self.moments.merge(other.moments)
        return self

    def centered_norm_sums(self) -> tuple[float, float, float]:
        """``(sum k l, sum k^2, sum l^2)`` with ``k_i = |x_i - mean|^2`` (exact mean)."""
        if self.norms is None:
            raise RepscopeValueError("these PairStats were built without row-norm sums.")
        m = self.moments
        if self.norms.about_mean:
            return self.norms.kl, self.norms.kk, self.norms.ll
        r = self.norms.rebased(m, m.mean, m.mean_y)
        return float(r.kl), float(r.kk), float(r.ll)

    @classmethod
    def from_arrays(cls, X: Any, Y: Any, *, row_norms: bool = False) -> PairStats:
        """Statistics of in-memory arrays: the state :meth:`update` would reach, computed with
        one fused float64 conversion-and-centring pass per input (numpy inputs; torch inputs
        go through :meth:`update`, reducing on their device)."""
        if is_torch(X) or is_torch(Y) or int(X.shape[0]) == 0:
            return cls(row_norms=row_norms).update(X, Y)
        a, b = np.asarray(X), np.asarray(Y)
        mx, my = a.mean(axis=0, dtype=np.float64), b.mean(axis=0, dtype=np.float64)
        Xc = np.subtract(a, mx, dtype=np.float64)
        Yc = np.subtract(b, my, dtype=np.float64)
        out = cls(row_norms=row_norms)
        out.moments, out._scatters = _moments_about_mean(Xc, Yc, mx, my)
        if out.norms is not None:
            # Sums about the exact mean: only the three scalars are ever needed (no merge).
            k = np.einsum("ij,ij->i", Xc, Xc)
            l_ = np.einsum("ij,ij->i", Yc, Yc)
            out.norms.c, out.norms.e = mx, my
            out.norms.kl, out.norms.kk, out.norms.ll = float(k @ l_), float(k @ k), float(l_ @ l_)
            out.norms.about_mean = True
        return out


def _moments_about_mean(
    Xc: np.ndarray, Yc: np.ndarray, mx: np.ndarray, my: np.ndarray
) -> tuple[Moments, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A paired :class:`Moments` whose shift is the exact mean (so its first sums are 0),
    from already-centred float64 rows; equal (up to rounding) to ``Moments().update(X, Y)``.
    Also returns the exact-mean scatters ``(S_xx, S_yy, S_xy)`` (no re-derivation needed)."""
    m = Moments(shift=mx)
    sxx, syy, sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    state = {
        "n": int(Xc.shape[0]),
        "n_targets": int(Yc.shape[1]),
        "shift_y": my.copy(),
        "_s1": Xc.sum(axis=0),
        "_s2": sxx,
        "_t1": Yc.sum(axis=0),
        "_sxy": sxy,
        "_syy": syy,
        "_labelled": False,
    }
    m.__dict__.update(state)
    return m, (sxx, syy, sxy)
