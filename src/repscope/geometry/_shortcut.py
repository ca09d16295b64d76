"""Shortcut diagnostics (Hermann, Mobahi, Fel & Mozer, ICLR 2024): a generator with controlled
predictivity and availability, and the availability probe for frozen features.

**Generator** (reconstructed; the paper's exact embedding was not available). A binary label
``y`` in {0, 1} and two latent features, shortcut ``z_s`` and core ``z_c``, each class-conditional
Gaussian ``z_i | y ~ N((2y - 1) mu_i, 1)``. *Predictivity* ``rho_i`` is the accuracy of the best
classifier that sees ``z_i`` alone, so ``mu_i = Phi^{-1}(rho_i)``. *Availability* is set by
*amplification* ``alpha_i`` (the feature's scale in input space) and *nesting* ``eta_i`` (the
number of fixed random ``tanh`` layers the feature passes through before it reaches the input).
Input: ``x = alpha_s e_s(z_s) + alpha_c e_c(z_c)`` in ``R^D``, where ``e_i(z) = z u_i`` for
``eta_i = 0`` (``u_s``, ``u_c`` orthonormal) and ``e_i(z) = tanh(W_eta ... tanh(W_1 z u_i))``
otherwise, rescaled to unit root-mean-square norm over the latent distribution.

**Availability probe.** For frozen features and two candidate attributes ``a`` (core) and ``b``
(shortcut): fit a probe of the label on the rows where ``a`` and ``b`` agree (both predict it
perfectly there), then predict on the conflict rows (``a != b``): the share of predictions that
follow ``b`` is how much the more *available* attribute drives the probe's decisions, next to
how *decodable* each attribute is on its own.

**Not shipped: a shortcut-bias metric.** The paper measures the model's reliance on ``z_s``
minus that of the Bayes-optimal (LDA) classifier from the decision surface over the latent
plane. Our reconstruction (reliance = |correlation| of the predicted class with each latent
over a grid of the plane, shared between the two) did not reproduce the paper's claim: on this
generator (predictivity (0.7, 0.9), amplification (10, 1) or (5, 1), D = 50) a one-hidden-layer
ReLU MLP (128 or 256 units, scikit-learn, 100 to 2000 training samples, converged or
interpolating) was no more biased than logistic regression: bias 0.04-0.08 for both with
n = 2000, and -0.08 to +0.02 (spread 0.06-0.15 over seeds) with n = 100-300. The recipe's
earlier naive proxy failed the same way. So no metric claims to measure it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from repscope.exceptions import RepscopeValueError
from repscope.geometry._pairwise import features64
from repscope.results import RecordedResult

__all__ = ["AvailabilityResult", "ShortcutTask", "availability_probe"]


def _check_pair(value: Any, name: str, *, low: float, high: float | None = None,
                kind: type = float) -> tuple[Any, Any]:
    try:
        s, c = value
    except (TypeError, ValueError):
        raise RepscopeValueError(
            f"The {name!r} parameter of ShortcutTask must be a pair (shortcut, core). Got "
            f"{value!r} instead.") from None
    for v in (s, c):
        bad = isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
        if bad or (kind is int and int(v) != v) or v < low or (high is not None and v >= high):
            rng = f"[{low}, {high})" if high is not None else f">= {low}"
            raise RepscopeValueError(
                f"The {name!r} parameter of ShortcutTask must hold two numbers in {rng}. Got "
                f"{value!r} instead.")
    return kind(s), kind(c)


@dataclass(frozen=True)
class ShortcutTask:
    """A two-feature classification task with controlled predictivity and availability.

    Parameters
    ----------
    predictivity : (float, float), default=(0.7, 0.9)
        ``(rho_s, rho_c)``, each in [0.5, 1): accuracy of the best classifier on that latent
        alone.
    amplification : (float, float), default=(1, 1)
        ``(alpha_s, alpha_c)`` > 0: scale of each feature in input space.
    nesting : (int, int), default=(0, 0)
        ``(eta_s, eta_c)``: fixed random ``tanh`` layers each feature passes through.
    n_features : int, default=50
        Input dimension ``D`` (>= 2).
    seed : int, default=0
        Seeds the embedding (directions and random layers), not the samples.
    """

    predictivity: tuple[float, float] = (0.7, 0.9)
    amplification: tuple[float, float] = (1.0, 1.0)
    nesting: tuple[int, int] = (0, 0)
    n_features: int = 50
    seed: int = 0
    _params: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from scipy.stats import norm

        rho = _check_pair(self.predictivity, "predictivity", low=0.5, high=1.0)
        amp = _check_pair(self.amplification, "amplification", low=0.0)
        if min(amp) <= 0:
            raise RepscopeValueError(
                f"The 'amplification' parameter of ShortcutTask must hold two numbers > 0. Got "
                f"{self.amplification!r} instead.")
        eta = _check_pair(self.nesting, "nesting", low=0, kind=int)
        if isinstance(self.n_features, bool) or not isinstance(self.n_features, int) \
                or self.n_features < 2:
            raise RepscopeValueError(
                f"The 'n_features' parameter of ShortcutTask must be an int >= 2. Got "
                f"{self.n_features!r} instead.")
        rng = np.random.default_rng(self.seed)
        D = self.n_features
        U = np.linalg.qr(rng.standard_normal((D, 2)))[0].T
        layers = [[rng.standard_normal((D, D)) / np.sqrt(D) * 2.0 for _ in range(e)] for e in eta]
        params = {"mu": np.array([norm.ppf(rho[0]), norm.ppf(rho[1])]), "alpha": np.array(amp),
                  "U": U, "layers": layers, "scale": np.ones(2)}
        object.__setattr__(self, "_params", params)
        # unit root-mean-square norm of each embedded feature over the latent distribution
        z = self._latents(np.random.default_rng(self.seed + 1), 4096)[1]
        scale = np.array([np.sqrt(np.mean(np.sum(self._embed_one(z[:, i], i) ** 2, axis=1)))
                          for i in range(2)])
        params["scale"] = np.where(scale > 0, scale, 1.0)

    @property
    def means(self) -> np.ndarray:
        """``(mu_s, mu_c)``: class-conditional means of the latents (``+-mu_i``)."""
        return np.array(self._params["mu"])

    def _embed_one(self, z: np.ndarray, i: int) -> np.ndarray:
        h = z[:, None] * self._params["U"][i][None, :]
        for W in self._params["layers"][i]:
            h = np.tanh(h @ W.T)
        return h

    def embed(self, z: Any) -> np.ndarray:
        """Inputs ``x`` (n, D) of latent points ``z`` (n, 2) with columns ``(z_s, z_c)``."""
        Z = np.asarray(z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != 2:
            raise RepscopeValueError(f"z must have shape (n, 2) (columns z_s, z_c); got "
                                     f"{Z.shape}.")
        p = self._params
        return sum(p["alpha"][i] / p["scale"][i] * self._embed_one(Z[:, i], i) for i in range(2))

    def _latents(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        z = (2 * y - 1)[:, None] * self._params["mu"][None, :] + rng.standard_normal((n, 2))
        return y, z

    def sample(self, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, y, z)``: ``n`` inputs (n, D), labels (n,) and latents (n, 2)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise RepscopeValueError(f"The 'n' parameter of ShortcutTask.sample must be an int "
                                     f">= 1. Got {n!r} instead.")
        y, z = self._latents(np.random.default_rng(seed), n)
        return self.embed(z), y, z

    def bayes_predict(self, z: Any) -> np.ndarray:
        """The Bayes-optimal (LDA) class of latent points: ``1[mu . z > 0]``."""
        return (np.asarray(z, dtype=np.float64) @ self._params["mu"] > 0).astype(np.int64)


@dataclass(frozen=True)
class AvailabilityResult(RecordedResult):
    """Which of two attributes a probe follows when they disagree.

    Attributes
    ----------
    attributes : (str, str)
        ``(core, shortcut)`` names.
    shortcut_share : float
        Share of conflict rows predicted as the shortcut attribute says (0.5 = no preference,
        1 = decided by the shortcut alone).
    core_share : float
        Share predicted as the core attribute says.
    decodability : (float, float)
        Cross-validated probe accuracy of each attribute on all rows.
    chance : (float, float)
    n_agree, n_conflict : int
    probe : str
    """

    analysis: ClassVar[str] = "geometry_availability"

    attributes: tuple[str, str]
    shortcut_share: float
    core_share: float
    decodability: tuple[float, float]
    chance: tuple[float, float]
    n_agree: int
    n_conflict: int
    probe: str

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``geometry_availability`` record."""
        return [("", {
            "core": self.attributes[0], "shortcut": self.attributes[1],
            "shortcut_share": self.shortcut_share, "core_share": self.core_share,
            "core_accuracy": self.decodability[0], "shortcut_accuracy": self.decodability[1],
            "core_chance": self.chance[0], "shortcut_chance": self.chance[1],
            "n_agree": self.n_agree, "n_conflict": self.n_conflict})]


