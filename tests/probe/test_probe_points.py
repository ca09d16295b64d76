"""Per-point multi-level probing (issue 18 item 2, Masked Scene Modeling): the bilinear point
sampler against a hand interpolation, mIoU, kNN against scikit-learn on the same sampled
features, bad input, the real dense task (EfficientNet-Lite0 maps on MNIST pixels), the
``probe-points`` command and its report section."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.probe._dense import (
    MULTI_LEVEL,
    PointLabelShapeError,
    PointOutOfRangeError,
    mean_iou,
    pixel_point_labels,
    point_features,
    probe_points,
    sample_levels,
    sample_points,
)

#: Lite0 levels at 64 px: 32x32, 16x16, 8x8, 4x4 and 2x2 maps.
LEVELS = ["_blocks.0", "_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15"]


def _hand_bilinear(fmap: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A plain loop: point (r, c) in [0, 1] read at (r * (h - 1), c * (w - 1))."""
    n, c, h, w = fmap.shape
    out = np.zeros((n, u.shape[1], c))
    for i in range(n):
        for j in range(u.shape[1]):
            y, x = u[i, j, 0] * (h - 1), u[i, j, 1] * (w - 1)
            y0, x0 = min(int(np.floor(y)), h - 2), min(int(np.floor(x)), w - 2)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * fmap[i, :, y0, x0]
                         + (1 - dy) * dx * fmap[i, :, y0, x0 + 1]
                         + dy * (1 - dx) * fmap[i, :, y0 + 1, x0]
                         + dy * dx * fmap[i, :, y0 + 1, x0 + 1])
    return out


def test_sampling_equals_hand_bilinear_interpolation(rng):
    fmap = rng.standard_normal((3, 4, 5, 7))
    u = rng.uniform(0, 1, size=(3, 11, 2))
    u[0, 0] = (0.0, 0.0)
    u[0, 1] = (1.0, 1.0)  # the corners are the corner cells exactly (align corners)
    got = sample_points(fmap, u)
    np.testing.assert_allclose(got, _hand_bilinear(fmap, u), atol=1e-12)
    np.testing.assert_allclose(got[0, 0], fmap[0, :, 0, 0], atol=1e-12)
    np.testing.assert_allclose(got[0, 1], fmap[0, :, -1, -1], atol=1e-12)
    # pixel coordinates of a 28 x 28 image are the same points
    np.testing.assert_allclose(sample_points(fmap, u * 27, image_size=(28, 28)), got, atol=1e-12)


def test_levels_sampled_each_on_its_own_grid_not_an_upsampled_average(rng):
    coarse, fine = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 5, 8, 8))
    u = rng.uniform(0, 1, size=(2, 6, 2))
    got = sample_levels({"fine": fine, "coarse": coarse}, u)
    assert list(got) == ["fine", "coarse"]
    assert got["coarse"].shape == (12, 3) and got["fine"].shape == (12, 5)
    np.testing.assert_allclose(got["coarse"], _hand_bilinear(coarse, u).reshape(12, 3),
                               atol=1e-12)


def test_mean_iou_against_scikit_learn_jaccard(rng):
    from sklearn.metrics import jaccard_score

    t, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    m, per = mean_iou(t, p)
    assert m == pytest.approx(jaccard_score(t, p, average="macro"))
    assert per[2] == pytest.approx(jaccard_score(t == 2, p == 2))
    # a class absent from both arrays is skipped, not counted as 0
    assert mean_iou([0, 0, 1], [0, 0, 1], classes=[0, 1, 2])[0] == 1.0


def test_bad_points_and_labels_are_named_errors(rng):
    fmap = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(PointOutOfRangeError, match=r"points\[1, 0\].*outside"):
        sample_points(fmap, np.array([[[0.5, 0.5]], [[1.2, 0.1]]]))
    with pytest.raises(PointOutOfRangeError, match="28x28"):
        sample_points(fmap, np.full((2, 1, 2), 28.0), image_size=(28, 28))
    with pytest.raises(PointOutOfRangeError, match="NaN"):
        sample_points(fmap, np.full((2, 1, 2), np.nan))
    u = rng.uniform(0, 1, size=(2, 5, 2))
    with pytest.raises(PointLabelShapeError, match=r"\(n_images, n_points\) = \(2, 5\)"):
        probe_points({"a": fmap}, u, np.zeros((2, 4), int))
    with pytest.raises(PointLabelShapeError):
        probe_points({"a": fmap}, u, np.zeros(10, int))
    assert issubclass(PointOutOfRangeError, ValueError)


def test_pixel_point_labels_from_intensity(rng):
    imgs = np.zeros((2, 6, 6))
    imgs[:, 2:4, 2:4] = 200.0
    pts, lab = pixel_point_labels(imgs, [3, 7], n_points=36)
    assert pts.shape == (2, 36, 2) and lab.shape == (2, 36)
    on = (pts[..., 0] >= 2) & (pts[..., 0] < 4) & (pts[..., 1] >= 2) & (pts[..., 1] < 4)
    np.testing.assert_array_equal(lab, np.where(on, np.array([[4], [8]]), 0))
    _, bal = pixel_point_labels(imgs, [3, 7], n_points=8, foreground=0.5)
    assert (bal > 0).sum(axis=1).tolist() == [4, 4]


