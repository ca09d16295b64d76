"""The probe kinds that ``repscope probe --probe`` offers, declared in ``_capability.py``.

Every factory takes the same keywords: ``seed`` (random state), ``k`` (neighbours, for kNN)
and ``small`` (few-shot and small learning-curve fits: no model selection on a holdout of a
handful of rows). Another package adds a probe kind by declaring
``kinds={"probe": {"name": Kind("package.module:factory", "one line")}}`` in its capability.
"""

from __future__ import annotations

from typing import Any

__all__ = ["knn", "lda", "logistic", "make_probe", "nb", "ridge"]


def ridge(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Closed-form ridge on one-hot targets (every alpha from one eigendecomposition, GCV)."""
    from repscope.probe._ridge import RidgeProbe

    return RidgeProbe(random_state=seed)


def lda(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Linear discriminant analysis with OAS shrinkage."""
    from repscope.probe._generative import LDAProbe

    return LDAProbe(shrinkage="oas")


def nb(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Gaussian naive Bayes."""
    from repscope.probe._generative import GaussianNBProbe

    return GaussianNBProbe()


def logistic(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Softmax regression; ``small=True`` fixes ``C=1`` instead of selecting it on a holdout."""
    from repscope.probe._logistic import LinearProbe

    return LinearProbe(C=1.0, random_state=seed) if small else LinearProbe(random_state=seed)


def knn(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """DINO-style weighted kNN with ``k`` neighbours."""
    from repscope.probe._knn import KNNProbe

    return KNNProbe(k=k)


def make_probe(name: str, *, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """A fresh probe of kind ``name`` (any kind declared by a capability).

    Raises
    ------
    UnknownNameError
        ``name`` is not a declared probe kind; the message lists them and the closest.
    """
    from repscope.capability import load_kind

    return load_kind("probe", name)(seed=seed, k=k, small=small)
