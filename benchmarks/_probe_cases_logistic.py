"""Logistic-probe cases for ``benchmarks/probe_path.py``: ``LinearProbe`` paths vs scikit-learn.

(c) an 8-value L2 path, strong to weak, with the same protocol on both sides: fit the path on
80% of the training split (warm-started), pick the value with the best accuracy on the other
20%, refit on the whole training split at that value (warm-started from the path's solution),
report test accuracy. scikit-learn gets ``LogisticRegression(solver="lbfgs", warm_start=True)``
over the same grid mapped to ``C = 1 / (lambda n_fit)`` (repscope's convention, see
:func:`repscope.probe._logistic.C_from_lambda`), same ``tol`` and ``max_iter``.

(e) digits (1,797 x 64): one fit at ``C = 1``, 20 fits per timed run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from probe_path import load_array

TOL = 1e-4
MAX_ITER = 500
SMALL_REPEATS = 20


def _split(data: dict[str, Any], name: str) -> tuple[np.ndarray, ...]:
    p = data[name]
    return (np.asarray(load_array(p["X_train"])), np.asarray(load_array(p["y_train"])),
            np.asarray(load_array(p["X_test"])), np.asarray(load_array(p["y_test"])))


def _grid(X: np.ndarray) -> np.ndarray:
    """8 values ``mean feature variance x logspace(-1, -6, 8)`` (LinearProbe's default)."""
    var = float(np.asarray(X[:20000], dtype=np.float64).var(axis=0).mean())
    return var * np.logspace(-1, -6, 8)


def _holdout(y: np.ndarray, frac: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split, identical to LinearProbe's ``selection="holdout"``."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        m = rng.permutation(np.flatnonzero(y == c))
        val[m[: min(round(frac * m.size), m.size - 1)]] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


def _repscope_path(name: str) -> Any:
    def run(data: dict[str, Any]) -> dict[str, Any]:
        from repscope.probe._logistic import LinearProbe

        Xtr, ytr, Xte, yte = _split(data, name)
        X: Any = Xtr
        if data.get("device") == "cuda":
            import torch

            X = torch.as_tensor(Xtr).cuda()
        m = LinearProbe(lambdas=_grid(Xtr), selection="holdout", tol=TOL,
                        max_iter=MAX_ITER).fit(X, ytr)
        Xe: Any = Xte if data.get("device") != "cuda" else torch.as_tensor(Xte).cuda()
        pred = m.predict(Xe)
        pred = pred.cpu().numpy() if hasattr(pred, "cpu") else np.asarray(pred)
        iters = [p.n_iter for p in m.path_]
        flagged = sum(p.warm_start_met_tol for p in m.path_)
        return {"accuracy": float(np.mean(pred == yte)),
                "extra": f"lam={m.lambda_:.3g} iters={iters} warm-start-met-tol={flagged}"}
    return run


def _sklearn_path(name: str) -> Any:
    def run(data: dict[str, Any]) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression

        Xtr, ytr, Xte, yte = _split(data, name)
        grid = _grid(Xtr)
        tr, va = _holdout(ytr)
        m = LogisticRegression(solver="lbfgs", warm_start=True, tol=TOL, max_iter=MAX_ITER)
        scores, sols, iters = [], [], []
        for lam in grid:
            m.set_params(C=1.0 / (lam * tr.size))
            m.fit(Xtr[tr], ytr[tr])
            iters.append(int(m.n_iter_[0]))
            scores.append(float(m.score(Xtr[va], ytr[va])))
            sols.append((m.coef_.copy(), m.intercept_.copy()))
        best = int(np.argmax(scores))
        m.coef_, m.intercept_ = sols[best]
        m.set_params(C=1.0 / (grid[best] * len(ytr)))
        m.fit(Xtr, ytr)
        iters.append(int(m.n_iter_[0]))
        return {"accuracy": float(m.score(Xte, yte)),
                "extra": f"lam={grid[best]:.3g} iters={iters}"}
    return run


def _small(make: Any) -> Any:
    def run(data: dict[str, Any]) -> dict[str, Any]:
        Xtr, ytr, Xte, yte = _split(data, "digits")
        m = None
        for _ in range(SMALL_REPEATS):
            m = make().fit(Xtr, ytr)
        assert m is not None
        return {"accuracy": float(np.mean(np.asarray(m.predict(Xte)) == yte)),
                "extra": f"{SMALL_REPEATS} fits, n_iter={int(np.max(m.n_iter_))}"}
    return run


def _mk_probe() -> Any:
    from repscope.probe._logistic import LinearProbe

    return LinearProbe(C=1.0, tol=TOL, max_iter=MAX_ITER)


def _mk_sklearn() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, tol=TOL, max_iter=MAX_ITER)


CASES = {
    "linear_probe_path_synthetic": _repscope_path("synthetic"),
    "sklearn_logreg_path_synthetic": _sklearn_path("synthetic"),
    "linear_probe_path_lite0": _repscope_path("lite0"),
    "sklearn_logreg_path_lite0": _sklearn_path("lite0"),
    "linear_probe_digits": _small(_mk_probe),
    "sklearn_logreg_digits": _small(_mk_sklearn),
}

PRELOAD = {
    **{c: ["torch", "repscope.probe._logistic", "sklearn.linear_model"] for c in CASES
       if c.startswith("linear_probe")},
    **{c: ["sklearn.linear_model"] for c in CASES if c.startswith("sklearn")},
}

RUNS = {"sklearn_logreg_path_synthetic": 1}

COMPARISONS = [
    ("(c) LinearProbe 8-value path, holdout (synthetic 50k x 768, 100 cl.)",
     "linear_probe_path_synthetic", "sklearn_logreg_path_synthetic", 2.0),
    ("(c) LinearProbe path, holdout (lite0 _bn1, 800 x 1280)", "linear_probe_path_lite0",
     "sklearn_logreg_path_lite0", 2.0),
    ("(e) LinearProbe vs LogisticRegression, C=1 (digits)", "linear_probe_digits",
     "sklearn_logreg_digits", 1 / 1.5),
]
