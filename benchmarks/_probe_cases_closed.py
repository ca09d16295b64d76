"""Closed-form probe cases for ``benchmarks/probe_path.py``: ridge and LDA paths and the small
(digits) fast path, each against its scikit-learn (or himalaya) counterpart; (f) the ridge
path when n < d (the dual form ``solver="auto"`` picks), with the primal forced beside it.

Every case fits on the training split, selects on the training data only (LOO / GCV / a
holdout split of it), and reports test accuracy of the selected model. Imports are lazy so
that the himalaya case can run in its own venv.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from probe_path import load_array

ALPHAS = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6)
SHRINKAGES = (1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.2, 0.4, 0.8)
SMALL_REPEATS = 20  # digits fits are milliseconds: each small case times 20 fits


def _split(data: dict[str, Any], name: str) -> tuple[np.ndarray, ...]:
    p = data[name]
    return (load_array(p["X_train"]), load_array(p["y_train"]), load_array(p["X_test"]),
            load_array(p["y_test"]))


def _dev(X: np.ndarray, data: dict[str, Any]) -> Any:
    if data.get("device") == "cuda":
        import torch

        return torch.as_tensor(np.asarray(X)).cuda()
    return X


def _acc(model: Any, X: Any, y: np.ndarray, data: dict[str, Any]) -> float:
    pred = model.predict(_dev(X, data))
    pred = pred.cpu().numpy() if hasattr(pred, "cpu") else np.asarray(pred)
    return float(np.mean(pred == y))


# --------------------------------------------------------------------------- ridge
def _ridge_repscope(name: str, selection: str, solver: str = "auto",
                    dtype: Any = None) -> Any:
    """RidgeProbe's path; ``dtype`` converts the training rows inside the timed call."""
    def run(data: dict[str, Any]) -> dict[str, Any]:
        from repscope.probe._ridge import RidgeProbe

        Xtr, ytr, Xte, yte = _split(data, name)
        Xfit = np.asarray(Xtr, dtype=dtype) if dtype is not None else Xtr
        m = RidgeProbe(alphas=ALPHAS, selection=selection, solver=solver).fit(
            _dev(Xfit, data), ytr)
        return {"accuracy": _acc(m, Xte, yte, data),
                "extra": f"alpha={m.alpha_:g} {m.solver_}"}
    return run


def _ridge_sklearn(name: str) -> Any:
    def run(data: dict[str, Any]) -> dict[str, Any]:
        from sklearn.linear_model import RidgeClassifierCV

        Xtr, ytr, Xte, yte = _split(data, name)
        m = RidgeClassifierCV(alphas=ALPHAS).fit(np.asarray(Xtr), ytr)
        return {"accuracy": float(np.mean(m.predict(np.asarray(Xte)) == yte)),
                "extra": f"alpha={m.alpha_:g}"}
    return run


def _ridge_defaults(name: str, which: str) -> Any:
    """Each library at its defaults: ``RidgeProbe()`` (8 alphas from 0.01, GCV) or
    ``RidgeClassifierCV()`` (alphas 0.1, 1, 10, leave-one-out)."""
    def run(data: dict[str, Any]) -> dict[str, Any]:
        Xtr, ytr, Xte, yte = _split(data, name)
        if which == "repscope":
            from repscope.probe._ridge import RidgeProbe

            m = RidgeProbe().fit(Xtr, ytr)
            return {"accuracy": _acc(m, Xte, yte, data),
                    "extra": f"defaults alpha={m.alpha_:g} {m.solver_}"}
        from sklearn.linear_model import RidgeClassifierCV

        ref = RidgeClassifierCV().fit(np.asarray(Xtr), ytr)
        return {"accuracy": float(np.mean(ref.predict(np.asarray(Xte)) == yte)),
                "extra": f"defaults alpha={ref.alpha_:g}"}
    return run


def _dual_floor(name: str) -> Any:
    """The least any n x n path does: centre, one float32 ``syrk`` Gram, one ``eigh`` of the
    deflated ``(n-1) x (n-1)`` Gram (divide and conquer), nothing else."""
    def run(data: dict[str, Any]) -> dict[str, Any]:
        from scipy.linalg import eigh, get_blas_funcs

        Xtr = np.asarray(_split(data, name)[0])
        Xc = Xtr - Xtr.mean(0, dtype=np.float64).astype(Xtr.dtype)
        K = get_blas_funcs("syrk", (Xc,))(1.0, Xc.T, trans=1, lower=0)
        eigh(np.asfortranarray(K[1:, 1:]), lower=False, driver="evd", overwrite_a=True,
             check_finite=False)
        return {"accuracy": float("nan"), "extra": "Gram + eigh only"}
    return run


