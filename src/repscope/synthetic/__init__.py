"""Synthetic data with known ground truth for sparse-autoencoder and geometry benchmarks.

All generators are numpy-only and seeded (``seed`` is an int or a
:class:`numpy.random.Generator`); each returns a frozen dataclass with the data ``X`` (float32)
and its ground truth. Ground-truth dictionaries have unit-norm rows (float32, one atom per
row) and ground-truth codes are :class:`scipy.sparse.csr_array` matrices of float32 of shape
(n_samples, n_atoms).

- :func:`sparse_features` — random atoms in superposition, Zipf-distributed firing rates;
- :func:`hierarchy` — parents with conditionally orthogonal children (MP-SAE);
- :func:`circle_manifold` — a circle in a random plane plus discrete features (concept
  manifolds);
- :func:`compound_pairs` — features with multiplicative pair interactions (PolySAE);
- :func:`paired_modalities` — two modalities sharing codes across a modality gap
  (group-sparse SAE);
- :func:`bows` — binary features correlated through a latent curve (BOWS superposition
  geometry).
"""

from __future__ import annotations

from repscope.synthetic._bows import BOWS, bows
from repscope.synthetic._generators import (
    CircleManifold,
    Hierarchy,
    SparseFeatures,
    circle_manifold,
    hierarchy,
    sparse_features,
)
from repscope.synthetic._paired import (
    CompoundPairs,
    PairedModalities,
    compound_pairs,
    paired_modalities,
)

__all__ = [
    "BOWS",
    "CircleManifold",
    "CompoundPairs",
    "Hierarchy",
    "PairedModalities",
    "SparseFeatures",
    "bows",
    "circle_manifold",
    "compound_pairs",
    "hierarchy",
    "paired_modalities",
    "sparse_features",
]
