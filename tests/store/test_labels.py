"""load_labels: a file, a metadata column, and the refusal to guess when a name is both."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import DataNotFoundError, RepscopeValueError, UnknownNameError
from repscope.store import FeatureStore, load_labels


@pytest.fixture
def store(tmp_path):
    s = FeatureStore.create(tmp_path / "s", "m")
    s.append({"layer": np.zeros((4, 2), np.float32)}, {"label": [0, 1, 0, 1], "kind": list("abab")})
    return s


def test_a_name_that_is_both_a_file_and_a_column_is_refused(tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "label").write_text("1\n1\n1\n1\n")
    with pytest.raises(RepscopeValueError, match=r"'label'.*both.*'\./label'.*'column:label'") as e:
        load_labels("label", store=store, n_samples=4)
    assert "\n" not in str(e.value)
    np.testing.assert_array_equal(load_labels("./label", store=store), ["1"] * 4)
    np.testing.assert_array_equal(load_labels(tmp_path / "label", store=store), ["1"] * 4)
    np.testing.assert_array_equal(load_labels("column:label", store=store), [0, 1, 0, 1])


def test_plain_names_still_resolve_when_unambiguous(tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(load_labels("kind", store=store), list("abab"))
    np.save(tmp_path / "y.npy", np.array([3, 2, 1, 0]))
    np.testing.assert_array_equal(load_labels("y.npy", store=store, n_samples=4), [3, 2, 1, 0])
    np.testing.assert_array_equal(load_labels("y.npy"), [3, 2, 1, 0])


def test_column_syntax_errors_are_one_line(tmp_path, store):
    with pytest.raises(UnknownNameError, match="no metadata column 'labl'.*Did you mean 'label'"):
        load_labels("column:labl", store=store)
    with pytest.raises(RepscopeValueError, match="'column:label' names a metadata column"):
        load_labels("column:label")
    with pytest.raises(DataNotFoundError, match="no labels at"):
        load_labels(f"{tmp_path}/nope.npy", store=store)