def availability_probe(
    X: Any,
    core: Any,
    shortcut: Any,
    *,
    names: tuple[str, str] = ("core", "shortcut"),
    probe: Any = None,
    protocol: Any = None,
) -> AvailabilityResult:
    """The availability probe on frozen features.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    core, shortcut : array-like of shape (n_samples,)
        Two attributes over the same label set (e.g. digit parity and background colour, both
        coded 0/1).
    names : (str, str), default=("core", "shortcut")
    probe : estimator or callable, optional
        Default closed-form ridge (:func:`repscope.probe._layerwise.default_probe`).
    protocol : optional
        Protocol of the decodability scores (default ``KFold(5)``).

    Returns
    -------
    AvailabilityResult

    Raises
    ------
    RepscopeValueError
        No agreeing rows with two labels, or no conflict rows.
    """
    from repscope.probe._layerwise import _probe_name, default_probe
    from repscope.probe._protocols import DEFAULT_PROTOCOL, evaluate, make_estimator

    F = features64(X, caller="availability_probe")
    a, b = np.asarray(core), np.asarray(shortcut)
    n = F.shape[0]
    if a.shape != (n,) or b.shape != (n,):
        raise RepscopeValueError(
            f"core and shortcut must each have one label per sample ({n}); got shapes "
            f"{a.shape} and {b.shape}.")
    agree = a == b
    if len(np.unique(a[agree])) < 2:
        raise RepscopeValueError(
            "availability_probe needs rows where core and shortcut agree on at least two "
            f"different labels; got {int(agree.sum())} agreeing rows.")
    if agree.all():
        raise RepscopeValueError(
            "availability_probe needs conflict rows (core != shortcut); the two attributes "
            "agree on every sample.")
    factory = probe if probe is not None else default_probe()
    est = make_estimator(factory)
    est.fit(F[agree], a[agree])
    pred = np.asarray(est.predict(F[~agree]))
    proto = protocol if protocol is not None else DEFAULT_PROTOCOL
    ra, _ = evaluate(factory, F, a, proto)
    rb, _ = evaluate(factory, F, b, proto)
    return AvailabilityResult(
        attributes=(str(names[0]), str(names[1])),
        shortcut_share=float(np.mean(pred == b[~agree])),
        core_share=float(np.mean(pred == a[~agree])),
        decodability=(float(ra.accuracy), float(rb.accuracy)),
        chance=(float(ra.chance), float(rb.chance)), n_agree=int(agree.sum()),
        n_conflict=int((~agree).sum()), probe=_probe_name(factory))
