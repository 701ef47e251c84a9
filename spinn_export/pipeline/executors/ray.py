"""Ray: a cluster the user runs (`--address HOST:6379`, or `auto`), or a local Ray instance started with as many
CPUs as requested workers when no address is given.

Ray has no `concurrent.futures.Executor` of its own, but every task's `ObjectRef.future()` is a
`concurrent.futures.Future`, so `RayExecutor.submit` and `RayFuture` (which fails with the task's own error) are
all the adapting needed. Each task asks for one CPU, so
a local instance of N CPUs fine-tunes N points at once; a cluster you run schedules by its own resources.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from spinn_export.errors import UserError, first_line
from spinn_export.pipeline.executors import Executor


class RayFuture(concurrent.futures.Future):
    """A Ray task's result as a concurrent future, failing with the task's own exception: Ray re-raises it wrapped
    (its `cause`) in an error whose message is the remote traceback, which no one-line error could show."""

    def __init__(self, ref: Any) -> None:
        super().__init__()
        self.ref = ref
        self.set_running_or_notify_cancel()  # submitted tasks are Ray's to schedule; cancel() asks Ray
        ref.future().add_done_callback(self._settle)

    def _settle(self, inner: concurrent.futures.Future) -> None:
        error = inner.exception()
        if error is None:
            self.set_result(inner.result())
        else:
            self.set_exception(getattr(error, "cause", None) or error)

    def cancel(self) -> bool:
        # optional: ray (the ray extra)
        import ray

        ray.cancel(self.ref)
        return False


class RayExecutor(concurrent.futures.Executor):
    """`submit(fn, *args)` runs `fn` as a Ray task of one CPU."""

    def __init__(self) -> None:
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:  # type: ignore[override]
        # optional: ray (the ray extra)
        import ray

        if fn not in self._remote:
            self._remote[fn] = ray.remote(num_cpus=1, max_retries=0)(fn)
        return RayFuture(self._remote[fn].remote(*args, **kwargs))


@contextlib.contextmanager
def _start(workers: int, address: str | None) -> Iterator[concurrent.futures.Executor]:
    """Start (or connect to) Ray unless this process already did: then use it, and leave it running after."""
    # optional: ray (the ray extra)
    import ray


    owned = not ray.is_initialized()
    if owned:
        options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
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
