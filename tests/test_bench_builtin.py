"""The benchmark suite on its built-in models, with a backend that needs no exported artifact."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_bench


@pytest.mark.slow
def test_eager_only_run_benchmarks_the_builtin_models(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_bench("-rs", "bench", "--spinn-quick", "--spinn-backends=eager-cpu", "--spinn-batches=1",
                     "--spinn-paired=none", "--spinn-threads=1", f"--benchmark-json={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benchmarks = json.loads(out.read_text())["benchmarks"]
    assert sorted(b["extra_info"]["variant"] for b in benchmarks) == ["dense", "structured"]
    assert {b["extra_info"]["backend"] for b in benchmarks} == {"eager-cpu"}
    assert "ort-cpu is not among the benchmarked backends: no timeit cross-check" in proc.stdout
