"""The capability contract: a throwaway package plugs in a command, a report section, a demo
step and a probe kind without editing any central file; names and orders never collide; the
lazy package namespaces export what they declare; the CLI lists commands without importing
torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from repscope import capability as cap_mod
from repscope.capability import Capability, DemoContext, DemoStep, Section, capabilities

PLUGIN = '''
import click
from repscope.capability import Capability, DemoStep, Kind, Section

@click.command(name="hello-cap")
def hello():
    """Say hello from a throwaway capability."""
    click.echo("hello from mycap")

def render(records):
    return "<p>mycap says " + ", ".join(str(r.values["answer"]) for r in records) + "</p>"

def demo_step(ctx):
    from repscope.db import Record
    ctx.log("[demo] mycap ran")
    return [Record("mycap_answer", {"answer": 42 + ctx.seed}, model="m",
                   **ctx.record_context())]

def make_probe(*, seed=0, k=10, small=False):
    from repscope.probe import RidgeProbe
    return RidgeProbe(random_state=seed)

CAPABILITY = Capability(
    name="mycap",
    summary="a throwaway capability",
    commands=("mycap_pkg.plugin:hello",),
    sections=(Section("mycap_answer", "My capability's answer", order=777,
                      render="mycap_pkg.plugin:render"),),
    demo=(DemoStep("mycap", order=999, run="mycap_pkg.plugin:demo_step",
                   summary="the throwaway step"),),
    kinds={"probe": {"myridge": Kind("mycap_pkg.plugin:make_probe", "a ridge by another name")}},
)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package on sys.path with a .dist-info entry point in group repscope.capabilities."""
    pkg = tmp_path / "mycap_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "mycap_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mycap-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[repscope.capabilities]\nmycap = mycap_pkg.plugin:CAPABILITY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    capabilities(reload=True)
    yield tmp_path
    monkeypatch.undo()
    sys.modules.pop("mycap_pkg.plugin", None)
    sys.modules.pop("mycap_pkg", None)
    capabilities(reload=True)


def test_throwaway_capability_plugs_in_everywhere(plugin, tmp_path):
    from repscope.cli import cli
    from repscope.db import ResultsDB
    from repscope.report import render_report

    assert "mycap" in capabilities()
    runner = CliRunner()
    res = runner.invoke(cli, ["--help"])
    assert res.exit_code == 0 and "hello-cap" in res.output
    res = runner.invoke(cli, ["hello-cap"])
    assert res.exit_code == 0 and "hello from mycap" in res.output
    # the probe command offers the new kind, in its choices and its help
    res = runner.invoke(cli, ["probe", "--help"])
    assert "myridge" in res.output
    from repscope.probe._kinds import make_probe

    assert type(make_probe("myridge", seed=3)).__name__ == "RidgeProbe"

    # the demo runs the step (in its declared order) and the report shows its section
    logs: list[str] = []
    with ResultsDB(tmp_path / "r.db") as db:
        run = db.start_run("demo", {})
        ctx = DemoContext(stores={}, layers={}, labels=np.zeros(3), label_names=[], inputs=None,
                          ids=[], dataset="d", db=db, run_id=run, seed=1, log=logs.append,
                          out=tmp_path)
        steps = [s for s in cap_mod.demo_steps() if s.name == "mycap"]
        timings = cap_mod.run_demo_steps(ctx, steps)
        assert list(timings) == ["mycap"] and "[demo] mycap ran" in logs
        html = render_report(db, tmp_path / "r.html", run_id=run).read_text()
    assert "My capability&#x27;s answer" in html or "My capability's answer" in html
    assert "mycap says 43" in html


def test_no_central_file_names_a_capability():
    """The CLI root, the report renderer and the demo find capabilities; they list none."""
    src = Path(cap_mod.__file__).parent
    names = ["probe", "similarity", "align", "sae"]
    for central in ("cli/__init__.py", "report/_render.py", "demo.py"):
        text = (src / central).read_text()
        for name in names:
            assert f"repscope.{name}" not in text, (central, name)


def test_section_and_step_names_and_orders_are_unique():
    caps = capabilities(reload=True)
    sections = [s for c in caps.values() for s in c.sections]
    assert len({s.analysis for s in sections}) == len(sections)
    assert len({s.order for s in sections}) == len(sections)
    steps = [d for c in caps.values() for d in c.demo]
    assert len({d.name for d in steps}) == len(steps)
    assert len({d.order for d in steps}) == len(steps)
    # every declared reference resolves
    for s in sections:
        assert callable(s.renderer())
    for d in steps:
        assert callable(cap_mod.resolve(d.run))


