"""How long reading a framework's network takes: the graph analysis (shapes at two batch sizes, every rule, the
union-find) of every fixture in tests/data/frameworks, timed by pytest-benchmark. The acceptance line is 2 s a
network on the machines this project runs on; the figures go to docs/MEASURED.md with their machine and date.

    pytest bench/graph_analysis.py --benchmark-columns=min,median,max

Named outside `test_*.py` so that `pytest bench` (the speed suite, whose JSON the report reads) does not collect it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinn_export.model.architecture import Architecture
from spinn_export.model.trace import graph_of_pt2

ROOT = Path(__file__).parents[1] / "tests" / "data" / "frameworks"
FIXTURES = [entry["file"] for entry in json.loads((ROOT / "index.json").read_text()) if entry["exported"]]
LIMIT_S = 2.0


@pytest.mark.parametrize("name", FIXTURES)
def test_graph_analysis(benchmark, name):
    graph, _ = graph_of_pt2(ROOT / name)

    def analyse() -> int:
        architecture = Architecture(graph, "pt2")
        return len(architecture.groups) + len(architecture.layers)

    benchmark.pedantic(analyse, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["prunable_groups"] = len(Architecture(graph, "pt2").prunable)
    assert benchmark.stats.stats.median < LIMIT_S, f"{name}: the analysis takes {benchmark.stats.stats.median:.2f} s"
