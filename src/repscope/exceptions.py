"""The repscope error hierarchy.

Every error repscope raises for bad input or a bad state is a :class:`RepscopeError`, and each
subclass is also the built-in exception a user would naturally catch (``ValueError``,
``KeyError``, ``TypeError``, ``FileNotFoundError``, ``MemoryError``), so ``except ValueError``
keeps working.
Messages name the argument, what was expected, what came, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "BackendMismatchError",
    "CorruptStoreError",
    "DataNotFoundError",
    "InsufficientMemoryError",
    "NotFittedError",  # noqa: F822 - provided lazily by __getattr__
    "RepscopeError",
    "RepscopeTypeError",
    "RepscopeValueError",
    "UnknownNameError",
]

from typing import Any


def __getattr__(name: str) -> Any:
    # scikit-learn's NotFittedError is re-used (so sklearn's checks recognise it), but imported
    # lazily: importing scikit-learn costs ~1-3 s and most users of repscope.exceptions never
    # need it.
    if name == "NotFittedError":
        from sklearn.exceptions import NotFittedError

        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RepscopeError(Exception):
    """Base class of every error repscope raises on purpose."""


class RepscopeValueError(RepscopeError, ValueError):
    """An argument has the right type but a wrong value (shape, NaN, empty, out of range)."""


class RepscopeTypeError(RepscopeError, TypeError):
    """An argument has a type repscope cannot use."""


class BackendMismatchError(RepscopeError, TypeError):
    """Arrays from different backends (numpy vs torch) or devices were mixed in one call."""


class UnknownNameError(RepscopeError, KeyError):
    """A name (measure, architecture, model, dataset, layer) is not registered.

    ``str()`` gives the message itself, not ``KeyError``'s quoted repr.
    """

    def __init__(self, message: str, *, name: str = "", known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return self.message


class DataNotFoundError(RepscopeError, FileNotFoundError):
    """Files that a model or data set needs are missing; the message says how to get them."""


class CorruptStoreError(RepscopeError, ValueError):
    """A stored file is truncated, tampered with or unreadable; the message names the file."""


class InsufficientMemoryError(RepscopeError, MemoryError):
    """A computation would need more memory than the machine has available; raised before
    allocating, with the estimate and a way to shrink the problem (a subset, PCA first)."""
