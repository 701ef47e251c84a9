"""Plug-ins are discovered through entry points, never listed: a format or a backend is one module that
names itself in an entry-point group, so another package adds one without an edit here.

A plug-in that fails to load is kept, with the reason, rather than hidden or fatal: `spinn-export
backends` shows it as unavailable and saying why, and asking for it by name gives that reason.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from spinn_export.errors import UserError, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class Discovered(Generic[T]):
    """The plug-ins of one entry-point group: loaded by name, and those that failed with their reason."""

    loaded: dict[str, T]
    broken: dict[str, str]

    def get(self, name: str, kind: str, hint: str = "") -> T:
        """The plug-in called `name`, or a one-line UserError: why it cannot load, or the choices."""
        if name in self.loaded:
            return self.loaded[name]
        if name in self.broken:
            raise UserError(f"{kind} {name!r} is registered but unusable: {self.broken[name]}")
        raise UserError(f"unknown {kind} {name!r}: choose from {', '.join(self.loaded) or 'none registered'}{hint}")


def discover(group: str, kind: type[T], name_of: Callable[[T], str]) -> Discovered[T]:
    """Load every entry point of `group`; each must be a `kind` whose name is the entry point's name.

    The entry point's name is the plug-in's public name (what users type, what results record),
    so a mismatch is refused rather than silently renamed. Sorted by name: entry-point order is not
    defined across distributions, and listings must not depend on install order.
    """
    loaded: dict[str, T] = {}
    broken: dict[str, str] = {}
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        if point.name in loaded or point.name in broken:
            broken[point.name] = f"registered twice (entry points {point.value} and another)"
            loaded.pop(point.name, None)
            continue
        try:
            plugin = point.load()
        except Exception as exc:  # a third-party plug-in can fail to import in any way
            broken[point.name] = f"its module {point.value} failed to load ({type(exc).__name__}: {first_line(exc)})"
            continue
        if not isinstance(plugin, kind):
            broken[point.name] = f"{point.value} is a {type(plugin).__name__}, not a {kind.__name__}"
        elif name_of(plugin) != point.name:
            broken[point.name] = (f"{point.value} is named {name_of(plugin)!r}, not {point.name!r} as its entry "
                                  "point says")
        else:
            loaded[point.name] = plugin
    return Discovered(loaded, broken)
