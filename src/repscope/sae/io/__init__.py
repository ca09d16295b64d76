"""Reading and writing SAEs: SAELens's on-disk format, and foreign checkpoints.

:mod:`._saelens` saves and loads an SAE as SAELens does (``cfg.json`` + safetensors), so
SAELens and repscope read each other's files; :mod:`._foreign` loads sparsify and
dictionary_learning checkpoints.
"""

from repscope.sae.io._foreign import load_dictionary_learning, load_sparsify
from repscope.sae.io._saelens import (
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    SAELENS_ARCHITECTURES,
    load_sae,
    save_sae,
)

__all__ = [
    "SAELENS_ARCHITECTURES",
    "SAE_CFG_FILENAME",
    "SAE_WEIGHTS_FILENAME",
    "load_dictionary_learning",
    "load_sae",
    "load_sparsify",
    "save_sae",
]
