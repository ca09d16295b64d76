"""Measure aliases resolve in the registry: the common names of the literature (cka, kernel
cka, ...) and spelling variants (case, - vs _) find the registered measure, which is what every
caller records; an unknown name still gets the closest suggestion."""

from __future__ import annotations

import pytest

from repscope.exceptions import RepscopeValueError, UnknownNameError
from repscope.registry import Registry
from repscope.similarity import StreamingSimilarity, compare, get_measure, linear_cka, list_measures
from repscope.similarity._registry import MEASURE_ALIASES, measure_aliases, resolve_measure


@pytest.mark.parametrize(("alias", "name"), [
    ("cka", "linear_cka"), ("CKA", "linear_cka"), ("linear-cka", "linear_cka"),
    ("Linear CKA", "linear_cka"), ("rbf-cka", "rbf_cka"), ("kernel cka", "rbf_cka"),
    ("debiased-cka", "linear_cka_debiased"), ("cca", "cca"), ("mean-cca", "cca"),
    ("procrustes", "procrustes"), ("rsa", "rsa"), ("SVCCA", "svcca"),
])
def test_aliases_and_spellings_resolve_to_the_registered_measure(alias, name) -> None:
    assert resolve_measure(alias) == name
    assert get_measure(alias) is get_measure(name)


def test_every_alias_names_a_registered_measure_and_is_not_listed_as_one() -> None:
    names = set(list_measures())
    assert set(MEASURE_ALIASES.values()) <= names
    assert measure_aliases() == dict(sorted(MEASURE_ALIASES.items()))
    assert not set(MEASURE_ALIASES) & names


def test_results_record_the_registered_name(rng) -> None:
    X = rng.standard_normal((60, 5))
    Y = X @ rng.standard_normal((5, 4))
    s = compare(X, Y, "cka")
    assert s.measure == "linear_cka"
    assert s.value == pytest.approx(linear_cka(X, Y))
    acc = StreamingSimilarity("CKA").update(X, Y)
    assert acc.measure == "linear_cka"
    assert acc.compute() == pytest.approx(linear_cka(X, Y))


def test_unknown_name_still_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown measure 'ckaa'\. Did you mean "
                                                r"'linear_cka'\?") as err:
        get_measure("ckaa")
    assert "linear_cka" in err.value.known and "cka" not in err.value.known
    with pytest.raises(UnknownNameError, match=r"Did you mean 'procrustes'\?"):
        resolve_measure("procrustez")


def test_registry_alias_rules() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("one", 1)
    reg.add("two", 2)
    reg.alias("uno", "one")
    reg.alias("uno", "one")  # the same alias again is harmless
    assert reg.get("uno") == 1 and reg.canonical("uno") == "one"
    assert reg.names() == ["one", "two"] and "uno" not in reg
    with pytest.raises(RepscopeValueError, match="already a name of 'one'"):
        reg.alias("uno", "two")
    with pytest.raises(RepscopeValueError, match="already"):
        reg.alias("two", "one")
    with pytest.raises(UnknownNameError):
        reg.alias("tres", "three")
    with pytest.raises(UnknownNameError):
        reg.get("ONE")  # no folding unless asked for
    folded: Registry[int] = Registry("thing", fold=str.lower)
    folded.add("one", 1)
    assert folded.get("ONE") == 1
