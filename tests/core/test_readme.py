"""The README's Python example runs as written and prints what it claims."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(tmp_path):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "README has no python example"
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert abs(float(out.stdout.split()[-1]) - 1.0) < 1e-9


def test_readme_sae_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README has no SAE example"
    script = tmp_path / "sae_example.py"
    script.write_text(blocks[1])
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    fvu, mcc = float(lines[0]), float(lines[1])
    assert fvu < 0.2 and mcc > 0.8, out.stdout
    assert float(lines[-1]) == 1.0  # the saved and reloaded SAE evaluates identically


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text


def test_readme_python_example_runs_twice(tmp_path):
    """Run again in the same folder, the example finds its store complete and adds nothing
    (it failed: FeatureStore.create refused the store the first run made)."""
    from repscope.store import FeatureStore

    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "README has no python example"
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    for _ in range(2):
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert abs(float(out.stdout.split()[-1]) - 1.0) < 1e-9
    store = FeatureStore.open(tmp_path / "feats")
    assert store.n_samples == 10_000 and store.n_chunks == 2  # nothing written twice
