"""Benchmark cases: linear CKA (biased, debiased), Procrustes and RSA against the anchors.

Contract shared with ``benchmarks/similarity.py``:

* ``CASES: dict[str, callable(data: dict) -> dict(value=..., extra=...)]``
* ``PREPARE: dict[str, callable(data: dict) -> None]`` loads the case's inputs into ``data``
  (``data["X"], data["Y"]``, float32 arrays read from seeded ``.npy`` files), untimed.
* ``PYTHON: dict[str, str]`` -- the interpreter a case must run under. Anchors live in their
  own virtual environment (``REPSCOPE_SIM_ANCHOR_PYTHON``, default
  ``/tmp/venv-sim-anchor/bin/python``, with torch-cka, ckatorch, pytorch-cka, cka-pytorch,
  rsatoolbox, repsim installed from PyPI; nothing vendored); other cases use ``sys.executable``.
* ``COMPARISONS: list[(label, repscope_case, anchor_case, target)]`` -- ``target`` holds the
  minimum ratio anchor / repscope of CPU-seconds (``cpu``) or a maximum (``cpu_max``), or
  an absolute bound in seconds (``seconds``).

Shapes (the issue's): ``10k`` n=10,000 x (768, 1024); ``50k`` n=50,000 x (384, 384);
``wide`` n=1,000 x (16,384, 16,384).

Run standalone (every case in its own process through ``benchmarks/_harness.py``, one thread,
CPU-seconds of the computation and peak RSS of the child, under ``prlimit --as``)::

    python benchmarks/_sim_cases_measures.py [--runs 3] [--only SUBSTR] [--mem-gb 12]
    python benchmarks/_sim_cases_measures.py --conventions   # anchor values on real embeddings
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness
import numpy as np

HERE = Path(__file__).resolve().parent
ANCHOR_PY = os.environ.get("REPSCOPE_SIM_ANCHOR_PYTHON", "/tmp/venv-sim-anchor/bin/python")
CACHE = Path(os.environ.get("REPSCOPE_SIM_BENCH_DIR", "/tmp/repscope-sim-bench"))
SHAPES = {"10k": (10_000, 768, 1024), "50k": (50_000, 384, 384), "wide": (1_000, 16_384, 16_384)}


# --------------------------------------------------------------------------- inputs
def input_paths(shape: str) -> tuple[Path, Path]:
    """Seeded float32 ``.npy`` inputs for ``shape``: the harness's own builder (written once)."""
    sys.path.insert(0, str(HERE))
    from similarity import build_inputs

    return build_inputs([shape])[shape]


def _prep(shape: str, warm: tuple[str, ...] = ()) -> Callable[[dict[str, Any]], None]:
    """Load the inputs and import the case's modules (imports are not timed, for anyone)."""

    def prep(data: dict[str, Any]) -> None:
        import importlib

        px, py = input_paths(shape)
        data["X"], data["Y"] = np.load(px), np.load(py)
        for mod in warm:
            importlib.import_module(mod)

    return prep


# --------------------------------------------------------------------------- repscope cases
def _rs(measure: str, **opts: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def case(data: dict[str, Any]) -> dict[str, Any]:
        from repscope.similarity import get_measure

        return {"value": float(get_measure(measure)(data["X"], data["Y"], **opts)), "extra": {}}

    return case


# --------------------------------------------------------------------------- references
def _feature_space_cka(data: dict[str, Any]) -> dict[str, Any]:
    """Kornblith et al.'s ``feature_space_linear_cka`` re-implemented in numpy float64."""
    X = data["X"].astype(np.float64)
    Y = data["Y"].astype(np.float64)
    X -= X.mean(0)
    Y -= Y.mean(0)
    num = np.linalg.norm(X.T @ Y) ** 2
    return {"value": float(num / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))), "extra": {}}


def _naive_nxn_cka(data: dict[str, Any]) -> dict[str, Any]:
    """The ``n x n`` kernel form in float64 (Kornblith's ``cka(gram_linear(X), gram_linear(Y))``)."""
    X = data["X"].astype(np.float64)
    Y = data["Y"].astype(np.float64)

    def centred_gram(A: np.ndarray) -> np.ndarray:
        K = A @ A.T
        m = K.mean(0)
        K -= m[None, :]
        K -= m[:, None]
        K += m.mean()
        return K

    K = centred_gram(X)
    L = centred_gram(Y)
    v = np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L))
    return {"value": float(v), "extra": {}}


