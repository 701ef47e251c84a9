"""Executors: where a sweep's fine-tuning runs, as plug-ins (entry-point group `spinn_export.executors`).

Fine-tuning the points of a sweep is independent work, so it can run side by side: in local processes (the
default, no extra dependency), or on an existing distributed engine (Dask, Ray) so that a user with a cluster
fine-tunes many points at once. Every executor hands out a standard `concurrent.futures.Executor`, the one
interface the sweep uses (`submit`, `as_completed`), so an engine is one module that adapts itself to it.

An engine that is not installed is an unavailable plug-in with its reason (the pip extra that installs it),
never an import error: its module imports the engine only when it is started. Timing is not an executor's
business: the sweep benchmarks on this machine, one measurement at a time, after every future is done.
"""
from __future__ import annotations

import concurrent.futures
import functools
import importlib.util
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from spinn_export.errors import UserError
from spinn_export.plugins import discover

EXECUTOR_GROUP = "spinn_export.executors"
DEFAULT_EXECUTOR = "local"

Start = Callable[[int, "str | None"], AbstractContextManager[concurrent.futures.Executor]]


@dataclass(frozen=True)
class Executor:
    """A registered executor.

    `start(workers, address)` is a context manager yielding a `concurrent.futures.Executor`: with no address it
    starts `workers` single-task workers on this machine (and stops them on exit); with an address it connects to
    a cluster the user runs (and only disconnects). `engine` is the module it needs and `extra` the spinn-export
    extra that installs it (None for the local executor, which needs nothing).
    """

    name: str
    description: str
    start: Start
    engine: str | None = None
    extra: str | None = None
    takes_address: bool = False

    def unavailable_reason(self) -> str | None:
        """None when this executor can run here, else one line saying why not and what to install."""
        if self.engine is None or importlib.util.find_spec(self.engine) is not None:
            return None
        return f"{self.engine} is not installed; pip install 'spinn-export[{self.extra}]'"

    def check(self, address: str | None) -> None:
        """Raise a one-line UserError unless this executor can start here with `address`."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise UserError(f"executor {self.name} is unavailable: {reason}")
        if address is not None and not self.takes_address:
            raise UserError(f"--address applies to a cluster executor ({', '.join(cluster_executors())}), "
                            f"not to {self.name}")

    def open(self, workers: int, address: str | None) -> AbstractContextManager[concurrent.futures.Executor]:
        self.check(address)
        return self.start(workers, address)


@functools.cache
def _discovered():  # type: ignore[no-untyped-def]
    return discover(EXECUTOR_GROUP, Executor, lambda e: e.name)


def executors() -> dict[str, Executor]:
    """Every registered executor that loaded, by name (available here or not: `unavailable_reason` says)."""
    return _discovered().loaded


def cluster_executors() -> list[str]:
    return [name for name, e in executors().items() if e.takes_address]


def get_executor(name: str) -> Executor:
    """The executor called `name`, or a one-line UserError naming the choices (or why it cannot load)."""
    return _discovered().get(name, "executor", f" (entry-point group {EXECUTOR_GROUP}; pip install -e . in a checkout)")
