"""Interpretability and control metrics for SAEs, anchored on labels or known structure.

- Labelled attributes (Makelov, Lange & Nanda, 2024): :func:`attribute_f1` (the best single
  latent as a detector of each attribute value), the :func:`supervised_mean_dictionary`
  baseline with its R² and edits, :func:`sae_edit` (the SAE counterpart of an attribute edit)
  and :func:`edit_success` (does a probe read the target value after the edit?).
- Continuous concepts (Bhalla et al., 2026): :func:`manifold_capture` (global span capture by a
  few atoms vs local tiling by selective atoms; the dilution index) and :func:`atom_groups`
  (co-activation / decoder-similarity clusters of atoms).
- Paired modalities (Kaushik et al., 2026): :func:`modality_split`.
- Feature geometry vs data statistics (Prieto et al., 2026): :func:`gram_vs_cooccurrence`.

Inputs may be numpy arrays or torch tensors (codes also as an ``SAEOutput``); results are numpy
arrays and Python floats, and edits come back in the backend of the activations given.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from repscope._array import as_float64_numpy, from_numpy_like, is_torch, to_numpy
from repscope._validation import check_features, check_labels, check_positive_int, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result
from repscope.sae.archs._base import SAEOutput, SparseAutoencoder
from repscope.sae.evaluation._ground_truth import _active, _codes_numpy, _matrix, _prf, _unit_rows

__all__ = [
    "AttributeF1",
    "AttributeF1Result",
    "AttributeScores",
    "AttributeScoresResult",
    "MeanDictionary",
    "MeanDictionaryResult",
    "ModalitySplit",
    "ModalitySplitResult",
    "attribute_f1",
    "edit_success",
    "gram_vs_cooccurrence",
    "modality_split",
    "sae_edit",
    "supervised_mean_dictionary",
]

_CHUNK = 8192


def _check_attributes(attributes: Any, n: int, caller: str) -> dict[str, np.ndarray]:
    if not isinstance(attributes, Mapping) or len(attributes) == 0:
        raise RepscopeTypeError(
            f"The 'attributes' parameter of {caller} must be a non-empty mapping from attribute "
            f"name to labels of shape (n,). Got {type(attributes).__name__} instead."
        )
    out: dict[str, np.ndarray] = {}
    for name, labels in attributes.items():
        if not isinstance(name, str):
            raise RepscopeTypeError(
                f"The 'attributes' parameter of {caller} must have string keys (attribute "
                f"names). Got {name!r} instead."
            )
        out[name] = check_labels(labels, n_samples=n, name=f"attributes[{name!r}]")
    return out


# ---------------------------------------------------------------------------- attribute F1


@dataclass(frozen=True)
class AttributeScoresResult(Result):
    """The best single-latent detector of each value of one attribute.

    Attributes
    ----------
    values : ndarray of shape (n_values,)
        The attribute's values (sorted).
    latent : ndarray of int64, shape (n_values,)
        The latent whose firing (code > 0) best detects each value, by F1 (ties: lowest index).
    precision, recall, f1 : ndarray of shape (n_values,)
        That latent's detection scores (scikit-learn's ``zero_division=0``).
    support : ndarray of int64, shape (n_values,)
        Samples holding each value.
    """

    values: np.ndarray
    latent: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


#: The former name of :class:`AttributeScoresResult` (kept for one release).
AttributeScores = AttributeScoresResult


@dataclass(frozen=True)
class AttributeF1Result(Result):
    """Per-attribute best-latent detection scores (:func:`attribute_f1`).

    Attributes
    ----------
    attributes : dict of str to AttributeScoresResult
    """

    attributes: dict[str, AttributeScoresResult]

    def __getitem__(self, name: str) -> AttributeScoresResult:
        return self.attributes[name]

    @property
    def mean_f1(self) -> float:
        """Mean best F1 over every (attribute, value) pair."""
        return float(np.concatenate([s.f1 for s in self.attributes.values()]).mean())


#: The former name of :class:`AttributeF1Result` (kept for one release).
AttributeF1 = AttributeF1Result


def attribute_f1(codes: Any, attributes: Mapping[str, Any]) -> AttributeF1Result:
    r"""For each attribute value, the latent that best detects it, scored by F1.

    A latent *fires* on a sample when its code is > 0. For latent ``j`` and value ``v`` of an
    attribute, with ``TP`` the samples where ``j`` fires and the attribute equals ``v``,

    .. math:: F_1(j, v) = \frac{2\,TP}{\#\{j \text{ fires}\} + \#\{\text{attr} = v\}},

    and the reported latent is :math:`\arg\max_j F_1(j, v)` (Makelov et al.'s interpretability
    score). Counts are one matrix product per attribute, streamed over row chunks.

    Parameters
    ----------
    codes : SAEOutput, array-like or Tensor of shape (n, d_sae)
        Codes (dense) or an SAE output.
    attributes : mapping of str to array-like of shape (n,)
        Attribute labels (integers or strings) per sample.

    Returns
    -------
    AttributeF1Result

    Raises
    ------
    RepscopeValueError
        Labels of the wrong length, non-finite codes.
    """
    fires = _active(codes, "codes")
    n = fires.shape[0]
    attrs = _check_attributes(attributes, n, "attribute_f1")
    n_fire = fires.sum(0).astype(np.float64)
    out: dict[str, AttributeScoresResult] = {}
    for name, labels in attrs.items():
        values, inv = np.unique(labels, return_inverse=True)
        onehot = np.zeros((n, values.shape[0]))
        onehot[np.arange(n), inv] = 1.0
        tp = np.zeros((fires.shape[1], values.shape[0]))
        for i in range(0, n, _CHUNK):
            tp += fires[i : i + _CHUNK].T.astype(np.float64) @ onehot[i : i + _CHUNK]
        support = onehot.sum(0)
        p, r, f = _prf(tp, n_fire[:, None], support[None, :])
        best = f.argmax(0)
        cols = np.arange(values.shape[0])
        out[name] = AttributeScoresResult(
            values=values,
            latent=best.astype(np.int64),
            precision=p[best, cols],
            recall=r[best, cols],
            f1=f[best, cols],
            support=support.astype(np.int64),
        )
    return AttributeF1Result(out)


# ---------------------------------------------------------------------------- mean dictionary


@dataclass(frozen=True)
class MeanDictionaryResult(Result):
    r"""Supervised mean dictionary :math:`u_{i,v} = E[a \mid \text{attr}_i = v] - E[a]`.

    Attributes
    ----------
    mean : ndarray of shape (d,)
        :math:`E[a]` over the fitting activations.
    values : dict of str to ndarray of shape (n_values_i,)
        Each attribute's values (sorted), indexing the rows of ``directions``.
    directions : dict of str to ndarray of shape (n_values_i, d)
        :math:`u_{i,v}` for every value ``v`` of attribute ``i``.
    """

    mean: np.ndarray
    values: dict[str, np.ndarray]
    directions: dict[str, np.ndarray]

    def _index(self, attribute: str, labels: np.ndarray, caller: str) -> np.ndarray:
        if attribute not in self.values:
            raise RepscopeValueError(
                f"The 'attribute' parameter of {caller} must be one of "
                f"{sorted(self.values)}. Got {attribute!r} instead."
            )
        vals = self.values[attribute]
        pos = np.searchsorted(vals, labels)
        pos = np.clip(pos, 0, vals.shape[0] - 1)
        bad = vals[pos] != labels
        if np.any(bad):
            raise RepscopeValueError(
                f"Attribute {attribute!r} has no direction for value "
                f"{np.asarray(labels)[bad].ravel()[:1].tolist()[0]!r} in {caller}; known values "
                f"are {vals.tolist()}."
            )
        return pos

    def direction(self, attribute: str, value: Any) -> np.ndarray:
        """:math:`u_{i,v}`, shape (d,)."""
        idx = self._index(attribute, np.asarray([value]), "MeanDictionaryResult.direction")
        return self.directions[attribute][int(idx[0])]

    def reconstruct(self, attributes: Mapping[str, Any]) -> np.ndarray:
        r""":math:`\hat a = E[a] + \sum_i u_{i, v_i}` for each sample's attribute values.

        Parameters
        ----------
        attributes : mapping of str to array-like of shape (n,)
            Labels of every attribute of the dictionary (extra names are an error).

        Returns
        -------
        ndarray of shape (n, d)
        """
        if not isinstance(attributes, Mapping) or set(attributes) != set(self.values):
            got = sorted(attributes) if isinstance(attributes, Mapping) else type(attributes)
            raise RepscopeValueError(
                "The 'attributes' parameter of MeanDictionaryResult.reconstruct must give labels "
                f"for exactly the attributes {sorted(self.values)}. Got {got} instead."
            )
        first = next(iter(attributes.values()))
        n = int(np.shape(to_numpy(first) if is_torch(first) else np.asarray(first))[0])
        attrs = _check_attributes(attributes, n, "MeanDictionaryResult.reconstruct")
        out = np.broadcast_to(self.mean, (n, self.mean.shape[0])).copy()
        for name, labels in attrs.items():
            out += self.directions[name][self._index(name, labels, "MeanDictionaryResult.reconstruct")]
        return out

    def r2(self, acts: Any, attributes: Mapping[str, Any]) -> float:
        r"""Share of the mean-centred variance of ``acts`` explained by :meth:`reconstruct`.

        .. math:: R^2 = 1 - \frac{\sum_n \lVert a_n - \hat a_n\rVert^2}
            {\sum_n \lVert a_n - \bar a\rVert^2}

        with :math:`\bar a` the mean of ``acts`` (so held-out data can be scored).

        Parameters
        ----------
        acts : array-like or Tensor of shape (n, d)
        attributes : mapping of str to array-like of shape (n,)

        Returns
        -------
        float
        """
        a = self._acts(acts, "MeanDictionaryResult.r2")
        rec = self.reconstruct(attributes)
        if rec.shape[0] != a.shape[0]:
            raise RepscopeValueError(
                f"acts and attributes must describe the same samples; got {a.shape[0]} rows of "
                f"acts and {rec.shape[0]} labels."
            )
        den = float(((a - a.mean(0)) ** 2).sum())
        return 1.0 - float(((a - rec) ** 2).sum()) / den if den > 0 else math.nan

    def edit(self, acts: Any, attribute: str, from_value: Any, to_value: Any) -> Any:
        r"""Change an attribute: :math:`a' = a - u_{i,v} + u_{i,v'}` for every row of ``acts``.

        Parameters
        ----------
        acts : array-like or Tensor of shape (n, d)
            Activations to edit (typically the rows whose attribute equals ``from_value``).
        attribute : str
        from_value, to_value
            Values of ``attribute``.

        Returns
        -------
        ndarray or Tensor of shape (n, d)
            In the backend, device and floating dtype of ``acts``.
        """
        a = self._acts(acts, "MeanDictionaryResult.edit")
        shift = self.direction(attribute, to_value) - self.direction(attribute, from_value)
        return from_numpy_like(a + shift, acts)

    def _acts(self, acts: Any, caller: str) -> np.ndarray:
        a = _matrix(acts, "acts")
        if a.shape[1] != self.mean.shape[0]:
            raise RepscopeValueError(
                f"acts must have {self.mean.shape[0]} columns in {caller} (the dictionary's "
                f"dimension); got shape {a.shape}."
            )
        return a


#: The former name of :class:`MeanDictionaryResult` (kept for one release).
MeanDictionary = MeanDictionaryResult


def supervised_mean_dictionary(acts: Any, attributes: Mapping[str, Any]) -> MeanDictionaryResult:
    r"""Fit the supervised mean dictionary of labelled activations (Makelov et al., 2024).

    .. math:: u_{i,v} = E[a \mid \text{attr}_i = v] - E[a], \qquad
        \hat a = E[a] + \sum_i u_{i, v_i}

    For attributes crossed in a balanced design this is the exact additive decomposition of
    the group means; otherwise it is the marginal-means approximation the paper uses.

    Parameters
    ----------
    acts : array-like or Tensor of shape (n, d)
        Activations at one site.
    attributes : mapping of str to array-like of shape (n,)
        Labels of each attribute (integers or strings).

    Returns
    -------
    MeanDictionaryResult

    Raises
    ------
    RepscopeValueError
        Non-finite activations, labels of the wrong length.
    """
    a = _matrix(acts, "acts")
    attrs = _check_attributes(attributes, a.shape[0], "supervised_mean_dictionary")
    mean = a.mean(0)
    values: dict[str, np.ndarray] = {}
    directions: dict[str, np.ndarray] = {}
    for name, labels in attrs.items():
        vals, inv = np.unique(labels, return_inverse=True)
        sums = np.zeros((vals.shape[0], a.shape[1]))
        np.add.at(sums, inv, a)
        counts = np.bincount(inv, minlength=vals.shape[0]).astype(np.float64)
        values[name] = vals
        directions[name] = sums / counts[:, None] - mean
    return MeanDictionaryResult(mean=mean, values=values, directions=directions)


def edit_success(acts_edited: Any, target_labels: Any, classifier: Any) -> float:
    """Share of edited activations that a probe classifies as the target value.

    Parameters
    ----------
    acts_edited : array-like or Tensor of shape (n, d)
        Edited activations (converted to numpy for the probe).
    target_labels : scalar or array-like of shape (n,)
        The value each row was edited towards.
    classifier : object with ``predict(X) -> (n,)``
        A probe trained on unedited activations (e.g. a scikit-learn classifier).

    Returns
    -------
    float
        In [0, 1].
    """
    if not callable(getattr(classifier, "predict", None)):
        raise RepscopeTypeError(
            "The 'classifier' parameter of edit_success must have a predict(X) method (e.g. a "
            f"fitted scikit-learn classifier). Got {type(classifier).__name__} instead."
        )
    a = _matrix(acts_edited, "acts_edited")
    pred = np.asarray(classifier.predict(a))
    if pred.shape != (a.shape[0],):
        raise RepscopeValueError(
            f"classifier.predict must return one label per row ({a.shape[0]}); got shape "
            f"{pred.shape}."
        )
    t = to_numpy(target_labels) if is_torch(target_labels) else np.asarray(target_labels)
    if t.ndim == 0:
        t = np.full(a.shape[0], t.item())
    t = check_labels(t, n_samples=a.shape[0], name="target_labels")
    return float(np.mean(pred == t))


@contextmanager
def _eval_mode(sae: SparseAutoencoder) -> Iterator[None]:
    """Run ``sae`` in inference mode (``sae.eval()``) and restore its previous mode after.

    Architectures such as BatchTopK encode differently in training mode (a batch-level rule),
    so evaluations always use the inference behaviour.
    """
    was_training = sae.training
    sae.eval()
    try:
        yield
    finally:
        sae.train(was_training)


def _sae_batches(sae: SparseAutoencoder, a: Tensor) -> Iterator[tuple[int, Tensor, SAEOutput]]:
    """Codes of ``a`` in row chunks of at most 2**24 dense code entries (call under
    ``torch.no_grad()``)."""
    step = max(1, min(_CHUNK, 2**24 // sae.d_sae))
    for i in range(0, a.shape[0], step):
        x = a[i : i + step].to(sae.device)
        yield i, x, sae.encode(x)


def _decode_dense(sae: SparseAutoencoder, z: Tensor, sparse: bool) -> Tensor:
    if not sparse:
        return sae.decode(z, None)
    idx = torch.arange(z.shape[1], device=z.device).expand(z.shape[0], -1)
    return sae.decode(z, idx)


def sae_edit(
    sae: SparseAutoencoder,
    acts: Any,
    attribute_labels: Mapping[str, Any],
    attribute: str,
    from_value: Any,
    to_value: Any,
    *,
    n_latents: int = 4,
) -> Any:
    r"""Edit an attribute with SAE latents: remove the source value's, add the target value's.

    The scheme (greedy by mean code difference):

    1. mean codes :math:`\mu_v = E[z \mid \text{attr} = v]` and :math:`\mu_{v'}` over ``acts``;
    2. *remove* the ``n_latents`` latents with the largest positive :math:`\mu_v - \mu_{v'}`
       (set their codes to 0) and *add* the ``n_latents`` latents with the largest positive
       :math:`\mu_{v'} - \mu_v` (set their codes to :math:`\mu_{v'}`);
    3. decode, keeping the SAE's error term:
       :math:`a' = a + \mathrm{dec}(z') - \mathrm{dec}(z)`.

    Every row of ``acts`` is edited (select the rows with ``from_value`` to score the edit);
    compare with :meth:`MeanDictionaryResult.edit` through :func:`edit_success`.

    Parameters
    ----------
    sae : SparseAutoencoder
    acts : array-like or Tensor of shape (n, d_in)
        Raw activations; also used to estimate the mean codes.
    attribute_labels : mapping of str to array-like of shape (n,)
        Labels of ``acts`` (only ``attribute_labels[attribute]`` is used).
    attribute : str
    from_value, to_value
        Source and target values; each must occur in the labels.
    n_latents : int, default=4
        Latents removed and latents added (fewer when fewer differ in the right direction).

    Returns
    -------
    ndarray or Tensor of shape (n, d_in)
        In the backend, device and dtype of ``acts``.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise RepscopeTypeError(
            f"The 'sae' parameter of sae_edit must be a SparseAutoencoder. Got "
            f"{type(sae).__name__} instead."
        )
    k = check_positive_int(n_latents, "n_latents", caller="sae_edit")
    x = check_features(acts, name="acts")
    if int(x.shape[1]) != sae.d_in:
        raise RepscopeValueError(
            f"acts must have d_in={sae.d_in} columns for this SAE; got shape {tuple(x.shape)}."
        )
    if not isinstance(attribute_labels, Mapping) or attribute not in attribute_labels:
        known = sorted(attribute_labels) if isinstance(attribute_labels, Mapping) else None
        raise RepscopeValueError(
            f"The 'attribute' parameter of sae_edit must be a key of attribute_labels "
            f"({known}). Got {attribute!r} instead."
        )
    labels = check_labels(
        attribute_labels[attribute], n_samples=int(x.shape[0]), name=f"attributes[{attribute!r}]"
    )
    masks = {}
    for role, value in (("from_value", from_value), ("to_value", to_value)):
        mask = labels == value
        if not mask.any():
            raise RepscopeValueError(
                f"The {role!r} parameter of sae_edit must be a value present in "
                f"attribute_labels[{attribute!r}] ({np.unique(labels).tolist()[:20]}). Got "
                f"{value!r} instead."
            )
        masks[role] = mask
    t = x if is_torch(x) else torch.from_numpy(np.ascontiguousarray(x))
    t = t.to(sae.dtype)
    sums = torch.zeros(2, sae.d_sae, dtype=torch.float64, device=sae.device)
    sel = torch.from_numpy(np.stack([masks["from_value"], masks["to_value"]]).astype(np.float64))
    sel = sel.to(sae.device)
    sparse = False
    with torch.no_grad(), _eval_mode(sae):
        for i, _, out in _sae_batches(sae, t):
            sparse = out.indices is not None
            z = out.dense().to(torch.float64)
            sums += sel[:, i : i + z.shape[0]] @ z
    means = sums / sel.sum(1, keepdim=True)
    diff = (means[0] - means[1]).cpu().numpy()
    order = np.argsort(-diff, kind="stable")
    remove = order[:k][diff[order[:k]] > 0]
    order = np.argsort(diff, kind="stable")
    add = order[:k][diff[order[:k]] < 0]
    rm, ad = torch.from_numpy(remove).to(sae.device), torch.from_numpy(add).to(sae.device)
    target = means[1, ad].to(sae.dtype)
    pieces = []
    with torch.no_grad(), _eval_mode(sae):
        for _, _, out in _sae_batches(sae, t):
            z = out.dense()
            z2 = z.clone()
            z2[:, rm] = 0
            z2[:, ad] = target
            delta = _decode_dense(sae, z2, sparse) - _decode_dense(sae, z, sparse)
            pieces.append(delta.to(torch.float64).cpu())
    edited = as_float64_numpy(x, name="acts") + torch.cat(pieces).numpy()
    if is_torch(acts):
        return from_numpy_like(edited, acts)
    dtype = np.asarray(x).dtype
    return edited.astype(dtype) if dtype.kind == "f" else edited


# ---------------------------------------------------------------------------- modalities


@dataclass(frozen=True)
class ModalitySplitResult(Result):
    """Per-latent modality balance of an SAE on paired data (:func:`modality_split`).

    Attributes
    ----------
    balance : ndarray of shape (d_sae,)
        Share of each latent's mean activation mass coming from modality ``a`` (NaN: dead).
    multimodal : ndarray of bool, shape (d_sae,)
        Alive latents with both shares above ``threshold``.
    multimodal_fraction : float
        ``multimodal.sum() / n_alive`` (NaN when no latent fires).
    dead_fraction : float
        Latents firing in neither modality.
    hist_edges : ndarray of shape (n_bins + 1,)
    hist_counts : ndarray of int64, shape (n_bins,)
        Histogram of ``balance`` over the alive latents on [0, 1].
    threshold : float
    """

    balance: np.ndarray
    multimodal: np.ndarray
    multimodal_fraction: float
    dead_fraction: float
    hist_edges: np.ndarray
    hist_counts: np.ndarray
    threshold: float

    @property
    def n_alive(self) -> int:
        return int((~np.isnan(self.balance)).sum())


#: The former name of :class:`ModalitySplitResult` (kept for one release).
ModalitySplit = ModalitySplitResult


def modality_split(
    codes_a: Any, codes_b: Any, *, threshold: float = 0.1, n_bins: int = 10
) -> ModalitySplitResult:
    r"""Is each latent shared by two modalities or dedicated to one? (split-dictionary score)

    With the mean absolute activation of latent ``j`` per sample in each modality,
    :math:`m^a_j` and :math:`m^b_j`, the balance is :math:`b_j = m^a_j / (m^a_j + m^b_j)`; a
    latent that fires at all is *multimodal* when :math:`b_j > \tau` and :math:`1 - b_j > \tau`.
    Per-sample means make the score independent of how many samples each modality has.

    Parameters
    ----------
    codes_a, codes_b : SAEOutput, array-like or Tensor of shape (n_a, d_sae) / (n_b, d_sae)
        Codes of the same SAE on the two modalities (e.g. image and text embeddings).
    threshold : float, default=0.1
        ``tau``, in [0, 0.5).
    n_bins : int, default=10
        Bins of the balance histogram.

    Returns
    -------
    ModalitySplitResult
    """
    check_scalar(
        threshold,
        "threshold",
        caller="modality_split",
        kind=(int, float),
        min_value=0,
        max_value=0.5,
        include_max=False,
    )
    n_bins = check_positive_int(n_bins, "n_bins", caller="modality_split")
    A = np.abs(_codes_numpy(codes_a, "codes_a"))
    B = np.abs(_codes_numpy(codes_b, "codes_b"))
    if A.shape[1] != B.shape[1]:
        raise RepscopeValueError(
            f"codes_a and codes_b must have the same number of latents (columns); got "
            f"codes_a.shape={A.shape} and codes_b.shape={B.shape}. Pass codes of one SAE."
        )
    ma, mb = A.mean(0), B.mean(0)
    tot = ma + mb
    alive = tot > 0
    balance = np.full(tot.shape, np.nan)
    balance[alive] = ma[alive] / tot[alive]
    multimodal = alive & (balance > threshold) & (1.0 - balance > threshold)
    counts, edges = np.histogram(balance[alive], bins=n_bins, range=(0.0, 1.0))
    n_alive = int(alive.sum())
    return ModalitySplitResult(
        balance=balance,
        multimodal=multimodal,
        multimodal_fraction=float(multimodal.sum() / n_alive) if n_alive else math.nan,
        dead_fraction=float(1.0 - alive.mean()),
        hist_edges=edges,
        hist_counts=counts.astype(np.int64),
        threshold=float(threshold),
    )


# ---------------------------------------------------------------------------- geometry vs data


def gram_vs_cooccurrence(
    W: Any,
    X: Any,
    *,
    normalize: bool = False,
    feature_axis: Literal[0, 1] | None = None,
) -> float:
    r"""Do feature directions overlap as the features co-occur? (Prieto et al., BOWS)

    The Pearson correlation, over feature pairs ``i < j``, between the Gram matrix of the
    feature directions and the data's feature correlation matrix:

    .. math:: r = \operatorname{corr}_{i<j}\big((W^\top W)_{ij},\ \operatorname{corr}(X_{:i},
        X_{:j})\big)

    Parameters
    ----------
    W : array-like or Tensor of shape (d_latent, n_features) or (n_features, d_latent)
        Feature directions as columns (the recipe's encoder ``W``, Gram ``W^T W``) or as rows
        (an SAE decoder whose latents are the features of ``X``).
    X : array-like or Tensor of shape (n, n_features)
        The data whose feature co-occurrence is compared (e.g. binary bag-of-words, or codes).
    normalize : bool, default=False
        Use cosines of the directions instead of the raw Gram matrix (the recipe uses raw
        ``W^T W``, where the norms carry feature importance).
    feature_axis : {0, 1}, optional
        Which axis of ``W`` indexes features; by default the one whose length matches
        ``X.shape[1]`` (columns first when both do).

    Returns
    -------
    float
        In [-1, 1]; NaN when either off-diagonal set is constant. Pairs involving a constant
        feature of ``X`` (undefined correlation) are left out.
    """
    Wm = _matrix(W, "W")
    Xm = _matrix(X, "X", min_samples=2)
    nf = Xm.shape[1]
    if nf < 3:
        raise RepscopeValueError(
            f"X must have at least 3 features (columns) to correlate feature pairs; got shape "
            f"{Xm.shape}."
        )
    if feature_axis is None:
        feature_axis = 1 if Wm.shape[1] == nf else 0
    if feature_axis not in (0, 1):
        raise RepscopeValueError(
            f"The 'feature_axis' parameter of gram_vs_cooccurrence must be 0, 1 or None. Got "
            f"{feature_axis!r} instead."
        )
    if Wm.shape[feature_axis] != nf:
        raise RepscopeValueError(
            f"W must have one direction per feature of X ({nf}) along axis {feature_axis}; got "
            f"W.shape={Wm.shape}. Pass W of shape (d_latent, {nf}) or ({nf}, d_latent)."
        )
    F = Wm.T if feature_axis == 1 else Wm
    if normalize:
        F = _unit_rows(F)
    G = F @ F.T
    Xc = Xm - Xm.mean(0)
    sd = np.sqrt((Xc**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        C = (Xc.T @ Xc) / np.outer(sd, sd)
    iu = np.triu_indices(nf, 1)
    g, c = G[iu], C[iu]
    ok = np.isfinite(c)
    g, c = g[ok], c[ok]
    if g.size < 2 or np.ptp(g) == 0 or np.ptp(c) == 0:
        return math.nan
    return float(np.corrcoef(g, c)[0, 1])
