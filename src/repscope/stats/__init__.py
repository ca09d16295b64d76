"""Additive sufficient statistics (``Moments``) and the closed-form quantities derived from them."""

from repscope.stats._moments import Moments
from repscope.stats._spectrum import (
    PCASpectrum,
    PCASpectrumResult,
    effective_rank,
    layer_spectrum,
    pca_spectrum,
)

__all__ = ["Moments", "PCASpectrum", "PCASpectrumResult", "effective_rank", "layer_spectrum",
           "pca_spectrum"]
