"""Measure families, one module each; :func:`load_all` imports (and so registers) them all."""

FAMILIES = ("cka", "cca", "shape", "rsa", "regression", "kernel")


def load_all() -> None:
    """Import every family module (registration happens at import)."""
    import importlib

    for fam in FAMILIES:
        importlib.import_module(f"repscope.similarity._measures.{fam}")
    # the neighbourhood measures (mutual kNN, Jaccard, CKNNA) live beside the kNN statistics
    importlib.import_module("repscope.similarity._knn_measures")


__all__ = ["FAMILIES", "load_all"]
