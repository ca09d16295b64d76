"""The ``repscope`` command line: one module per command group, thin over the library.

Every failure is one line on stderr and exit code 1: library errors
(:class:`~repscope.exceptions.RepscopeError`) and those from the machine (a folder that
refuses a write, a locked database, memory running out, an object ``.npy``; see
:mod:`repscope.cli._errors`). ``--debug``, anywhere on the command line, shows the traceback
instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from repscope._version import __version__
from repscope.cli._common import Settings

__all__ = ["cli", "main"]


class RepscopeGroup(click.Group):
    """The root group.

    Its commands come from the capabilities (:func:`repscope.capability.capabilities`): each
    package declares its commands beside its code, and third-party packages add theirs through
    the ``repscope.capabilities`` entry-point group, so no central file lists them. Command
    modules are imported when the commands are listed or run; they import the library lazily.
    Library errors (:class:`~repscope.exceptions.RepscopeError`), file-system, database and
    memory failures become one line on stderr and exit code 1; ``--debug`` is accepted
    anywhere on the command line and keeps the traceback.
    """

    def _capability_commands(self) -> dict[str, click.Command]:
        from repscope.capability import capabilities, resolve

        out: dict[str, click.Command] = {}
        for cap in capabilities().values():
            for ref in cap.commands:
                obj = resolve(ref, what=f"command of capability {cap.name!r}")
                for command in obj if isinstance(obj, (list, tuple)) else [obj]:
                    if not isinstance(command, click.Command):
                        from repscope.exceptions import RepscopeTypeError

                        raise RepscopeTypeError(
                            f"capability {cap.name!r} declares {ref!r}, which is not a click "
                            f"command; got {type(command).__name__}.")
                    name = command.name or ""
                    if name in out:
                        from repscope.exceptions import RepscopeValueError

                        raise RepscopeValueError(
                            f"command {name!r} is declared twice (capability {cap.name!r}).")
                    out[name] = command
        return out

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._capability_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        return self._capability_commands().get(cmd_name)

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        """Run the command line, with every ``--debug`` moved to the root group's option."""
        from repscope.cli._errors import hoist_debug

        argv = sys.argv[1:] if args is None else args
        return super().main(hoist_debug(argv), *rest, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as err:
            obj = ctx.find_object(Settings)
            if (obj is not None and obj.debug) or os.environ.get("REPSCOPE_DEBUG") == "1":
                raise
            from repscope.cli._errors import one_line

            message = one_line(err, db=_database(obj))
            if message is None:
                raise
            raise click.ClickException(message) from None


def _database(obj: Settings | None) -> Path | None:
    """The results database a command uses (for messages; None when it cannot be told)."""
    try:
        from repscope.db import default_db_path

        path = Path(obj.db_path).expanduser() if obj and obj.db_path else default_db_path()
        path = path.absolute()
        return path / "results.db" if path.is_dir() else path
    except Exception:  # a message helper must never replace the error being reported
        return None


@click.group(cls=RepscopeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="repscope")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--no-progress", "no_progress", is_flag=True,
              help="Hide progress bars on every command (env REPSCOPE_NO_PROGRESS=1).")
@click.option(
    "--db",
    "db_path",
    envvar="REPSCOPE_DB",
    type=click.Path(dir_okay=False),
    default=None,
    help="Results database (default: $REPSCOPE_HOME/results.db; env REPSCOPE_DB).",
)
@click.option("--seed", envvar="REPSCOPE_SEED", type=int, default=0, show_default=True,
              help="Random seed for everything stochastic (env REPSCOPE_SEED).")
@click.option("--device", envvar="REPSCOPE_DEVICE", default="cpu", show_default=True,
              help="Compute device for models (cpu, cuda, cuda:1; env REPSCOPE_DEVICE).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, no_progress: bool, db_path: str | None, seed: int,
        device: str) -> None:
    """repscope: the linear structure of learned representations and weights.

    Extract features from a model (or bring your own arrays), analyse them, and render
    everything recorded into one self-contained HTML report.
    """
    from repscope._progress import progress_disabled

    quiet_transformers_env()
    ctx.obj = Settings(debug=debug, db_path=db_path, seed=seed, device=device,
                       progress=not (no_progress or progress_disabled()))
    _join_ranks(ctx, seed)


def _join_ranks(ctx: click.Context, seed: int) -> None:
    """Under ``torchrun``: join the process group, check that every rank runs the same
    repscope with the same arguments, refuse commands that run in one process only, and make
    the ranks other than 0 quiet (no stdout, no progress bars, no records)."""
    from repscope.distributed import torchrun_env

    if torchrun_env() is None:
        return
    from repscope.distributed import launch, shutdown

    obj: Settings = ctx.obj
    command = _command_path(ctx)
    if not command[1]:
        from repscope.exceptions import RepscopeValueError

        raise click.ClickException(str(RepscopeValueError(
            f"'repscope {' '.join(command[0])}' runs in one process; launch it without torchrun."
            f" Under torchrun these commands run on every rank: {', '.join(_rank_aware_names(ctx))}."
        )))
    dist_ctx = launch(obj.device)
    ctx.call_on_close(shutdown)
    args = sys.argv[1:]
    dist_ctx.check_same({"version": __version__, "argv": args, "seed": seed},
                        "the repscope version and the command's arguments")
    if not dist_ctx.is_writer:
        obj.writer = False
        obj.progress = False
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of this process


def _command_path(ctx: click.Context) -> tuple[list[str], bool]:
    """The command the arguments name (``["analyze", "spectrum"]``) and whether it is
    :func:`~repscope.cli._common.rank_aware`."""
    from repscope.cli._common import RANK_AWARE

    group: click.Command | None = ctx.command
    names: list[str] = []
    first = ctx.invoked_subcommand or ""
    argv = sys.argv[1:]
    rest = argv[argv.index(first) + 1:] if first in argv else []
    tokens = [first, *(t for t in rest if not t.startswith("-"))]
    for token in tokens:
        if not isinstance(group, click.Group):
            break
        sub = group.get_command(ctx, token)
        if sub is None:
            break
        names.append(token)
        group = sub
    aware = group is not None and not isinstance(group, click.Group) and bool(
        getattr(group.callback, RANK_AWARE, False))
    return names, aware


def _rank_aware_names(ctx: click.Context) -> list[str]:
    from repscope.cli._common import RANK_AWARE

    out: list[str] = []

    def walk(group: click.Group, prefix: str) -> None:
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            if isinstance(sub, click.Group):
                walk(sub, f"{prefix}{name} ")
            elif sub is not None and getattr(sub.callback, RANK_AWARE, False):
                out.append(f"{prefix}{name}")

    walk(ctx.command, "")  # type: ignore[arg-type]
    return out or ["(none)"]


def quiet_transformers_env() -> None:
    """transformers' and the hub's loading bars off for every command (without importing them:
    the environment variables are read when they load)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``--debug`` may come anywhere in ``argv``)."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="repscope")
