"""The comparison report: pandas tables as CSV, Markdown and one self-contained HTML page.

Every value in a table is read from the benchmark JSON, the manifest or the pruning history;
a piece that is missing is an omitted section with one line saying so, never a filled-in value.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from spinn_export.bench.variants import BASELINE_ROLE
from spinn_export.files import write_text
from spinn_export.report import pareto, plots
from spinn_export.report.architecture import TITLE as ARCHITECTURE_TITLE
from spinn_export.report.architecture import groups_table
from spinn_export.report.architecture import note as architecture_note
from spinn_export.report.architecture import recorded as recorded_architecture
from spinn_export.report.results import (
    BASELINE_VARIANT,
    History,
    Manifest,
    Results,
    load_history,
    load_manifest,
    load_results,
    parse_variant,
    speedups,
    variant_rank,
)

if TYPE_CHECKING:
    from spinn_export.report.gate import GateOutcome

PREFERRED_BACKEND = "ort-cpu"
CSV_NAMES = ("summary", "fastest", "runs", "latency", "speedup", "memory", "ceilings", "ceiling_fractions", "gflops",
             "crosscheck",
             "artifacts", "comparison", "skipped", "pruning", "pareto")
OPENING = ("summary", "fastest")  # the answer, before the run's metadata
PNG_NAMES = ("latency", "speedup", "memory", "pruning", "pareto")
MIB = 2**20
SOURCES = {"abba": "ABBA, fresh processes", "interleaved": "interleaved rounds"}
MISSING = "-"  # not measured (never a filled-in value)
PLAIN_INTEGERS = ("batch", "stage", "threads")  # labels, not quantities: no thousands separator
LONG_TEXT = 40  # characters; longer text cells may wrap
DATE_FORMAT = "%Y-%m-%d %H:%M UTC"
COMPARISON_COLUMNS = ("machine", "model", "variant", "parameters (stored)", "non-zero", "widths", "file", "file bytes",
                      "backend", "batch", "latency ms (median)", "speedup", "speedup from", "CI low", "CI high",
                      "val R²", "residual RMS")


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    csv_dir: Path
    csvs: tuple[Path, ...]
    pngs: tuple[Path, ...]


@dataclass(frozen=True)
class Section:
    """A titled table (saved as csv/<name>.csv) or, when `table` is None, the line saying why not."""

    name: str
    title: str
    note: str
    table: pd.DataFrame | None = None


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    path: Path


def latency_table(results: Results) -> pd.DataFrame:
    bench = results.benchmarks
    table = pd.DataFrame({
        "machine": bench["machine"], "variant": bench["variant"], "model": bench["model"],
        "backend": bench["backend"], "batch": bench["batch"],
        "median ms": bench["median_s"] * 1e3, "IQR ms": bench["iqr_s"] * 1e3, "p95 ms": bench["p95_s"] * 1e3,
        "samples/s": bench["samples_per_s"], "rounds": bench["rounds"], "threads": bench["threads"],
        "provider": bench["provider"],
    })
    return table.dropna(axis=1, how="all")


def speedup_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({
        "machine": frame["machine"], "backend": frame["backend"], "batch": frame["batch"], "variant": frame["variant"],
        "speedup": frame["speedup"], "CI low": frame["ci_low"], "CI high": frame["ci_high"],
        "measured by": frame["source"].map(SOURCES).fillna(frame["source"]),
        "samples": frame["processes"] * frame["blocks_per_process"], "FLOP-ratio ideal": frame["flop_ratio"],
    })
    return table.dropna(axis=1, how="all")


def memory_table(results: Results) -> pd.DataFrame:
    """Peak memory per case and its ratio to dense's on the same machine, backend and batch."""
    bench = results.benchmarks[results.benchmarks["peak_memory_bytes"].notna()]
    dense = bench[bench["variant"] == BASELINE_VARIANT].set_index(["machine", "backend", "batch"])["peak_memory_bytes"]
    keys = pd.MultiIndex.from_frame(bench[["machine", "backend", "batch"]])
    return pd.DataFrame({
        "machine": bench["machine"], "backend": bench["backend"], "batch": bench["batch"], "variant": bench["variant"],
        "peak MiB": bench["peak_memory_bytes"].astype(float) / MIB,
        "vs dense": bench["peak_memory_bytes"].astype(float).to_numpy() / dense.reindex(keys).astype(float).to_numpy(),
    }).reset_index(drop=True)


def gflops_table(results: Results) -> pd.DataFrame:
    """Achieved rate per case and its fraction of the ceiling of its own device and precision (dash: none measured)."""
    bench = results.benchmarks
    ceiling = pd.to_numeric(bench["ceiling_gflops"])
    table = pd.DataFrame({
        "machine": bench["machine"], "variant": bench["variant"], "backend": bench["backend"], "batch": bench["batch"],
        "FLOPs/sample": bench["flops_per_sample"], "GFLOP/s": bench["gflops"],
        "ceiling precision": bench["ceiling_precision"].where(ceiling.notna()), "ceiling GFLOP/s": ceiling,
        "fraction of ceiling": bench["gflops"] / ceiling,
    })
    return table.dropna(axis=1, how="all")


