"""The benchmark suite's test modules (pytest-benchmark), run in name order: each backend's paired fraction of the
GEMM ceiling, the latency matrix, then the paired speedups, the fresh processes' rounds, the timeit cross-check
and the fastest verified deployment. Its plug-in is `spinn_export.bench.plugin`; `spinn-export bench` runs it from
any folder, and `pytest bench` from the checkout."""