def test_knn_agrees_with_scikit_learn_on_the_sampled_features(rng):
    from sklearn.neighbors import KNeighborsClassifier

    from repscope.probe._knn import KNNProbe

    n = 40
    fmap = rng.standard_normal((n, 6, 5, 5))
    cls = rng.integers(0, 3, n)
    fmap[:, 0] += cls[:, None, None]
    u = rng.uniform(0, 1, size=(n, 12, 2))
    labels = np.repeat(cls[:, None], 12, axis=1)
    res = probe_points({"a": fmap}, u, labels, multi_level=False, standardize=False,
                       probes={"knn": KNNProbe(k=5, metric="euclidean", weighting="uniform")})
    Xtr, ytr, Xte, yte = point_features({"a": fmap}, u, labels)
    pred = KNeighborsClassifier(5).fit(Xtr["a"], ytr).predict(Xte["a"])
    ours = KNNProbe(k=5, metric="euclidean", weighting="uniform").fit(Xtr["a"], ytr)
    np.testing.assert_array_equal(ours.predict(Xte["a"]), pred)
    assert res.score("a", "knn") == pytest.approx(mean_iou(yte, pred)[0], abs=1e-12)
    assert res.n_test_points == yte.size


@pytest.fixture(scope="module")
def lite0_maps():
    """Lite0 maps of 300 MNIST images (64 px) and 64 random pixels per image."""
    from repscope.extract import extract
    from repscope.zoo import load_dataset, load_model

    data = load_dataset("mnist", n=300, seed=0)
    model = load_model("efficientnet-lite0", resolution=64)
    maps = extract(model, data.inputs, layers=LEVELS, pooling="none", batch_size=100,
                   progress=False)
    pts, labels = pixel_point_labels(np.stack(data.inputs), data.labels, n_points=64)
    return maps, pts, labels


@pytest.mark.real
def test_multi_level_beats_last_level_on_mnist_pixels(lite0_maps):
    maps, pts, labels = lite0_maps
    res = probe_points(maps, pts, labels, image_size=(28, 28), test=1 / 3)
    assert res.rows == (*LEVELS, MULTI_LEVEL)
    assert res.n_classes == 11 and res.n_test_points == 100 * 64
    for probe in res.probes:
        single = [res.score(layer, probe) for layer in LEVELS]
        multi = res.score(MULTI_LEVEL, probe)
        assert multi > res.score(LEVELS[-1], probe) + 0.1
        assert multi >= max(single) - 0.01
    recs = res.to_records(model="efficientnet-lite0", dataset="mnist")
    assert [r.layer for r in recs] == list(res.rows)
    assert recs[-1].values["multi_level"] and recs[-1].values["layers"] == LEVELS


