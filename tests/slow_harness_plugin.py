"""A pytest plugin that breaks the suite's harness on purpose: every ort-cpu call the suite times
also busy-waits 30 % of its own duration, while `session.run` itself is untouched. The timeit
cross-check must catch it (tests/test_timeit_check.py loads this with `-p`)."""
from __future__ import annotations

import time

from spinn_export.bench.backends.ort import OrtRunner

EXTRA = 0.30
_prepare = OrtRunner.prepare


def _slower_prepare(self, x):  # type: ignore[no-untyped-def]
    call = _prepare(self, x)

    def slower() -> None:
        start = time.perf_counter()
        call()
        until = time.perf_counter() + EXTRA * (time.perf_counter() - start)
        while time.perf_counter() < until:
            pass

    return slower


OrtRunner.prepare = _slower_prepare
