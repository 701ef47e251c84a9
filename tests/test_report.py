"""The report on real files of a tiny pipeline: every table value traced back to its source."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from spinn_export.errors import UserError
from spinn_export.report.writer import build_report
from spinn_export.report.results import load_history, load_manifest, load_results

from .conftest import run_cli
from .test_results import Pipeline, pipeline  # noqa: F401  (the shared session fixture)


@pytest.fixture(scope="module")
def full_report(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    out = tmp_path_factory.mktemp("reports") / "tiny"
    paths = build_report([pipeline.ort_json, pipeline.eager_json], pipeline.manifest,
                         [pipeline.structured_dir, pipeline.magnitude_dir], out)
    return paths, out


def _csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "csv" / f"{name}.csv")


def test_every_section_is_written_as_csv_markdown_html_and_png(full_report) -> None:
    paths, out = full_report
    assert {p.name for p in paths.csvs} == {f"{n}.csv" for n in
                                            ("runs", "comparison", "latency", "speedup", "gflops", "crosscheck", "artifacts",
                                             "pruning")}
    assert {p.name for p in paths.pngs} == {"latency.png", "speedup.png", "pruning.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths.pngs)
    page = paths.html.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 3 and all(src.startswith("data:image/png;base64,") for src in images)
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in images}
    assert embedded == {p.read_bytes() for p in paths.pngs}  # self-contained: the PNGs themselves
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    markdown = paths.markdown.read_text()
    assert all(f"]({p.name})" in markdown for p in paths.pngs)
    assert markdown.count("| machine") >= 5 and "spinn-export report" in markdown


def test_comparison_table_values_come_from_benchmarks_manifest_and_histories(full_report, pipeline: Pipeline) -> None:  # noqa: F811
    _, out = full_report
    table = _csv(out, "comparison").set_index("variant")
    assert list(table.index) == ["dense", "magnitude-masked", "structured"]
    bench = load_results([pipeline.ort_json]).benchmarks.set_index(["variant", "batch"])
    paired = pd.DataFrame(json.loads(pipeline.ort_json.read_text())["spinn"]["paired"]).set_index(["variant", "batch"])
    manifest = load_manifest(pipeline.manifest).artifacts.set_index("model")
    structured, magnitude = load_history(pipeline.structured_dir).stages, load_history(pipeline.magnitude_dir).stages
    assert set(table["backend"]) == {"ort-cpu"} and set(table["batch"]) == {256}  # preferred backend, largest batch
    for variant, row in table.iterrows():
        assert row["latency ms (median)"] == pytest.approx(bench.loc[(variant, 256), "median_s"] * 1e3)
        assert row["non-zero"] == bench.loc[(variant, 256), "nonzero_params"]
        assert row["file"] == f"{row['model']}.onnx" and row["file bytes"] == manifest.loc[row["model"], "bytes"]
    assert table.loc["structured", "speedup"] == pytest.approx(paired.loc[("structured", 256), "speedup_median"])
    assert table.loc["structured", "speedup from"] == "paired"
    if ("magnitude-masked", 256) not in paired.index:  # the suite pairs what it pairs: else the medians' ratio
        assert table.loc["magnitude-masked", "speedup"] == pytest.approx(
            bench.loc[("dense", 256), "median_s"] / bench.loc[("magnitude-masked", 256), "median_s"])
        assert table.loc["magnitude-masked", "speedup from"] == "medians"
    assert table.loc["dense", "val R²"] == pytest.approx(structured["val_r2"].iloc[0])
    assert table.loc["structured", "val R²"] == pytest.approx(structured["val_r2"].iloc[-1])
    assert table.loc["magnitude-masked", "residual RMS"] == pytest.approx(magnitude["val_residual_rms"].iloc[-1])
    assert table.loc["magnitude-masked", "parameters (stored)"] == table.loc["dense", "parameters (stored)"]
    assert table.loc["structured", "widths"] == structured["widths"].iloc[-1]


def test_speedup_and_gflops_tables_carry_the_paired_ci_the_ideal_and_each_runs_ceiling(full_report, pipeline: Pipeline) -> None:  # noqa: F811
    _, out = full_report
    speedup = _csv(out, "speedup").dropna(subset=["paired speedup"])
    assert len(speedup) > 0 and set(speedup["backend"]) == {"ort-cpu"}
    assert (speedup["CI low"] <= speedup["paired speedup"]).all() and (speedup["paired speedup"] <= speedup["CI high"]).all()
    assert set(_csv(out, "speedup").query("variant == 'magnitude-masked'")["FLOP-ratio ideal"]) == {1.0}
    gflops = _csv(out, "gflops")
    for backend, results in (("ort-cpu", pipeline.ort_json), ("eager-cpu", pipeline.eager_json)):
        rows = gflops[gflops["backend"] == backend]
        ceiling = json.loads(results.read_text())["spinn"]["ceiling_gflops"]
        assert list(rows["ceiling GFLOP/s"]) == pytest.approx([ceiling] * len(rows))
        assert rows["fraction of ceiling"].to_numpy() == pytest.approx((rows["GFLOP/s"] / ceiling).to_numpy())
    latency = _csv(out, "latency")
    assert latency["p95 ms"].notna().all() and (latency["p95 ms"] >= latency["median ms"]).all()


def test_missing_pieces_are_omitted_sections_and_stale_files_go(full_report, pipeline: Pipeline) -> None:  # noqa: F811
    _, out = full_report
    paths = build_report([pipeline.eager_json], None, None, out)  # the same directory: last time's extra files must go
    assert {p.name for p in paths.pngs} == {"latency.png", "speedup.png"}
    assert not (out / "pruning.png").exists() and not (out / "csv" / "artifacts.csv").exists()
    assert not (out / "csv" / "crosscheck.csv").exists()  # the eager run has no timeit cross-check
    page, markdown = paths.html.read_text(), paths.markdown.read_text()
    for text in (page, markdown):
        assert "No manifest given (--manifest): artifact sizes omitted." in text
        assert "No pruning history given (--history): omitted." in text
        assert "No paired measurements in the results" in text
    speedup = _csv(out, "speedup")
    assert "CI low" not in speedup.columns and "paired speedup" not in speedup.columns
    comparison = _csv(out, "comparison")
    assert not {"val R²", "file bytes"} & set(comparison.columns)


def test_report_cli_writes_the_report(pipeline: Pipeline, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "reports" / "cli"
    result = run_cli("report", str(pipeline.ort_json), "--manifest", str(pipeline.manifest),
                     "--history", str(pipeline.structured_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "report.html").is_file() and "report.html" in result.stdout
    assert f"--history {pipeline.structured_dir}" in (out / "report.md").read_text()  # the command, in the header


def test_unusable_input_is_refused_before_anything_is_written(pipeline: Pipeline, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "never"
    for bad in ({"history": tmp_path / "no-such-prune-dir"}, {"manifest": tmp_path / "manifest.json"}):
        with pytest.raises(UserError, match="does not exist"):
            build_report([pipeline.ort_json], bad.get("manifest"), bad.get("history"), out)
    assert not out.exists()
