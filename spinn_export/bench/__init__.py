"""Benchmarking: what is timed (`variants`), on which backend plug-ins (`backends/`), how (`timing`, `paired`,
`memory`, `ceilings`), the pytest-benchmark suite and its plug-in (`suite/`, `plugin`) and bench.json's record."""