def ceilings_table(results: Results) -> pd.DataFrame:
    """The machines' GEMM ceilings, one row per device and precision, with how each was measured or why it was not."""
    frame = results.ceilings
    return pd.DataFrame({
        "machine": frame["machine"], "device": frame["device"], "precision": frame["precision"],
        "ceiling GFLOP/s": frame["gflops"], "native": frame["native"].map({True: "yes", False: "no"}),
        "features": frame["features"], "measured by": frame["method"], "note": frame["reason"],
    }).dropna(axis=1, how="all")


def ceiling_fractions_table(results: Results) -> pd.DataFrame:
    """Each backend's dense float32 fraction of its ceiling, paired with the GEMM that set it."""
    frame = results.ceiling_fractions
    return pd.DataFrame({
        "machine": frame["machine"], "backend": frame["backend"], "variant": frame["variant"], "batch": frame["batch"],
        "precision": frame["precision"], "fraction of ceiling": frame["fraction"],
        "fraction CI low": frame["ci_low"], "fraction CI high": frame["ci_high"], "GFLOP/s": frame["case_gflops"],
        "GEMM GFLOP/s": frame["gemm_gflops"], "paired with": frame["ceiling_gemm"], "cycles": frame["cycles"],
    })


def fastest_table(results: Results) -> pd.DataFrame:
    """The fastest verified deployment per machine and batch, with its paired speedup over dense float32 on ort-cpu."""
    frame = results.fastest
    table = pd.DataFrame({
        "machine": frame["machine"], "batch": frame["batch"], "variant": frame["variant"], "backend": frame["backend"],
        "precision": frame["precision"], "latency ms (median)": frame["latency_s"] * 1e3,
        "speedup vs dense fp32 on ort-cpu": frame["speedup_vs_dense_fp32"], "CI low": frame["ci_low"],
        "CI high": frame["ci_high"], "ΔR² vs its fp32 model": pd.to_numeric(frame["val_r2_delta"]),
        "verified by": frame["verified_by"], "ABBA cycles": frame["cycles"],
        "finalists (speedup)": frame["finalists"].map(_finalists_text),
    })
    return _one_machine_unnamed(results, table).dropna(axis=1, how="all")


def _finalists_text(finalists: object) -> str | None:
    """Every backend re-timed at that batch, with its paired speedup: how the fastest deployment was chosen."""
    if not isinstance(finalists, (list, tuple)) or not finalists:
        return None
    return "; ".join(f"{f['variant']} on {f['backend']} {f['speedup']:.2f}×" for f in finalists)


def _one_machine_unnamed(results: Results, table: pd.DataFrame) -> pd.DataFrame:
    """Without the machine column where the results come from one machine."""
    return table.drop(columns="machine") if results.runs["machine"].nunique() == 1 else table


def fastest_sentence(results: Results) -> str:
    """The fastest verified deployment at each machine's largest measured batch, or why there is none."""
    parts = []
    machines = results.runs["machine"].unique()
    for machine in machines:
        prefix = f"On {machine}, the" if len(machines) > 1 else "The"
        measured = results.fastest[results.fastest["machine"] == machine]
        if measured.empty:
            reasons = results.fastest_skipped.loc[results.fastest_skipped["machine"] == machine, "reason"]
            why = "; ".join(dict.fromkeys(reasons.astype(str))) or "no batch was measured"
            parts.append(f"{prefix} fastest verified deployment was not measured: {why}.")
            continue
        row = measured.loc[measured["batch"].astype(int).idxmax()]
        delta = row["val_r2_delta"]
        accuracy = "float32 parity" if delta is None or pd.isna(delta) else f"ΔR² {delta:+.4f}, within the budget"
        parts.append(f"{prefix} fastest verified deployment at batch {int(row['batch'])} is {row['variant']} on "
                     f"{row['backend']}: {row['latency_s'] * 1e3:.3g} ms, {row['speedup_vs_dense_fp32']:.2f}× dense "
                     f"float32 on {row['baseline_backend']} [{row['ci_low']:.2f}, {row['ci_high']:.2f}] "
                     f"(paired; {accuracy}).")
    return " ".join(parts)


def skipped_table(results: Results) -> pd.DataFrame:
    """What the suite did not run, and why (an unavailable backend, a precision a backend does not run, ...)."""
    frame = results.skipped
    return _one_machine_unnamed(results, pd.DataFrame({"machine": frame["machine"], "cases": frame["cases"],
                                                       "reason": frame["reason"]}))