def _scipy_procrustes(data: dict[str, Any]) -> dict[str, Any]:
    """scipy.linalg.orthogonal_procrustes on centred, unit-norm inputs (zero-padded widths)."""
    from scipy.linalg import orthogonal_procrustes

    X = data["X"].astype(np.float64)
    Y = data["Y"].astype(np.float64)
    d = max(X.shape[1], Y.shape[1])
    X = np.pad(X - X.mean(0), ((0, 0), (0, d - X.shape[1])))
    Y = np.pad(Y - Y.mean(0), ((0, 0), (0, d - Y.shape[1])))
    X /= np.linalg.norm(X)
    Y /= np.linalg.norm(Y)
    R, _ = orthogonal_procrustes(X, Y)
    return {"value": float(np.linalg.norm(X @ R - Y)), "extra": {}}


# --------------------------------------------------------------------------- anchors (own venv)
def _torch(data: dict[str, Any]) -> tuple[Any, Any]:
    import torch

    torch.set_num_threads(1)
    return torch.from_numpy(data["X"]), torch.from_numpy(data["Y"])


def _ckatorch(unbiased: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def case(data: dict[str, Any]) -> dict[str, Any]:
        from ckatorch.core import cka_base

        x, y = _torch(data)
        return {"value": float(cka_base(x, y, kernel="linear", unbiased=unbiased)), "extra": {}}

    return case


def _torch_cka(data: dict[str, Any]) -> dict[str, Any]:
    """torch-cka's computation (its ``CKA._HSIC`` on diagonal-zeroed float32 Grams, one batch)."""
    from types import SimpleNamespace

    from torch_cka import CKA

    x, y = _torch(data)
    K, L = x @ x.T, y @ y.T
    K.fill_diagonal_(0.0)
    L.fill_diagonal_(0.0)
    stub = SimpleNamespace(device="cpu")
    hxy, hxx, hyy = CKA._HSIC(stub, K, L), CKA._HSIC(stub, K, K), CKA._HSIC(stub, L, L)
    return {"value": float(hxy / (hxx * hyy) ** 0.5), "extra": {"dtype": "float32"}}


def _cka_pytorch(data: dict[str, Any]) -> dict[str, Any]:
    """cka-pytorch's batched unbiased ``hsic1`` on one batch holding every row (float64)."""
    from cka_pytorch.hsic import hsic1

    x, y = _torch(data)
    x, y = x.double(), y.double()
    K, L = (x @ x.T)[None], (y @ y.T)[None]
    hxy, hxx, hyy = hsic1(K, L), hsic1(K, K), hsic1(L, L)
    return {"value": float(hxy / (hxx * hyy).sqrt()), "extra": {}}


def _pytorch_cka(data: dict[str, Any]) -> dict[str, Any]:
    """pytorch-cka (module ``cka``): its fused ``hsic`` on one batch holding every row."""
    from cka.hsic import hsic

    x, y = _torch(data)
    x, y = x.double(), y.double()
    hxy, hxx, hyy = hsic((x @ x.T)[None], (y @ y.T)[None])
    return {"value": float((hxy / (hxx * hyy).sqrt()).reshape(-1)[0]), "extra": {}}


def _repsim_cka(estimator: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def case(data: dict[str, Any]) -> dict[str, Any]:
        import repsim

        M = repsim.cka([data["X"].astype(np.float64), data["Y"].astype(np.float64)],
                       kernel_type="linear", estimator=estimator)
        return {"value": float(np.asarray(M)[0, 1]), "extra": {}}

    return case


def _rsatoolbox_rsa(data: dict[str, Any]) -> dict[str, Any]:
    """rsatoolbox: correlation-distance RDMs, Spearman comparison."""
    import rsatoolbox

    rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(A), method="correlation")
            for A in (data["X"], data["Y"])]
    v = rsatoolbox.rdm.compare(rdms[0], rdms[1], method="spearman")
    return {"value": float(np.asarray(v).ravel()[0]), "extra": {}}


# --------------------------------------------------------------------------- registry of cases
CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
PREPARE: dict[str, Callable[[dict[str, Any]], None]] = {}
PYTHON: dict[str, str] = {}
#: per-case wall-clock limits (seconds) for cases known to run for hours.
TIMEOUT: dict[str, float] = {"scipy.procrustes@wide": 120.0}


