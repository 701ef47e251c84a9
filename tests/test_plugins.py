"""Plug-ins that declare themselves: a precision spinn-export has never heard of (`half`, from the `toy-half` format)
and a backend that runs it (`half-cpu`), both shipped outside the package (tests/plugins/toy_half.py) and registered
only by entry points, export with their parity checked and are timed by `spinn-export bench`; and the precision set is
what the formats declare, never a list to edit."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from spinn_export.bench.backends import get_backend
from spinn_export.bench.variants import Variant
from spinn_export.errors import UserError
from spinn_export.export import formats as formats_module
from spinn_export.export.formats import ceiling_precision, get_format, precisions
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec

from .conftest import plugin_environment, run_cli

ENTRY_POINTS = ("[spinn_export.formats]\ntoy-half = toy_half:TOY_HALF\n"
                "[spinn_export.backends]\nhalf-cpu = toy_half:HALF_CPU\n")


def test_the_precisions_are_what_the_formats_declare() -> None:
    known = precisions()
    assert {"fp32", "bf16", "int8", "int8-static", "int8-nncf"} <= set(known)
    assert known["int8-static"].runs_as == "int8" and "onnx-int8-static" in known["int8-static"].formats
    assert ceiling_precision("int8-nncf") == "int8" and ceiling_precision("bf16") == "bf16"
    assert get_backend("ort-cpu").runs("int8-static") and not get_backend("ort-optimized-cpu").runs("int8")
    with pytest.raises(UserError, match=r"unknown precision 'half': expected one of fp32, .*installed formats"):
        Variant("dense", "half")


def test_two_formats_that_disagree_on_what_a_precision_runs_as_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = dataclasses.replace(get_format("onnx-int8-static"), name="odd-int8", runs_as="fp32")
    monkeypatch.setattr(formats_module, "formats", lambda: {"onnx-int8-static": get_format("onnx-int8-static"),
                                                            "odd-int8": odd})
    with pytest.raises(UserError, match="format odd-int8 declares precision int8-static running as fp32, but "
                                        "onnx-int8-static as int8: make the two plug-ins agree"):
        precisions()


@pytest.mark.slow  # two CLI subprocesses (export, bench): ~20 s
def test_a_precision_and_a_backend_from_another_package_export_and_bench(tmp_path: Path) -> None:
    env = plugin_environment(tmp_path / "site", "toy_half", ENTRY_POINTS)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "dense.safetensors", mlp_network(MLPSpec(18, (32, 32), 2)),
                                 {"variant": "dense", "dataset": "stokes2d", "seed": "0"})
    out = tmp_path / "artifacts"
    result = run_cli("export", str(checkpoint), "--formats", "torchscript,toy-half", "--out", str(out), env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    half = next(a for a in json.loads((out / "manifest.json").read_text())["artifacts"] if a["format"] == "toy-half")
    assert (half["precision"], half["file"]) == ("half", "dense.half.safetensors")
    assert half["parity"]["passed"] and 0 < half["parity"]["max_abs_error"] < 1e-2  # float16 rounding, recorded
    assert half["accuracy"] is not None and half["within_budget"]

    listed = {row["name"]: row for row in json.loads(run_cli("backends", "--json", env=env).stdout)}
    assert listed["half-cpu"]["available"] and listed["half-cpu"]["precisions"] == ["fp32", "half"]
    result = run_cli("bench", str(out), "--backends", "half-cpu", "--batches", "4", "--variants", "dense,dense-half",
                     "--quick", "--threads", "1", "--paired", "none", "--no-memory", "--json", "half.json",
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "half.json").read_text())
    timed = {b["extra_info"]["variant"]: b["extra_info"] for b in data["benchmarks"] if "check" not in b["extra_info"]}
    assert set(timed) == {"dense", "dense-half"}
    assert (timed["dense-half"]["precision"], timed["dense-half"]["artifact"]) == ("half", "dense.half.safetensors")
    assert {info["backend"] for info in timed.values()} == {"half-cpu"} and timed["dense-half"]["speedup"] > 0