def _ridge_himalaya(data: dict[str, Any]) -> dict[str, Any]:
    from himalaya.ridge import RidgeCV

    Xtr, ytr, Xte, yte = _split(data, "synthetic")
    T = -np.ones((len(ytr), int(ytr.max()) + 1), dtype=np.float32)
    T[np.arange(len(ytr)), ytr] = 1.0
    m = RidgeCV(alphas=np.asarray(ALPHAS)).fit(np.asarray(Xtr), T)  # defaults otherwise
    pred = np.asarray(m.predict(np.asarray(Xte))).argmax(1)
    return {"accuracy": float(np.mean(pred == yte)), "extra": "himalaya defaults (cv=5)"}


# --------------------------------------------------------------------------- LDA
def _lda_repscope(name: str) -> Any:
    def run(data: dict[str, Any]) -> dict[str, Any]:
        from repscope.probe._generative import LDAProbe

        Xtr, ytr, Xte, yte = _split(data, name)
        m = LDAProbe(shrinkage="path", shrinkages=SHRINKAGES, selection="holdout").fit(
            _dev(Xtr, data), ytr)
        return {"accuracy": _acc(m, Xte, yte, data), "extra": f"shrinkage={m.shrinkage_:g}"}
    return run


def _lda_sklearn_loop(name: str) -> Any:
    """The same protocol as LDAProbe(selection="holdout"): fit each shrinkage on the training
    part, score on the held-out part (the same rows), refit the best on all rows."""
    def run(data: dict[str, Any]) -> dict[str, Any]:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis as LDA

        from repscope.probe._ridge import fold_ids

        Xtr, ytr, Xte, yte = _split(data, name)
        Xtr = np.asarray(Xtr)
        ids, _ = fold_ids(len(ytr), "holdout", 5, 0.2, 0)
        tr, va = ids != 0, ids == 0
        scores = [LDA(solver="lsqr", shrinkage=s).fit(Xtr[tr], ytr[tr]).score(Xtr[va], ytr[va])
                  for s in SHRINKAGES]
        best = SHRINKAGES[int(np.argmax(scores))]
        m = LDA(solver="lsqr", shrinkage=best).fit(Xtr, ytr)
        return {"accuracy": float(m.score(np.asarray(Xte), yte)), "extra": f"shrinkage={best:g}"}
    return run


# --------------------------------------------------------------------------- small (digits)
def _small(make: Any) -> Any:
    def run(data: dict[str, Any]) -> dict[str, Any]:
        Xtr, ytr, Xte, yte = _split(data, "digits")
        Xtr, Xte = np.asarray(Xtr), np.asarray(Xte)
        m = None
        for _ in range(SMALL_REPEATS):
            m = make().fit(Xtr, ytr)
        return {"accuracy": float(np.mean(np.asarray(m.predict(Xte)) == yte)),
                "extra": f"{SMALL_REPEATS} fits"}
    return run


def _mk_ridge_probe() -> Any:
    from repscope.probe._ridge import RidgeProbe

    return RidgeProbe(alphas=ALPHAS, selection="loo")


def _mk_ridge_cv() -> Any:
    from sklearn.linear_model import RidgeClassifierCV

    return RidgeClassifierCV(alphas=ALPHAS)


def _mk_lda_probe() -> Any:
    from repscope.probe._generative import LDAProbe

    return LDAProbe(shrinkage=0.1)


def _mk_lda() -> Any:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1)


def _mk_nb_probe() -> Any:
    from repscope.probe._generative import GaussianNBProbe

    return GaussianNBProbe()


def _mk_nb() -> Any:
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB()


CASES = {
    "ridge_path_loo_synthetic": _ridge_repscope("synthetic", "loo"),
    "ridge_path_gcv_synthetic": _ridge_repscope("synthetic", "gcv"),
    "sklearn_ridgecv_synthetic": _ridge_sklearn("synthetic"),
    "himalaya_ridgecv_synthetic": _ridge_himalaya,
    "lda_path_synthetic": _lda_repscope("synthetic"),
    "sklearn_lda_loop_synthetic": _lda_sklearn_loop("synthetic"),
    "ridge_path_loo_lite0": _ridge_repscope("lite0", "loo"),
    "sklearn_ridgecv_lite0": _ridge_sklearn("lite0"),
    "lda_path_lite0": _lda_repscope("lite0"),
    "sklearn_lda_loop_lite0": _lda_sklearn_loop("lite0"),
    "ridge_path_loo_primal_lite0": _ridge_repscope("lite0", "loo", solver="primal"),
    "ridge_path_loo_wide1000": _ridge_repscope("wide1000", "loo"),
    "ridge_path_loo_wide1000_float64": _ridge_repscope("wide1000", "loo", dtype=np.float64),
    "sklearn_ridgecv_wide1000": _ridge_sklearn("wide1000"),
    "ridge_defaults_wide1000": _ridge_defaults("wide1000", "repscope"),
    "sklearn_defaults_wide1000": _ridge_defaults("wide1000", "sklearn"),
    "dual_floor_wide1000": _dual_floor("wide1000"),
    "ridge_path_loo_wide600": _ridge_repscope("wide600", "loo"),
    "ridge_path_loo_primal_wide600": _ridge_repscope("wide600", "loo", solver="primal"),
    "sklearn_ridgecv_wide600": _ridge_sklearn("wide600"),
    "ridge_probe_digits": _small(_mk_ridge_probe),
    "sklearn_ridgecv_digits": _small(_mk_ridge_cv),
    "lda_probe_digits": _small(_mk_lda_probe),
    "sklearn_lda_digits": _small(_mk_lda),
    "gaussian_nb_probe_digits": _small(_mk_nb_probe),
    "sklearn_gaussian_nb_digits": _small(_mk_nb),
}

