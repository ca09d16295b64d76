"""Unified Embedding: one hashed table shared by several categorical features (feature
multiplexing), and the orthogonality of the per-feature first-layer blocks that makes the
sharing work.

Feature ``f`` with value ``v`` reads ``k_f`` rows ``h_{f,1}(v), ..., h_{f,k_f}(v)`` of one
table ``E`` of shape ``(n_rows, chunk_dim)``, each hash a seeded universal hash
``h(v) = ((a v + b) mod p) mod n_rows`` (``p = 2^31 - 1``); the chunks are concatenated (the
paper's multi-probe, variable-width lookup) or summed. Values of different features collide in
the same rows, but the downstream layer reads each feature through its own block ``W_f`` of
columns: a gradient that feature ``g`` sends to a shared row changes feature ``f``'s output by
``W_f W_g^T delta``, so collisions across features are harmless when the blocks' row spaces
(in the table's space) are orthogonal, which training finds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result

__all__ = ["FeatureOrthogonalityResult", "UnifiedEmbedding", "feature_orthogonality"]

_PRIME = 2**31 - 1  # Mersenne prime: (a * v + b) stays below 2^62 in int64


class UnifiedEmbedding(nn.Module):
    """One embedding table shared by several categorical features through per-feature hashes.

    Parameters
    ----------
    n_rows : int
        Rows of the shared table.
    chunk_dim : int
        Width of one row (one lookup).
    n_features : int, optional
        Number of categorical features; default ``len(lookups)``, else 1 lookup each.
    lookups : int or sequence of int, default=1
        Lookups per feature ``k_f`` (one int for all features, or one per feature).
    combine : {"concat", "sum"}, default="concat"
        How a feature's ``k_f`` chunks combine: concatenated (the paper's multi-size
        Unified Embedding: width ``k_f * chunk_dim``) or summed (width ``chunk_dim``).
    seed : int, default=0
        Seeds the hash functions (and nothing else: the table is initialised from torch's
        global generator, like ``nn.Embedding``).
    init_std : float, default=0.05
        Standard deviation of the table's normal initialisation.

    Attributes
    ----------
    weight : Parameter of shape (n_rows, chunk_dim)
        The shared table.
    hash_a, hash_b : buffer of shape (total_lookups,)
        The universal-hash coefficients, lookup by lookup (feature-major).
    feature_slices : list of slice
        The output columns of each feature.
    output_dim : int

    Shapes
    ------
    ``values``: (..., n_features) non-negative integers -> (..., output_dim); values at or
    above ``2^31 - 1`` are reduced modulo it first.

    Raises
    ------
    RepscopeValueError
        On non-positive sizes, a lookup list of the wrong length or an unknown ``combine``.

    Examples
    --------
    >>> import torch
    >>> emb = UnifiedEmbedding(1000, 8, lookups=(2, 1), seed=0)
    >>> emb(torch.tensor([[3, 70_000], [4, 12]])).shape
    torch.Size([2, 24])
    >>> emb.feature_slices
    [slice(0, 16, None), slice(16, 24, None)]

    References
    ----------
    .. [1] Coleman, Kang, Fahrbach, Wang, Hong, Chi, Cheng (2023). Unified Embedding:
       Battle-Tested Feature Representations for Web-Scale ML Systems. NeurIPS 2023,
       arXiv:2305.12102.
    """

    def __init__(self, n_rows: int, chunk_dim: int, *, n_features: int | None = None,
                 lookups: int | Sequence[int] = 1,
                 combine: Literal["concat", "sum"] = "concat", seed: int = 0,
                 init_std: float = 0.05) -> None:
        super().__init__()
        for name, val in (("n_rows", n_rows), ("chunk_dim", chunk_dim)):
            if not isinstance(val, int) or val < 1:
                raise RepscopeValueError(f"{name} must be a positive integer; got {val!r}.")
        if combine not in ("concat", "sum"):
            raise RepscopeValueError(f"combine must be 'concat' or 'sum'; got {combine!r}.")
        if isinstance(lookups, int):
            n = 1 if n_features is None else n_features
            if not isinstance(n, int) or n < 1:
                raise RepscopeValueError(
                    f"n_features must be a positive integer; got {n_features!r}.")
            per_feature = [lookups] * n
        else:
            per_feature = list(lookups)
            if n_features is not None and n_features != len(per_feature):
                raise RepscopeValueError(
                    f"lookups must give one count per feature (n_features={n_features}); "
                    f"got {len(per_feature)} counts.")
        if not per_feature or any(not isinstance(c, int) or c < 1 for c in per_feature):
            raise RepscopeValueError(
                f"lookups must be positive integers, one per feature; got {lookups!r}.")
        self.n_rows, self.chunk_dim, self.combine = n_rows, chunk_dim, combine
        self.lookups = tuple(per_feature)
        self.n_features = len(per_feature)
        self.weight = nn.Parameter(torch.randn(n_rows, chunk_dim) * float(init_std))
        rng = np.random.default_rng(seed)
        total = sum(per_feature)
        self.register_buffer("hash_a", torch.as_tensor(rng.integers(1, _PRIME, total)))
        self.register_buffer("hash_b", torch.as_tensor(rng.integers(0, _PRIME, total)))
        self.register_buffer("_feature_of_lookup", torch.as_tensor(
            np.repeat(np.arange(self.n_features), per_feature)))
        widths = [c * chunk_dim if combine == "concat" else chunk_dim for c in per_feature]
        edges = np.concatenate([[0], np.cumsum(widths)]).tolist()
        self.feature_slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]
        self.output_dim = int(edges[-1])

    def rows(self, values: Tensor) -> Tensor:
        """The table rows each lookup reads.

        Shapes: (..., n_features) -> (..., total_lookups), lookups feature-major.
        """
        if not isinstance(values, Tensor):
            raise RepscopeTypeError(
                f"values must be a torch.Tensor of integers; got {type(values).__name__}.")
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise RepscopeTypeError(f"values must hold integers; got dtype {values.dtype}.")
        if values.ndim < 1 or values.shape[-1] != self.n_features:
            raise RepscopeValueError(
                f"values must have shape (..., {self.n_features}) (one column per feature); "
                f"got {tuple(values.shape)}.")
        if values.numel() and bool((values < 0).any()):
            raise RepscopeValueError(
                f"values must be non-negative category ids; got minimum {int(values.min())}.")
        a, b = cast(Tensor, self.hash_a), cast(Tensor, self.hash_b)
        owner = cast(Tensor, self._feature_of_lookup)
        v = values.to(torch.int64).remainder(_PRIME).index_select(-1, owner)
        return (a * v + b).remainder(_PRIME).remainder(self.n_rows)

    def forward(self, values: Tensor) -> Tensor:
        """Embed ``values`` of shape (..., n_features) to (..., output_dim)."""
        chunks = self.weight[self.rows(values)]                # (..., total_lookups, chunk)
        if self.combine == "concat":
            return chunks.flatten(-2)
        parts = chunks.split(list(self.lookups), dim=-2)
        return torch.cat([p.sum(dim=-2) for p in parts], dim=-1)

    def table_blocks(self, weight: Tensor) -> list[Tensor]:
        """Each feature's block of a downstream weight, expressed in the table's row space.

        Parameters
        ----------
        weight : Tensor of shape (out_features, output_dim)
            The first layer after this embedding (``nn.Linear.weight``).

        Returns
        -------
        list of Tensor, one of shape (out_features * k_f, chunk_dim) per feature
            The feature's column block cut into its chunks and stacked (``concat``), or the
            block itself (``sum``): the rows are the directions of the table's space that the
            feature reads.
        """
        if not isinstance(weight, Tensor):
            raise RepscopeTypeError(f"weight must be a torch.Tensor; got {type(weight).__name__}.")
        if weight.ndim != 2 or weight.shape[1] != self.output_dim:
            raise RepscopeValueError(
                f"weight must have shape (out_features, {self.output_dim}) (the layer after "
                f"the embedding); got {tuple(weight.shape)}.")
        blocks = []
        for sl in self.feature_slices:
            w = weight[:, sl]
            if self.combine == "concat":
                w = torch.cat(w.split(self.chunk_dim, dim=1), dim=0)
            blocks.append(w)
        return blocks


@dataclass(frozen=True)
class FeatureOrthogonalityResult(Result):
    """Orthogonality of per-feature blocks of the first layer after a shared table.

    Attributes
    ----------
    cosine : ndarray of shape (n_features, n_features)
        ``||W_f W_g^T||_F / (||W_f||_F ||W_g||_F)``: 0 when the blocks read orthogonal
        directions of the table (a collision between ``f`` and ``g`` moves neither's output),
        1 for identical rank-one blocks; for one-row blocks (a logistic model) it is
        ``|cos(w_f, w_g)|``. Diagonal = ``||W_f W_f^T||_F / ||W_f||_F^2``.
    principal_cosine : ndarray of shape (n_features, n_features)
        Largest principal-angle cosine between the blocks' row spaces, each cut to the rank
        holding ``energy`` of its squared singular values (1 on the diagonal).
    per_feature : ndarray of shape (n_features,)
        ``1 - max_{g != f} cosine[f, g]``: 1 = orthogonal to every other feature.
    mean_offdiagonal : float
        Mean of ``cosine`` over pairs ``f != g``.
    ranks : ndarray of shape (n_features,)
        The ranks used for ``principal_cosine``.
    """

    cosine: np.ndarray
    principal_cosine: np.ndarray
    per_feature: np.ndarray
    mean_offdiagonal: float
    ranks: np.ndarray


def feature_orthogonality(blocks: Sequence[Tensor | np.ndarray] | Tensor, *,
                          embedding: UnifiedEmbedding | None = None,
                          energy: float = 0.9) -> FeatureOrthogonalityResult:
    """Per-feature orthogonality of the learned blocks that read a shared embedding table.

    Parameters
    ----------
    blocks : sequence of array of shape (n_rows_f, dim), or a weight of shape
        (out_features, output_dim) together with ``embedding``
        One block per feature, all in the same ``dim``-dimensional space (the table's row
        space); with ``embedding``, a downstream weight cut by
        :meth:`UnifiedEmbedding.table_blocks`.
    embedding : UnifiedEmbedding, optional
    energy : float, default=0.9
        Share of squared singular values kept per block for ``principal_cosine``, in (0, 1].

    Returns
    -------
    FeatureOrthogonalityResult

    Raises
    ------
    RepscopeValueError
        On fewer than two blocks, blocks of different widths, an all-zero block or ``energy``
        outside (0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> r = feature_orthogonality([np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])])
    >>> float(r.cosine[0, 1]), r.per_feature.tolist()
    (0.0, [1.0, 1.0])

    References
    ----------
    .. [1] Coleman, Kang, Fahrbach, Wang, Hong, Chi, Cheng (2023). Unified Embedding:
       Battle-Tested Feature Representations for Web-Scale ML Systems. NeurIPS 2023,
       arXiv:2305.12102.
    """
    if not 0.0 < float(energy) <= 1.0:
        raise RepscopeValueError(f"energy must be in (0, 1]; got {energy!r}.")
    if embedding is not None:
        if not isinstance(blocks, Tensor):
            raise RepscopeTypeError(
                "blocks must be the downstream weight tensor when embedding is given; got "
                f"{type(blocks).__name__}.")
        blocks = embedding.table_blocks(blocks)
    elif isinstance(blocks, Tensor):
        raise RepscopeValueError(
            "blocks must be a sequence of per-feature blocks, or a weight together with "
            "embedding; got a single tensor and no embedding.")
    mats = [np.atleast_2d(b.detach().cpu().double().numpy() if isinstance(b, Tensor)
                          else np.asarray(b, dtype=float)) for b in blocks]
    if len(mats) < 2:
        raise RepscopeValueError(f"blocks must hold at least two features; got {len(mats)}.")
    widths = {m.shape[1] for m in mats}
    if len(widths) != 1:
        raise RepscopeValueError(
            f"blocks must share their number of columns (the table's width); got widths "
            f"{[m.shape[1] for m in mats]}.")
    norms = np.array([np.linalg.norm(m) for m in mats])
    if np.any(norms == 0):
        raise RepscopeValueError(
            f"every block must be non-zero; blocks {np.flatnonzero(norms == 0).tolist()} are "
            "all zeros.")
    n = len(mats)
    cos = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            cos[i, j] = np.linalg.norm(mats[i] @ mats[j].T) / (norms[i] * norms[j])
    bases, ranks = [], []
    for m in mats:
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        share = np.cumsum(s**2) / np.sum(s**2)
        r = int(np.searchsorted(share, float(energy) - 1e-12) + 1)
        bases.append(vt[:r])
        ranks.append(r)
    pc = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            pc[i, j] = np.linalg.svd(bases[i] @ bases[j].T, compute_uv=False).max()
    off = cos[~np.eye(n, dtype=bool)]
    per = 1.0 - np.where(np.eye(n, dtype=bool), -np.inf, cos).max(axis=1)
    return FeatureOrthogonalityResult(cosine=cos, principal_cosine=pc, per_feature=per,
                                      mean_offdiagonal=float(off.mean()),
                                      ranks=np.asarray(ranks))