_WARM = {
    "repscope": ("repscope.similarity", "repscope.similarity._measures.cka",
                 "repscope.similarity._measures.shape", "repscope.similarity._measures.rsa",
                 "scipy.stats"),
    "scipy": ("scipy.linalg",),
    "ckatorch": ("torch", "ckatorch.core"),
    "torch_cka": ("torch", "torch_cka"),
    "cka_pytorch": ("torch", "cka_pytorch.hsic"),
    "pytorch_cka": ("torch", "cka.hsic"),
    "repsim": ("repsim",),
    "rsatoolbox": ("rsatoolbox",),
}


def _add(name: str, shape: str, fn: Callable[[dict[str, Any]], dict[str, Any]],
         anchor: bool = False) -> None:
    key = f"{name}@{shape}"
    CASES[key] = fn
    PREPARE[key] = _prep(shape, _WARM.get(name.split(".")[0], ()))
    PYTHON[key] = ANCHOR_PY if anchor else sys.executable


for _s in SHAPES:
    _add("repscope.linear_cka", _s, _rs("linear_cka"))
    _add("repscope.linear_cka_debiased", _s, _rs("linear_cka_debiased"))
    _add("repscope.procrustes", _s, _rs("procrustes"))
    _add("naive_nxn.linear_cka", _s, _naive_nxn_cka)
    _add("ckatorch.linear_cka", _s, _ckatorch(False), anchor=True)
    _add("scipy.procrustes", _s, _scipy_procrustes)
for _s in ("10k", "50k"):
    _add("feature_space.linear_cka", _s, _feature_space_cka)
_add("ckatorch.linear_cka_unbiased", "10k", _ckatorch(True), anchor=True)
_add("torch_cka.linear_cka_unbiased", "10k", _torch_cka, anchor=True)
_add("cka_pytorch.linear_cka_unbiased", "10k", _cka_pytorch, anchor=True)
_add("pytorch_cka.linear_cka_unbiased", "10k", _pytorch_cka, anchor=True)
_add("repsim.linear_cka", "10k", _repsim_cka("gretton"), anchor=True)
_add("repsim.linear_cka_debiased", "10k", _repsim_cka("song"), anchor=True)
_add("repscope.rsa", "10k", _rs("rsa"))
_add("rsatoolbox.rsa", "10k", _rsatoolbox_rsa, anchor=True)

COMPARISONS: list[tuple[str, str, str, dict[str, float]]] = [
    ("linear CKA 10k vs fastest feature-space", "repscope.linear_cka@10k",
     "feature_space.linear_cka@10k", {"cpu": 1 / 1.1}),
    ("linear CKA 50k vs fastest feature-space", "repscope.linear_cka@50k",
     "feature_space.linear_cka@50k", {"cpu": 1 / 1.1}),
    ("linear CKA 10k vs naive n x n", "repscope.linear_cka@10k", "naive_nxn.linear_cka@10k",
     {"cpu": 10.0}),
    ("linear CKA 10k vs ckatorch (n x n)", "repscope.linear_cka@10k", "ckatorch.linear_cka@10k",
     {"cpu": 10.0}),
    ("linear CKA 50k vs ckatorch (n x n)", "repscope.linear_cka@50k", "ckatorch.linear_cka@50k",
     {"cpu": 10.0}),
    ("debiased vs biased CKA 10k", "repscope.linear_cka_debiased@10k", "repscope.linear_cka@10k",
     {"cpu_max": 1.2}),
    ("debiased vs biased CKA 50k", "repscope.linear_cka_debiased@50k", "repscope.linear_cka@50k",
     {"cpu_max": 1.2}),
    ("debiased CKA 10k vs ckatorch unbiased", "repscope.linear_cka_debiased@10k",
     "ckatorch.linear_cka_unbiased@10k", {"cpu": 10.0}),
    ("Procrustes d=16,384 (n=1,000)", "repscope.procrustes@wide", "scipy.procrustes@wide",
     {"seconds": 2.0}),
    ("RSA 10k vs rsatoolbox", "repscope.rsa@10k", "rsatoolbox.rsa@10k", {"cpu": 1.0}),
]