def crosscheck_table(results: Results) -> pd.DataFrame:
    checks = results.checks
    return pd.DataFrame({
        "machine": checks["machine"], "reference": checks["check"], "backend": checks["backend"],
        "batch": checks["batch"], "variant": checks["variant"], "suite median ms": checks["median_s"] * 1e3,
        "reference median ms": pd.to_numeric(checks["reference_median_s"]) * 1e3,
        "suite / reference": checks["ratio"], "rounds": checks["rounds"],
    })


def artifacts_table(manifest: Manifest) -> pd.DataFrame:
    frame = manifest.artifacts
    return pd.DataFrame({
        "model": frame["model"], "variant": frame["variant"], "format": frame["format"], "file": frame["file"],
        "bytes": frame["bytes"], "params": frame["params"], "non-zero": frame["nonzero_params"],
        "widths": frame["widths"], "parity": frame["parity_passed"].map({True: "passed", False: "FAILED"}),
        "max abs error": frame["max_abs_error"],
    }).dropna(axis=1, how="all")


def pruning_table(histories: Sequence[History]) -> pd.DataFrame:
    columns = {"stage": "stage", "widths": "widths", "params": "params", "nonzero_params": "non-zero",
               "flops_per_sample": "FLOPs/sample", "val_r2": "val R²", "val_rel_l2": "val rel L2",
               "val_residual_rms": "residual RMS"}
    frames = [h.stages.reindex(columns=list(columns)).rename(columns=columns).assign(method=h.method)
              for h in histories]
    table = pd.concat(frames, ignore_index=True)
    return table[["method", *columns.values()]].dropna(axis=1, how="all")


def _latency_point(bench: pd.DataFrame) -> tuple[str, int] | None:
    """The backend (ort-cpu if measured, else the first) and its largest batch with a dense run."""
    dense = bench[bench["variant"] == BASELINE_VARIANT]
    if dense.empty:
        return None
    backends = sorted(dense["backend"].unique())
    backend = PREFERRED_BACKEND if PREFERRED_BACKEND in backends else backends[0]
    return backend, int(dense[dense["backend"] == backend]["batch"].max())


def _validation(histories: Sequence[History], variant: str, artifact: pd.Series | None) -> pd.Series | None:
    """Validation metrics (`val_r2`, `val_residual_rms`) of the weights this variant ran: its pruning history's stage
    (`_history_stage`), or for a quantised variant the export's measurement of the file timed (`artifact`), on the
    same validation split; its residual is missing where the runtime gives no derivatives."""
    stage = _history_stage(histories, variant)
    if stage is not None:
        return stage
    if artifact is None or pd.isna(artifact.get("val_r2")):
        return None
    return pd.Series({"val_r2": artifact["val_r2"], "val_residual_rms": artifact.get("val_residual_rms")}, dtype=float)


def _accuracy(histories: Sequence[History], variant: str, artifact: pd.Series | None) -> dict[str, float] | None:
    """Validation metrics of the variant's weights (`_validation`)."""
    metrics = _validation(histories, variant, artifact)
    return None if metrics is None else {"val R²": metrics["val_r2"], "residual RMS": metrics["val_residual_rms"]}


def _history_stage(histories: Sequence[History], variant: str) -> pd.Series | None:
    """The history stage that holds this variant's weights (final stage; stage 0 of any history for dense).

    Quantised variants have other weights than any stage: none for them."""
    parsed = parse_variant(variant)
    if parsed is None or parsed.quantised:
        return None
    for history in histories:
        if parsed.role == BASELINE_ROLE:
            return history.stages.iloc[0]
        if history.method == parsed.role:
            return history.stages.iloc[-1]
    return None


def _timed_file(runs: pd.DataFrame) -> str | None:
    """The artifact file the suite timed for these runs (recorded since the suite ships in the package)."""
    files = runs["artifact"].dropna() if "artifact" in runs.columns else pd.Series(dtype=object)
    return str(files.iloc[0]) if not files.empty else None


def _artifact(manifest: Manifest | None, timed: str | None, model: str, variant: str,
              headline_format: str | None) -> pd.Series | None:
    """The manifest's artifact of this benchmarked model: the file timed at the comparison's backend and batch;
    else the model's artifact at the variant's precision in the format timed for dense there (any format
    if none), so the `file` column names the artifact that backend runs."""
    if manifest is None or manifest.artifacts.empty:
        return None
    named = _artifact_named(manifest, timed)
    if named is not None:
        return named
    arts = manifest.artifacts
    parsed = parse_variant(variant)
    if parsed is not None and parsed.sparse:
        return None  # torch sparse CSR is built in memory from the checkpoint: no exported file runs it
    same = arts[arts["model"] == model]
    if parsed is not None:
        same = same[same["precision"] == parsed.precision]
    if same.empty:
        return None
    preferred = same[same["format"] == headline_format]
    return (preferred if not preferred.empty else same).iloc[0]


