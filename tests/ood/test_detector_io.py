"""Fit today, score tomorrow: every detector saved as safetensors + JSON (no pickle) scores
identically after loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repscope.exceptions import CorruptStoreError, DataNotFoundError, RepscopeTypeError
from repscope.ood import (
    ASH,
    KNNDetector,
    MahalanobisDetector,
    OODDetector,
    get_detector,
    list_detectors,
)


def _data(rng):
    y = np.array(["cat", "dog", "emu"])[rng.integers(0, 3, 150)]
    X = np.abs(rng.standard_normal((150, 6))) + (y == "dog")[:, None]
    X[:, -1] = 0.0  # a constant feature
    return X, y


def _params(name):
    if name in list_detectors(needs="logits") or name == "vim":
        return {"head": "probe"}
    return {"k": 4} if name == "knn" else {}


@pytest.mark.parametrize("name", sorted({
    "msp", "maxlogit", "energy", "entropy", "gen", "mahalanobis", "relative_mahalanobis",
    "multilayer_mahalanobis", "vim", "knn", "gmm"}))
def test_every_detector_scores_identically_after_a_round_trip(rng, tmp_path, name):
    X, y = _data(rng)
    Q = np.abs(rng.standard_normal((20, 6)))
    if name == "multilayer_mahalanobis":
        X, Q = {"a": X, "b": X[:, :3]}, {"a": Q, "b": Q[:, :3]}
    det = get_detector(name, **_params(name)).fit(X, y)
    path = det.save(tmp_path / f"{name}.safetensors")
    back = OODDetector.load(path)
    assert type(back) is type(det)
    assert np.array_equal(back.score_samples(Q), det.score_samples(Q))
    if hasattr(det, "classes_"):
        assert back.classes_.tolist() == ["cat", "dog", "emu"]


@pytest.mark.parametrize("kw", [{"metric": "whitened", "shrinkage": "oas"}, {"metric": "cosine"}])
def test_knn_variants_and_transforms_round_trip(rng, tmp_path, kw):
    X, y = _data(rng)
    Q = np.abs(rng.standard_normal((20, 6)))
    det = KNNDetector(k=3, **kw).fit(X.astype(np.float32), y)
    back = KNNDetector.load(det.save(tmp_path / "knn.safetensors"))
    assert back.index_.dtype == np.float32
    assert np.array_equal(back.score_samples(Q), det.score_samples(Q))
    energy = get_detector("energy", head="probe", feature_transform=ASH(percentile=50, variant="b"),
                          temperature=2.0).fit(X, y)
    back = OODDetector.load(energy.save(tmp_path / "energy.safetensors"))
    assert back.get_params()["temperature"] == 2.0
    assert isinstance(back.transform_, ASH) and back.transform_.variant == "b"
    assert np.array_equal(back.score_samples(Q), energy.score_samples(Q))


def test_the_file_is_safetensors_with_json_and_no_pickle(rng, tmp_path):
    from safetensors import safe_open

    X, y = _data(rng)
    path = MahalanobisDetector(shrinkage=0.1).fit(X, y).save(tmp_path / "m.safetensors")
    raw = path.read_bytes()
    assert b"\x80\x04\x95" not in raw and b"pickle" not in raw  # no pickle protocol stream
    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["repscope"])
        keys = set(f.keys())
    assert meta["detector"] == "mahalanobis"
    assert meta["params"]["shrinkage"] == {"value": 0.1}
    assert {"means_", "whitener_", "center_"} <= keys


def test_loading_bad_files_is_a_named_error(rng, tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(DataNotFoundError, match="no saved OOD detector at"):
        OODDetector.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CorruptStoreError, match="cannot read OOD detector file"):
        OODDetector.load(tmp_path / "junk.safetensors")
    save_file({"a": np.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CorruptStoreError, match="not a saved OOD detector"):
        OODDetector.load(tmp_path / "other.safetensors")
    X, y = _data(rng)
    path = MahalanobisDetector().fit(X, y).save(tmp_path / "m.safetensors")
    with pytest.raises(RepscopeTypeError, match="holds a MahalanobisDetector, not a KNNDetector"):
        KNNDetector.load(path)


def test_saving_an_unfitted_detector_raises_not_fitted(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted yet"):
        KNNDetector().save(tmp_path / "k.safetensors")