# --------------------------------------------------------------------------- standalone driver
def run_case(name: str, mem_bytes: int, timeout: float) -> dict[str, Any]:
    """Run one case in a fresh process; ``{"status": "ok"|"out of memory"|..., ...}``."""
    input_paths(name.split("@")[1])  # write the inputs once, outside the timed child
    run = _harness.run_case("_sim_cases_measures", name, python=PYTHON[name],
                            torch_threads=False, mem_bytes=mem_bytes, timeout=timeout)
    if not run.ok:
        return {"status": run.status}
    r = run.result
    return {"status": "ok", "value": r["value"], "extra": r["extra"], "cpu": r["cpu"],
            "peak": r["peak"], "base": r["base"]}


def _median(rs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rs if r["status"] == "ok"]
    if not ok:
        return rs[0]
    return _harness.median_run(ok, "cpu")


def main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--mem-gb", type=float, default=12.0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--slow-runs", type=int, default=1, help="runs for cases over 20 CPU-s")
    ap.add_argument("--conventions", action="store_true")
    a = ap.parse_args(argv)
    if a.conventions:
        conventions()
        return
    results: dict[str, dict[str, Any]] = {}
    for name in CASES:
        if a.only and a.only not in name:
            continue
        first = run_case(name, int(a.mem_gb * 2**30), TIMEOUT.get(name, a.timeout))
        rs = [first]
        if first["status"] == "ok" and first["cpu"] < 20:
            rs += [run_case(name, int(a.mem_gb * 2**30), a.timeout) for _ in range(a.runs - 1)]
        elif first["status"] == "ok":
            rs += [run_case(name, int(a.mem_gb * 2**30), a.timeout) for _ in range(a.slow_runs - 1)]
        r = _median(rs)
        r["runs"] = len([x for x in rs if x["status"] == "ok"])
        results[name] = r
        _print_row(name, r)
        sys.stdout.flush()
    print()
    print(f"{'comparison':46s} {'repscope':>10s} {'other':>12s} {'ratio':>8s}  target  met")
    for label, ours, other, target in COMPARISONS:
        if ours not in results or other not in results:
            continue
        ro, rt = results[ours], results[other]
        if ro["status"] != "ok":
            print(f"{label:46s} repscope failed: {ro['status']}")
            continue
        if "seconds" in target:
            met = ro["cpu"] <= target["seconds"]
            print(f"{label:46s} {ro['cpu']:9.2f}s {'':>12s} {'':>8s}  <= {target['seconds']} s  {met}")
            continue
        if rt["status"] != "ok":
            print(f"{label:46s} {ro['cpu']:9.2f}s {rt['status']:>12s}")
            continue
        ratio = rt["cpu"] / ro["cpu"]
        if "cpu_max" in target:
            ratio = ro["cpu"] / rt["cpu"]
            tgt, met = f"<= {target['cpu_max']}", ratio <= target["cpu_max"]
        else:
            tgt, met = f">= {target['cpu']:.2f}", ratio >= target["cpu"]
        print(f"{label:46s} {ro['cpu']:9.2f}s {rt['cpu']:11.2f}s {ratio:8.2f}  {tgt}  {met}")


def _print_row(name: str, r: dict[str, Any]) -> None:
    if r["status"] != "ok":
        print(f"{name:44s} {r['status']}")
        return
    print(f"{name:44s} value={r['value']:.6f}  cpu={r['cpu']:8.2f}s  peak={r['peak'] / 2**20:8.0f} MB"
          f"  (+{(r['peak'] - r['base']) / 2**20:7.0f} MB over inputs)  runs={r['runs']}")


