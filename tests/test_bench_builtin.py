"""The benchmark suite on its built-in models, with a backend that needs no exported artifact."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinn_export.bench.options import suite_settings
from spinn_export.pipeline.reference import build_reference_models
from spinn_export.report.results import load_manifest

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


def test_the_reference_models_are_built_pruned_and_exported_for_the_chosen_backends(tmp_path: Path) -> None:
    """In this process (the suite run above is a slow subprocess): dense and structured, exported in the one cheap
    float32 format an eager-only run still needs, since variants are read from the manifest."""
    settings = suite_settings({"spinn_quick": True, "spinn_backends": "eager-cpu", "spinn_batches": "1",
                               "spinn_paired": "none", "spinn_threads": 1})
    manifest = load_manifest(build_reference_models(tmp_path, settings))
    assert sorted(set(manifest.artifacts["model"])) == ["dense", "structured"]
    assert len(set(manifest.artifacts["format"])) == 1
