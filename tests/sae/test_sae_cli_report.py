"""``repscope sae train|eval|list``, the ``sae`` report section, top activations, the PNG
thumbnails and the demo's SAE step (on small synthetic stand-ins, not the real models)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import Record, ResultsDB
from repscope.sae import TopKConfig, TopKSAE, TrainSettings, sweep
from repscope.sae.evaluation._inspect import encode_png, png_base64, top_activations
from repscope.sae.io import load_sae
from repscope.sae.metrics import evaluate

HOSTILE = "<script>alert(1)</script>"
D, N_ATOMS, N = 16, 32, 2000


def _sparse_data(n: int, d: int = D, n_atoms: int = N_ATOMS, seed: int = 0) -> np.ndarray:
    """Sums of 3 random unit atoms with exponential weights: data an SAE can explain."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, n_atoms))
    for i in range(n):
        codes[i, rng.choice(n_atoms, 3, replace=False)] = rng.exponential(1.0, 3)
    return (codes @ atoms).astype(np.float32)


def _one_line_error(res, pattern: str) -> None:
    assert res.exit_code == 1, (res.exit_code, res.output)
    err = res.stderr.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("Error: ") and "Traceback" not in res.output
    assert pattern in err, err


def _decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader (8-bit, filter 0, non-interlaced) with CRC checks."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
        chunks.append((tag, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, colour, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, inter) == (8, 0, 0, 0)
    channels = {0: 1, 2: 3, 6: 4}[colour]
    raw = zlib.decompress(b"".join(b for t, b in chunks if t == b"IDAT"))
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, 1 + w * channels)
    assert (rows[:, 0] == 0).all()  # filter type 0 on every scanline
    img = rows[:, 1:].reshape(h, w, channels)
    return img[..., 0] if channels == 1 else img


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `sae train --k-sweep 2,4` run on a .npy file: paths, db, JSON output."""
    root = tmp_path_factory.mktemp("saecli")
    X = _sparse_data(N)
    np.save(root / "x.npy", X)
    db = root / "r.db"
    res = CliRunner().invoke(
        cli,
        [
            "--db",
            str(db),
            "sae",
            "train",
            str(root / "x.npy"),
            "--k-sweep",
            "2,4",
            "--width",
            "48",
            "--steps",
            "150",
            "--batch-size",
            "256",
            "--holdout",
            "0.1",
            "--out",
            str(root / "saes"),
            "--dataset",
            "toy",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    return SimpleNamespace(root=root, X=X, db=db, out=json.loads(res.stdout))


# ---------------------------------------------------------------------------- CLI


def test_train_records_one_sae_per_k_and_saves_what_it_trained(trained):
    with ResultsDB(trained.db) as db:
        recs = sorted(db.query(analysis="sae"), key=lambda r: r.values["k"])
    assert [r.values["k"] for r in recs] == [2, 4] == [v["k"] for v in trained.out]
    for r in recs:
        v = r.values
        assert r.model == "x" and r.layer == "x" and r.dataset == "toy"
        assert (v["architecture"], v["d_in"], v["d_sae"]) == ("topk", D, 48)
        assert (v["n_train"], v["n_eval"]) == (1800, 200)
        assert 0 < v["fvu"] < 1 and v["l0"] <= v["k"]
        assert 0 < len(v["history"]["step"]) <= 200 and v["history"]["step"][-1] == 150
        assert sum(v["density_histogram"]["counts"]) + v["density_histogram"]["n_dead"] == 48
        assert Path(v["path"]).name == f"sae-x-topk-k{v['k']}"
    assert recs[1].values["fvu"] < recs[0].values["fvu"]  # more active latents: less error

    # the saved SAEs are the trained ones: the same training done here gives the same forward
    X = np.load(trained.root / "x.npy", mmap_mode="c")
    from repscope.sae import LayerVectors

    train_v, held_v = LayerVectors(trained.root / "x.npy").split(0.1, seed=0)
    assert held_v.samples().tolist() != list(range(1800, 2000))  # drawn, not the last ones
    ref = sweep(
        X[train_v.samples()],
        [TopKSAE(TopKConfig(d_in=D, d_sae=48, k=k, seed=0)) for k in (2, 4)],
        TrainSettings(n_steps=150, batch_size=256, seed=0),
    )
    held = torch.from_numpy(trained.X[held_v.samples()])
    for r, res in zip(recs, ref):
        loaded = load_sae(r.values["path"])
        with torch.no_grad():
            a, b = loaded(held), res.sae(held)
        assert torch.equal(a.indices.sort(-1).values, b.indices.sort(-1).values)
        torch.testing.assert_close(a.reconstruction, b.reconstruction, atol=1e-4, rtol=1e-4)
        assert evaluate(loaded, held).fvu == pytest.approx(r.values["fvu"], rel=1e-4)


def test_eval_agrees_with_evaluate_and_examples_are_the_top_codes(trained):
    sae_dir = trained.root / "saes" / "sae-x-topk-k4"
    res = CliRunner().invoke(
        cli,
        [
            "--db",
            str(trained.db),
            "sae",
            "eval",
            str(sae_dir),
            str(trained.root / "x.npy"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    v = json.loads(res.stdout)
    sae = load_sae(sae_dir)
    ref = evaluate(sae, trained.X)
    for key in ("fvu", "mse", "l0", "dead_fraction", "shrinkage"):
        assert v[key] == pytest.approx(getattr(ref, key), rel=1e-9), key
    assert v["n_eval"] == N and v["k"] == 4
    with torch.no_grad():
        dense = sae.encode(torch.from_numpy(trained.X)).dense().numpy()
    assert len(v["top_latents"]) == 8
    for t in v["top_latents"]:
        col = dense[:, t["latent"]]
        best = np.argsort(-col, kind="stable")[: len(t["examples"])]
        assert [e["index"] for e in t["examples"]] == best.tolist()
        np.testing.assert_allclose([e["activation"] for e in t["examples"]], col[best], rtol=1e-5)
        assert t["density"] == pytest.approx((col != 0).mean())
    with ResultsDB(trained.db) as db:
        assert db.count(analysis="sae") == 3


@pytest.mark.parametrize("skip_first", [False, True])
def test_token_layer_holds_out_whole_paragraphs_drawn_at_random_with_texts(tmp_path, skip_first):
    from repscope.store import FeatureStore

    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 12, size=60)
    flat = _sparse_data(int(lengths.sum()), seed=3)
    flat[np.concatenate([[0], np.cumsum(lengths)[:-1]])] *= 100  # an "attention sink" token
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    samples = [flat[offsets[i] : offsets[i + 1]] for i in range(60)]
    texts = [f"paragraph {i}: " + ("<b>bold</b> " if i % 2 else "plain ") * 3 for i in range(60)]
    store = FeatureStore.create(tmp_path / "store", model_id="toy-lm")
    store.append({"tok": samples}, metadata={"text": texts, "id": [f"p{i}" for i in range(60)]})
    argv = [
        "--db",
        str(tmp_path / "r.db"),
        "sae",
        "train",
        str(tmp_path / "store"),
        "--layer",
        "tok",
        "--k",
        "2",
        "--width",
        "32",
        "--steps",
        "40",
        "--batch-size",
        "64",
        "--holdout",
        "0.2",
        "--out",
        str(tmp_path / "sae"),
        "--json",
    ]
    res = CliRunner().invoke(cli, argv + (["--skip-first"] if skip_first else []))
    assert res.exit_code == 0, res.output
    (v,) = json.loads(res.stdout)
    drop = int(skip_first)
    assert (v["n_train_samples"], v["n_eval_samples"]) == (48, 12)
    # ids without ":": each paragraph is its own document, 12 drawn at random
    split = v["split"]
    held = sorted(int(d[1:]) for d in split["held_out_documents"])
    assert split["by"] == "document" and split["n_held_out_documents"] == 12
    assert held != list(range(48, 60))
    train = sorted(set(range(60)) - set(held))
    assert v["n_eval"] == int((lengths[held] - drop).sum())
    assert v["n_train"] == int((lengths[train] - drop).sum())
    sae = load_sae(tmp_path / "sae")
    examples = [e for t in v["top_latents"] for e in t["examples"]]
    assert examples
    for t in v["top_latents"]:
        for e in t["examples"]:
            i, pos = e["index"], e["position"]
            assert i in held and drop <= pos < lengths[i]  # held-out paragraphs only
            assert e["text"] == texts[i]
            with torch.no_grad():
                code = sae.encode(torch.from_numpy(samples[i][pos : pos + 1])).dense()[0]
            assert e["activation"] == pytest.approx(float(code[t["latent"]]), rel=1e-5)
    # the evaluation covers exactly the held-out tokens (without the first ones if skipped)
    held_vectors = np.concatenate([samples[i][drop:] for i in held])
    assert v["fvu"] == pytest.approx(evaluate(sae, held_vectors).fvu, rel=1e-6)


def test_eval_with_a_language_model_records_the_loss_recovered(trained, tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from _tiny_lm import install_tiny_lm
    from repscope.sae.evaluation._fidelity import spliced_lm_loss

    texts = [f"some text number {i} about things" for i in range(12)]
    lm = install_tiny_lm(monkeypatch, D, texts, embedding_seed=0)
    save_file({"block": trained.X[:300]}, str(tmp_path / "f.safetensors"))
    sae_dir = trained.root / "saes" / "sae-x-topk-k4"
    res = CliRunner().invoke(
        cli,
        [
            "--db",
            str(tmp_path / "r.db"),
            "sae",
            "eval",
            str(sae_dir),
            str(tmp_path / "f.safetensors"),
            "--layer",
            "block",
            "--model",
            "tiny",
            "--n-texts",
            "10",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["loss_recovered"]
    ref = spliced_lm_loss(lm, load_sae(sae_dir), "block", texts[:10])
    for key in ("clean", "spliced", "zero_ablated", "fraction_recovered"):
        assert got[key] == pytest.approx(getattr(ref, key), rel=1e-9), key
    with ResultsDB(tmp_path / "r.db") as db:
        (rec,) = db.query(analysis="sae")
    assert rec.layer == "block" and rec.values["loss_recovered"]["n_texts"] == 10


def test_list_shows_topk_as_sparse():
    res = CliRunner().invoke(cli, ["sae", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["architecture"]: r for r in json.loads(res.stdout)}
    assert rows["topk"] == {
        "architecture": "topk",
        "family": "topk",
        "sparse_codes": True,
        "config": "TopKConfig",
    }
    assert CliRunner().invoke(cli, ["sae", "list"]).stdout.count("topk") >= 1


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["train", "{root}/missing.npy"], "does not exist"),
        (["train", "{x}", "--k", "64", "--width", "16"], "'k' parameter of TopKConfig"),
        (["train", "{x}", "--width", "16", "--expansion", "2"], "either --width or --expansion"),
        (["train", "{x}", "--arch", "topkk"], "Did you mean 'topk'"),
        (["train", "{x}", "--arch", "relu", "--k", "4"], "has no k"),
        (["train", "{x}", "--k-sweep", "4,x"], "--k-sweep must be comma-separated integers"),
        (["eval", "{root}/nope", "{x}"], "does not exist"),
        (["train", "{x}", "--skip-first"], "is not a token layer"),
    ],
)
def test_bad_input_is_a_one_line_error(trained, tmp_path, args, pattern):
    x = str(trained.root / "x.npy")
    argv = [a.format(root=tmp_path, x=x) for a in args]
    res = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "sae", *argv])
    _one_line_error(res, pattern)


# ---------------------------------------------------------------------------- report


def _record(
    k: int,
    fvu: float,
    *,
    examples: list | None = None,
    loss: dict | None = None,
    model: str = "toy",
    run_id: str | None = None,
) -> Record:
    steps = list(range(10, 510, 10))
    values = {
        "architecture": "topk",
        "d_in": 16,
        "d_sae": 64,
        "k": k,
        "fvu": fvu,
        "mse": 0.5,
        "l0": float(k),
        "dead_fraction": 0.0625,
        "shrinkage": 0.917,
        "n_eval": 200,
        "eval_on": "held-out",
        "explained_variance": 1 - fvu,
        "density_histogram": {
            "edges": list(np.linspace(-3, 0, 51)),
            "counts": [0] * 20 + [3, 5, 7] + [1] * 27,
            "n_dead": 4,
        },
        "history": {
            "step": steps,
            "fvu": list(np.linspace(0.9, fvu, 50)),
            "dead_fraction": list(np.linspace(0, 0.1, 50)),
        },
        "top_latents": examples or [],
    }
    if loss is not None:
        values["loss_recovered"] = loss
    return Record("sae", values, model=model, dataset="d", layer="blocks.3", run_id=run_id)


def test_report_section_renders_table_curves_frontier_histogram_and_examples(tmp_path):
    from repscope.report import render_report

    img = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).astype(np.uint8)
    examples = [
        {
            "latent": 7,
            "density": 0.0123,
            "max": 3.5,
            "examples": [
                {
                    "index": 4,
                    "activation": 3.5,
                    "text": HOSTILE + " and more text " * 30,
                    "position": 2,
                },
                {"index": 9, "activation": 1.25, "id": "sample-9"},
            ],
        },
        {
            "latent": 11,
            "density": 0.25,
            "max": 2.0,
            "examples": [
                {"index": 1, "activation": 2.0, "image_png": png_base64(img)},
                {"index": 2, "activation": 1.0, "image_png": '" onerror="alert(1)'},
            ],
        },
    ]
    loss = {"clean": 3.25, "spliced": 3.5, "zero_ablated": 5.25, "fraction_recovered": 0.875}
    db = tmp_path / "r.db"
    with ResultsDB(db) as rdb:
        rdb.add_many([_record(4, 0.3141), _record(8, 0.1875, examples=examples, loss=loss)])
    html = render_report(db, tmp_path / "report.html").read_text()
    sec = html[html.index('id="sec-sae"') :]
    sec = sec[: sec.index("</section>")]
    assert "Sparse autoencoders" in html
    for text in (
        "0.314",
        "0.188",
        "0.917",
        "0.0625",
        "0.875",
        "3.25",
        "5.25",
        "topk k=4 width 64",
        "topk k=8 width 64",
        "LM loss recovered",
    ):
        assert text in sec, text
    for title in (
        "Training FVU",
        "Latents dead in training",  # an old record's history "dead_fraction"
        "Sparsity–reconstruction frontier",
        "Firing density of the latents",
    ):
        assert title in sec, title
    assert sec.count("<svg") == 4
    assert "4 latents not firing on the evaluation set (a share of 0.0625 of 64)" in sec
    assert "latent 7" in sec and "latent 11" in sec and "sample-9" in sec and "pos 2" in sec
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in sec
    assert f'<img src="data:image/png;base64,{png_base64(img)}"' in sec
    assert sec.count("<img") == 1  # the non-base64 "image" is dropped, not embedded
    assert "onerror" not in sec


def test_report_frontier_has_one_point_per_record_and_skips_single_saes():
    from repscope.report import render_html

    recs = [_record(k, f, run_id="r1") for k, f in ((16, 0.1), (4, 0.4), (8, 0.2))]
    html = render_html(recs)
    frontier = html[html.index("Sparsity–reconstruction frontier") :]
    frontier = frontier[: frontier.index("</svg>")]
    assert frontier.count("<circle") == 3
    assert "Sparsity–reconstruction frontier" not in render_html([_record(4, 0.4)])


# ---------------------------------------------------------------------------- library pieces


@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3), (3, 2, 4), (1, 1)])
def test_png_round_trip(shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(encode_png(img)), img)


def test_png_rejects_non_uint8_and_bad_shapes():
    from repscope.exceptions import RepscopeTypeError, RepscopeValueError

    with pytest.raises(RepscopeTypeError, match="uint8"):
        encode_png(np.zeros((4, 4)))
    with pytest.raises(RepscopeValueError, match=r"\(h, w\)"):
        encode_png(np.zeros((4, 4, 2), dtype=np.uint8))


def _dense_codes(sae, X: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return sae.encode(X).dense().numpy()


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_top_activations_equals_brute_force_argsort(arch):
    from repscope.sae.archs._base import create_sae
    from repscope.sae.archs.relu import ReLUConfig  # noqa: F401  (registers "relu")

    torch.manual_seed(0)
    params = {"k": 5} if arch == "topk" else {}
    sae = create_sae(arch, d_in=12, d_sae=40, seed=1, **params)
    with torch.no_grad():
        sae.b_enc.add_(torch.linspace(-1.5, 0.3, 40))  # a spread of firing densities
    X = torch.randn(700, 12, generator=torch.Generator().manual_seed(2))
    dense = _dense_codes(sae, X)
    counts = (dense != 0).sum(0)

    res = top_activations(sae, X, latents=[3, 39, 0, 3], top=7, batch_size=37)
    assert res.latents.tolist() == [3, 39, 0] and res.n == 700
    for i, lat in enumerate(res.latents):
        col = dense[:, lat]
        fired = int((col != 0).sum())
        best = np.argsort(-col, kind="stable")[: min(7, fired)]
        assert res.n_found[i] == len(best)
        assert res.indices[i, : len(best)].tolist() == best.tolist()
        np.testing.assert_allclose(res.values[i, : len(best)], col[best], rtol=1e-6)
        assert (res.indices[i, len(best) :] == -1).all()
        assert res.density[i] == pytest.approx(fired / 700)

    auto = top_activations(sae, X, n_latents=5, top=3, batch_size=128, seed=4)
    assert len(set(auto.latents.tolist())) == 5 and (counts[auto.latents] > 0).all()
    np.testing.assert_allclose(auto.density, counts[auto.latents] / 700)
    assert list(auto.density) == sorted(auto.density, reverse=True)  # most frequent first
    alive = np.sort(counts[counts > 0]) / 700
    assert auto.density[-1] <= np.quantile(alive, 0.2) and auto.density[0] >= np.quantile(
        alive, 0.8
    )  # one per density quintile: rare and frequent latents both shown
    again = top_activations(sae, list(X.split(100)), n_latents=5, top=3, seed=4)
    assert again.latents.tolist() == auto.latents.tolist()
    np.testing.assert_array_equal(again.indices, auto.indices)


# ---------------------------------------------------------------------------- demo step


def test_demo_step_records_one_sae_per_k_with_image_examples(tmp_path):
    from repscope.sae._demo import demo_sae_step
    from repscope.store import FeatureStore

    X = _sparse_data(100, d=24, n_atoms=40, seed=5)
    images = np.random.default_rng(5).integers(0, 256, size=(100, 6, 6), dtype=np.uint8)
    store = FeatureStore.create(tmp_path / "s", model_id="stand-in")
    store.append({"_blocks.12": X, "_bn1": X[:, :3]})
    layers = ["_bn0", "_blocks.2", "_blocks.12", "_bn1"]
    logs: list[str] = []
    with ResultsDB(tmp_path / "r.db") as db:
        run = db.start_run("demo", {}, model="m", dataset="mnist")
        from repscope._testing import demo_context

        ctx = demo_context(db, run, stores={"efficientnet-lite0": store},
                           layers={"efficientnet-lite0": layers}, inputs=images,
                           dataset="mnist", seed=0, log=logs.append)
        db.add_many(demo_sae_step(ctx))
        recs = sorted(db.query(analysis="sae"), key=lambda r: r.values["k"])
        assert demo_sae_step(demo_context(db, run, inputs=images, log=logs.append)) == []
        assert db.count(analysis="sae") == 3
    assert [r.values["k"] for r in recs] == [4, 8, 16]
    assert all(r.layer == "_blocks.12" and r.run_id == run for r in recs)
    assert all(0 < r.values["fvu"] < 1 and r.values["d_sae"] == 96 for r in recs)
    assert all(r.values["n_eval"] == 20 and r.values["n_train"] == 80 for r in recs)
    assert recs[2].values["fvu"] < recs[0].values["fvu"]
    assert not recs[0].values["top_latents"] and not recs[2].values["top_latents"]
    shown = recs[1].values["top_latents"]
    assert shown
    for t in shown:
        for e in t["examples"]:
            png = base64.b64decode(e["image_png"])
            np.testing.assert_array_equal(_decode_png(png), images[e["index"]])
    assert any("skipped" in m for m in logs)
