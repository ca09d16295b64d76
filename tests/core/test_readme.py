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


def test_readme_weights_example_runs(tmp_path):
    """The weight-space example: weight matching removes the barrier between a model and a
    unit-shuffled copy of it, and the linear merge of the two is the model again."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3, "README has no weight-space example"
    script = tmp_path / "weights_example.py"
    script.write_text(blocks[2])
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    naive, aligned = (float(v) for v in re.findall(r"barrier ([0-9.]+) -> ([0-9.]+);", first)[0])
    assert naive > 0.01 and aligned == 0.0, first
    assert float(out.stdout.split()[-1]) == 1.0


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


def _readme_cli_lines() -> list[list[str]]:
    import shlex

    block = re.search(r"## The command line\n\n```bash\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README has no command-line block"
    lines = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "repscope":
            lines.append(words[1:])
    return lines


def test_readme_command_lines_name_real_commands_and_options():
    """Every `repscope ...` line of the README's command-line block names a command that exists
    and only options that command has (a renamed option fails here, not on a reader's screen)."""
    import click

    from repscope.cli import cli

    lines = _readme_cli_lines()
    assert len(lines) >= 10
    for words in lines:
        ctx = click.Context(cli)
        command: click.Command = cli
        rest = list(words)
        while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
            sub = command.get_command(ctx, rest[0])
            assert sub is not None, f"README: no command {rest[0]!r} in {' '.join(words)!r}"
            command, rest = sub, rest[1:]
        assert not isinstance(command, click.Group), f"README: {words!r} names a group"
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for word in rest:
            if word.startswith("-") and not word.lstrip("-").isdigit():
                assert word.split("=")[0] in known, (
                    f"README: {word!r} is not an option of 'repscope {command.name}'")
