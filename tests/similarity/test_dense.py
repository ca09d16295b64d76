"""Dense relational measures (DiveUp): the COM field against a naive loop, its invariances, the
high-norm artifact detector on planted tokens, the comparison's records, report and CLI, and a
small real check (DINOv2-S patch tokens vs EfficientNet-Lite0 maps on MNIST digits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.exceptions import RepscopeValueError
from repscope.similarity import (
    com_agreement,
    com_field,
    compare_dense,
    high_norm_tokens,
    patch_grid,
    resize_grid,
)


def _naive_com(g: np.ndarray, window: int, tau: float) -> np.ndarray:
    """COM(p) = sum_q softmax_q(cos(f_p, f_q) / tau) (pos_q - pos_p), q in the cut window."""
    n, h, w, _ = g.shape
    r = window // 2
    out = np.zeros((n, h, w, 2))
    for i in range(n):
        for y in range(h):
            for x in range(w):
                logits, offs = [], []
                for qy in range(max(0, y - r), min(h, y + r + 1)):
                    for qx in range(max(0, x - r), min(w, x + r + 1)):
                        a, b = g[i, y, x], g[i, qy, qx]
                        logits.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) / tau)
                        offs.append((qy - y, qx - x))
                e = np.exp(np.array(logits) - max(logits))
                out[i, y, x] = (e / e.sum()) @ np.array(offs, dtype=float)
    return out


@pytest.mark.parametrize(("window", "tau"), [(3, 0.2), (5, 0.05), (1, 1.0)])
def test_com_field_equals_naive_loop(rng, window, tau) -> None:
    g = rng.standard_normal((2, 5, 6, 4))
    got = com_field(g, window=window, tau=tau)
    np.testing.assert_allclose(got, _naive_com(g, window, tau), atol=1e-12)
    np.testing.assert_allclose(com_field(g[0], window=window, tau=tau), got[0], atol=1e-12)


def test_com_field_points_at_the_lookalikes() -> None:
    # left half one feature, right half an orthogonal one: next to the boundary each position's
    # look-alikes lie away from it, so the field points left on the left and right on the right
    g = np.zeros((1, 6, 8, 2))
    g[:, :, :4, 0] = 1.0
    g[:, :, 4:, 1] = 1.0
    com = com_field(g, window=3, tau=0.1)
    assert (com[0, 1:-1, 3, 1] < -0.4).all() and (com[0, 1:-1, 4, 1] > 0.4).all()
    np.testing.assert_allclose(com[0, 1:-1, 1:3, :], 0.0, atol=1e-12)  # uniform inside a half


def test_com_field_invariances(rng) -> None:
    g = rng.standard_normal((2, 6, 6, 5))
    base = com_field(g, window=3)
    q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    scale = rng.uniform(0.5, 3.0, size=(2, 6, 6, 1))
    # allowed: channel rotation, a positive scale per token (cosines unchanged)
    np.testing.assert_allclose(com_field((g @ q) * scale, window=3), base, atol=1e-10)
    # forbidden: a shared offset added to every token changes the cosines
    assert np.abs(com_field(g + 3.0, window=3) - base).max() > 0.05


def test_resize_grid_matches_torch_bilinear(rng) -> None:
    torch = pytest.importorskip("torch")
    g = rng.standard_normal((2, 7, 9, 3))
    t = torch.from_numpy(g).permute(0, 3, 1, 2)
    for size in [(5, 4), (14, 18), (7, 9)]:
        ref = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(resize_grid(g, size), ref.permute(0, 2, 3, 1).numpy(),
                                   atol=1e-12)


def test_patch_grid_tokens_and_maps(rng) -> None:
    tokens = rng.standard_normal((2, 1 + 16, 3))
    g = patch_grid(tokens)
    assert g.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(g[1, 2, 3], tokens[1, 1 + 2 * 4 + 3])  # CLS dropped, row-major
    reg = rng.standard_normal((1, 1 + 4 + 9, 2))  # CLS + 4 registers + 3x3
    np.testing.assert_array_equal(patch_grid(reg, prefix_tokens=5)[0, 2, 0], reg[0, 5 + 6])
    maps = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(patch_grid(maps)[1, 2, 4], maps[1, :, 2, 4])
    with pytest.raises(RepscopeValueError, match="not a square patch grid"):
        patch_grid(tokens, prefix_tokens=2)
    with pytest.raises(RepscopeValueError, match=r"got an array of shape \(2, 3\)"):
        patch_grid(rng.standard_normal((2, 3)))


def test_high_norm_detector_flags_planted_tokens(rng) -> None:
    g = rng.standard_normal((3, 10, 10, 16))
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    g *= rng.uniform(0.8, 1.2, size=(3, 10, 10, 1))
    planted = np.zeros((3, 10, 10), dtype=bool)
    planted[0, 4, 4] = planted[0, 4, 5] = True  # an adjacent pair, as in DINOv2
    planted[1, 0, 9] = True  # a corner (cut window)
    planted[2, 7, 2] = True
    g[planted] *= 4.0
    art = high_norm_tokens(g, window=5, threshold=2.0)
    np.testing.assert_array_equal(art.flags, planted)
    assert art.n_flagged == 4
    assert art.spikiness[planted].min() > 3.0 and art.spikiness[~planted].max() < 1.6
    # a global scale is no artifact
    clean = rng.standard_normal((2, 10, 10, 16))
    assert high_norm_tokens(clean * 50).n_flagged == 0


def test_com_agreement_values_and_mask(rng) -> None:
    a = rng.standard_normal((2, 6, 6, 2))
    assert com_agreement(a, a) == pytest.approx(1.0)
    assert com_agreement(a, -a) == pytest.approx(-1.0)
    b = a.copy()
    b[:, 0, :] = -a[:, 0, :]  # disagree only on the top row
    assert com_agreement(a, b) < 1.0
    assert com_agreement(a, b, margin=1) == pytest.approx(1.0)
    mask = np.ones((2, 6, 6), dtype=bool)
    mask[:, 0, :] = False
    assert com_agreement(a, b, mask=mask) == pytest.approx(1.0)
    with pytest.raises(RepscopeValueError, match="same grid"):
        com_agreement(a, a[:, :5])
    with pytest.raises(RepscopeValueError, match="mask must have"):
        com_agreement(a, b, mask=mask[0])


def _smooth(g: np.ndarray) -> np.ndarray:
    """A 3x3 box filter (cut at the edge): neighbouring patches look alike, as in real maps."""
    pad = np.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = g.shape[1:3]
    return sum(pad[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9


def test_compare_dense_rotation_resizing_and_artifacts(rng) -> None:
    # B = A's channels mapped isometrically into 20 dimensions: the COM fields agree exactly,
    # unrelated images do not, and a planted artifact is counted and left out
    a = _smooth(rng.standard_normal((4, 12, 12, 8)))
    iso = np.linalg.qr(rng.standard_normal((20, 8)))[0].T  # (8, 20), orthonormal rows
    b = a @ iso
    res = compare_dense(a, b, window=3, tau=0.1, layer_a="x", layer_b="y")
    assert res.grid == (12, 12) and res.n_images == 4 and res.n_positions == 100
    assert res.com_agreement == pytest.approx(1.0)
    assert abs(res.com_agreement_shuffled) < 0.3
    np.testing.assert_allclose(res.per_image, 1.0)
    assert res.linear_cka == pytest.approx(1.0)
    assert res.linear_cka_shuffled < 0.5
    # the finer grid of B is resized to A's (the smaller) by default
    assert compare_dense(a, resize_grid(b, (16, 18)), window=3).grid == (12, 12)
    spiky = a.copy()
    spiky[0, 6, 6] *= 8.0
    res2 = compare_dense(spiky, b, window=3, tau=0.1)
    assert (res2.artifacts_a, res2.artifacts_b) == (1, 0)
    assert res2.n_positions < res.n_positions  # the artifact's positions are left out
    (layer, values), = res.record_rows()
    assert layer == "" and values["layer_a"] == "x" and values["grid"] == [12, 12]
    assert values["com_agreement"] == res.com_agreement


def test_compare_dense_bad_input(rng) -> None:
    a = rng.standard_normal((2, 8, 8, 3))
    with pytest.raises(RepscopeValueError, match="same images; got 2 and 3"):
        compare_dense(a, rng.standard_normal((3, 8, 8, 3)))
    with pytest.raises(RepscopeValueError, match="odd side length"):
        compare_dense(a, a, window=4)
    with pytest.raises(RepscopeValueError, match="no interior for window 5"):
        compare_dense(a, a, size=4)
    with pytest.raises(RepscopeValueError, match="at least 3"):
        high_norm_tokens(a, window=1)
    with pytest.raises(RepscopeValueError, match="NaN or infinite"):
        com_field(np.full((1, 3, 3, 2), np.nan))


# ---------------------------------------------------------------------------- CLI and report

@pytest.fixture
def dense_files(tmp_path, rng):
    """A ViT-like token array (CLS + 8x8 patches) and a CNN-like map (c, 6, 6) of the same
    12 'images' (the map a rotated, resized copy of the patches), and a pooled vector layer."""
    base = resize_grid(rng.standard_normal((12, 4, 4, 10)), (8, 8))
    tokens = np.concatenate([rng.standard_normal((12, 1, 10)), base.reshape(12, 64, 10)], axis=1)
    cnn = resize_grid(base @ rng.standard_normal((10, 6)), (6, 6)).transpose(0, 3, 1, 2)
    da, db = tmp_path / "vit", tmp_path / "cnn"
    da.mkdir()
    db.mkdir()
    np.save(da / "block.npy", tokens.astype(np.float32))
    np.save(db / "stage.npy", cnn.astype(np.float32))
    np.save(db / "pooled.npy", cnn.mean(axis=(2, 3)).astype(np.float32))
    return str(da), str(db)


def test_dense_cli_records_and_report(tmp_path, dense_files) -> None:
    from repscope.cli import RepscopeGroup
    from repscope.cli._common import Settings
    from repscope.cli.dense import dense
    from repscope.db import ResultsDB
    from repscope.report import fmt, render_report

    app = RepscopeGroup(name="repscope")
    app.add_command(dense)
    settings = Settings(db_path=str(tmp_path / "r.db"), seed=0)
    pa, pb = dense_files
    res = CliRunner().invoke(app, ["dense", pa, pb, "--window", "3", "--dataset", "toy",
                                   "--json"], obj=settings)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [(r["layer_a"], r["layer_b"]) for r in out] == [("block", "stage")]  # pooled skipped
    assert out[0]["grid"] == [6, 6] and out[0]["n_images"] == 12
    assert out[0]["com_agreement"] > out[0]["com_agreement_shuffled"] + 0.3
    with ResultsDB(settings.db_path) as db:
        (rec,) = list(db.query(analysis="dense_com"))
        html = render_report(db, tmp_path / "r.html").read_text()
    assert rec.model == "vit vs cnn" and rec.dataset == "toy" and rec.layer == "block | stage"
    assert 'id="sec-dense-com"' in html and "could not be rendered" not in html
    for key in ("com_agreement", "com_agreement_shuffled", "linear_cka", "linear_cka_shuffled"):
        assert fmt(out[0][key], 3) in html
    assert "vit layer" in html and "high-norm tokens" in html

    bad = CliRunner().invoke(app, ["dense", pa, pb, "--layer-b", "pooled"], obj=settings)
    assert bad.exit_code == 1
    assert "--layer-b 'pooled'" in bad.output and "--pooling none" in bad.output
    bad = CliRunner().invoke(app, ["dense", pa, pb, "--grid", "2"], obj=settings)
    assert bad.exit_code == 1 and "--grid 2x2 leaves no interior for --window 5" in bad.output
    bad = CliRunner().invoke(app, ["dense", pa, pb, "--window", "4"], obj=settings)
    assert bad.exit_code == 1 and "--window must be an odd" in bad.output
    assert "Traceback" not in bad.output


# ---------------------------------------------------------------------------- real models

@pytest.mark.real
def test_real_dinov2_vs_lite0_com_agreement() -> None:
    """Four MNIST digits: DINOv2-S block 5 patch tokens (16x16) vs Lite0 block 5 (14x14 at
    224 px). Their COM fields agree on the same digit far more than across digits."""
    from repscope._testing import skip_or_fail
    from repscope.exceptions import DataNotFoundError
    from repscope.extract import extract
    from repscope.zoo import load_dataset, load_model

    try:
        data = load_dataset("mnist", n=4, seed=0)
        dino = load_model("dinov2-s-onnx")
        lite = load_model("efficientnet-lite0", resolution=224)
    except DataNotFoundError as err:
        skip_or_fail(f"MNIST, dinov2-s-onnx or efficientnet-lite0 is not available: {err}")
    fd = extract(dino, data.inputs, layers=["encoder.layer.5"], pooling="none", progress=False)
    fl = extract(lite, data.inputs, layers=["_blocks.5"], pooling="none", progress=False)
    gd, gl = patch_grid(fd["encoder.layer.5"]), patch_grid(fl["_blocks.5"])
    assert gd.shape == (4, 16, 16, 384) and gl.shape == (4, 14, 14, 80)
    res = compare_dense(gd, gl)
    assert res.grid == (14, 14)
    assert res.com_agreement > 0.5
    assert res.com_agreement > res.com_agreement_shuffled + 0.4
    assert res.linear_cka > res.linear_cka_shuffled + 0.4
    assert (res.per_image > 0.4).all()
    assert res.artifacts_a == 0 and res.artifacts_b == 0  # no high-norm tokens at block 5