def comparison_table(results: Results, speedup: pd.DataFrame, manifest: Manifest | None,
                     histories: Sequence[History]) -> pd.DataFrame:
    """The design notes' table: dense, magnitude, structured side by side on each machine."""
    rows = []
    for machine, bench in results.benchmarks.groupby("machine", sort=False):
        point = _latency_point(bench)
        at_point = bench if point is None else bench[(bench["backend"] == point[0]) & (bench["batch"] == point[1])]
        headline = _artifact(manifest, _timed_file(at_point[at_point["variant"] == BASELINE_VARIANT]),
                             BASELINE_VARIANT, BASELINE_VARIANT, None)
        headline_format = None if headline is None else headline["format"]
        variants = sorted(bench["variant"].unique(), key=variant_rank)
        for variant in variants:
            runs = bench[bench["variant"] == variant]
            model = str(runs["model"].iloc[0])
            artifact = _artifact(manifest, _timed_file(at_point[at_point["variant"] == variant]), model, variant,
                                 headline_format)
            source = artifact if artifact is not None else runs.iloc[0]
            row: dict[str, object] = {
                "machine": machine, "model": model, "variant": variant,
                "parameters (stored)": source["params"], "non-zero": source["nonzero_params"],
                "widths": source["widths"],
            }
            if artifact is not None:
                row |= {"file": artifact["file"], "file bytes": artifact["bytes"]}
            if point is not None:
                backend, batch = point
                at = at_point[at_point["variant"] == variant]
                row |= {"backend": backend, "batch": batch,
                        "latency ms (median)": at["median_s"].iloc[0] * 1e3 if not at.empty else math.nan}
                sp = speedup[(speedup["machine"] == machine) & (speedup["variant"] == variant)
                             & (speedup["backend"] == backend) & (speedup["batch"] == batch)]
                if variant == BASELINE_VARIANT and not at.empty:
                    row["speedup"] = 1.0
                elif not sp.empty:
                    row |= {"speedup": sp["speedup"].iloc[0], "speedup from": sp["source"].iloc[0],
                            "CI low": sp["ci_low"].iloc[0], "CI high": sp["ci_high"].iloc[0]}
            row |= _accuracy(histories, variant, artifact) or {}
            rows.append(row)
    table = pd.DataFrame(rows).dropna(axis=1, how="all")
    order = [c for c in COMPARISON_COLUMNS if c in table.columns]
    return table[order].drop(columns="model" if (table["model"] == table["variant"]).all() else [])


def _artifact_named(manifest: Manifest | None, file: str | None) -> pd.Series | None:
    """The manifest's row of this file, if it lists one."""
    if manifest is None or file is None or manifest.artifacts.empty or not (manifest.artifacts["file"] == file).any():
        return None
    return manifest.artifacts[manifest.artifacts["file"] == file].iloc[0]


def _timed_artifact(manifest: Manifest | None, runs: pd.DataFrame) -> pd.Series | None:
    """The manifest's row of the file these runs timed, if recorded."""
    return _artifact_named(manifest, _timed_file(runs))


def _file_bytes(manifest: Manifest | None, runs: pd.DataFrame) -> float:
    artifact = _timed_artifact(manifest, runs)
    return math.nan if artifact is None else float(artifact["bytes"])


def summary_rows(results: Results, speedup: pd.DataFrame, manifest: Manifest | None,
                 histories: Sequence[History]) -> pd.DataFrame:
    """Per machine and backend at its largest batch with a dense run: each variant's paired speedup with CI,
    its change in accuracy and residual against dense, and its file size and peak memory relative to dense's."""
    rows = []
    bench = results.benchmarks
    for (machine, backend), runs in bench.groupby(["machine", "backend"], sort=False):
        dense_runs = runs[runs["variant"] == BASELINE_VARIANT]
        if dense_runs.empty:
            continue
        batch = int(dense_runs["batch"].max())
        at = runs[runs["batch"] == batch]
        dense_at = at[at["variant"] == BASELINE_VARIANT]
        dense_stage = _history_stage(histories, BASELINE_VARIANT)
        for variant in sorted(set(at["variant"]) - {BASELINE_VARIANT}, key=variant_rank):
            mine = at[at["variant"] == variant]
            sp = speedup[(speedup["machine"] == machine) & (speedup["backend"] == backend)
                         & (speedup["batch"] == batch) & (speedup["variant"] == variant)]
            stage = _validation(histories, variant, _timed_artifact(manifest, mine))
            accuracy = {}
            if stage is not None and dense_stage is not None:
                accuracy = {"ΔR² vs dense": stage["val_r2"] - dense_stage["val_r2"],
                            "residual RMS vs dense": _ratio(stage["val_residual_rms"], dense_stage["val_residual_rms"])}
            rows.append({
                "machine": machine, "backend": backend, "batch": batch, "variant": variant,
                "speedup": sp["speedup"].iloc[0] if not sp.empty else math.nan,
                "CI low": sp["ci_low"].iloc[0] if not sp.empty else math.nan,
                "CI high": sp["ci_high"].iloc[0] if not sp.empty else math.nan,
                **accuracy,
                "file size vs dense": _ratio(_file_bytes(manifest, mine), _file_bytes(manifest, dense_at)),
                "peak memory vs dense": _ratio(mine["peak_memory_bytes"].iloc[0],
                                               dense_at["peak_memory_bytes"].iloc[0]),
            })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if table["machine"].nunique() == 1:
        table = table.drop(columns="machine")
    return table.dropna(axis=1, how="all")


