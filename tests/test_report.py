"""The report on real files of a tiny pipeline: every table value traced back to its source."""
from __future__ import annotations

import ast
import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import SOURCES, MLPSpec
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.report.architecture import groups_table, note, recorded
from spinn_export.report.gate import GatePolicy, SpeedupRule, run_gate
from spinn_export.report.results import load_history, load_manifest, load_results
from spinn_export.report.summary import not_run_kinds
from spinn_export.report.writer import build_report
from spinn_export.task.data import builtin_dataset
from spinn_export.task.train import TrainConfig

from .conftest import Pipeline, run_cli


@pytest.fixture(scope="module")
def full_report(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("reports") / "tiny"
    paths = build_report([pipeline.ort_json, pipeline.eager_json], pipeline.manifest,
                         [pipeline.structured_dir, pipeline.magnitude_dir], out)
    return paths, out


def _csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "csv" / f"{name}.csv")


def _sections(markdown: str) -> dict[str, str]:
    """Each `## ` section's body by its title."""
    parts = re.split(r"^## (.*)$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _note(markdown: str, title: str) -> str:
    """The section's note: the paragraph under its title."""
    return _sections(markdown)[title].strip().split("\n\n")[0]


def _has_table(body: str) -> bool:
    return any(line.startswith("|") for line in body.splitlines())


def test_every_section_is_written_as_csv_markdown_html_and_png(full_report) -> None:
    paths, _out = full_report
    assert {p.name for p in paths.csvs} == {f"{n}.csv" for n in
                                            ("summary", "fastest", "runs", "comparison", "latency", "speedup", "memory",
                                             "ceilings", "ceiling_fractions", "gflops", "crosscheck", "skipped",
                                             "artifacts", "architecture", "pruning", "limits")}
    assert {p.name for p in paths.pngs} == {"latency.png", "speedup.png", "memory.png", "pruning.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths.pngs)
    page = paths.html.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in images}
    assert embedded == {p.read_bytes() for p in paths.pngs}  # self-contained: the PNGs themselves
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    markdown = paths.markdown.read_text()
    assert all(f"]({p.name})" in markdown for p in paths.pngs)
    assert markdown.count("| machine") >= 5 and "spinn-export report" in markdown


def test_the_architecture_section_shows_each_group_before_and_after(full_report, pipeline: Pipeline) -> None:
    _, out = full_report
    groups = _csv(out, "architecture")
    history = json.loads((pipeline.structured_dir / "history.json").read_text())
    assert list(groups["group"]) == ["linear0", "linear1"]  # the hidden layers of the tiny plain MLP
    assert list(groups["dense width"]) == [64, 64]
    assert list(groups["width"]) == history["achieved"]["widths"]
    assert set(groups["status"]) == {"pruned, constants folded"}
    note = _note((out / "report.md").read_text(), "Architecture")  # the source the network was read from
    recorded = history["architecture"]
    assert SOURCES[recorded["source"]] in note and f"{recorded['in_features']} inputs" in note


def test_comparison_table_values_come_from_benchmarks_manifest_and_histories(full_report, pipeline: Pipeline) -> None:
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
    abba = paired[paired["method"] == "abba"]
    assert table.loc["structured", "speedup"] == pytest.approx(abba.loc[("structured", 256), "speedup_median"])
    assert table.loc["structured", "speedup from"] == "abba"  # ABBA where measured, else the interleaved rounds
    rounds = paired[paired["method"] == "interleaved"]
    assert table.loc["magnitude-masked", "speedup"] == pytest.approx(rounds.loc[("magnitude-masked", 256),
                                                                                "speedup_median"])
    assert table.loc["magnitude-masked", "speedup from"] == "interleaved"
    assert table.loc["dense", "val R²"] == pytest.approx(structured["val_r2"].iloc[0])
    assert table.loc["structured", "val R²"] == pytest.approx(structured["val_r2"].iloc[-1])
    assert table.loc["magnitude-masked", "residual RMS"] == pytest.approx(magnitude["val_residual_rms"].iloc[-1])
    assert table.loc["magnitude-masked", "parameters (stored)"] == table.loc["dense", "parameters (stored)"]
    assert table.loc["structured", "widths"] == structured["widths"].iloc[-1]


def test_speedup_and_gflops_tables_carry_the_paired_ci_the_ideal_and_each_runs_ceiling(
        full_report, pipeline: Pipeline) -> None:
    _, out = full_report
    speedup = _csv(out, "speedup")
    assert set(speedup["backend"]) == {"ort-cpu", "eager-cpu"} and len(speedup) == 8  # every (backend, batch, variant)
    assert (speedup["CI low"] <= speedup["speedup"]).all() and (speedup["speedup"] <= speedup["CI high"]).all()
    assert set(_csv(out, "speedup").query("variant == 'magnitude-masked'")["FLOP-ratio ideal"]) == {1.0}
    gflops = _csv(out, "gflops")
    for backend, results in (("ort-cpu", pipeline.ort_json), ("eager-cpu", pipeline.eager_json)):
        rows = gflops[gflops["backend"] == backend]
        ceiling = json.loads(results.read_text())["spinn"]["ceilings"]["cpu"]["fp32"]["gflops"]  # every variant is fp32
        assert list(rows["ceiling GFLOP/s"]) == pytest.approx([ceiling] * len(rows))
        assert set(rows["ceiling precision"]) == {"fp32"}
        assert rows["fraction of ceiling"].to_numpy() == pytest.approx((rows["GFLOP/s"] / ceiling).to_numpy())
    latency = _csv(out, "latency")
    assert latency["p95 ms"].notna().all() and (latency["p95 ms"] >= latency["median ms"]).all()


def test_the_report_opens_with_the_summary_traced_to_its_sources(full_report, pipeline: Pipeline) -> None:
    paths, out = full_report
    markdown, page = paths.markdown.read_text(), paths.html.read_text()
    assert re.findall(r"^## .*", markdown, re.M)[0] == "## Summary"
    assert markdown.index("## Summary") < markdown.index("**machines:**")  # the answer before the metadata
    assert re.findall(r"<h2>([^<]*)</h2>", page)[0] == "Summary" and page.index("Summary") < page.index("machines:")
    summary = _csv(out, "summary").set_index(["backend", "variant"])
    assert set(summary.index) == {(b, v) for b in ("ort-cpu", "eager-cpu") for v in ("magnitude-masked", "structured")}
    assert set(summary["batch"]) == {256}
    bench = load_results([pipeline.ort_json, pipeline.eager_json]).benchmarks.set_index(["backend", "variant", "batch"])
    manifest = load_manifest(pipeline.manifest).artifacts.set_index("file")
    structured = load_history(pipeline.structured_dir).stages
    speedup = _csv(out, "speedup").set_index(["backend", "variant", "batch"])
    for (backend, variant), row in summary.iterrows():
        assert row["speedup"] == pytest.approx(speedup.loc[(backend, variant, 256), "speedup"])
        assert row["peak memory vs dense"] == pytest.approx(bench.loc[(backend, variant, 256), "peak_memory_bytes"]
                                                            / bench.loc[(backend, "dense", 256), "peak_memory_bytes"])
    row = summary.loc[("ort-cpu", "structured")]
    assert row["file size vs dense"] == pytest.approx(manifest.loc["structured.onnx", "bytes"]
                                                      / manifest.loc["dense.onnx", "bytes"])
    assert row["ΔR² vs dense"] == pytest.approx(structured["val_r2"].iloc[-1] - structured["val_r2"].iloc[0])
    headline = _note(markdown, "Summary")  # the headline's figures: backend, batch, speedup and its CI
    assert "ort-cpu" in headline and "256" in headline
    assert f"{row['speedup']:.2f}×" in headline and f"[{row['CI low']:.2f}, {row['CI high']:.2f}]" in headline


def test_memory_table_is_each_cases_peak_and_its_ratio_to_dense(full_report, pipeline: Pipeline) -> None:
    _, out = full_report
    memory = _csv(out, "memory").set_index(["backend", "variant", "batch"])
    raw = json.loads(pipeline.eager_json.read_text())
    for entry in raw["benchmarks"]:
        info = entry["extra_info"]
        row = memory.loc[(info["backend"], info["variant"], info["batch"])]
        assert info["peak_memory_bytes"] > 0 and row["peak MiB"] == pytest.approx(info["peak_memory_bytes"] / 2**20)
    dense = memory.xs("dense", level="variant")["peak MiB"]
    structured = memory.xs("structured", level="variant")
    assert structured["vs dense"].to_numpy() == pytest.approx((structured["peak MiB"] / dense).to_numpy())


def test_missing_pieces_are_omitted_sections_and_stale_files_go(full_report, pipeline: Pipeline) -> None:
    _, out = full_report
    paths = build_report([pipeline.eager_json], None, None, out)  # the same directory: last time's extra files must go
    assert {p.name for p in paths.pngs} == {"latency.png", "speedup.png", "memory.png"}
    assert not (out / "pruning.png").exists() and not (out / "csv" / "artifacts.csv").exists()
    assert not (out / "csv" / "crosscheck.csv").exists()  # the eager run has no timeit cross-check
    assert not (out / "csv" / "architecture.csv").exists()  # no history, no architecture
    sections = _sections(paths.markdown.read_text())
    assert "Architecture" not in sections
    for title, flag in (("Artifact sizes", "--manifest"), ("Pruning history", "--history")):
        assert not _has_table(sections[title]) and flag in sections[title]  # the section, saying what to give
        assert f"<h2>{title}</h2>" in paths.html.read_text()
    summary = _note(paths.markdown.read_text(), "Summary")
    assert "spinn-export gate" in summary and not {"passed", "FAILED"} & set(re.findall(r"\w+", summary))
    summary = _csv(out, "summary")
    assert not {"ΔR² vs dense", "file size vs dense"} & set(summary.columns)  # no history, no manifest: not guessed
    comparison = _csv(out, "comparison")
    assert not {"val R²", "file bytes"} & set(comparison.columns)


def test_report_cli_writes_the_report(pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "cli"
    result = run_cli("report", str(pipeline.ort_json), "--manifest", str(pipeline.manifest),
                     "--history", str(pipeline.structured_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "report.html").is_file() and "report.html" in result.stdout
    assert f"--history {pipeline.structured_dir}" in (out / "report.md").read_text()  # the command, in the header


def test_unusable_input_is_refused_before_anything_is_written(pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "never"
    for bad in ({"history": tmp_path / "no-such-prune-dir"}, {"manifest": tmp_path / "manifest.json"}):
        with pytest.raises(UserError, match="does not exist"):
            build_report([pipeline.ort_json], bad.get("manifest"), bad.get("history"), out)
    assert not out.exists()


def test_a_quantised_variant_shows_the_accuracy_its_export_measured(pipeline: Pipeline, tmp_path: Path) -> None:
    """Quantised weights are in no pruning stage: the summary's ΔR² vs dense is the export's validation R² of the file
    timed (the manifest's `accuracy`) minus dense's stage 0 on the same split, and the residual it did not measure is
    not guessed."""
    raw = json.loads(pipeline.ort_json.read_text())
    for bench in raw["benchmarks"]:
        if bench["extra_info"].get("variant") == "structured":
            bench["extra_info"] |= {"variant": "structured-int8", "artifact": "structured.int8.onnx"}
    for entry in raw["spinn"]["paired"]:
        entry["variant"] = entry["variant"].replace("structured", "structured-int8")
    results = tmp_path / "int8.json"
    results.write_text(json.dumps(raw))
    manifest = json.loads(pipeline.manifest.read_text())
    [structured] = [a for a in manifest["artifacts"] if a["file"] == "structured.onnx"]
    manifest["artifacts"].append(structured | {
        "file": "structured.int8.onnx", "format": "onnx-int8", "precision": "int8",
        "accuracy": {"dataset": "stokes2d", "split": "val", "val_r2": 0.25, "val_r2_delta": -0.5,
                     "residual_rms": None}})
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "manifest.json").write_text(json.dumps(manifest))
    build_report([results], tmp_path / "artifacts" / "manifest.json", [pipeline.structured_dir], tmp_path / "report")
    row = _csv(tmp_path / "report", "summary").set_index("variant").loc["structured-int8"]
    dense_r2 = load_history(pipeline.structured_dir).stages["val_r2"].iloc[0]
    assert row["ΔR² vs dense"] == pytest.approx(0.25 - dense_r2) and pd.isna(row.get("residual RMS vs dense"))
    comparison = _csv(tmp_path / "report", "comparison").set_index("variant")
    assert comparison.loc["structured-int8", "val R²"] == pytest.approx(0.25)


def test_the_summary_carries_the_gates_verdict_and_figures(pipeline: Pipeline, tmp_path: Path) -> None:
    gate = run_gate(pipeline.ort_json, GatePolicy(rules=(SpeedupRule("ort-cpu", 256, 0.5),)))
    paths = build_report([pipeline.ort_json], None, None, tmp_path / "report", gate=gate)
    summary = _note(paths.markdown.read_text(), "Summary")
    assert gate.passed and "passed" in summary
    for rule in gate.rows.itertuples():
        assert f"{rule.judged:.2f} against {rule.threshold:.2f}" in summary and f"batch {rule.batch}" in summary


def test_what_was_not_run_is_grouped_by_backend_and_reason(pipeline: Pipeline, tmp_path: Path) -> None:
    skipped = pd.DataFrame([
        ("ort-cuda: no CUDA GPU visible to torch (torch +cpu)", 8), ("eager-cuda: no CUDA GPU visible to torch", 8),
        ("ort-cpu runs fp32/int8 models, not bf16 (structured-bf16)", 2),
        ("ort-cpu runs fp32/int8 models, not bf16 (dense-bf16)", 2),
        ("fastest deployment at batch 1: no dense model", 1), ("fastest deployment at batch 64: no dense model", 1),
    ], columns=["reason", "cases"])
    kinds = not_run_kinds(skipped).set_index("kind")["cases"]
    assert kinds.sum() == skipped["cases"].sum() and len(kinds) == 3
    [cuda] = [k for k in kinds.index if "ort-cuda" in k]
    assert "eager-cuda" in cuda and kinds[cuda] == 16 and "+cpu" not in cuda  # one clause for both backends
    [bf16] = [k for k in kinds.index if "bf16" in k]
    assert kinds[bf16] == 4 and "structured-bf16" not in bf16  # the variants behind one reason, merged
    [fastest] = [k for k in kinds.index if "fastest" in k]
    assert kinds[fastest] == 2 and "1, 64" in fastest

    markdown = build_report([pipeline.eager_json], None, None, tmp_path / "eager").markdown.read_text()
    summary = _note(markdown, "Summary")
    recorded = load_results([pipeline.eager_json]).skipped
    assert f"{int(recorded['cases'].sum())} case(s)" in summary
    for kind, cases in not_run_kinds(recorded).itertuples(index=False):
        assert f"{kind} ({cases})" in summary  # every kind, with its count
    assert _has_table(_sections(markdown)["Not run"])  # and each reason, per case, in the table
    fastest_skipped = load_results([pipeline.eager_json]).fastest_skipped
    assert len(fastest_skipped) == 2 and f"batches {', '.join(map(str, fastest_skipped['batch']))}" in summary


def test_the_baseline_backend_is_the_one_the_results_recorded(pipeline: Pipeline, tmp_path: Path) -> None:
    raw = json.loads(pipeline.ort_json.read_text())
    for entry in raw["spinn"]["fastest"]:
        entry["baseline_backend"] = "ort-optimized-cpu"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(raw))
    paths = build_report([other], None, None, tmp_path / "one")
    fastest = _csv(tmp_path / "one", "fastest")
    assert "speedup vs dense fp32 on ort-optimized-cpu" in fastest.columns
    assert list(fastest["speedup vs dense fp32 on ort-optimized-cpu"]) == pytest.approx(
        [e["speedup_vs_dense_fp32"] for e in raw["spinn"]["fastest"]])
    note = _note(paths.markdown.read_text(), "Fastest verified deployment")
    assert "ort-optimized-cpu" in note and "dense float32 on ort-cpu" not in note
    assert "dense float32 on ort-optimized-cpu" in _note(paths.markdown.read_text(), "Summary")

    build_report([pipeline.ort_json, other], None, None, tmp_path / "two")  # two machines, two baselines
    both = _csv(tmp_path / "two", "fastest")
    assert "speedup vs dense fp32" in both.columns and set(both["dense fp32 on"]) == {"ort-cpu", "ort-optimized-cpu"}


def test_the_crosscheck_note_describes_the_check_without_a_path(pipeline: Pipeline, tmp_path: Path) -> None:
    paths = build_report([pipeline.ort_json], None, None, tmp_path)
    note = _note(paths.markdown.read_text(), "Timing cross-check")
    assert "timeit" in note and "10 %" in note and ".py" not in note
    assert set(_csv(tmp_path, "crosscheck")["reference"]) == {"timeit"}


def test_rendering_is_a_leaf_and_the_writer_the_top() -> None:
    """render imports nothing else of the report (the gate and the writer both print through it); no report
    module imports the writer."""
    package = Path(build_report.__code__.co_filename).parent

    def imported(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        return names

    assert not {m for m in imported(package / "render.py") if m.startswith("spinn_export.report")}
    assert not [p.name for p in package.glob("*.py") if "spinn_export.report.writer" in imported(p)]


def test_the_summary_says_what_the_export_could_not_give(pipeline: Pipeline, tmp_path: Path) -> None:
    """A format this machine cannot produce, and an accuracy-controlled int8 file whose target was not met, each
    reach the summary with the reason and the drop reached (from the manifest, as the exporter wrote it)."""
    manifest = json.loads(pipeline.manifest.read_text())
    [structured] = [a for a in manifest["artifacts"] if a["file"] == "structured.onnx"]
    manifest["artifacts"].append(structured | {
        "file": "structured.int8-nncf.onnx", "format": "onnx-int8-nncf", "precision": "int8-nncf",
        "calibration": {"int8_gemms": 2, "gemms": 3, "accuracy_control": {"met": False, "r2_drop": 0.0123,
                                                                         "max_r2_drop": 0.001, "rows": 8192}}})
    manifest["unavailable"] = {"onnx-bf16": "this CPU has no native bf16"}
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "manifest.json").write_text(json.dumps(manifest))
    paths = build_report([pipeline.ort_json], tmp_path / "artifacts" / "manifest.json", None, tmp_path / "report")
    summary = _note(paths.markdown.read_text(), "Summary")
    assert "onnx-bf16" in summary and "this CPU has no native bf16" in summary
    unmet = summary[summary.index("structured.int8-nncf.onnx"):]
    assert all(figure in unmet for figure in ("could not meet", "0.001", "0.0123", "2 of 3"))


def test_a_rolled_back_last_round_is_not_the_variants_weights(tmp_path: Path) -> None:
    """`--on-drop rollback` keeps the previous round's weights: the report reads that stage, not the last row."""
    from spinn_export.prune.record import HistoryRecord
    from spinn_export.report.lookup import history_stage
    from spinn_export.report.results import History

    stages = pd.DataFrame({"stage": [0, 1, 2], "val_r2": [0.9, 0.88, 0.5], "rolled_back": [False, False, True]})
    record = HistoryRecord("structured", {}, {}, None, None, 0.0, {}, ())  # the rows are the frame's
    history = History(tmp_path / "history.json", record, stages)
    assert history_stage([history], "structured")["stage"] == 1
    assert history_stage([history], "dense")["stage"] == 0


def test_the_architecture_view_is_read_from_a_real_pruning_history(tmp_path: Path) -> None:
    """The fast lane's check of report.architecture (the tiny pipeline's report test is slow): one structured prune
    of a small MLP, no fine-tuning, and the groups its history recorded, before and after."""
    torch.manual_seed(0)
    data = builtin_dataset(seed=0, n_train=128, n_val=64, n_test=16)
    config = PruneConfig(Target.params(0.5), method="structured", rounds=1, finetune=TrainConfig(epochs=0),
                         calibration_samples=32)
    prune(mlp_network(MLPSpec(18, (32, 32), 2)), data, config, tmp_path, metadata={"variant": "dense"}, progress=False)
    architecture = recorded([load_history(tmp_path / "history.json")])
    assert architecture is not None
    table = groups_table(architecture)
    assert list(table["dense width"]) == [32, 32] and all(table["width"] < table["dense width"])
    assert all(status.startswith("pruned") for status in table["status"])  # no group frozen in a plain MLP
    assert note(architecture).startswith("18 inputs, 2 outputs; architecture source: ")