# --------------------------------------------------------------------------- conventions
_CONV_CHILD = r"""
import json, sys
import numpy as np, torch
X = np.load(sys.argv[1]); Y = np.load(sys.argv[2])
x, y = torch.from_numpy(X), torch.from_numpy(Y)
out = {}
from ckatorch.core import cka_base
out["ckatorch linear"] = float(cka_base(x, y))
out["ckatorch linear unbiased=True"] = float(cka_base(x, y, unbiased=True))
out["ckatorch linear unbiased=True method=hsic"] = float(cka_base(x, y, unbiased=True, method="hsic"))
out["ckatorch rbf threshold=1"] = float(cka_base(x, y, kernel="rbf"))
from types import SimpleNamespace
from torch_cka import CKA
K, L = x @ x.T, y @ y.T
K.fill_diagonal_(0.0); L.fill_diagonal_(0.0)
s = SimpleNamespace(device="cpu")
out["torch-cka (float32, unbiased HSIC)"] = CKA._HSIC(s, K, L) / (CKA._HSIC(s, K, K) * CKA._HSIC(s, L, L)) ** 0.5
from cka_pytorch.hsic import hsic1
xd, yd = x.double(), y.double()
Kd, Ld = (xd @ xd.T)[None], (yd @ yd.T)[None]
out["cka-pytorch hsic1 (one batch)"] = float(hsic1(Kd, Ld) / (hsic1(Kd, Kd) * hsic1(Ld, Ld)).sqrt())
for b in (64, 256):
    n = X.shape[0] // b * b
    xs, ys = xd[:n].reshape(-1, b, xd.shape[1]), yd[:n].reshape(-1, b, yd.shape[1])
    Kb, Lb = xs @ xs.transpose(1, 2), ys @ ys.transpose(1, 2)
    out[f"cka-pytorch minibatch b={b}"] = float(hsic1(Kb, Lb).sum() / (hsic1(Kb, Kb).sum() * hsic1(Lb, Lb).sum()).sqrt())
import repsim
for est in ("gretton", "song"):
    out[f"repsim linear estimator={est}"] = float(np.asarray(repsim.cka([X.astype(np.float64), Y.astype(np.float64)], kernel_type="linear", estimator=est))[0, 1])
out["repsim rbf gretton (default)"] = float(np.asarray(repsim.cka([X.astype(np.float64), Y.astype(np.float64)]))[0, 1])
import rsatoolbox
for meth in ("correlation", "euclidean"):
    r = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(A), method=meth) for A in (X, Y)]
    for cmp in ("spearman", "corr"):
        out[f"rsatoolbox {meth} RDM, {cmp}"] = float(np.asarray(rsatoolbox.rdm.compare(r[0], r[1], method=cmp)).ravel()[0])
print("@@" + json.dumps(out))
"""


def conventions() -> None:
    """Values of every anchor and of repscope on the same real embeddings (MiniLM-L6 on
    Austen, layers 3 and 6 -- the ``minilm_austen`` test fixture)."""
    import tempfile

    sys.path.insert(0, str(HERE.parent / "tests"))
    from _realdata import minilm_austen
    from repscope.similarity import (
        linear_cka,
        minibatch_cka,
        rbf_cka,
        rsa,
    )

    f = minilm_austen(Path(tempfile.mkdtemp()))
    X, Y = f.X[f.layers[3]], f.X[f.layers[6]]
    px, py = CACHE / "conv_X.npy", CACHE / "conv_Y.npy"
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(px, X)
    np.save(py, Y)
    ours = {
        "repscope linear_cka (biased)": linear_cka(X, Y),
        "repscope linear_cka_debiased": linear_cka(X, Y, debiased=True),
        "repscope minibatch_cka b=64": minibatch_cka(X, Y, batch_size=64),
        "repscope minibatch_cka b=256": minibatch_cka(X, Y, batch_size=256),
        "repscope rbf_cka (median, scale 1)": rbf_cka(X, Y),
        "repscope rsa correlation/spearman": rsa(X, Y),
        "repscope rsa correlation/pearson": rsa(X, Y, method="pearson"),
        "repscope rsa euclidean/spearman": rsa(X, Y, metric="euclidean"),
        "repscope rsa sqeuclidean/pearson": rsa(X, Y, metric="sqeuclidean", method="pearson"),
        "repscope rsa euclidean/pearson": rsa(X, Y, metric="euclidean", method="pearson"),
    }
    p = subprocess.run([ANCHOR_PY, "-c", _CONV_CHILD, str(px), str(py)], capture_output=True,
                       text=True, env={**os.environ, **_harness.thread_env(1)})
    theirs: dict[str, float] = {}
    for line in p.stdout.splitlines():
        if line.startswith("@@"):
            theirs = json.loads(line[2:])
    if not theirs:
        print(p.stderr[-2000:])
    print(f"MiniLM-L6 on Austen, n={X.shape[0]}, layers {f.layers[3]} vs {f.layers[6]}")
    for k, v in {**ours, **theirs}.items():
        print(f"{k:48s} {v: .6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
