"""A generic name registry: register objects with metadata, look them up, list them.

A name can have aliases (other names a user may type, e.g. ``cka`` for ``linear_cka``); a
registry made with ``fold=`` also matches names after folding (case, ``-`` vs ``_``). Unknown
names raise :class:`~repscope.exceptions.UnknownNameError` (a ``KeyError``) whose message lists
the known names and suggests the closest one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from repscope.exceptions import RepscopeValueError, UnknownNameError

__all__ = ["Entry", "Registry", "closest_names"]

T = TypeVar("T")


def closest_names(name: str, known: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Known names closest to ``name`` (case-insensitive), best first."""
    lowered = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    out = [lowered[h] for h in hits]
    # Prefix/substring matches help for long dotted paths (layer names).
    for k in known:
        if len(out) >= n:
            break
        if k not in out and name and (name.lower() in k.lower() or k.lower() in name.lower()):
            out.append(k)
    return out


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object and its metadata."""

    name: str
    obj: T
    meta: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Objects keyed by name, with metadata; ``kind`` names what is registered in messages.

    Examples
    --------
    >>> measures = Registry("measure")
    >>> @measures.register("double", higher_is_better=True)
    ... def double(x):
    ...     return 2 * x
    >>> measures.get("double")(3)
    6
    >>> measures.meta("double")["higher_is_better"]
    True
    >>> measures.alias("twice", "double")
    >>> measures.canonical("twice"), measures.get("twice")(3)
    ('double', 6)
    """

    def __init__(self, kind: str, *, fold: Callable[[str], str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._fold = fold

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with keyword metadata."""

        def deco(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, **meta: Any) -> None:
        """Register ``obj`` under ``name``; a name can be registered once."""
        if name in self._entries or name in self._aliases:
            raise RepscopeValueError(f"{self.kind} {name!r} is already registered.")
        self._entries[name] = Entry(name, obj, dict(meta))

    def alias(self, alias: str, name: str) -> None:
        """Make ``alias`` another name of the registered ``name`` (looked up, never listed by
        :meth:`names`; see :meth:`aliases`)."""
        target = self.canonical(name)
        if alias in self._entries or self._aliases.get(alias, target) != target:
            raise RepscopeValueError(
                f"{self.kind} alias {alias!r} is already a name of "
                f"{self._aliases.get(alias, alias)!r}."
            )
        self._aliases[alias] = target

    def aliases(self) -> dict[str, str]:
        """Every alias and the registered name it stands for, sorted by alias."""
        return dict(sorted(self._aliases.items()))

    def canonical(self, name: str) -> str:
        """The registered name ``name`` stands for: itself, an alias's target, or (with
        ``fold``) the name or alias equal to it after folding.

        Raises
        ------
        UnknownNameError
            No such name; the message suggests the closest name or alias.
        """
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        if self._fold is not None and isinstance(name, str):
            folded = self._fold(name)
            for known in (*self._entries, *self._aliases):
                if self._fold(known) == folded:
                    return self._aliases.get(known, known)
        known_names = tuple(sorted(self._entries))
        # aliases count as near misses too, but the suggestion is the registered name
        close = closest_names(str(name), [*known_names, *self._aliases])
        hint = f" Did you mean {self._aliases.get(close[0], close[0])!r}?" if close else ""
        listing = ", ".join(known_names) if known_names else "(none registered)"
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {listing}.",
            name=str(name),
            known=known_names,
        )

    def _entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def get(self, name: str) -> T:
        """The object registered under ``name``."""
        return self._entry(name).obj

    def meta(self, name: str) -> Mapping[str, Any]:
        """The metadata registered with ``name``."""
        return self._entry(name).meta

    def names(self, **where: Any) -> list[str]:
        """Registered names, sorted; keyword filters keep entries whose metadata matches
        (for set-valued metadata, membership)."""
        out = []
        for name, e in sorted(self._entries.items()):
            ok = True
            for k, v in where.items():
                m = e.meta.get(k)
                if isinstance(m, (set, frozenset, tuple, list)) and not isinstance(v, (set, tuple)):
                    ok &= v in m
                else:
                    ok &= m == v
            if ok:
                out.append(name)
        return out

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is a registered name (aliases and folded names excluded)."""
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
