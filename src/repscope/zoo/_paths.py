"""Where the zoo looks for files: data roots, the model cache, installed packages.

Data search order
-----------------
A dataset shipped as a Debian package is looked for under each *data root*, in this order:

1. each folder in ``$REPSCOPE_DATA`` (several may be joined with ``os.pathsep``);
2. ``.data/`` in the current working directory;
3. ``.data/`` of the source checkout repscope runs from (the folder holding ``pyproject.toml``
   above ``src/repscope``), when it runs from one;
4. ``$REPSCOPE_HOME/data`` (``REPSCOPE_HOME`` defaults to ``~/.repscope``);
5. ``/``: where ``apt-get install`` puts the files.

Under a root the package's own layout is used (``dpkg-deb -x PKG.deb ROOT`` gives e.g.
``ROOT/usr/lib/R/site-library/janeaustenr``), or a flat folder ``ROOT/janeaustenr``. Downloaded
packages should be extracted into :func:`default_data_dir` (``$REPSCOPE_DATA`` or the checkout's
``.data``), which is what the error messages and ``scripts/fetch_system_data.sh`` do.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "SYSTEM_ROOTS",
    "checkout_dir",
    "data_roots",
    "default_data_dir",
    "find_data",
    "has_modules",
    "missing_modules",
    "module_dir",
    "repscope_home",
]

DATA_ENV = "REPSCOPE_DATA"
HOME_ENV = "REPSCOPE_HOME"
#: Roots searched last: the system (where ``apt-get install`` writes).
SYSTEM_ROOTS: tuple[Path, ...] = (Path("/"),)


def repscope_home() -> Path:
    """``$REPSCOPE_HOME``, default ``~/.repscope`` (not created)."""
    env = os.environ.get(HOME_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".repscope"


def checkout_dir() -> Path | None:
    """The source checkout repscope runs from (``<repo>`` of ``<repo>/src/repscope``), if any."""
    pkg = Path(__file__).resolve().parents[1]  # .../src/repscope
    repo = pkg.parent.parent
    if pkg.parent.name == "src" and (repo / "pyproject.toml").is_file():
        return repo
    return None


def _env_roots() -> list[Path]:
    raw = os.environ.get(DATA_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def data_roots() -> list[Path]:
    """The data roots in search order (see the module docstring); duplicates removed."""
    roots = [*_env_roots(), Path.cwd() / ".data"]
    repo = checkout_dir()
    if repo is not None:
        roots.append(repo / ".data")
    roots.append(repscope_home() / "data")
    roots.extend(SYSTEM_ROOTS)
    out: list[Path] = []
    seen: set[str] = set()
    for r in roots:
        key = os.path.abspath(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def default_data_dir() -> Path:
    """Where downloaded Debian packages should be extracted: the first ``$REPSCOPE_DATA``
    folder, else the source checkout's ``.data``, else ``$REPSCOPE_HOME/data``."""
    env = _env_roots()
    if env:
        return env[0]
    repo = checkout_dir()
    if repo is not None:
        return repo / ".data"
    return repscope_home() / "data"


def find_data(relative: Sequence[str], required: Iterable[str] = ()) -> Path | None:
    """The first ``root / rel`` (over :func:`data_roots`, then ``relative``) that is a folder
    holding every file in ``required``; ``None`` when there is none."""
    need = list(required)
    for root in data_roots():
        for rel in relative:
            cand = root / rel
            if cand.is_dir() and all((cand / f).is_file() for f in need):
                return cand
    return None


def module_dir(name: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    if spec.origin:
        return Path(spec.origin).parent
    return None


def missing_modules(names: Iterable[str]) -> list[str]:
    """The importable top-level module names among ``names`` that are not installed."""
    out = []
    for n in names:
        try:
            found = importlib.util.find_spec(n) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(n)
    return out


def has_modules(names: Iterable[str]) -> bool:
    """True when every module in ``names`` is installed."""
    return not missing_modules(names)