@pytest.mark.real
def test_probe_points_command_and_report(lite0_maps, tmp_path):
    from repscope.cli import cli
    from repscope.db import ResultsDB
    from repscope.report import render_report

    maps, pts, labels = lite0_maps
    feats = tmp_path / "maps"
    feats.mkdir()
    keep = ["_blocks.2", "_blocks.15"]
    for name in keep:
        np.save(feats / f"{name}.npy", maps[name][:120])
    np.savez(tmp_path / "pts.npz", points=pts[:120], labels=labels[:120], image_size=[28, 28])
    db = tmp_path / "r.db"
    run = CliRunner().invoke(cli, ["--db", str(db), "probe-points", str(feats), "--points",
                                   str(tmp_path / "pts.npz"), "--probe", "linear", "--json",
                                   "--layer", keep[0], "--layer", keep[1]])
    assert run.exit_code == 0, run.output
    out = json.loads(run.output)
    assert [r["layer"] for r in out] == [*keep, MULTI_LEVEL]
    assert set(out[0]["miou"]) == {"linear"}
    with ResultsDB(db) as d:
        recs = d.query(analysis="probe_points")
    assert len(recs) == 3 and recs[-1].values["n_features"] == 24 + 320
    html = render_report(db, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Per-point probes (mIoU by layer)" in html and "<svg" in html
    assert "_blocks.15" in html

    # the same map as ViT-style tokens (a CLS token, then the row-major patch grid) gives the
    # same scores: token layers are laid out on their square grid first
    toks = tmp_path / "tokens"
    toks.mkdir()
    m = maps["_blocks.2"][:120]
    grid = m.reshape(120, m.shape[1], -1).transpose(0, 2, 1)
    np.save(toks / "_blocks.2.npy", np.concatenate([np.ones_like(grid[:, :1]), grid], axis=1))
    np.save(toks / "_blocks.15.npy", maps["_blocks.15"][:120])
    run = CliRunner().invoke(cli, ["--db", str(db), "probe-points", str(toks), "--points",
                                   str(tmp_path / "pts.npz"), "--probe", "linear", "--json",
                                   "--layer", keep[0], "--layer", keep[1]])
    assert run.exit_code == 0, run.output
    again = json.loads(run.output)
    for a, b in zip(out, again):
        assert a["miou"]["linear"] == pytest.approx(b["miou"]["linear"], abs=1e-9)

    # a point outside the image: one line naming --points
    bad = pts[:120].copy()
    bad[3, 5] = (30.0, 2.0)
    np.savez(tmp_path / "bad.npz", points=bad, labels=labels[:120], image_size=[28, 28])
    run = CliRunner().invoke(cli, ["--db", str(db), "probe-points", str(feats), "--points",
                                   str(tmp_path / "bad.npz")])
    assert run.exit_code != 0
    assert "--points" in run.output and "points[3, 5]" in run.output
    np.savez(tmp_path / "short.npz", points=pts[:120], labels=labels[:120, :10])
    run = CliRunner().invoke(cli, ["--db", str(db), "probe-points", str(feats), "--points",
                                   str(tmp_path / "short.npz")])
    assert run.exit_code != 0 and "one label per point" in run.output


def test_records_round_trip_to_the_report(tmp_path, rng):
    from repscope.db import ResultsDB
    from repscope.report import fmt, render_report

    n = 30
    cls = rng.integers(0, 2, n)
    fine = rng.standard_normal((n, 4, 6, 6))
    fine[:, 0] += 2 * cls[:, None, None]
    maps = {"fine": fine, "coarse": rng.standard_normal((n, 3, 2, 2))}
    u = rng.uniform(0, 1, size=(n, 10, 2))
    res = probe_points(maps, u, np.repeat(cls[:, None], 10, axis=1))
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_many(res.to_records(model="m", dataset="d"))
        stored = db.query(analysis="probe_points")
        html = render_report(db, tmp_path / "r.html").read_text()
    assert [r.layer for r in stored] == ["fine", "coarse", MULTI_LEVEL]
    assert stored[2].values["miou"]["knn"] == pytest.approx(res.score(MULTI_LEVEL, "knn"))
    assert stored[0].values["n_features"] == 4 and stored[2].values["n_features"] == 7
    assert 'id="sec-probe-points"' in html and "could not be rendered" not in html
    assert fmt(res.score("fine", "linear"), 3) in html


def test_multi_level_knn_is_not_diluted_by_weak_levels(rng):
    """One informative level among four noise levels (each twice as wide): the plain
    concatenation drowns its neighbourhoods; the level weights, chosen on held-out training
    images, keep the multi-level kNN at the best level's score."""
    from repscope.probe._dense import LevelWeightedKNN
    from repscope.probe._knn import KNNProbe
    from repscope.probe._layerwise import MultiLevelProbe

    n, pts = 90, 16
    cls = rng.integers(0, 3, (n, pts))
    centres = rng.standard_normal((3, 8)) * 1.2
    maps = {"good": centres[cls] + rng.standard_normal((n, pts, 8))}
    for i in range(4):
        maps[f"noise{i}"] = rng.standard_normal((n, pts, 16))
    u = np.stack(np.meshgrid(np.linspace(0, 1, 4), np.linspace(0, 1, 4), indexing="ij"),
                 axis=-1).reshape(1, pts, 2).repeat(n, axis=0)
    grids = {k: v.reshape(n, 4, 4, -1).transpose(0, 3, 1, 2) for k, v in maps.items()}
    res = probe_points(grids, u, cls, probes={"knn": KNNProbe(k=10)}, test=1 / 3)
    multi, good = res.score(MULTI_LEVEL, "knn"), res.score("good", "knn")
    assert good > 0.55
    assert multi >= good - 0.01
    weights = res.level_weights["knn"]
    assert weights["good"] > 0.5 and sum(weights.values()) == pytest.approx(1.0)
    assert res.to_records(model="m", dataset="d")[-1].values["level_weights"] == res.level_weights
    # the plain concatenation of standardised levels (the old multi-level kNN) is diluted
    Xtr, ytr, Xte, yte = point_features(grids, u, cls, test=1 / 3)
    concat = MultiLevelProbe(list(grids), probe=KNNProbe(k=10)).fit(Xtr, ytr)
    assert mean_iou(yte, concat.predict(Xte))[0] < good - 0.1
    # equal weights are the mean of per-level cosines: the concatenation of L2-normalised
    # levels scaled by sqrt(w) has cosine sum_l w_l cos_l
    knn = LevelWeightedKNN(list(grids)).fit(Xtr, ytr)
    blocks = knn._blocks(Xte, False)
    w = np.full(len(blocks), 1 / len(blocks))
    z = knn._concat(blocks, w)
    want = sum(wl * (b[:5] @ b[5:10].T) for wl, b in zip(w, blocks))
    np.testing.assert_allclose(z[:5] @ z[5:10].T, want, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-12)