def _ratio(numerator: object, denominator: object) -> float:
    try:
        value = float(numerator) / float(denominator)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def gate_verdict(gate: GateOutcome | None) -> str:
    """One sentence: the gate's verdict and what it judged, or that no gate judged these results."""
    if gate is None:
        return "Gate: not run on these results (spinn-export gate judges them)."
    checks = "; ".join(f"{r.variant} {r.rule} on {r.backend} at batch {r.batch}: {r.judged:.2f} against "
                       f"{r.threshold:.2f} ({r.result})" for r in gate.rows.itertuples())
    return f"Gate {'passed' if gate.passed else 'FAILED'}: {checks}."


def headline(summary: pd.DataFrame) -> str:
    """The answer in one sentence: the structured (else first) variant on ort-cpu (else the first backend)."""
    if summary.empty or summary["speedup"].isna().all():
        return "No variant has a paired speedup over dense in these results."
    measured = summary[summary["speedup"].notna()]
    backend = PREFERRED_BACKEND if PREFERRED_BACKEND in set(measured["backend"]) else measured["backend"].iloc[0]
    on = measured[measured["backend"] == backend]
    parts = []
    for row in on.to_dict("records"):
        parts.append(f"{row['variant']} runs {row['speedup']:.2f}× as fast as dense [{row['CI low']:.2f}, "
                     f"{row['CI high']:.2f}]")
    return f"On {backend} at batch {int(on['batch'].iloc[0])}: " + "; ".join(parts) + " (paired, 95 % CI)."


def _dates(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, errors="coerce").dt.strftime(DATE_FORMAT)


def runs_table(results: Results, manifest: Manifest | None) -> pd.DataFrame:
    runs = results.runs
    table = pd.DataFrame({
        "machine": runs["machine"], "results file": runs["file"].map(lambda f: Path(f).name),
        "CPU": runs["cpu_model"], "GPU": runs["gpu_name"], "driver": runs["driver"], "versions": runs["versions"],
        "benchmarked": _dates(runs["datetime"]), "commit": runs["commit"],
    })
    if manifest is not None and manifest.versions:
        table["exported with"] = ", ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items()))
    return table.dropna(axis=1, how="all")


