"""The ``Moments`` accumulator: additive sufficient statistics of features (and targets, labels).

Everything here is accumulated in float64 **about a shift** ``c`` (the first batch's mean unless
given), i.e. the state holds ``n``, ``S1 = sum(x - c)`` and ``S2 = sum((x - c)(x - c)^T)``.
Centred quantities then follow as ``S2 - S1 S1^T / n`` without the catastrophic cancellation
of the textbook ``sum(x x^T) - n m m^T`` on un-centred data.

Two accumulators merge exactly even when their shifts differ (Chan et al.'s pairwise update,
re-expressed about one shift); across ranks, :meth:`Moments.all_reduce` first agrees on one
shift (the first rank holding data), rebases, and then does a plain SUM.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from repscope._array import as_float64_numpy, is_torch
from repscope._memory import check_memory
from repscope._validation import check_features, check_labels, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["Moments"]

_FORMAT = "repscope.Moments"
_BLOCK_ROWS = 4096
_FORMAT_VERSION = 1
ClassCov = Literal["diag", "full", "none"]


def _batch_to_f64(X: Any, name: str) -> Any:
    """Float64 copy of a batch in its own backend (torch stays on its device)."""
    if is_torch(X):
        import torch

        if X.dtype in (torch.float16, torch.bfloat16):
            as_float64_numpy(X[:0], name=name)  # warns once
        return X.detach().to(dtype=torch.float64)
    return as_float64_numpy(X, name=name)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)


def _sum0(x: Any) -> np.ndarray:
    return _np(x.sum(0)) if is_torch(x) else x.sum(axis=0)


def _gram(a: Any, b: Any) -> np.ndarray:
    return _np(a.T @ b)


def _check_room(d: int, dy: int | None = None, *, classes: int = 0) -> None:
    """Refuse (before allocating) second moments that cannot fit in the available memory.

    Each ``d x d`` float64 matrix costs ``8 d^2`` bytes. An update keeps ``S2`` and makes one
    batch Gram matrix of the same size (with Y also ``Sxy``, ``Syy`` and their batch
    products); growing ``classes`` full per-class matrices allocates all of them anew.
    """
    if classes:
        need = 8 * classes * d * d
        what = f"The full per-class second moments ({classes} float64 matrices of {d} x {d})"
    else:
        need = 8 * (2 * d * d + (2 * (d * dy + dy * dy) if dy else 0))
        what = f"The second moments of {d} features (float64 matrices of {d} x {d}"
        what += f", and {d} x {dy} with the targets)" if dy else ")"
    check_memory(
        need,
        what=what,
        fix="Reduce the width first (e.g. PCA to a few thousand components) or analyse fewer "
        "or narrower layers (on the command line: --layer).",
    )


class Moments:
    """Additive first and second moments of features, optionally paired targets and labels.

    Parameters
    ----------
    class_cov : {"diag", "full", "none"}, default="diag"
        Per-class second moments to keep when labels are given: the diagonal (``K x d``),
        full matrices (``K x d x d``; opt-in, they cost ``K d^2`` memory), or none (only class
        counts and sums: enough for class means, the pooled within-class and the between-class
        scatter, and about 30% cheaper per update).
    shift : array-like of shape (n_features,), optional
        Reference vector to accumulate about. Default: the first batch's mean.

    Attributes
    ----------
    n : int
        Number of samples seen.
    n_features, n_targets : int or None
        Widths of X and (if paired) Y; fixed by the first update.
    classes : ndarray of shape (n_classes,)
        Sorted class labels seen so far (ints or strings).

    Notes
    -----
    State (all float64): ``n``; ``S1 = sum(x - c)``; ``S2 = sum((x-c)(x-c)^T)``; with Y also
    ``T1 = sum(y - c_y)``, ``Sxy = sum((x-c)(y-c_y)^T)``, ``Syy``; with labels, per class
    ``n_k``, ``S1_k`` and ``diag S2_k`` (or full ``S2_k``). Every derived quantity is a
    function of this state, so ``update`` over any split of the data, ``merge`` of shards and
    ``all_reduce`` across ranks all give the same answer as one pass over the concatenation.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = 1e4 + rng.standard_normal((1000, 3))
    >>> a, b = Moments(), Moments()
    >>> _ = a.update(X[:400]); _ = b.update(X[400:])
    >>> bool(np.allclose(a.merge(b).covariance(), np.cov(X.T)))
    True
    """

    def __init__(self, *, class_cov: ClassCov = "diag", shift: Any = None) -> None:
        if class_cov not in ("diag", "full", "none"):
            raise RepscopeValueError(
                f"The 'class_cov' parameter of Moments must be 'diag', 'full' or 'none'. Got "
                f"{class_cov!r} instead."
            )
        self.class_cov: ClassCov = class_cov
        self.n: int = 0
        self.n_features: int | None = None
        self.n_targets: int | None = None
        self.shift: np.ndarray | None = None
        self.shift_y: np.ndarray | None = None
        self._s1: np.ndarray | None = None
        self._s2: np.ndarray | None = None
        self._t1: np.ndarray | None = None
        self._sxy: np.ndarray | None = None
        self._syy: np.ndarray | None = None
        self.classes: np.ndarray = np.empty(0, dtype=np.int64)
        self._labelled: bool | None = None
        self._nk: np.ndarray = np.zeros(0)
        self._s1k: np.ndarray | None = None
        self._s2k: np.ndarray | None = None
        if shift is not None:
            s = np.asarray(as_float64_numpy(shift, name="shift")).ravel()
            self.shift = s.copy()
            self.n_features = s.shape[0]

    # ------------------------------------------------------------------ accumulation
    def update(self, X: Any, Y: Any = None, labels: Any = None) -> Moments:
        """Add a batch.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Features (any float dtype; accumulated in float64; torch tensors are reduced on
            their own device and only ``d x d`` results are moved).
        Y : array-like of shape (n_samples, n_targets), optional
            Paired features/targets for cross moments. Once given, every update needs it.
        labels : array-like of shape (n_samples,), optional
            Class labels (ints or strings). Once given, every update needs them.

        Returns
        -------
        self
        """
        return self._update(X, Y, labels, owned=False)

    def _update(self, X: Any, Y: Any, labels: Any, *, owned: bool) -> Moments:
        """:meth:`update`; ``owned``: ``X`` is a numpy batch nothing else holds (a store
        reader's), which the centring may overwrite instead of copying."""
        X = check_features(X, name="X", min_samples=0)
        n_b = int(X.shape[0])
        d = int(X.shape[1])
        if self.n_features is not None and d != self.n_features:
            raise RepscopeValueError(
                f"X must have {self.n_features} features (columns), as in earlier updates; got "
                f"shape {tuple(X.shape)}. Every batch must come from the same layer."
            )
        has_y = Y is not None
        if self.n > 0 and has_y != (self.n_targets is not None):
            raise RepscopeValueError(
                "Y must be given in every update or in none; "
                + ("earlier updates had Y, this one has none." if not has_y else
                   "earlier updates had no Y, this one has Y.")
            )
        if has_y:
            Y = check_features(Y, name="Y", min_samples=0)
            if int(Y.shape[0]) != n_b:
                raise RepscopeValueError(
                    f"X and Y must have the same number of samples (rows); got "
                    f"X.shape={tuple(X.shape)} and Y.shape={tuple(Y.shape)}. Pass activations "
                    "computed on the same inputs."
                )
            if self.n_targets is not None and int(Y.shape[1]) != self.n_targets:
                raise RepscopeValueError(
                    f"Y must have {self.n_targets} columns, as in earlier updates; got shape "
                    f"{tuple(Y.shape)}."
                )
        has_labels = labels is not None
        if self._labelled is not None and has_labels != self._labelled:
            raise RepscopeValueError(
                "labels must be given in every update or in none; "
                + ("earlier updates had labels, this one has none." if not has_labels else
                   "earlier updates had none, this one has labels.")
            )
        if has_labels:
            labels = check_labels(labels, n_samples=n_b, name="labels")
        if n_b == 0:
            return self
        # Large batches go through in row blocks: the float64 centred copy of a block stays
        # cache- and memory-friendly (one 50,000 x 384 block was measured 1.6x slower than
        # the same rows in 4,096-row blocks).
        for s in range(0, n_b, _BLOCK_ROWS):
            e = min(s + _BLOCK_ROWS, n_b)
            whole = s == 0 and e == n_b
            self._accumulate(
                X if whole else X[s:e],
                None if not has_y else (Y if whole else Y[s:e]),
                None if not has_labels else labels[s:e],
                owned=owned,
            )
        return self

    def _accumulate(self, X: Any, Y: Any, labels: np.ndarray | None, *,
                    owned: bool = False) -> None:
        """Add one validated block of rows to the state (``owned``: see :meth:`_update`)."""
        n_b, d = int(X.shape[0]), int(X.shape[1])
        has_y = Y is not None
        Xf = _batch_to_f64(X, "X")
        # Centre in place where the float64 rows are ours: a new array from the cast, or a
        # reader's batch (saves allocating and writing a second copy of the block).
        in_place = isinstance(X, np.ndarray) and isinstance(Xf, np.ndarray) and (
            (owned and Xf.flags.writeable) or not np.may_share_memory(Xf, X))
        if self.shift is None:
            self.shift = _sum0(Xf) / n_b
        if self._s1 is None:
            _check_room(d, int(Y.shape[1]) if has_y else None)
            self.n_features = d
            self._s1 = np.zeros(d)
            self._s2 = np.zeros((d, d))
        if in_place:
            Xc = np.subtract(Xf, self.shift, out=Xf)
        else:
            Xc = Xf - (self._as_backend(self.shift, Xf))
        self._s1 += _sum0(Xc)
        self._s2 += _gram(Xc, Xc)

        if has_y:
            Yf = _batch_to_f64(Y, "Y")
            if self.shift_y is None:
                self.shift_y = _sum0(Yf) / n_b
            if self._t1 is None:
                self.n_targets = int(Y.shape[1])
                self._t1 = np.zeros(self.n_targets)
                self._sxy = np.zeros((d, self.n_targets))
                self._syy = np.zeros((self.n_targets, self.n_targets))
            Yc = Yf - self._as_backend(self.shift_y, Yf)
            self._t1 += _sum0(Yc)
            assert self._sxy is not None
            assert self._syy is not None
            self._sxy += _gram(Xc, Yc)
            self._syy += _gram(Yc, Yc)

        if labels is not None:
            self._labelled = True
            self._update_classes(Xc, labels)
        else:
            self._labelled = False
        self.n += n_b

    @staticmethod
    def _as_backend(v: np.ndarray, like: Any) -> Any:
        if is_torch(like):
            import torch

            return torch.as_tensor(v, dtype=torch.float64, device=like.device)
        return v

    def _ensure_classes(self, new: np.ndarray) -> None:
        """Grow the class arrays to include the labels ``new`` (kept sorted)."""
        d = self.n_features
        assert d is not None
        if self._s1k is None:
            self._s1k = np.zeros((0, d))
            shape = {"full": (0, d, d), "diag": (0, d), "none": (0, 0)}[self.class_cov]
            self._s2k = np.zeros(shape)
            self.classes = np.empty(0, dtype=new.dtype)
        missing = np.setdiff1d(new, self.classes)
        if missing.size == 0:
            return
        if self.classes.size and (self.classes.dtype.kind in "US") != (new.dtype.kind in "US"):
            raise RepscopeTypeError(
                f"labels must keep one type across updates; earlier labels were "
                f"{self.classes.dtype}, now {new.dtype}."
            )
        allc = np.union1d(self.classes, missing)
        if self.class_cov == "full":
            _check_room(d, classes=int(allc.size))
        idx = np.searchsorted(allc, self.classes)
        nk = np.zeros(allc.size)
        s1k = np.zeros((allc.size, d))
        assert self._s2k is not None
        s2k = np.zeros((allc.size, *self._s2k.shape[1:]))
        nk[idx], s1k[idx], s2k[idx] = self._nk, self._s1k, self._s2k
        self.classes, self._nk, self._s1k, self._s2k = allc, nk, s1k, s2k

    def _update_classes(self, Xc: Any, labels: np.ndarray) -> None:
        if labels.dtype.kind == "O":
            labels = labels.astype(str)
        present, inv = np.unique(labels, return_inverse=True)
        self._ensure_classes(present)
        pos = np.searchsorted(self.classes, present)
        k = present.size
        onehot: Any
        if is_torch(Xc):
            import torch

            inv_t = torch.as_tensor(inv, device=Xc.device)
            onehot = torch.zeros((k, Xc.shape[0]), dtype=torch.float64, device=Xc.device)
            onehot[inv_t, torch.arange(Xc.shape[0], device=Xc.device)] = 1.0
        else:
            onehot = np.zeros((k, Xc.shape[0]))
            onehot[inv, np.arange(Xc.shape[0])] = 1.0
        assert self._s1k is not None
        assert self._s2k is not None
        self._nk[pos] += np.bincount(inv, minlength=k)
        self._s1k[pos] += _np(onehot @ Xc)
        if self.class_cov == "diag":
            self._s2k[pos] += _np(onehot @ (Xc * Xc))
        elif self.class_cov == "full":
            for j in range(k):
                rows = Xc[_rows(inv == j, Xc)]
                self._s2k[pos[j]] += _gram(rows, rows)

    # ------------------------------------------------------------------ combining
    def _rebased(self, shift: np.ndarray, shift_y: np.ndarray | None) -> dict[str, Any]:
        """This state's sums re-expressed about ``shift`` (exact algebra, stable when both
        shifts lie near the data)."""
        assert self.shift is not None
        assert self._s1 is not None
        assert self._s2 is not None
        delta = self.shift - shift
        n = self.n
        s1 = self._s1 + n * delta
        s2 = self._s2 + np.outer(self._s1, delta) + np.outer(delta, self._s1) + n * np.outer(delta, delta)
        out: dict[str, Any] = {"s1": s1, "s2": s2}
        if self._t1 is not None:
            assert shift_y is not None
            assert self.shift_y is not None
            assert self._sxy is not None
            assert self._syy is not None
            dy = self.shift_y - shift_y
            out["t1"] = self._t1 + n * dy
            out["sxy"] = self._sxy + np.outer(self._s1, dy) + np.outer(delta, self._t1) + n * np.outer(delta, dy)
            out["syy"] = self._syy + np.outer(self._t1, dy) + np.outer(dy, self._t1) + n * np.outer(dy, dy)
        if self._s1k is not None:
            assert self._s2k is not None
            nk = self._nk[:, None]
            out["s1k"] = self._s1k + nk * delta
            if self.class_cov == "diag":
                out["s2k"] = self._s2k + 2 * self._s1k * delta + nk * delta**2
            elif self.class_cov == "none":
                out["s2k"] = self._s2k
            else:
                a = np.einsum("ki,j->kij", self._s1k, delta)
                out["s2k"] = (
                    self._s2k + a + a.transpose(0, 2, 1)
                    + self._nk[:, None, None] * np.outer(delta, delta)
                )
        return out

    def rebase(self, shift: Any, shift_y: Any = None) -> Moments:
        """Re-express the state about a new shift (in place). Values of every derived
        quantity are unchanged up to rounding."""
        if self.n == 0:
            self.shift = np.asarray(shift, dtype=np.float64).copy()
            self.shift_y = None if shift_y is None else np.asarray(shift_y, dtype=np.float64).copy()
            return self
        shift = np.asarray(shift, dtype=np.float64)
        shift_y = self.shift_y if shift_y is None else np.asarray(shift_y, dtype=np.float64)
        st = self._rebased(shift, shift_y)
        self._s1, self._s2 = st["s1"], st["s2"]
        if "t1" in st:
            self._t1, self._sxy, self._syy = st["t1"], st["sxy"], st["syy"]
        if "s1k" in st:
            self._s1k, self._s2k = st["s1k"], st["s2k"]
        self.shift = shift.copy()
        self.shift_y = None if shift_y is None else shift_y.copy()
        return self

    def _check_compatible(self, other: Moments) -> None:
        if not isinstance(other, Moments):
            raise RepscopeTypeError(f"other must be a Moments; got {type(other).__name__}.")
        if self.n == 0 or other.n == 0:
            return
        if self.n_features != other.n_features:
            raise RepscopeValueError(
                f"cannot merge Moments with {self.n_features} and {other.n_features} features."
            )
        if self.n_targets != other.n_targets:
            raise RepscopeValueError(
                f"cannot merge Moments with Y width {self.n_targets} and {other.n_targets}."
            )
        if self._labelled != other._labelled:
            raise RepscopeValueError("cannot merge labelled and unlabelled Moments.")
        if self.class_cov != other.class_cov:
            raise RepscopeValueError(
                f"cannot merge Moments with class_cov={self.class_cov!r} and {other.class_cov!r}."
            )

    def merge(self, other: Moments) -> Moments:
        """Add another accumulator's state into this one (in place; exact for any shifts).

        The merged shift is this accumulator's; ``other``'s sums are rebased onto it.
        Returns ``self``.
        """
        self._check_compatible(other)
        if other.n == 0:
            return self
        if self.n == 0:
            self._copy_from(other)
            return self
        assert self.shift is not None
        st = other._rebased(self.shift, self.shift_y)
        assert self._s1 is not None
        assert self._s2 is not None
        self._s1 = self._s1 + st["s1"]
        self._s2 = self._s2 + st["s2"]
        if "t1" in st:
            assert self._t1 is not None
            assert self._sxy is not None
            assert self._syy is not None
            self._t1 = self._t1 + st["t1"]
            self._sxy = self._sxy + st["sxy"]
            self._syy = self._syy + st["syy"]
        if "s1k" in st:
            self._ensure_classes(other.classes)
            pos = np.searchsorted(self.classes, other.classes)
            assert self._s1k is not None
            assert self._s2k is not None
            self._nk[pos] += other._nk
            self._s1k[pos] += st["s1k"]
            self._s2k[pos] += st["s2k"]
        self.n += other.n
        # Move the shift to the merged mean so repeated merges never drift far from the data.
        self.rebase(self.mean, None if self._t1 is None else self.mean_y)
        return self

    def __add__(self, other: Moments) -> Moments:
        return self.copy().merge(other)

    def copy(self) -> Moments:
        """A deep copy."""
        out = Moments(class_cov=self.class_cov)
        out._copy_from(self)
        return out

    def _copy_from(self, other: Moments) -> None:
        for k, v in other.__dict__.items():
            self.__dict__[k] = v.copy() if isinstance(v, np.ndarray) else v

    def all_reduce(self, group: Any = None) -> Moments:
        """Sum this accumulator across the ranks of a ``torch.distributed`` process group.

        Ranks first agree on one shift (that of the lowest rank holding data) and on the
        union of class labels, rebase their sums onto it, then do a plain SUM all-reduce in
        float64. Works with the gloo (CPU) and NCCL backends; afterwards every rank holds the
        global state. Returns ``self``.
        """
        import torch
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RepscopeValueError(
                "all_reduce needs an initialised torch.distributed process group; call "
                "torch.distributed.init_process_group first (e.g. under torchrun)."
            )
        world = dist.get_world_size(group)
        info = {
            "n": self.n,
            "d": self.n_features,
            "dy": self.n_targets,
            "labelled": self._labelled,
            "class_cov": self.class_cov,
            "shift": None if self.shift is None else self.shift.tolist(),
            "shift_y": None if self.shift_y is None else self.shift_y.tolist(),
            "classes": self.classes.tolist(),
        }
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, info, group=group)
        holders = [g for g in gathered if g["n"] > 0]
        if not holders:
            return self
        ref = holders[0]
        for g in holders:
            if (g["d"], g["dy"], g["labelled"], g["class_cov"]) != (
                ref["d"], ref["dy"], ref["labelled"], ref["class_cov"]
            ):
                raise RepscopeValueError(
                    "ranks disagree on the Moments layout (features, targets, labels, "
                    f"class_cov): {[(h['d'], h['dy'], h['labelled'], h['class_cov']) for h in holders]}."
                )
        d, dy = int(ref["d"]), ref["dy"]
        shift = np.asarray(ref["shift"], dtype=np.float64)
        shift_y = None if ref["shift_y"] is None else np.asarray(ref["shift_y"], dtype=np.float64)
        if self.n == 0:
            _check_room(d, dy)
            self.n_features, self.n_targets = d, dy
            self._s1, self._s2 = np.zeros(d), np.zeros((d, d))
            if dy is not None:
                self._t1, self._sxy, self._syy = np.zeros(dy), np.zeros((d, dy)), np.zeros((dy, dy))
            self.shift, self.shift_y = shift.copy(), None if shift_y is None else shift_y.copy()
            self._labelled = ref["labelled"]
        else:
            self.rebase(shift, shift_y)
        if ref["labelled"]:
            all_classes = np.unique(np.concatenate([np.asarray(h["classes"]) for h in holders]))
            self._ensure_classes(all_classes)
        tensors = [np.array([float(self.n)]), self._s1, self._s2]
        if dy is not None:
            tensors += [self._t1, self._sxy, self._syy]
        if ref["labelled"]:
            tensors += [self._nk, self._s1k, self._s2k]
        backend = dist.get_backend(group)
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None
        flat = torch.from_numpy(np.concatenate([np.asarray(t).ravel() for t in tensors]))
        if device is not None:
            flat = flat.to(device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        out = flat.cpu().numpy()
        pos = 0
        pieces = []
        for t in tensors:
            size = np.asarray(t).size
            pieces.append(out[pos : pos + size].reshape(np.asarray(t).shape).copy())
            pos += size
        self.n = round(pieces[0][0])
        self._s1, self._s2 = pieces[1], pieces[2]
        i = 3
        if dy is not None:
            self._t1, self._sxy, self._syy = pieces[3], pieces[4], pieces[5]
            i = 6
        if ref["labelled"]:
            self._nk, self._s1k, self._s2k = pieces[i], pieces[i + 1], pieces[i + 2]
        return self

    # ------------------------------------------------------------------ derived quantities
    def _need(self, what: str = "samples") -> None:
        if self.n == 0:
            raise RepscopeValueError(
                f"Moments has seen no samples; call update(X) before asking for {what}."
            )

    def _need_y(self) -> None:
        self._need("cross moments")
        if self._t1 is None:
            raise RepscopeValueError(
                "this Moments has no paired Y; pass Y to update(X, Y) to get cross moments."
            )

    def _need_labels(self) -> None:
        self._need("class statistics")
        if not self._labelled:
            raise RepscopeValueError(
                "this Moments has no labels; pass labels to update(X, labels=y) to get class "
                "statistics."
            )

    @property
    def mean(self) -> np.ndarray:
        """Mean of X, shape (n_features,)."""
        self._need("the mean")
        assert self._s1 is not None
        assert self.shift is not None
        return self.shift + self._s1 / self.n

    @property
    def mean_y(self) -> np.ndarray:
        """Mean of Y, shape (n_targets,)."""
        self._need_y()
        assert self._t1 is not None
        assert self.shift_y is not None
        return self.shift_y + self._t1 / self.n

    def scatter(self) -> np.ndarray:
        """Centred scatter matrix ``sum (x - m)(x - m)^T``, shape (d, d)."""
        self._need("the scatter")
        assert self._s1 is not None
        assert self._s2 is not None
        s = self._s2 - np.outer(self._s1, self._s1) / self.n
        return (s + s.T) / 2

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """Covariance of X, ``scatter / (n - ddof)``, shape (d, d)."""
        return self.scatter() / self._denom(ddof)

    def _denom(self, ddof: int) -> float:
        check_scalar(ddof, "ddof", caller="Moments", kind=int, min_value=0)
        if self.n - ddof <= 0:
            raise RepscopeValueError(
                f"need more than ddof={ddof} samples for a covariance; have n={self.n}."
            )
        return float(self.n - ddof)

    def correlation(self) -> np.ndarray:
        """Pearson correlation matrix of X; a zero-variance feature gets correlation 0 with
        the others and 1 with itself (not NaN)."""
        c = self.scatter()
        sd = np.sqrt(np.clip(np.diag(c), 0.0, None))
        ok = sd > 0
        inv = np.where(ok, 1.0 / np.where(ok, sd, 1.0), 0.0)
        r = c * np.outer(inv, inv)
        np.fill_diagonal(r, 1.0)
        return np.clip(r, -1.0, 1.0)

    def scatter_y(self) -> np.ndarray:
        """Centred scatter of Y, shape (n_targets, n_targets)."""
        self._need_y()
        assert self._t1 is not None
        assert self._syy is not None
        s = self._syy - np.outer(self._t1, self._t1) / self.n
        return (s + s.T) / 2

    def covariance_y(self, ddof: int = 1) -> np.ndarray:
        """Covariance of Y."""
        return self.scatter_y() / self._denom(ddof)

    def cross_scatter(self) -> np.ndarray:
        """Centred cross scatter ``sum (x - m_x)(y - m_y)^T``, shape (d, n_targets)."""
        self._need_y()
        assert self._s1 is not None
        assert self._t1 is not None
        assert self._sxy is not None
        return self._sxy - np.outer(self._s1, self._t1) / self.n

    def cross_covariance(self, ddof: int = 1) -> np.ndarray:
        """Cross-covariance of X and Y, shape (d, n_targets)."""
        return self.cross_scatter() / self._denom(ddof)

    @property
    def class_counts(self) -> np.ndarray:
        """Samples per class, aligned with :attr:`classes`."""
        self._need_labels()
        return self._nk.astype(np.int64)

    @property
    def class_means(self) -> np.ndarray:
        """Per-class means, shape (n_classes, d)."""
        self._need_labels()
        assert self._s1k is not None
        assert self.shift is not None
        return self.shift + self._s1k / self._nk[:, None]

    def class_variances(self, ddof: int = 1) -> np.ndarray:
        """Per-class feature variances (diagonal), shape (n_classes, d); classes with at most
        ``ddof`` samples get 0."""
        self._need_labels()
        if self.class_cov == "none":
            raise RepscopeValueError(
                "per-class variances need Moments(class_cov='diag') or 'full'; this one was "
                "made with class_cov='none' (class counts and sums only)."
            )
        assert self._s1k is not None
        assert self._s2k is not None
        nk = self._nk[:, None]
        diag = self._s2k if self.class_cov == "diag" else np.einsum("kii->ki", self._s2k)
        ss = np.clip(diag - self._s1k**2 / nk, 0.0, None)
        den = nk - ddof
        return np.where(den > 0, ss / np.where(den > 0, den, 1.0), 0.0)

    def class_covariances(self, ddof: int = 1) -> np.ndarray:
        """Full per-class covariances, shape (n_classes, d, d); needs ``class_cov="full"``."""
        self._need_labels()
        if self.class_cov != "full":
            raise RepscopeValueError(
                "full per-class covariances need Moments(class_cov='full'); this one keeps only "
                "the diagonals (class_variances)."
            )
        assert self._s1k is not None
        assert self._s2k is not None
        s = self._s2k - np.einsum("ki,kj->kij", self._s1k, self._s1k) / self._nk[:, None, None]
        s = (s + s.transpose(0, 2, 1)) / 2
        den = (self._nk - ddof)[:, None, None]
        return np.where(den > 0, s / np.where(den > 0, den, 1.0), 0.0)

    def within_class_scatter(self) -> np.ndarray:
        """Pooled within-class scatter ``S_w = sum_k sum_{i in k} (x_i - m_k)(x_i - m_k)^T``."""
        self._need_labels()
        assert self._s2 is not None
        assert self._s1k is not None
        s = self._s2 - (self._s1k.T / self._nk) @ self._s1k
        return (s + s.T) / 2

    def within_class_covariance(self) -> np.ndarray:
        """Pooled within-class covariance ``S_w / (n - n_classes)`` (the LDA covariance)."""
        k = self.classes.size
        if self.n - k <= 0:
            raise RepscopeValueError(
                f"the pooled within-class covariance needs more samples than classes; have "
                f"n={self.n} and {k} classes."
            )
        return self.within_class_scatter() / (self.n - k)

    def between_class_scatter(self) -> np.ndarray:
        """Between-class scatter ``S_b = sum_k n_k (m_k - m)(m_k - m)^T``; ``S_w + S_b`` is the
        total scatter."""
        self._need_labels()
        diff = self.class_means - self.mean
        return (diff.T * self._nk) @ diff

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON-able metadata describing the full state."""
        arrays: dict[str, np.ndarray] = {}
        for key in ("shift", "shift_y", "_s1", "_s2", "_t1", "_sxy", "_syy", "_s1k", "_s2k"):
            v = getattr(self, key)
            if v is not None:
                arrays[key.lstrip("_")] = np.ascontiguousarray(v, dtype=np.float64)
        if self._labelled:
            arrays["nk"] = np.ascontiguousarray(self._nk, dtype=np.float64)
        classes = self.classes.tolist()
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "n": self.n,
            "n_features": self.n_features,
            "n_targets": self.n_targets,
            "class_cov": self.class_cov,
            "labelled": self._labelled,
            "classes": classes,
            "classes_kind": "str" if self.classes.dtype.kind in "US" else "int",
        }
        return arrays, meta

    def save(self, path: str | Path) -> Path:
        """Save as one safetensors file (arrays) with the JSON metadata in its header.

        Nothing is pickled; :meth:`load` reads it back exactly.
        """
        from repscope._io import write_tagged_safetensors

        arrays, meta = self.state_dict()
        return write_tagged_safetensors(path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> Moments:
        """Load a file written by :meth:`save`."""
        from repscope._io import read_tagged_safetensors

        meta, arrays = read_tagged_safetensors(path, kind="Moments", fmt=_FORMAT,
                                               version=_FORMAT_VERSION,
                                               missing=f"no Moments file at {path}.")
        m = cls(class_cov=meta["class_cov"])
        m.n = int(meta["n"])
        m.n_features, m.n_targets = meta["n_features"], meta["n_targets"]
        m._labelled = meta["labelled"]
        for key in ("shift", "shift_y"):
            setattr(m, key, arrays.get(key))
        for key in ("s1", "s2", "t1", "sxy", "syy", "s1k", "s2k"):
            setattr(m, "_" + key, arrays.get(key))
        if m._labelled:
            m._nk = arrays["nk"]
            kind = str if meta["classes_kind"] == "str" else np.int64
            m.classes = np.asarray(meta["classes"], dtype=kind)
        return m

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        X: Any,
        Y: Any = None,
        labels: Any = None,
        *,
        batch_size: int | None = None,
        class_cov: ClassCov = "diag",
    ) -> Moments:
        """Moments of in-memory arrays (optionally in batches of ``batch_size`` rows)."""
        m = cls(class_cov=class_cov)
        n = int(check_features(X, name="X").shape[0])
        step = n if batch_size is None else int(batch_size)
        for s in range(0, n, max(step, 1)):
            m.update(
                X[s : s + step],
                None if Y is None else Y[s : s + step],
                None if labels is None else labels[s : s + step],
            )
        return m

    @classmethod
    def from_batches(
        cls, batches: Iterable[Any], *, class_cov: ClassCov = "diag"
    ) -> Moments:
        """Moments of an iterable of ``X`` or ``(X, Y)`` or ``(X, Y, labels)`` batches."""
        m = cls(class_cov=class_cov)
        for b in batches:
            if isinstance(b, (tuple, list)):
                m.update(*b)
            else:
                m.update(b)
        return m

    @classmethod
    def from_store(
        cls,
        store: Any,
        layer: str,
        *,
        labels: str | Sequence[Any] | None = None,
        batch_size: int = 4096,
        class_cov: ClassCov = "diag",
        rows: tuple[int, int] | None = None,
        prefetch: int = 2,
    ) -> Moments:
        """Stream the Moments of one layer of a :class:`~repscope.store.FeatureStore`.

        ``labels`` is a metadata column name or an array with one label per sample (of the
        whole store). Token (ragged) layers contribute every token as a sample; labels are
        then repeated per token. ``rows=(start, stop)`` reads only samples ``start:stop``:
        under ``torch.distributed`` each rank passes its share
        (:meth:`repscope.distributed.DistContext.share`) and then calls
        :meth:`all_reduce`, which gives every rank the Moments of the whole store.

        A FeatureStore is read ``prefetch`` batches ahead in a background thread
        (:meth:`~repscope.store.FeatureStore.iter_batches`), which also casts dense batches to
        float64 there, so reading and the cast overlap the accumulation; memory stays
        O(batch_size) whatever the store's size. 0 reads in this thread.

        Raises
        ------
        RepscopeValueError
            ``labels`` is an array whose length is not the store's ``n_samples``.
        """
        if isinstance(labels, str):
            labels = store.metadata([labels])[labels]
        lab = None if labels is None else np.asarray(labels)
        if lab is not None and (lab.ndim != 1 or len(lab) != store.n_samples):
            got = len(lab) if lab.ndim == 1 else f"shape {lab.shape}"
            raise RepscopeValueError(
                f"The 'labels' parameter of Moments.from_store must have one entry per sample "
                f"of the store ({store.n_samples}); got {got}. Pass one label per stored sample."
            )
        m = cls(class_cov=class_cov)
        start, stop = (0, store.n_samples) if rows is None else (int(rows[0]), int(rows[1]))
        from repscope.store import FeatureStore

        if isinstance(store, FeatureStore):
            # The reading thread casts dense batches to float64; token batches keep their dtype
            # (their size grows with the tokens; update() casts them block by block).
            dense = not store.layer_info(layer).ragged
            batches = store.iter_batches(layer, batch_size, start=start, stop=stop,
                                         prefetch=prefetch, dtype=np.float64 if dense else None)
        else:
            batches = store.iter_batches(layer, batch_size, start=start, stop=stop)
        for batch in batches:
            if hasattr(batch, "offsets"):
                values, offsets = batch.values, np.asarray(batch.offsets)
                k = len(offsets) - 1
                y = None if lab is None else np.repeat(lab[start : start + k], np.diff(offsets))
                m.update(values, labels=y)
            else:
                k = len(batch)
                # a FeatureStore's dense batches are new arrays: centred in place
                m._update(batch, None, None if lab is None else lab[start : start + k],
                          owned=isinstance(store, FeatureStore))
            start += k
        return m

    def __repr__(self) -> str:
        parts = [f"n={self.n}", f"n_features={self.n_features}"]
        if self.n_targets is not None:
            parts.append(f"n_targets={self.n_targets}")
        if self._labelled:
            parts.append(f"n_classes={self.classes.size}")
        return f"Moments({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:  # exact state equality (tests, round trips)
        if not isinstance(other, Moments):
            return NotImplemented
        a, ma = self.state_dict()
        b, mb = other.state_dict()
        return ma == mb and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    __hash__ = None  # type: ignore[assignment]


def _rows(mask: np.ndarray, like: Any) -> Any:
    if is_torch(like):
        import torch

        return torch.as_tensor(mask, device=like.device)
    return mask
