"""Shared CLI plumbing: the context object, shared options (defined once), output helpers."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from repscope.results import to_jsonable

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    """Global options shared by every command."""

    debug: bool = False
    db_path: str | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    #: False on the ranks other than 0 of a torchrun launch: they compute, rank 0 records.
    writer: bool = True

    def db(self) -> Any:
        """The results database; on a rank that is not the writer, a :class:`NullDB` that
        accepts the same calls and records nothing (rank 0 records the run once)."""
        if not self.writer:
            return NullDB()
        from repscope.db import ResultsDB

        return ResultsDB(self.db_path)


class NullDB:
    """What a non-writer rank records into: ``run``, ``add`` and ``add_many`` accept what
    :class:`~repscope.db.ResultsDB` accepts and keep nothing."""

    def __enter__(self) -> NullDB:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    @contextlib.contextmanager
    def run(self, command: str, params: Any = None, **kwargs: Any) -> Iterator[str]:
        yield "rank-not-writer"

    def add(self, *args: Any, **kwargs: Any) -> None:
        return None

    def add_many(self, *args: Any, **kwargs: Any) -> None:
        return None


#: Attribute a command's callback carries when it runs on every rank of a torchrun launch.
RANK_AWARE = "__repscope_rank_aware__"


def rank_aware(f: F) -> F:
    """Mark a command as runnable under ``torchrun``: every rank runs it on its share of the
    data and rank 0 records (:mod:`repscope.distributed`). Put it right under
    ``@click.command``. Commands without it refuse to run with more than one rank."""
    setattr(f, RANK_AWARE, True)
    return f


def settings() -> Settings:
    ctx = click.get_current_context()
    obj = ctx.find_object(Settings)
    return obj if obj is not None else Settings()


def progress_option(f: F) -> F:
    """``--no-progress`` on a long-running command (the root group takes it too).

    The command reads :func:`show_progress`; ``REPSCOPE_NO_PROGRESS=1`` also hides every bar.
    """

    @click.option("--no-progress", "no_progress", is_flag=True,
                  help="Hide progress bars (env REPSCOPE_NO_PROGRESS=1).")
    @functools.wraps(f)
    def wrapper(*args: Any, no_progress: bool = False, **kwargs: Any) -> Any:
        if no_progress:
            settings().progress = False
        return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def show_progress() -> bool:
    """Whether this command shows progress bars (not ``--no-progress``, not the env switch)."""
    from repscope._progress import progress_disabled

    return settings().progress and not progress_disabled()


def json_option(f: F) -> F:
    """``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(f)


def db_option(f: F) -> F:
    """``--db PATH`` on a subcommand (overrides the global option)."""

    @click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Results database (default: $REPSCOPE_DB, else $REPSCOPE_HOME/results.db).",
    )
    @functools.wraps(f)
    def wrapper(*args: Any, db_path: str | None = None, **kwargs: Any) -> Any:
        if db_path is not None:
            settings().db_path = db_path
        return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(to_jsonable(data), indent=2))


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], title: str | None = None) -> None:
    """A table on stdout (rich when attached to a terminal, plain aligned text otherwise)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for h in headers:
        table.add_column(h)
    for r in rows:
        table.add_row(*[_fmt(v) for v in r])
    Console(file=sys.stdout, soft_wrap=True, width=max(100, _term_width())).print(table)


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def model_name(path: str | Path) -> str:
    """The model a features path came from: a store's ``model_id`` (else its folder name), a
    file's stem, or the name of a directory of files."""
    from repscope.store._manifest import MANIFEST

    p = Path(path)
    if p.is_dir() and (p / MANIFEST).exists():
        from repscope.store import FeatureStore

        return FeatureStore.open(p, verify="none").model_id or p.name
    return p.stem


#: The FEATURES arguments whose store tells ``dataset_option`` its default.
_FEATURES_ARGS = ("features", "features_a", "features_b")


def store_dataset(path: str | Path | None) -> str:
    """The data set a store was extracted from (its ``attrs["dataset"]``); ``""`` for a store
    that does not say, or for anything that is not a store (a .npy file, a folder of files)."""
    from repscope.store._manifest import MANIFEST

    if path is None:
        return ""
    p = Path(path)
    if not (p.is_dir() and (p / MANIFEST).is_file()):
        return ""
    from repscope.store import FeatureStore

    try:
        name = FeatureStore.open(p, verify="none").attrs.get("dataset", "")
    except Exception:  # an unreadable store fails where the command reads it, with its message
        return ""
    return name if isinstance(name, str) else ""