def _format_value(column: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if column == "fraction of ceiling" or column.startswith("fraction CI"):
        return f"{value:.1%}"
    if column.startswith("Δ"):
        return f"{value:+.4f}"
    if column == "peak MiB":
        return f"{value:.1f}"
    if "speedup" in column or column.startswith("CI ") or column == "FLOP-ratio ideal" or column.endswith("vs dense"):
        return f"{value:.2f}×"
    if column in ("val R²", "val rel L2"):
        return f"{value:.4f}"
    if column in PLAIN_INTEGERS:
        return str(int(value))
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def displayed(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings: units, separators and a dash for what was not measured."""
    return pd.DataFrame({c: [_format_value(c, v) for v in table[c].tolist()] for c in table.columns})


def build_sections(results: Results, manifest: Manifest | None, histories: Sequence[History],
                   gate: GateOutcome | None = None) -> list[Section]:
    speedup = speedups(results)
    summary = summary_rows(results, speedup, manifest, histories)
    skipped = "" if results.skipped.empty else (
        f" {int(results.skipped['cases'].sum())} case(s) were not run here, each with its reason under \"Not run\".")
    sections = [Section("summary", "Summary",
                        f"{headline(summary)} {fastest_sentence(results)} {gate_verdict(gate)} Per backend at its "
                        "largest batch: the paired speedup over dense with its 95 % CI, validation R² and PDE residual "
                        "RMS against dense's (pruning history; a quantised file's R² as its export measured it), and "
                        "the timed file's size and peak memory relative to "
                        f"dense's.{skipped} Details follow.", summary if not summary.empty else None)]
    fastest = fastest_table(results)
    sections.append(Section("fastest", "Fastest verified deployment",
                            "Per batch, the variant and backend within the accuracy budget (float32 variants by "
                            "their parity check, low-precision files by the export's within_budget; ΔR² is against the "
                            "variant's own float32 model) with the highest speedup over dense float32 on ort-cpu: each "
                            "backend's fastest verified case in the latency matrix is a finalist, timed against dense "
                            "on ort-cpu in A B B A blocks (at each switch of runtime a 50 ms wait, for ONNX Runtime's "
                            "idle threads to stop spinning, and an untimed call: a switch between runtimes is not "
                            "timed). Latency is the winner's median per call; the speedup the median of the cycles' "
                            "ratios with a bootstrap 95 % CI.",
                            fastest) if not fastest.empty else
                    Section("fastest", "Fastest verified deployment", fastest_sentence(results)))
    sections.append(Section("runs", "Machines and runs", "One row per results file; runs are keyed by machine.",
                            runs_table(results, manifest)))
    sections.append(Section("comparison", "Model comparison",
                            "Dense, magnitude and structured side by side. Latency is the median on the named backend "
                            "and batch; file bytes are of the named exported artifact; R² and residual RMS are on the "
                            "validation split (pruning history: final stage, stage 0 for dense).",
                            comparison_table(results, speedup, manifest, histories)))
    sections.append(Section("latency", "Latency and throughput",
                            "pytest-benchmark statistics per call (one call = one batch); p95 from the stored rounds "
                            "where at least 20 were kept. A variant's rounds alternate with dense calls (its paired "
                            "speedup), so at small batches its call starts with dense's weights in cache; dense's "
                            "own rounds do not alternate.", latency_table(results)))
    if speedup.empty:
        sections.append(Section("speedup", "Speedup over dense",
                                "No variant was measured paired with dense on the same backend and batch: no speedups "
                                "(a ratio of medians timed apart is not shown as one)."))
    else:
        sections.append(Section("speedup", "Speedup over dense",
                                "Every speedup is paired: each latency benchmark sandwiches its rounds between dense "
                                "calls (interleaved rounds), and the headline backends also alternate A B B A blocks "
                                "in fresh processes (preferred where both exist). Median with a bootstrap 95 % CI; "
                                "FLOP-ratio ideal = dense FLOPs / variant FLOPs.", speedup_table(speedup)))
    memory = memory_table(results)
    sections.append(Section("memory", "Peak memory",
                            "Peak memory of inference in a fresh process per backend and variant, above the process "
                            "before the model was loaded (CPU: the kernel's high-water mark VmHWM, which no short "
                            "spike escapes; CUDA: torch.cuda.max_memory_allocated); vs dense = this variant's peak "
                            "over dense's.", memory) if not memory.empty else
                    Section("memory", "Peak memory", "The results carry no peak-memory measurements."))
    if not results.ceilings.empty:
        sections.append(Section("ceilings", "GEMM ceilings",
                                "The best rate of a large square GEMM per device and precision, timed in every library "
                                "the backends compute with (the best is the ceiling: interference only lowers a run). "
                                "Native: the hardware has instructions for that precision (VNNI/AMX for int8, AMX or "
                                "AVX512-BF16 for bf16, tensor cores on CUDA), detected at run time; int8 is measured "
                                "without them too (it still runs, on AVX2), bf16 is not (it would be emulated).",
                                ceilings_table(results)))
    if not results.ceiling_fractions.empty:
        sections.append(Section("ceiling_fractions", "Fraction of the ceiling, paired",
                                "Each backend's dense float32 model at the largest batch against the GEMM that set the "
                                "float32 ceiling, timed in A B B A blocks (each switch of runtime preceded by a 50 ms "
                                "wait and an untimed call): each cycle's fraction is the model's rate over the GEMM's "
                                "in that cycle; median with a bootstrap 95 % CI. The GEMM's rate here is its typical "
                                "one under the run's load, not the best-of that set the ceiling, so this fraction is "
                                "the one to compare between backends and runs; the table below divides each case's "
                                "median by the session's ceiling.", ceiling_fractions_table(results)))
    has_ceiling = results.benchmarks["ceiling_gflops"].notna().any()
    sections.append(Section("gflops", "Achieved GFLOP/s",
                            "FLOPs per sample × batch / median latency (int8: integer operations); the fraction is of "
                            "the ceiling of the case's own device and precision (int8-static runs as int8), a dash "
                            "where that ceiling was not measured." if has_ceiling else
                            "FLOPs per sample × batch / median latency. The results carry no measured ceiling, so "
                            "no fraction of it.", gflops_table(results)))
    if not results.checks.empty:
        sections.append(Section("crosscheck", "Timing cross-check",
                                "The suite's median against an independent timeit of session.run on the same session "
                                "and input, interleaved one timeit call per pytest-benchmark round so both see the "
                                "same machine (bench/test_timeit.py fails a case off by 10 % or more).",
                                crosscheck_table(results)))
    if not results.skipped.empty:
        sections.append(Section("skipped", "Not run", "Cases the suite skipped or never generated on these machines, "
                                "with the reason (a backend that cannot run here, a precision a backend does not run).",
                                skipped_table(results)))
    if manifest is None:
        sections.append(Section("artifacts", "Artifact sizes",
                                "No manifest given (--manifest): artifact sizes omitted."))
    else:
        sections.append(Section("artifacts", "Artifact sizes",
                                f"From {manifest.path}; parity is against eager PyTorch.",
                                artifacts_table(manifest)))
    architecture = recorded_architecture(histories)
    if architecture is not None:
        sections.append(Section("architecture", ARCHITECTURE_TITLE, architecture_note(architecture),
                                groups_table(architecture)))
    if histories:
        sections.append(Section("pruning", "Pruning history", "Validation metrics after each stage (0 = dense).",
                                pruning_table(histories)))
    else:
        sections.append(Section("pruning", "Pruning history", "No pruning history given (--history): omitted."))
    return sections


def build_figures(results: Results, histories: Sequence[History], out_dir: Path) -> list[Figure]:
    figures = [Figure("latency", "Latency against batch size (log-log; bars span the IQR)",
                      plots.plot_latency(results.benchmarks, out_dir / "latency.png"))]
    speedup = speedups(results)
    if not speedup.empty:
        figures.append(Figure("speedup", "Speedup over dense against batch size (bars: paired CI; dashed: FLOP ideal)",
                              plots.plot_speedup(speedup, out_dir / "speedup.png")))
    if results.benchmarks["peak_memory_bytes"].notna().any():
        figures.append(Figure("memory", "Peak memory against batch size (log-log)",
                              plots.plot_memory(results.benchmarks, out_dir / "memory.png")))
    if histories:
        figures.append(Figure("pruning", "Accuracy and PDE residual after each pruning stage",
                              plots.plot_pruning(histories, out_dir / "pruning.png")))
    return figures


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:1240px;margin:2rem auto;
padding:0 1.2rem}
h1{font-size:1.6rem;margin-bottom:.2rem}
h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
.meta{color:#57606a;margin:.1rem 0}.meta code{background:#f6f8fa;padding:1px 4px;border-radius:4px;font-size:13px}
p.note{color:#57606a;margin:.3rem 0 .6rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums;margin-bottom:.5rem}
th,td{padding:4px 7px;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap}
th{background:#f6f8fa;border-bottom:2px solid #d0d7de;white-space:normal;vertical-align:bottom}
tbody tr:hover{background:#f9fafb}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e5e7eb;border-radius:6px}
figcaption{color:#57606a;font-size:13px}
"""


def _cells(name: str, columns: Sequence[int]) -> str:
    return ",".join(f"#t-{name} td:nth-child({i}),#t-{name} th:nth-child({i})" for i in columns)


def _html_table(name: str, table: pd.DataFrame) -> str:
    """The table, with scoped rules: text columns left-aligned (numbers right), long text wraps."""
    shown = displayed(table)
    text = [i for i, column in enumerate(table.columns, 1) if not pd.api.types.is_numeric_dtype(table[column])]
    long = [i for i in text if shown.iloc[:, i - 1].str.len().max() > LONG_TEXT]
    style = "".join([f"{_cells(name, text)}{{text-align:left}}" if text else "",
                     f"{_cells(name, long)}{{white-space:normal;min-width:16em}}" if long else ""])
    return f"<style>{style}</style>" + shown.to_html(index=False, border=0, escape=True, table_id=f"t-{name}")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _opening(sections: Sequence[Section]) -> tuple[list[Section], list[Section]]:
    """The summary and the fastest verified deployment open the report, before the run's metadata; details follow."""
    first = [s for s in sections if s.name in OPENING]
    return first, [s for s in sections if s.name not in OPENING]


def _html_section(section: Section, figure: Figure | None) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2><p class=\"note\">{html.escape(section.note)}</p>"]
    if section.table is not None:
        parts.append(f'<div class="scroll">{_html_table(section.name, section.table)}</div>')
    if figure is not None:
        parts.append(f'<figure><img src="{_data_uri(figure.path)}" alt="{html.escape(figure.title)}">'
                     f"<figcaption>{html.escape(figure.title)}</figcaption></figure>")
    return "".join(parts)


def render_html(sections: Sequence[Section], figures: Sequence[Figure], header: dict[str, str]) -> str:
    meta = "".join(f'<p class="meta"><b>{html.escape(k)}:</b> '
                   + (f"<code>{html.escape(v)}</code>" if k == "command" else html.escape(v)) + "</p>"
                   for k, v in header.items())
    by_name = {f.name: f for f in figures}
    first, rest = _opening(sections)
    body = "".join(_html_section(s, by_name.get(s.name)) for s in first) + meta + "".join(
        _html_section(s, by_name.get(s.name)) for s in rest)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>spinn-export report</title>'
            f"<style>{CSS}</style></head><body><h1>spinn-export benchmark report</h1>{body}</body></html>\n")


