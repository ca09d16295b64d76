"""Benchmark: OOD detectors on features, repscope vs faiss, scikit-learn and pytorch-ood.

Each implementation runs in its own process (``benchmarks/_harness.py``), on the same features
(written once to a temporary folder by this driver, float32, seeded), under an address-space
cap (``--mem``, default 16 GB via ``prlimit --as``), one BLAS/OpenMP thread; we report the
child's CPU-seconds of the timed call (fit + score, imports and loading excluded), its wall
seconds, its peak RSS and how far its scores are from repscope's (max relative difference),
medians of ``--runs``.

Cases

(a) kNN detector, cosine, k=50: an index of ``--n`` (50,000) x 768 features, 10,000 queries.
    repscope ``KNNDetector`` (torch search and, when faiss is installed in the venv, faiss
    candidates; distances re-ranked in float64), faiss-cpu ``IndexFlatIP``, scikit-learn
    ``NearestNeighbors`` (brute force) and pytorch-ood's ``KNN``. Scores compared as the
    distance of the normalised features to the k-th neighbour.
(b) Mahalanobis, tied covariance: fit on 50,000 x 768 features in 100 classes, score 10,000.
    repscope ``MahalanobisDetector`` vs pytorch-ood's ``Mahalanobis``. pytorch-ood does not
    divide its scatter matrix by n (and adds 1e-6 I) and returns half the squared distance, so
    its score is compared as ``-2 n * score_pyood`` against repscope's ``-min_k d_k^2``.
(c) Scale: kNN of 10,000 queries over ``--scale-n`` x 384 float16 features in a ``.npy`` file
    on disk, streamed in chunks of ``--chunk`` rows (``open_layers(memmap=True)`` +
    ``iter_batches``, a running top-k merged with :func:`repscope._kernels.knn.knn_search`);
    memory is bounded by the chunk, not the store.

Every child runs with the benchmark venv's interpreter (``--pyood-python``, default
``/tmp/ood-bench-venv/bin/python``; repscope from ``src/`` on ``PYTHONPATH``), so all rows use
the same numpy, torch and faiss builds. pytorch-ood imports torchvision at import time; this
script stubs the torchvision modules in ``sys.modules`` there before importing it (never in
the project)::

    python3 -m venv /tmp/ood-bench-venv
    /tmp/ood-bench-venv/bin/pip install -c constraints.txt faiss-cpu scikit-learn numpy torch
    /tmp/ood-bench-venv/bin/pip install --no-deps pytorch-ood

    python benchmarks/ood.py [--runs 3] [--cases a,b,c] [--n 50000] [--scale-n 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _harness

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
K = 50


# --------------------------------------------------------------------------- data (parent)
def make_data(folder: Path, n: int, q: int, d: int, n_classes: int, scale_n: int,
              cases: str) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n_classes, d), dtype=np.float32) * 0.5
    y = rng.integers(0, n_classes, n)
    X = centres[y] + rng.standard_normal((n, d), dtype=np.float32)
    Q = centres[rng.integers(0, n_classes, q)] + 1.3 * rng.standard_normal((q, d),
                                                                            dtype=np.float32)
    np.save(folder / "X.npy", X.astype(np.float32))
    np.save(folder / "y.npy", y.astype(np.int64))
    np.save(folder / "Q.npy", Q.astype(np.float32))
    if "c" in cases:
        big = np.lib.format.open_memmap(folder / "big.npy", mode="w+", dtype=np.float16,
                                        shape=(scale_n, 384))
        step = 100_000
        for s in range(0, scale_n, step):
            e = min(scale_n, s + step)
            big[s:e] = rng.standard_normal((e - s, 384), dtype=np.float32).astype(np.float16)
        big.flush()
        del big
        np.save(folder / "Qs.npy", rng.standard_normal((q, 384), dtype=np.float32))


# --------------------------------------------------------------------------- children
def _stub_torchvision() -> None:
    """pytorch-ood imports torchvision at import time; only its model zoo uses it."""
    import types

    class _Anything(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {"__init__": lambda self, *a, **k: None})

    for name in ("torchvision", "torchvision.transforms", "torchvision.models",
                 "torchvision.models.resnet", "torchvision.datasets",
                 "torchvision.datasets.utils", "torchvision.transforms.functional",
                 "torchvision.io", "torchvision.ops", "torchvision.utils",
                 "torchvision.models.vision_transformer", "torchvision.models.densenet",
                 "torchvision.models.wide_resnet"):
        mod = _Anything(name)
        mod.__path__ = []  # type: ignore[attr-defined]
        sys.modules[name] = mod
        parent, _, leaf = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], leaf, mod)


def child(case: str, folder: str, out: str) -> None:
    import numpy as np

    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = "1"
    _harness.set_torch_threads(1)
    f = Path(folder)
    if case == "c: repscope streamed":
        _streamed_knn(f / "big.npy", np.load(f / "Qs.npy")[:10], 4096)  # warm-up
        scores, stats = _harness.timed(_streamed_knn, f / "big.npy", np.load(f / "Qs.npy"),
                                       int(os.environ.get("OOD_CHUNK", "65536")))
        np.save(out, scores)
        _harness.emit({**stats, "n": int(np.load(f / "big.npy", mmap_mode="r").shape[0])})
        return
    X, Q = np.load(f / "X.npy"), np.load(f / "Q.npy")
    y = np.load(f / "y.npy")
    # a warm-up call on a small slice imports everything (torch, faiss, ...) before timing
    if case.startswith("a:"):
        fn = _KNN[case]
        fn(X[:500], Q[:10])
        scores, stats = _harness.timed(fn, X, Q)
    else:
        fn = _MAHA[case]
        small = np.isin(y, np.unique(y)[:5])
        codes = np.unique(y[small], return_inverse=True)[1]  # contiguous 0..4 for pytorch-ood
        fn(X[small][:, :20], codes, Q[:10, :20])
        scores, stats = _harness.timed(fn, X, y, Q)
    np.save(out, np.asarray(scores, dtype=np.float64))
    _harness.emit({**stats, "index_mb": X.nbytes / 2**20})


def _norm(A):  # type: ignore[no-untyped-def]
    import numpy as np

    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _knn_repscope(backend: str):  # type: ignore[no-untyped-def]
    def run(X, Q):  # type: ignore[no-untyped-def]
        from repscope.ood import get_detector

        det = get_detector("knn", k=K, backend=backend).fit(X)
        return -det.score_samples(Q)  # the k-th distance of the normalised features

    return run


def _knn_faiss(X, Q):  # type: ignore[no-untyped-def]
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(np.ascontiguousarray(_norm(X), dtype=np.float32))
    sims, _ = index.search(np.ascontiguousarray(_norm(Q), dtype=np.float32), K)
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims[:, -1].astype(np.float64)))


def _knn_sklearn(X, Q):  # type: ignore[no-untyped-def]
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=K, algorithm="brute", n_jobs=1).fit(_norm(X))
    return nn.kneighbors(_norm(Q), return_distance=True)[0][:, -1]


def _knn_pyood(X, Q):  # type: ignore[no-untyped-def]
    _stub_torchvision()
    import torch
    from pytorch_ood.detector import KNN

    det = KNN(None, k=K)
    det.knn.set_params(n_jobs=1)
    det.fit_features(torch.from_numpy(X), torch.zeros(X.shape[0], dtype=torch.long))
    return det.predict_features(torch.from_numpy(Q)).numpy()


def _maha_repscope(X, y, Q):  # type: ignore[no-untyped-def]
    from repscope.ood import get_detector

    det = get_detector("mahalanobis").fit(X, y)
    return -det.score_samples(Q)  # min_k squared distance, covariance divided by n


def _maha_pyood(X, y, Q):  # type: ignore[no-untyped-def]
    _stub_torchvision()
    import torch
    from pytorch_ood.detector import Mahalanobis

    det = Mahalanobis(None).fit_features(torch.from_numpy(X), torch.from_numpy(y))
    # pytorch-ood: 0.5 * min_k z^T (S + 1e-6 I)^-1 z with S the unnormalised scatter
    return 2.0 * X.shape[0] * det.predict_features(torch.from_numpy(Q)).numpy()


def _streamed_knn(path: Path, Q, chunk: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    from repscope._kernels.knn import knn_search
    from repscope.store import open_layers

    src = open_layers(path, memmap=True)
    layer = src.layers[0]
    Qn = torch.from_numpy(_norm(Q).astype(np.float32))
    best = torch.full((Q.shape[0], K), -2.0)
    for batch in src.iter_batches(layer, batch_size=chunk):
        B = torch.from_numpy(np.asarray(batch, dtype=np.float32))
        r = knn_search(Qn, B, min(K, B.shape[0]), metric="cosine")
        best = torch.topk(torch.cat([best, r.values], 1), K, dim=1).values
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * best[:, -1].double().numpy()))


_KNN = {
    "a: repscope KNNDetector (torch)": _knn_repscope("torch"),
    "a: repscope KNNDetector (faiss)": _knn_repscope("faiss"),
    "a: faiss IndexFlatIP": _knn_faiss,
    "a: scikit-learn NearestNeighbors": _knn_sklearn,
    "a: pytorch-ood KNN": _knn_pyood,
}
_MAHA = {
    "b: repscope MahalanobisDetector": _maha_repscope,
    "b: pytorch-ood Mahalanobis": _maha_pyood,
}


# --------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", default="a,b,c")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--q", type=int, default=10_000)
    ap.add_argument("--scale-n", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=65_536)
    ap.add_argument("--mem", type=int, default=16_000_000_000)
    ap.add_argument("--pyood-python", default="/tmp/ood-bench-venv/bin/python")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--child", nargs=3, metavar=("CASE", "FOLDER", "OUT"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    cases = args.cases.replace(",", "")
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="ood-bench-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        make_data(folder, args.n, args.q, 768, 100, args.scale_n, cases)
        print(f"data written in {time.perf_counter() - t:.1f} s to {folder}")
        plan = []
        py = args.pyood_python
        if "a" in cases:
            plan += [(c, py) for c in _KNN]
        if "b" in cases:
            plan += [(c, py) for c in _MAHA]
        if "c" in cases:
            plan.append(("c: repscope streamed", sys.executable))  # the project's venv
        rows = []
        ref: dict[str, object] = {}
        env = {**os.environ, **_harness.thread_env(1), "OOD_CHUNK": str(args.chunk),
               "PYTHONPATH": str(ROOT / "src")}
        for case, python in plan:
            runs = []
            status = "ok"
            n_runs = args.runs if not case.startswith("c") else min(args.runs, 2)
            for i in range(n_runs):
                out = folder / f"scores-{abs(hash(case))}-{i}.npy"
                r = _harness.run_child([python, str(Path(__file__)), "--child", case, tmp,
                                        str(out)], env=env, mem_bytes=args.mem,
                                       timeout=args.timeout)
                if not r.ok:
                    status = r.status
                    break
                runs.append({**r.result, "peak_mb": r.peak_mb, "out": str(out)})
            if not runs:
                rows.append({"case": case, "error": status})
                print(json.dumps(rows[-1]), flush=True)
                continue
            med = _harness.median_run(runs)
            import numpy as np

            scores = np.load(med["out"])
            group = case.split(":")[0]
            if group not in ref:
                ref[group] = scores
            base = np.asarray(ref[group])
            diff = float(np.max(np.abs(scores - base) / np.maximum(np.abs(base), 1e-12)))
            rows.append({"case": case, "cpu": med["cpu"], "wall": med["wall"],
                         "peak_mb": med["peak_mb"], "index_mb": med.get("index_mb"),
                         "n": med.get("n"), "max_rel_diff": diff, "runs": len(runs)})
            print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    C = _harness.Column
    _harness.print_table(rows, [C("case", "case", "s"), C("CPU s", "cpu", ".2f"),
                                C("wall s", "wall", ".2f"), C("peak RSS MiB", "peak_mb", ".0f"),
                                C("max rel. diff vs first of group", "max_rel_diff", ".2e"),
                                C("runs", "runs", "d")], markdown=True)


if __name__ == "__main__":
    main()