PRELOAD = {
    **{c: ["repscope.probe._ridge", "repscope.probe._generative"] for c in CASES
       if not c.startswith(("sklearn", "himalaya"))},
    "dual_floor_wide1000": ["scipy.linalg"],
    **{c: ["sklearn.linear_model", "sklearn.discriminant_analysis", "sklearn.naive_bayes",
           "repscope.probe._ridge"] for c in CASES if c.startswith("sklearn")},
    "himalaya_ridgecv_synthetic": ["himalaya.ridge"],
}

PYTHON = {"himalaya_ridgecv_synthetic": "/tmp/venv-himalaya/bin/python"}

RUNS = {"sklearn_lda_loop_synthetic": 1, "himalaya_ridgecv_synthetic": 1,
        "sklearn_ridgecv_synthetic": 1, "sklearn_lda_loop_lite0": 1,
        "ridge_path_loo_primal_wide600": 1}

COMPARISONS = [
    ("(a) ridge 8-alpha path, LOO (synthetic 50k x 768, 100 cl.)", "ridge_path_loo_synthetic",
     "sklearn_ridgecv_synthetic", 5.0),
    ("(a') ridge 8-alpha path, GCV from moments only", "ridge_path_gcv_synthetic",
     "sklearn_ridgecv_synthetic", 5.0),
    ("(b) LDA 8-shrinkage path, holdout (synthetic)", "lda_path_synthetic",
     "sklearn_lda_loop_synthetic", 10.0),
    ("(d) ridge path vs himalaya RidgeCV (synthetic)", "ridge_path_loo_synthetic",
     "himalaya_ridgecv_synthetic", 1.0),
    ("(a) ridge path, LOO (lite0 _bn1, 800 x 1280)", "ridge_path_loo_lite0",
     "sklearn_ridgecv_lite0", 5.0),
    ("(b) LDA path, holdout (lite0 _bn1)", "lda_path_lite0", "sklearn_lda_loop_lite0", 10.0),
    ("(f) ridge LOO path, n < d: dual (auto) (synthetic 1,000 x 4,096 float32, 10 cl.)",
     "ridge_path_loo_wide1000", "sklearn_ridgecv_wide1000", 3.0),
    ("(f) the same, each at its defaults (RidgeProbe(): 8 alphas from 0.01, GCV; "
     "RidgeClassifierCV(): 3 alphas, LOO)", "ridge_defaults_wide1000",
     "sklearn_defaults_wide1000", 3.0),
    ("(f) floor (Gram + eigh alone) vs scikit-learn, same alphas (the best ratio possible)",
     "dual_floor_wide1000", "sklearn_ridgecv_wide1000", 3.0),
    ("(f) the same, float64 input (dual in float64)", "ridge_path_loo_wide1000_float64",
     "sklearn_ridgecv_wide1000", 1.0),
    ("(f) ridge LOO path, n < d: dual (auto) (synthetic 600 x 3,000 float32)",
     "ridge_path_loo_wide600", "sklearn_ridgecv_wide600", 3.0),
    ("(f) ridge LOO path, primal forced (synthetic 600 x 3,000)",
     "ridge_path_loo_primal_wide600", "sklearn_ridgecv_wide600", 1.0),
    ("(f) ridge LOO path, primal forced (lite0 _bn1, 800 x 1280)",
     "ridge_path_loo_primal_lite0", "sklearn_ridgecv_lite0", 1.0),
    ("(e) RidgeProbe LOO path vs RidgeClassifierCV (digits)", "ridge_probe_digits",
     "sklearn_ridgecv_digits", 1 / 1.5),
    ("(e) LDAProbe vs LDA lsqr (digits)", "lda_probe_digits", "sklearn_lda_digits", 1 / 1.5),
    ("(e) GaussianNBProbe vs GaussianNB (digits)", "gaussian_nb_probe_digits",
     "sklearn_gaussian_nb_digits", 1 / 1.5),
]