def test_duplicate_section_order_is_refused():
    a = Capability("a", sections=(Section("x", "X", order=5, render="m:f"),))
    b = Capability("b", sections=(Section("y", "Y", order=5, render="m:g"),))
    with pytest.raises(ValueError, match="report section order 5 is declared by two"):
        cap_mod._check_unique([a, b])
    c = Capability("c", sections=(Section("x", "X again", order=6, render="m:h"),))
    with pytest.raises(ValueError, match="analysis 'x' is declared by two"):
        cap_mod._check_unique([a, c])
    d = Capability("d", demo=(DemoStep("s", order=1, run="m:f", summary=""),))
    e = Capability("e", demo=(DemoStep("s", order=2, run="m:g", summary=""),))
    with pytest.raises(ValueError, match="demo step 's'"):
        cap_mod._check_unique([d, e])


def test_optional_step_with_missing_data_is_skipped_with_one_line(tmp_path, monkeypatch):
    from repscope.db import ResultsDB
    from repscope.exceptions import DataNotFoundError

    def missing(ctx):
        raise DataNotFoundError("the Austen novels are not installed")

    monkeypatch.setattr(sys.modules[__name__], "_missing_step", missing, raising=False)
    logs: list[str] = []
    with ResultsDB(tmp_path / "r.db") as db:
        ctx = DemoContext(stores={}, layers={}, labels=np.zeros(1), label_names=[], inputs=None,
                          ids=[], dataset="d", db=db, run_id=db.start_run("demo", {}), seed=0,
                          log=logs.append, out=tmp_path)
        step = DemoStep("texts", order=1, run=f"{__name__}:_missing_step", summary="s",
                        optional=True)
        assert cap_mod.run_demo_steps(ctx, [step]) == {}
        assert logs[-1] == "[demo] skipped texts: the Austen novels are not installed"
        with pytest.raises(DataNotFoundError):
            cap_mod.run_demo_steps(ctx, [DemoStep("t", order=1, run=step.run, summary="s")])


def test_a_step_must_return_records(tmp_path, monkeypatch):
    from repscope.db import ResultsDB

    monkeypatch.setattr(sys.modules[__name__], "_bad_step", lambda ctx: {"a": 1}, raising=False)
    with ResultsDB(tmp_path / "r.db") as db:
        ctx = DemoContext(stores={}, layers={}, labels=np.zeros(1), label_names=[], inputs=None,
                          ids=[], dataset="d", db=db, run_id=db.start_run("demo", {}), seed=0,
                          log=lambda m: None, out=tmp_path)
        with pytest.raises(TypeError, match="must return a list of Record; got dict"):
            cap_mod.run_demo_steps(ctx, [DemoStep("b", order=1, run=f"{__name__}:_bad_step",
                                                  summary="")])


@pytest.mark.parametrize("package", ["repscope.probe", "repscope.align", "repscope.sae"])
def test_lazy_namespaces_export_what_they_declare(package):
    import importlib

    mod = importlib.import_module(package)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
    assert set(mod.__all__) <= set(dir(mod))


def test_cli_help_imports_neither_torch_nor_sklearn():
    code = ("import sys; from repscope.cli import cli; cli.list_commands(None); "
            "[cli.get_command(None, n) for n in cli.list_commands(None)]; "
            "print(sorted(m for m in ('torch', 'sklearn', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_contributing_names_only_paths_and_names_that_exist():
    import importlib
    import re

    root = Path(__file__).resolve().parents[2]
    text = (root / "CONTRIBUTING.md").read_text()
    paths = set(re.findall(r"`((?:src|tests|benchmarks)/[\w/.]+)`", text)) - {
        "src/repscope/<name>/", "tests/<name>/"}
    assert len(paths) >= 10
    for p in paths:
        assert (root / p).exists(), p
    for dotted in re.findall(r"`(repscope(?:\.\w+)+)`", text):
        if dotted == cap_mod.ENTRY_POINT_GROUP:
            continue
        module, _, attr = dotted.rpartition(".")
        try:
            importlib.import_module(dotted)
        except ImportError:
            assert hasattr(importlib.import_module(module), attr), dotted
    steps = text.split("## Adding a capability, end to end")[1].split("## ")[0]
    assert len([ln for ln in steps.splitlines() if re.match(r"\d+\. ", ln)]) <= 15
