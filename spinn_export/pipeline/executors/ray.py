"""Ray: a cluster the user runs (`--address HOST:6379`, or `auto`), or a local Ray instance started with as many
CPUs as requested workers when no address is given.

Ray has no `concurrent.futures.Executor` of its own, but every task's `ObjectRef.future()` is a
`concurrent.futures.Future`, so `RayExecutor.submit` is all the adapting needed. Each task asks for one CPU, so
a local instance of N CPUs fine-tunes N points at once; a cluster you run schedules by its own resources.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from spinn_export.pipeline.executors import Executor


class RayExecutor(concurrent.futures.Executor):
    """`submit(fn, *args)` runs `fn` as a Ray task of one CPU and returns its result's concurrent future."""

    def __init__(self) -> None:
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:  # type: ignore[override]
        import ray

        if fn not in self._remote:
            self._remote[fn] = ray.remote(num_cpus=1, max_retries=0)(fn)
        return self._remote[fn].remote(*args, **kwargs).future()


@contextlib.contextmanager
def _start(workers: int, address: str | None) -> Iterator[concurrent.futures.Executor]:
    """Start (or connect to) Ray unless this process already did: then use it, and leave it running after."""
    import ray

    from spinn_export.errors import UserError, first_line

    owned = not ray.is_initialized()
    if owned:
        options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        try:
            if address is None:
                ray.init(num_cpus=workers, include_dashboard=False, **options)
            else:
                ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"connect to {address}" if address else "start Ray here"
            raise UserError(f"executor ray: could not {where} ({type(exc).__name__}: {first_line(exc)})") from None
    try:
        yield RayExecutor()
    finally:
        if owned:
            ray.shutdown()


RAY = Executor("ray", "a Ray cluster (--address HOST:PORT or auto, else a local Ray instance)", _start,
               engine="ray", extra="ray", takes_address=True)
