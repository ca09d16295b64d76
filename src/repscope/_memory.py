"""How much memory the machine has free, and refusing work that cannot fit before it starts.

A ``d x d`` float64 matrix takes ``8 d^2`` bytes: 320 GB at d = 200,000. Computations that
keep such matrices call :func:`check_memory` first, so a too-wide input fails at once with the
estimate and a way out, instead of dying in the allocator (or in the kernel's OOM killer).
"""

from __future__ import annotations

import os
from pathlib import Path

from repscope.exceptions import InsufficientMemoryError

__all__ = ["available_memory", "check_memory", "format_bytes"]

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def _meminfo_available() -> int | None:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int | None:
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    return int(pages) * int(size) if pages > 0 and size > 0 else None


def _cgroup_headroom() -> int | None:
    """Bytes this process's cgroup (v2) may still use, when it has a limit."""
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        used = int((_CGROUP / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    try:
        return max(int(limit) - used, 0)
    except ValueError:
        return None


def available_memory() -> int | None:
    """Bytes of memory available to this process now, or None when it cannot be told.

    Linux's ``MemAvailable`` (what can be allocated without swapping), else
    ``sysconf(SC_AVPHYS_PAGES)``; capped by the cgroup's remaining limit in a container.
    """
    free = _meminfo_available()
    if free is None:
        free = _sysconf_available()
    headroom = _cgroup_headroom()
    if headroom is not None:
        free = headroom if free is None else min(free, headroom)
    return free


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: binary units, one decimal."""
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"


def check_memory(nbytes: int, *, what: str, fix: str) -> None:
    """Raise :class:`InsufficientMemoryError` when ``nbytes`` exceed the available memory.

    Parameters
    ----------
    nbytes : int
        The estimated peak allocation.
    what : str
        What needs it, e.g. ``"the second moments of X (2 matrices of 200000 x 200000
        float64)"``; the message reads "{what} need {size}, but only {free} ...".
    fix : str
        How to shrink the problem, appended to the message.
    """
    free = available_memory()
    if free is None or nbytes <= free:
        return
    raise InsufficientMemoryError(
        f"{what} need {format_bytes(nbytes)}, but only {format_bytes(free)} of memory is "
        f"available. {fix}"
    )
