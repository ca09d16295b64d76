"""Streamed merges and diagnostics over safetensors files equal the in-memory ones, with
bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.weights._merge import merge_state_dicts
from repscope.weights._state import as_state_dict
from repscope.weights._stream import diagnose_files, merge_files
from repscope.weights._taskvec import diagnose_task_vectors


def _make(tmp_path, n=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    base = {"emb": torch.randn(50, 16, generator=g).to(dtype),
            "fc.weight": torch.randn(16, 16, generator=g).to(dtype),
            "fc.bias": torch.randn(16, generator=g).to(dtype),
            "steps": torch.tensor([5])}
    models = [{k: (v + 0.1 * torch.randn(v.shape, generator=g).to(dtype)
                   if v.is_floating_point() else v) for k, v in base.items()} for _ in range(n)]
    paths = {}
    for name, sd in [("base", base)] + [(f"ft{i}", m) for i, m in enumerate(models)]:
        d = tmp_path / name
        d.mkdir()
        save_file(sd, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps({"name": name}))
        paths[name] = d
    return base, models, paths


@pytest.mark.parametrize(("method", "params", "with_base"), [
    ("linear", {"weights": [0.3, 0.7]}, False),
    ("task_arithmetic", {"lambda": 0.5}, True),
    ("ties", {"density": [0.4, 0.6], "weights": [1.0, 0.5]}, True),
    ("dare_ties", {"density": 0.5, "seed": 7}, True),
    ("slerp", {"t": 0.4}, False),
    ("model_stock", {}, True),
])
def test_streaming_equals_in_memory(tmp_path, method, params, with_base):
    base, models, paths = _make(tmp_path)
    out = merge_files(method, [paths["ft0"], paths["ft1"] / "model.safetensors"],
                      tmp_path / "out", base=paths["base"] if with_base else None,
                      progress=False, **params)
    want = merge_state_dicts(method, models, base=base if with_base else None, progress=False,
                             **params)
    got = as_state_dict(out)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype
        assert torch.equal(got[k], want[k]), k
    record = json.loads((out / "repscope_merge.json").read_text())
    assert record["method"] == method
    config_from = "base" if with_base else "ft0"
    assert json.loads((out / "config.json").read_text()) == {"name": config_from}


def test_sharded_output_with_index_and_bfloat16(tmp_path):
    base, models, paths = _make(tmp_path, dtype=torch.bfloat16)
    out = merge_files("ties", [paths["ft0"], paths["ft1"]], tmp_path / "out",
                      base=paths["base"], density=0.5, max_shard_bytes=1200, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) >= 2 and all((out / f).exists() for f in files)
    assert not (out / "model.safetensors").exists()
    want = merge_state_dicts("ties", models, base=base, density=0.5, progress=False)
    got = as_state_dict(out)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k


def test_streamed_diagnostics_equal_in_memory(tmp_path):
    base, models, paths = _make(tmp_path, n=3)
    got = diagnose_files([paths["ft0"], paths["ft1"], paths["ft2"]], paths["base"],
                         progress=False)
    want = diagnose_task_vectors(models, base, progress=False)
    np.testing.assert_allclose(got.cosines, want.cosines, atol=1e-12)
    np.testing.assert_allclose(got.norms, want.norms, rtol=1e-12)
    assert got.sign_conflict_rate == want.sign_conflict_rate
    assert got.names == ("ft0", "ft1", "ft2")


def test_bad_inputs_named(tmp_path):
    _, models, paths = _make(tmp_path)
    odd = tmp_path / "odd"
    odd.mkdir()
    save_file({**models[1], "extra": torch.zeros(3)}, str(odd / "model.safetensors"))
    with pytest.raises(RepscopeValueError, match="keys"):
        merge_files("linear", [paths["ft0"], odd], tmp_path / "o1", progress=False)
    typed = tmp_path / "typed"
    typed.mkdir()
    save_file({k: (v.double() if k == "fc.bias" else v) for k, v in models[1].items()},
              str(typed / "model.safetensors"))
    with pytest.raises(RepscopeTypeError, match="dtype"):
        merge_files("linear", [paths["ft0"], typed], tmp_path / "o2", progress=False)
    nan = tmp_path / "nan"
    nan.mkdir()
    bad = {k: v.clone() for k, v in models[1].items()}
    bad["fc.weight"][1, 1] = float("inf")
    save_file(bad, str(nan / "model.safetensors"))
    with pytest.raises(RepscopeValueError, match=r"inputs\[1\].*'fc.weight'.*1 inf"):
        merge_files("linear", [paths["ft0"], nan], tmp_path / "o3", progress=False)
    assert not list((tmp_path / "o3").glob("*.partial"))
    with pytest.raises(RepscopeValueError, match="inputs"):
        merge_files("linear", [paths["ft0"], tmp_path / "missing"], tmp_path / "o4",
                    progress=False)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_peak_memory_stays_near_one_tensor_per_input(tmp_path, method):
    """40 tensors x 2 MB per checkpoint, 3 checkpoints (240 MB): the merge's peak RSS growth
    stays well below the checkpoints' size (measured in a fresh process, after a first tiny
    merge has imported everything)."""
    g = torch.Generator().manual_seed(0)
    dirs, tiny = [], []
    for name in ("base", "a", "b"):
        d = tmp_path / f"tiny-{name}"
        d.mkdir()
        save_file({"t": torch.randn(4, 4, generator=g)}, str(d / "model.safetensors"))
        tiny.append(str(d))
        d = tmp_path / name
        d.mkdir()
        save_file({f"t{i}": torch.randn(512, 1024, generator=g) for i in range(40)},
                  str(d / "model.safetensors"))
        dirs.append(str(d))
    script = textwrap.dedent(f"""
        import sys
        from repscope.weights._stream import merge_files
        # a first, tiny merge loads every lazily imported module before the measurement
        merge_files(sys.argv[1], {tiny[1:]!r}, {str(tmp_path / "tiny-out")!r}, base={tiny[0]!r},
                    progress=False)
        def status(field):
            with open("/proc/self/status") as f:
                line = next(ln for ln in f if ln.startswith(field))
            return int(line.split()[1]) * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident size (VmHWM) to the current one
        before = status("VmRSS:")
        merge_files(sys.argv[1], {dirs[1:]!r}, {str(tmp_path / "out")!r}, base={dirs[0]!r},
                    progress=False)
        peak = status("VmHWM:")
        print(peak - before)
    """)
    res = subprocess.run([sys.executable, "-c", script, method], capture_output=True, text=True,
                         timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    growth = int(res.stdout.strip().splitlines()[-1])
    total = 3 * 40 * 2 * 2**20
    # the growth is a few tensors per input (plus allocator slack), not the checkpoints' 240 MB
    assert growth < 0.35 * total, f"peak RSS grew {growth / 2**20:.0f} MiB"