def _markdown_section(section: Section, figure: Figure | None) -> list[str]:
    lines = [f"## {section.title}", "", section.note, ""]
    if section.table is not None:
        align = ["right" if pd.api.types.is_numeric_dtype(section.table[c]) else "left" for c in section.table.columns]
        lines += [displayed(section.table).to_markdown(index=False, colalign=align, disable_numparse=True), ""]
    if figure is not None:
        lines += [f"![{figure.title}]({figure.path.name})", ""]
    return lines


def render_markdown(sections: Sequence[Section], figures: Sequence[Figure], header: dict[str, str]) -> str:
    by_name = {f.name: f for f in figures}
    first, rest = _opening(sections)
    lines = ["# spinn-export benchmark report", ""]
    for section in first:
        lines += _markdown_section(section, by_name.get(section.name))
    lines += [f"- **{k}:** " + (f"`{v}`" if k == "command" else v) for k, v in header.items()]
    for section in rest:
        lines += ["", *_markdown_section(section, by_name.get(section.name))]
    return "\n".join(lines).rstrip() + "\n"


def default_command(results: Sequence[Path], manifest: Path | None, histories: Sequence[Path], out_dir: Path,
                    sweep: Path | None = None) -> str:
    words = ["spinn-export", "report", *map(str, results)]
    words += ["--manifest", str(manifest)] if manifest is not None else []
    for history in histories:
        words += ["--history", str(history)]
    words += ["--sweep", str(sweep)] if sweep is not None else []
    return shlex.join([*words, "--out", str(out_dir)])


