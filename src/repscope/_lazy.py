"""Lazy package namespaces: ``import repscope.probe`` stays cheap until a name is used.

A package ``__init__`` lists its public names once, as ordinary imports inside an
``if TYPE_CHECKING:`` block (so type checkers and readers see them), and ends with::

    __getattr__, __dir__, __all__ = attach(__name__, __file__)

:func:`attach` reads that block from the package's own source (``ast``, no execution) and
imports a submodule only when one of its names is first used (scientific-python SPEC 1, the
``lazy_loader`` pattern). The capability loader imports every package's ``_capability``
module to build the CLI, so packages whose names pull in torch or scikit-learn must be lazy:
``repscope --help`` would otherwise pay seconds for imports it never uses.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["attach"]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _lazy_names(source: str, package: str) -> dict[str, tuple[str, str]]:
    """Public name -> (module, attribute) from the ``if TYPE_CHECKING:`` imports."""
    out: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module is not None:
                module = stmt.module if stmt.level == 0 else (
                    package.rsplit(".", stmt.level - 1)[0] + "." + stmt.module)
                for alias in stmt.names:
                    out[alias.asname or alias.name] = (module, alias.name)
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    out[alias.asname or alias.name.rsplit(".", 1)[-1]] = (alias.name, "")
    return out


def attach(
    package: str, init_file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Module-level ``__getattr__``, ``__dir__`` and ``__all__`` for a lazy package.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    init_file : str
        The package's ``__file__`` (its ``__init__.py``), parsed for the lazy imports.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__, __all__)``; ``__all__`` lists the lazy names, sorted.
    """
    names = _lazy_names(Path(init_file).read_text(encoding="utf-8"), package)

    def __getattr__(name: str) -> Any:
        try:
            module, attr = names[name]
        except KeyError:
            # submodules (``repscope.probe._ridge``) are found by the import system itself
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        mod = importlib.import_module(module)
        value = getattr(mod, attr) if attr else mod
        import sys

        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        import sys

        return sorted(set(names) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, sorted(names)