def dataset_option(f: F) -> F:
    """``--dataset NAME``: the dataset name recorded with the results.

    Default: the data set the command's features come from, when they are a store that
    records it (:func:`store_dataset` of the ``features``/``features_a``/``features_b``
    argument; two stores of different data sets give ``"A / B"``), else ``""``. The command
    always receives a str.
    """

    @click.option("--dataset", default=None,
                  help="Dataset name to record with the results (default: the dataset the "
                  "features' store was extracted from).")
    @functools.wraps(f)
    def wrapper(*args: Any, dataset: str | None = None, **kwargs: Any) -> Any:
        if dataset is None:
            names = [store_dataset(kwargs.get(a)) for a in _FEATURES_ARGS]
            dataset = " / ".join(dict.fromkeys(n for n in names if n))
        return f(*args, dataset=dataset, **kwargs)

    return wrapper  # type: ignore[return-value]


def labels_option(f: F) -> F:
    """``--labels``: a .npy or text file, or a metadata column of the store (required)."""
    return click.option(
        "--labels", required=True,
        help="Labels: a .npy or text file (one per line), or a metadata column of the store "
        "(./NAME: the file, column:NAME: the column, when a name could be both).",
    )(f)


def features_argument(name: str = "features", *, required: bool = True) -> Callable[[F], F]:
    """A FEATURES argument: a .npy or .safetensors file, a directory of them, or a store."""
    return click.argument(name, type=click.Path(), required=required)


def layers_option(help: str = "Layer to analyse (repeatable; default: all).",
                  *, flag: str = "--layer", dest: str = "layers",
                  multiple: bool = True) -> Callable[[F], F]:
    """A layer option (``--layer``, or ``--layer-a``/``--layer-b`` for pairs): repeatable, or
    with ``multiple=False`` one layer (None when not given)."""
    return click.option(flag, dest, multiple=multiple, default=None, help=help)


def pair_by_option(f: F) -> F:
    """``--pair-by id|position``: how the samples of two feature sets are lined up."""
    return click.option(
        "--pair-by", "pair_by", type=click.Choice(["id", "position"]), default="id",
        show_default=True,
        help="Pair the two sides' samples by id (stores' id column; same ids in another order "
        "are reordered, different ids refused) or by row position.")(f)


def paired_features(
    path_a: Path, path_b: Path, layers_a: Sequence[str] | None, layers_b: Sequence[str] | None,
    pair_by: str, caller: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both sides' layers in memory, their samples lined up by ``pair_by``
    (:func:`repscope.store.pair_sources`); what was done is said on stderr."""
    from repscope.store import open_layers, pair_sources

    a = open_layers(path_a, layers_a or None, name=f"FEATURES_A ({path_a})")
    b = open_layers(path_b, layers_b or None, name=f"FEATURES_B ({path_b})")
    a, b, note = pair_sources(a, b, by=pair_by, caller=caller)  # type: ignore[arg-type]
    if note:
        click.echo(f"{caller}: {note}", err=True)
    return a.read_all(), b.read_all()


def parse_ints(text: str, option: str, *, example: str = "8,16,32") -> list[int]:
    """The comma-separated integers of ``option`` (at least one); anything else is a one-line
    error showing ``example``."""
    from repscope.exceptions import RepscopeValueError

    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise RepscopeValueError(
            f"{option} must be comma-separated integers (e.g. {example}); got {text!r}."
        ) from None
    if not out:
        raise RepscopeValueError(f"{option} must list at least one integer; got {text!r}.")
    return out


def check_exists(path: str | Path, what: str) -> Path:
    """A path that must exist: a missing one is a one-line error with exit code 1."""
    from repscope.exceptions import DataNotFoundError

    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"{what} {str(p)!r} does not exist.")
    return p


class KindChoice(click.Choice):
    """A ``click.Choice`` whose choices are the kinds of a capability group
    (:func:`repscope.capability.kind_names`), read when the command is used, so a kind declared
    by another package appears in the choices and the help without editing the command."""

    def __init__(self, group: str) -> None:
        self.group = group
        super().__init__([], case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        from repscope.capability import kind_names

        return kind_names(self.group)

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:  # click assigns [] in __init__
        pass
