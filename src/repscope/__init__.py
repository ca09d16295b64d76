"""repscope: the linear structure of learned representations and weights."""
from repscope._version import __version__

__all__ = ["__version__"]
