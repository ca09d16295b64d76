"""A scikit-learn estimator around any SAE architecture, for pipelines and grid searches."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from repscope._params import ValidatedEstimator
from repscope._validation import check_features
from repscope.sae.archs._base import SparseAutoencoder, create_sae

__all__ = ["SAETransformer"]


class SAETransformer(TransformerMixin, ValidatedEstimator):
    """Train an SAE with ``fit`` and use its codes as features.

    Parameters
    ----------
    architecture : str
        A registered architecture (``repscope.sae.architectures.names()``).
    d_sae : int
        Number of latents.
    k : int or None
        Active latents for the TopK family (ignored by architectures without ``k``).
    sae_params : dict, optional
        Further config fields of the architecture (e.g. ``{"l1_coefficient": 2.0}``).
    n_epochs : float
    batch_size : int
    lr : float or None
        None: the width-scaled default.
    seed : int
        Initialisation and shuffling seed.
    train_params : dict, optional
        Further fields of :class:`repscope.sae.TrainSettings`, and ``callback`` / ``device``
        of :func:`repscope.sae.fit`.

    Attributes
    ----------
    sae_ : SparseAutoencoder
    history_ : dict of str to list of float
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from repscope.sae import SAETransformer
    >>> X = np.random.default_rng(0).standard_normal((512, 8)).astype(np.float32)
    >>> est = SAETransformer("topk", d_sae=32, k=4, n_epochs=2, batch_size=64).fit(X)
    >>> est.transform(X).shape
    (512, 32)
    """

    # the architecture name is checked against the registry by create_sae (it can grow after
    # import); the training settings once more by TrainSettings
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "architecture": [str],
        "d_sae": [Interval(Integral, 1, None, closed="left")],
        "k": [None, Interval(Integral, 1, None, closed="left")],
        "sae_params": [None, Mapping],
        "n_epochs": [Interval(Real, 0, np.inf, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [None, Interval(Real, 0, np.inf, closed="neither")],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "train_params": [None, Mapping],
    }

    def __init__(
        self,
        architecture: str = "topk",
        d_sae: int = 1024,
        k: int | None = 32,
        sae_params: dict[str, Any] | None = None,
        n_epochs: float = 1.0,
        batch_size: int = 1024,
        lr: float | None = None,
        seed: int = 0,
        train_params: dict[str, Any] | None = None,
    ) -> None:
        self.architecture = architecture
        self.d_sae = d_sae
        self.k = k
        self.sae_params = sae_params
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.train_params = train_params

    def fit(self, X: Any, y: Any = None) -> SAETransformer:
        """Train the SAE on ``X`` of shape (n_samples, n_features); ``y`` is ignored.

        Returns
        -------
        self
        """
        from repscope.sae import TrainSettings, architectures, fit

        self._validate_params()
        Xa = np.asarray(check_features(X, name="X"), dtype=np.float32)
        params: dict[str, Any] = {"d_in": Xa.shape[1], "d_sae": self.d_sae, "seed": self.seed}
        fields = architectures.meta(self.architecture)["config"].__dataclass_fields__
        if self.k is not None and "k" in fields:
            params["k"] = min(int(self.k), int(self.d_sae))
        params.update(self.sae_params or {})
        sae = create_sae(self.architecture, **params)
        extra = dict(self.train_params or {})
        run = {k: extra.pop(k) for k in ("callback", "device") if k in extra}
        settings = TrainSettings(
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            **extra,
        )
        res = fit(Xa, sae, settings, **run)
        self.sae_: SparseAutoencoder = res.sae
        self.history_ = res.history
        self.n_features_in_ = Xa.shape[1]
        return self

    def _run(self, X: Any) -> Any:
        check_is_fitted(self, "sae_")
        Xa = np.asarray(check_features(X, name="X"), dtype=np.float32)
        if Xa.shape[1] != self.n_features_in_:
            from repscope.exceptions import RepscopeValueError

            raise RepscopeValueError(
                f"X has {Xa.shape[1]} features, but {type(self).__name__} was fitted on "
                f"{self.n_features_in_}."
            )
        with torch.inference_mode():
            return self.sae_(torch.from_numpy(Xa).to(self.sae_.device))

    def transform(self, X: Any) -> np.ndarray:
        """Dense codes of shape (n, d_sae)."""
        out = self._run(X)
        return np.asarray(out.dense().float().cpu().numpy())

    def inverse_transform(self, codes: Any) -> np.ndarray:
        """Reconstructions (input space) from dense codes of shape (n, d_sae)."""
        check_is_fitted(self, "sae_")
        z = torch.as_tensor(np.asarray(codes, dtype=np.float32)).to(self.sae_.device)
        with torch.inference_mode():
            return np.asarray(self.sae_.decode(z, None).float().cpu().numpy())

    def __sklearn_tags__(self) -> Any:
        # the SAE runs in float32: codes and reconstructions come back float32 whatever X was
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def score(self, X: Any, y: Any = None) -> float:
        """Explained variance ``1 - FVU`` of the reconstruction."""
        out = self._run(X)
        Xa = np.asarray(X, dtype=np.float64)
        rec = out.reconstruction.double().cpu().numpy()
        return float(1.0 - ((Xa - rec) ** 2).sum() / ((Xa - Xa.mean(0)) ** 2).sum())
