"""`pytest bench` from the checkout runs the suite that ships inside the package (spinn_export/bench/suite/),
in its order (the package's module names): the paired ceiling fractions, the latency matrix, the paired speedups,
the fresh processes' rounds, the timeit cross-check and the fastest verified deployment (which needs the matrix's
medians). Every --spinn-* option and pytest-benchmark's own (--benchmark-autosave, --benchmark-compare, ...) apply."""
from spinn_export.bench.suite.test_ceiling_fraction import test_paired_ceiling_fraction  # noqa: F401
from spinn_export.bench.suite.test_latency import test_latency  # noqa: F401
from spinn_export.bench.suite.test_paired import test_paired_speedup  # noqa: F401
from spinn_export.bench.suite.test_processes import test_fresh_process_rounds  # noqa: F401
from spinn_export.bench.suite.test_timeit import test_ort_cpu_agrees_with_timeit  # noqa: F401
from spinn_export.bench.suite.test_verified_fastest import test_fastest_verified_deployment  # noqa: F401
