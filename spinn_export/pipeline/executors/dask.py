"""Dask (`dask.distributed`): a scheduler the user runs (`--address tcp://HOST:8786`), or a `LocalCluster` of
worker processes on this machine when no address is given.

Dask's `Client.get_executor()` is already a `concurrent.futures.Executor`, so this module only connects and
disconnects. A cluster this module starts has one single-threaded worker process per requested worker (each
fine-tunes one point at a time); a cluster you run keeps its own configuration.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Iterator

from spinn_export.errors import UserError, first_line
from spinn_export.pipeline.executors import Executor


@contextlib.contextmanager
def _start(workers: int, address: str | None) -> Iterator[concurrent.futures.Executor]:
    # optional: distributed (the dask extra)
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if address is None:
            # silent: a failed point is reported once, as one line, by the sweep (not also as the worker's traceback)
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, silence_logs=logging.CRITICAL))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(_connect(address))
        yield client.get_executor()


def _connect(address: str):  # type: ignore[no-untyped-def]
    """A client of the scheduler at `address`; one line (UserError) when none answers."""
    # optional: distributed (the dask extra)
    from distributed import Client


    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise UserError(f"executor dask: no scheduler answered at {address} ({type(exc).__name__}: "
                        f"{first_line(exc)}); start one (dask scheduler) or drop --address") from None


DASK = Executor("dask", "a Dask cluster (--address SCHEDULER, else a LocalCluster of processes here)", _start,
                engine="distributed", extra="dask", takes_address=True)
