"""The capability contract: one plug-in point for CLI commands, report sections, demo steps
and the kinds a command offers.

A capability is one package (``repscope.probe``, ``repscope.similarity``, or a third-party
package). Its library code knows nothing of the CLI, the database or the report. Beside it, in
one place, it declares a :class:`Capability`:

.. code-block:: python

    # repscope/probe/_capability.py  (a third-party package: any module, see below)
    from repscope.capability import Capability, DemoStep, Section

    CAPABILITY = Capability(
        name="probe",
        summary="Linear probes per layer, with intervals.",
        commands=("repscope.cli.probe:probe",),
        sections=(Section("probe", "Probe accuracy by layer", order=30,
                          render="repscope.probe._report:render_probe"),),
        demo=(DemoStep("probes", order=30, run="repscope.probe._demo:demo_probe_step",
                       summary="probes per layer, learning curves, few-shot accuracy"),),
        kinds={"probe": {"ridge": Kind("repscope.probe._kinds:ridge", "closed-form ridge")}},
    )

Every reference is a ``"module:attribute"`` string, imported only when used: listing the
commands imports the command modules, rendering a report imports the sections of the analyses
it shows, and nothing imports a capability's library code until a command or step runs it.

:func:`capabilities` finds the built-in capabilities (``repscope/_capability.py`` and each
``repscope/<package>/_capability.py``)
and third-party ones (entry points of group ``repscope.capabilities``, each naming a
:class:`Capability` object), so adding one edits no central file. Names of capabilities,
commands, section analyses, section orders, demo steps and kinds must not collide; a collision
is a :class:`~repscope.exceptions.RepscopeValueError` naming both owners.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError

if TYPE_CHECKING:
    import numpy as np

    from repscope.db import ResultsDB

__all__ = [
    "ENTRY_POINT_GROUP",
    "Capability",
    "CapabilityWarning",
    "DemoContext",
    "DemoStep",
    "Kind",
    "Section",
    "capabilities",
    "demo_steps",
    "kind_names",
    "kinds",
    "load_kind",
    "resolve",
    "run_demo_steps",
    "section_for",
    "sections",
]

#: Entry-point group through which other packages add capabilities.
ENTRY_POINT_GROUP = "repscope.capabilities"


class CapabilityWarning(UserWarning):
    """A third-party capability could not be loaded (it is skipped; the rest still work)."""


def resolve(ref: str, *, what: str = "reference") -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise RepscopeValueError(
            f"A capability {what} must be 'package.module:attribute'; got {ref!r}.")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RepscopeValueError(
                f"The capability {what} {ref!r} names {part!r}, which {module!r} does not "
                "define.") from None
    return obj


@dataclass(frozen=True)
class Section:
    """A report section for the records of one analysis.

    Parameters
    ----------
    analysis : str
        The analysis name its records carry (``Record.analysis``).
    title : str
        The heading (plain text; escaped when rendered).
    order : int
        Position in the report; unique across all capabilities (lower comes first).
    render : str
        ``"module:function"``; ``function(records) -> html_fragment``, imported on first use.
    description : str
        One plain-text sentence under the heading.
    """

    analysis: str
    title: str
    order: int
    render: str
    description: str = ""

    def renderer(self) -> Callable[[Sequence[Any]], str]:
        """The imported render function."""
        fn = resolve(self.render, what=f"section renderer of {self.analysis!r}")
        if not callable(fn):
            raise RepscopeTypeError(f"section renderer {self.render!r} is not callable.")
        return fn


@dataclass(frozen=True)
class DemoStep:
    """One step of ``repscope demo``.

    Parameters
    ----------
    name : str
        Short name, shown in the timings (``"probes"``).
    order : int
        Steps run by ascending order; unique across all capabilities.
    run : str
        ``"module:function"``; ``function(ctx: DemoContext) -> list[Record]``. The demo adds
        the returned records to its database.
    summary : str
        What the step does, logged when it starts.
    optional : bool, default=False
        An optional step whose data or model is missing (it raises
        :class:`~repscope.exceptions.DataNotFoundError`) is skipped with one line; a required
        step's error stops the demo.
    budget_s : float, default=20.0
        Expected seconds on a 2-core CPU; a step over budget is named in the log.
    """

    name: str
    order: int
    run: str
    summary: str
    optional: bool = False
    budget_s: float = 20.0


@dataclass(frozen=True)
class Kind:
    """One choice a command offers (a probe type, later an OOD detector or merge method).

    Parameters
    ----------
    factory : str
        ``"module:callable"``, imported when chosen. What it is called with is the owning
        command's convention (e.g. the ``probe`` group: ``factory(seed=..., k=..., small=...)``).
    help : str
        One line shown in the command's help.
    """

    factory: str
    help: str = ""


@dataclass(frozen=True)
class Capability:
    """What one package adds to repscope: commands, report sections, demo steps, kinds.

    Parameters
    ----------
    name : str
        Unique name (usually the package's).
    summary : str
        One line (``repscope --help`` does not show it; ``repscope capabilities`` does).
    commands : tuple of str
        ``"module:attribute"`` of ``click`` commands or groups added to ``repscope``.
    sections : tuple of Section
    demo : tuple of DemoStep
    kinds : mapping of str to mapping of str to Kind
        Choices offered by commands, by group: ``{"probe": {"ridge": Kind(...)}}``. A group may
        be filled by several capabilities (a new probe type from another package).
    """

    name: str
    summary: str = ""
    commands: tuple[str, ...] = ()
    sections: tuple[Section, ...] = ()
    demo: tuple[DemoStep, ...] = ()
    kinds: Mapping[str, Mapping[str, Kind]] = field(default_factory=dict)
    source: str = ""  # where it was found (filled by the loader)


_cache: dict[str, Capability] | None = None


def _builtin_modules() -> list[str]:
    import repscope

    out = []
    for root in repscope.__path__:
        if (Path(root) / "_capability.py").is_file():
            out.append("repscope._capability")
        for m in pkgutil.iter_modules([root]):
            if m.ispkg and (Path(root) / m.name / "_capability.py").is_file():
                out.append(f"repscope.{m.name}._capability")
    return sorted(out)


def _check_unique(caps: Sequence[Capability]) -> None:
    seen: dict[tuple[str, Any], str] = {}

    def claim(kind: str, key: Any, owner: str) -> None:
        other = seen.setdefault((kind, key), owner)
        if other != owner:
            raise RepscopeValueError(
                f"{kind} {key!r} is declared by two capabilities, {other!r} and {owner!r}; "
                "each must be unique.")

    for cap in caps:
        claim("capability", cap.name, cap.source or cap.name)
        for s in cap.sections:
            claim("report section for analysis", s.analysis, cap.name)
            claim("report section order", s.order, cap.name)
        for d in cap.demo:
            claim("demo step", d.name, cap.name)
            claim("demo step order", d.order, cap.name)
        for group, entries in cap.kinds.items():
            for name in entries:
                claim(f"{group} kind", name, cap.name)


def capabilities(*, reload: bool = False) -> dict[str, Capability]:
    """Every capability: the built-in ones, then entry points of group ``repscope.capabilities``.

    Parameters
    ----------
    reload : bool, default=False
        Look again (after installing a package or changing ``sys.path``).

    Returns
    -------
    dict of str to Capability
        By name, built-ins first (sorted by module), then third-party in entry-point order.

    Raises
    ------
    RepscopeValueError
        Two capabilities declare the same name, command analysis, section order, demo step
        or kind. A third-party capability that fails to import is skipped with a
        :class:`CapabilityWarning` instead.
    """
    global _cache
    if _cache is not None and not reload:
        return _cache
    found: list[Capability] = []
    for module in _builtin_modules():
        cap = importlib.import_module(module).CAPABILITY
        found.append(_with_source(cap, module))
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cap = ep.load()
        except Exception as err:  # a broken plug-in must not break repscope
            warnings.warn(f"capability {ep.name!r} ({ep.value}) was not loaded: {err!r}",
                          CapabilityWarning, stacklevel=2)
            continue
        if not isinstance(cap, Capability):
            warnings.warn(f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r} "
                          f"must name a repscope.capability.Capability; got "
                          f"{type(cap).__name__}.", CapabilityWarning, stacklevel=2)
            continue
        found.append(_with_source(cap, ep.value))
    _check_unique(found)
    _cache = {c.name: c for c in found}
    return _cache


def _with_source(cap: Capability, source: str) -> Capability:
    if not isinstance(cap, Capability):
        raise RepscopeTypeError(f"{source}.CAPABILITY must be a Capability; got "
                                f"{type(cap).__name__}.")
    from dataclasses import replace

    return replace(cap, source=source)


def sections() -> dict[str, Section]:
    """Every declared report section, by analysis name, in report order."""
    out = [s for cap in capabilities().values() for s in cap.sections]
    return {s.analysis: s for s in sorted(out, key=lambda s: s.order)}


def section_for(analysis: str) -> Section | None:
    """The section declared for ``analysis`` (``None``: the report uses its generic table)."""
    return sections().get(analysis)


def demo_steps() -> list[DemoStep]:
    """Every declared demo step, in the order they run."""
    return sorted((d for cap in capabilities().values() for d in cap.demo),
                  key=lambda d: d.order)


def kinds(group: str) -> dict[str, Kind]:
    """The kinds of ``group`` declared by every capability, by name (sorted)."""
    out: dict[str, Kind] = {}
    for cap in capabilities().values():
        out.update(cap.kinds.get(group, {}))
    return dict(sorted(out.items()))


def kind_names(group: str) -> list[str]:
    """The names of the kinds of ``group``, sorted."""
    return list(kinds(group))


def load_kind(group: str, name: str) -> Any:
    """The factory of kind ``name`` of ``group`` (imported now).

    Raises
    ------
    UnknownNameError
        ``name`` is not a kind of ``group``; the message lists the known ones and the closest.
    """
    known = kinds(group)
    if name not in known:
        from repscope.registry import closest_names

        close = closest_names(name, list(known))
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(
            f"unknown {group} {name!r}.{hint} Known: {', '.join(known) or '(none)'}.",
            name=name, known=tuple(known))
    return resolve(known[name].factory, what=f"{group} kind {name!r}")


@dataclass
class DemoContext:
    """What every demo step gets (one signature for all steps).

    Attributes
    ----------
    stores : dict of str to FeatureStore
        The extracted features, by model name (every block of each vision model).
    layers : dict of str to list of str
        The layers extracted per model, in depth order.
    labels : ndarray of shape (n_samples,)
        Class labels of the images (in store order).
    label_names : list of str
    inputs : Any
        The images themselves (for views that show them).
    ids : list of str
        Sample ids, in store order.
    dataset : str
        The dataset name every record of the demo carries.
    db : ResultsDB
        The open results database (steps return records; they need not write).
    run_id : str
    seed : int
    log : callable
        ``log(message)`` prints one progress line.
    out : Path
        The demo's output folder (for anything a step saves, e.g. SAE weights).
    budget_s : float
        The running step's time budget in seconds.
    """

    stores: dict[str, Any]
    layers: dict[str, list[str]]
    labels: np.ndarray
    label_names: list[str]
    inputs: Any
    ids: list[str]
    dataset: str
    db: ResultsDB
    run_id: str
    seed: int
    log: Callable[[str], None]
    out: Path
    budget_s: float = 20.0
    extra: dict[str, Any] = field(default_factory=dict)

    def record_context(self) -> dict[str, Any]:
        """``dataset`` and ``run_id`` for a result's ``to_records``."""
        return {"dataset": self.dataset, "run_id": self.run_id}


def run_demo_steps(
    ctx: DemoContext, steps: Sequence[DemoStep] | None = None
) -> dict[str, float]:
    """Run demo steps in order, add their records, and return seconds per step.

    A step that returns something other than a list of records is an error naming the step.
    An optional step whose data is missing (``DataNotFoundError``) is skipped with one line.
    """
    import time

    from repscope.db import Record
    from repscope.exceptions import DataNotFoundError

    timings: dict[str, float] = {}
    for step in demo_steps() if steps is None else sorted(steps, key=lambda d: d.order):
        ctx.budget_s = step.budget_s
        t = time.perf_counter()
        ctx.log(f"[demo] {step.name}: {step.summary}")
        fn = resolve(step.run, what=f"demo step {step.name!r}")
        try:
            records = fn(ctx)
        except DataNotFoundError as err:
            if not step.optional:
                raise
            ctx.log(f"[demo] skipped {step.name}: {' '.join(str(err).split())}")
            continue
        if not isinstance(records, list) or not all(isinstance(r, Record) for r in records):
            raise RepscopeTypeError(
                f"demo step {step.name!r} ({step.run}) must return a list of Record; got "
                f"{type(records).__name__}.")
        ctx.db.add_many(records)
        timings[step.name] = time.perf_counter() - t
        if timings[step.name] > step.budget_s:
            ctx.log(f"[demo] {step.name} took {timings[step.name]:.1f} s (budget "
                    f"{step.budget_s:.0f} s)")
    return timings
