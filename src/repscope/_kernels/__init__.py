"""Shared numerical kernels: chunked kNN, linear assignment, eigen-paths, kernel dependence."""
