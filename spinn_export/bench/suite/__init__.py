"""The benchmark suite's test modules (pytest-benchmark): the latency matrix, the paired speedups and the
timeit cross-check, in that order. Its plug-in is `spinn_export.bench.plugin`; `spinn-export bench` runs it
from any folder, and `pytest bench` from the checkout."""
