"""What the console shows: progress for long loops (a tqdm bar on a terminal, one plain line per step anywhere else),
and nothing of the libraries' own noise (`quiet`).

A bar redraws itself with carriage returns; in a CI log, a pipe or a file those become hundreds of
half-lines. Off a terminal, each finished step is one line with the figures the bar would show.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")


class PlainProgress(Generic[Item]):
    """The subset of tqdm's interface the project uses (iteration, `set_postfix`, `close`), as plain lines on
    stderr."""

    def __init__(self, items: Iterable[Item], desc: str, unit: str) -> None:
        self.items, self.desc, self.unit = list(items), desc, unit
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        """Nothing to clear: the lines already printed are the record (a loop may stop early, as pruning does)."""

    def __iter__(self) -> Iterator[Item]:
        for done, item in enumerate(self.items, 1):
            yield item
            figures = "".join(f", {key}={value}" for key, value in self.postfix.items())
            print(f"  {self.desc}: {self.unit} {done}/{len(self.items)}{figures}", file=sys.stderr, flush=True)


def progress(items: Iterable[Item], *, desc: str, unit: str, enabled: bool = True,
             leave: bool = True) -> tqdm | PlainProgress[Item]:
    """A bar where stderr is a terminal, plain lines where it is not, nothing when not `enabled`."""
    if not enabled or sys.stderr.isatty():
        return tqdm(items, desc=desc, unit=unit, disable=not enabled, leave=leave)
    return PlainProgress(items, desc, unit)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter noise (deprecation warnings, progress prints, log lines); real errors still raise."""
    previous = logging.root.manager.disable
    with (warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()),
          contextlib.redirect_stderr(io.StringIO())):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)