def build_report(results: Sequence[str | os.PathLike[str]], manifest: str | os.PathLike[str] | None,
                 history: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
                 out_dir: str | os.PathLike[str], *, command: str | None = None,
                 gate: GateOutcome | None = None, sweep: str | os.PathLike[str] | None = None) -> ReportPaths:
    """Read everything first (so bad input leaves no output), then write out_dir/report.{html,md}, csv/, *.png.

    `gate`, when the results were judged (spinn-export run), puts its verdict in the summary. `sweep`, the --out
    DIR of `spinn-export sweep`, adds its Pareto section (`report.pareto`).

    `history` is one pruning directory (or history.json) or several (e.g. structured and magnitude).
    """
    result_paths = [Path(p) for p in results]
    history_paths = [] if history is None else [Path(history)] if isinstance(history, (str, os.PathLike)) \
        else [Path(h) for h in history]
    out = Path(out_dir)
    loaded = load_results(result_paths)
    loaded_manifest = None if manifest is None else load_manifest(manifest)
    histories = [load_history(h) for h in history_paths]
    loaded_sweep = None if sweep is None else pareto.load_sweep(sweep)
    sections = build_sections(loaded, loaded_manifest, histories, gate)
    figures = build_figures(loaded, histories, out)
    if loaded_sweep is not None:
        sections.append(Section("pareto", pareto.TITLE, pareto.NOTE, pareto.report_table(loaded_sweep)))
        figures.append(Figure("pareto", pareto.CAPTION, pareto.plot_pareto(loaded_sweep, out / "pareto.png")))
    csv_dir = out / "csv"
    csvs = []
    for section in sections:
        if section.table is not None:
            csvs.append(csv_dir / f"{section.name}.csv")
            write_text(csvs[-1], section.table.to_csv(index=False))
    _remove_stale(out, csv_dir, {p.name for p in csvs}, {f.path.name for f in figures})
    header = {
        "machines": ", ".join(loaded.runs["machine"].unique()),
        "command": command or default_command(result_paths, None if manifest is None else Path(manifest),
                                              history_paths, out, None if sweep is None else Path(sweep)),
        "benchmarked": ", ".join(sorted(set(_dates(loaded.runs["datetime"]).dropna()))) or MISSING,
        "report written": dt.datetime.now(dt.timezone.utc).strftime(DATE_FORMAT),
    }
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, render_html(sections, figures, header))
    write_text(md_path, render_markdown(sections, figures, header))
    return ReportPaths(html_path, md_path, csv_dir, tuple(csvs), tuple(f.path for f in figures))


def fastest_summary(results: Sequence[str | os.PathLike[str]]) -> tuple[str, pd.DataFrame]:
    """The fastest verified deployment as the report's summary says it and its table, read from the results
    (what `spinn-export run` prints at the end)."""
    loaded = load_results([Path(p) for p in results])
    return fastest_sentence(loaded), fastest_table(loaded)


def summary_table(results: Sequence[str | os.PathLike[str]], manifest: str | os.PathLike[str] | None,
                  histories: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """The report's summary, read from the results themselves (what `spinn-export run` prints at the end)."""
    loaded = load_results([Path(p) for p in results])
    return summary_rows(loaded, speedups(loaded), None if manifest is None else load_manifest(manifest),
                        [load_history(h) for h in histories])


def terminal_table(table: pd.DataFrame) -> str:
    """A table for the terminal as the report shows it: units, separators, and a dash for what was not measured."""
    return displayed(table).to_string(index=False) if not table.empty else "(nothing measured)"


def _remove_stale(out: Path, csv_dir: Path, csvs: set[str], pngs: set[str]) -> None:
    """A section omitted this time must not leave last time's file looking current."""
    for name in CSV_NAMES:
        if f"{name}.csv" not in csvs:
            (csv_dir / f"{name}.csv").unlink(missing_ok=True)
    for name in PNG_NAMES:
        if f"{name}.png" not in pngs:
            (out / f"{name}.png").unlink(missing_ok=True)
