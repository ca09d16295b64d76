"""One progress bar for every long step: rich on stderr, with a count, elapsed time and an ETA.

Library functions that can run for more than a few seconds take ``progress: bool`` (default
off, so library calls stay quiet) and wrap their loop in :func:`progress_bar`; the command
line turns it on unless ``--no-progress`` (or ``REPSCOPE_NO_PROGRESS=1``) is given.

>>> with progress_bar("permutations", total=3, enabled=False) as advance:
...     for _ in range(3):
...         advance(1)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

__all__ = ["ProgressLike", "bar_shown", "progress_bar", "progress_disabled", "progress_for", "quiet_loading"]

ProgressLike = bool | Callable[[int], None]
"""A library function's ``progress``: False (quiet), True (its own bar) or ``advance(k)``,
the callback of a bar its caller holds (one bar over several calls)."""


def progress_disabled() -> bool:
    """Whether the environment turns every bar off (``REPSCOPE_NO_PROGRESS=1``)."""
    return os.environ.get("REPSCOPE_NO_PROGRESS", "") not in ("", "0")


def _progress_forced() -> bool:
    """``REPSCOPE_PROGRESS=1`` shows bars even when stderr is not a terminal (logs, tests)."""
    return os.environ.get("REPSCOPE_PROGRESS", "") not in ("", "0")


def _stderr_is_terminal() -> bool:
    import sys

    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def bar_shown(enabled: bool = True) -> bool:
    """Whether :func:`progress_bar` with ``enabled`` draws a bar here and now (not turned off,
    and stderr a terminal or ``REPSCOPE_PROGRESS=1``); callers that print rows above a bar use
    it to keep pipes and logs clean."""
    return bool(enabled) and not progress_disabled() and (
        _stderr_is_terminal() or _progress_forced())


@contextlib.contextmanager
def progress_bar(
    label: str, total: int | None, *, enabled: bool = True, completed: int = 0,
    prefix: str = "repscope",
) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``advance(k)``.

    Parameters
    ----------
    label : str
        What is counted ("permutations", "training steps", ...).
    total : int or None
        The number of steps (None: unknown; no ETA then).
    enabled : bool
        False yields a no-op ``advance`` and prints nothing; ``REPSCOPE_NO_PROGRESS=1`` also
        turns the bar off. A bar is drawn only when stderr is a terminal (a pipe or a log file
        gets none, so ``--json`` output and logs stay clean) unless ``REPSCOPE_PROGRESS=1``.
    completed : int
        Steps already done (a resumed run).
    prefix : str
        The bold word before the label (the command or the step).
    """
    if not bar_shown(enabled):
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn(f"[bold]{_escape(prefix)}[/] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(_escape(label), total=total, completed=completed)

        def advance(k: int = 1) -> None:
            bar.advance(task, k)

        yield advance


@contextlib.contextmanager
def progress_for(
    progress: ProgressLike, label: str, total: int | None, *, prefix: str = "repscope"
) -> Iterator[Callable[[int], None]]:
    """``advance(k)`` for a library function's ``progress`` argument (see :data:`ProgressLike`)."""
    if callable(progress):
        yield progress
        return
    with progress_bar(label, total, enabled=bool(progress), prefix=prefix) as advance:
        yield advance


def _noop(k: int = 1) -> None:
    return None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' "Loading weights" bar off while a zoo model loads, restored afterwards.

    A library call should not print; the previous setting comes back, so a user who wants
    transformers' bars elsewhere keeps them.
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is optional
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
