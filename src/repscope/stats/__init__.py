"""Additive sufficient statistics (``Moments``) and the closed-form quantities derived from them."""

from repscope.stats._moments import Moments

__all__ = ["Moments"]
