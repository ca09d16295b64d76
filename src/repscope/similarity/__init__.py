"""Similarity between paired representations (same inputs, any widths)."""

from repscope.similarity._cka import cka_from_moments, linear_cka, linear_cka_matrix

__all__ = ["cka_from_moments", "linear_cka", "linear_cka_matrix"]
