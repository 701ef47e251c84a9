"""The report's detail tables, each built from the loaded results, manifest or histories, each with its note.

A table holds only what was read (a missing piece is an omitted column or section, never a filled-in value); the
note beside it says how its figures were measured, so a reader need not open the suite to trust them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from spinn_export.defaults import (
    HEADLINE_BACKEND,
    TIMEIT_FAULT_BOUND,
    TIMEIT_REMEASURES,
    TIMEIT_TOLERANCE,
    UNSTABLE_SPREAD,
)
from spinn_export.report import architecture
from spinn_export.report.lookup import artifact, timed_file, validation
from spinn_export.report.noise import stability_text
from spinn_export.report.render import Section
from spinn_export.report.results import BASELINE_VARIANT, History, ManifestView, Results, variant_rank
from spinn_export.runtimes.profile import shares_text

MIB = 2**20
SOURCES = {"abba": "ABBA, fresh processes", "interleaved": "interleaved rounds"}
DATE_FORMAT = "%Y-%m-%d %H:%M UTC"
FASTEST_TITLE = "Fastest verified deployment"
def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"


STABILITY_NOTE = (f"Stability: UNSTABLE where the CI, or the case's fresh processes' own medians, spread more than "
                  f"±{_pct(UNSTABLE_SPREAD)} of the median (too noisy to tell deployments apart); \"not recorded\" "
                  "where the results predate the verdict.")
LOAD_NOTE = ("Load: the machine's 1-minute load average after the case, and the shares of all CPUs' time that other "
             "processes used (others' CPU) and the hypervisor stole (steal) while it was measured.")
COMPARISON_COLUMNS = ("machine", "model", "variant", "parameters (stored)", "non-zero", "widths", "file", "file bytes",
                      "backend", "batch", "latency ms (median)", "speedup", "speedup from", "CI low", "CI high",
                      "val R²", "residual RMS")


def one_machine_unnamed(results: Results, table: pd.DataFrame) -> pd.DataFrame:
    """Without the machine column where the results come from one machine."""
    return table.drop(columns="machine") if results.runs["machine"].nunique() == 1 else table


def dates(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, errors="coerce").dt.strftime(DATE_FORMAT)


def baseline_backends(results: Results) -> list[str]:
    """The backends the fastest deployments' speedups are over, as the results recorded them (not assumed)."""
    return list(dict.fromkeys(results.fastest["baseline_backend"].dropna().astype(str)))


def latency_table(results: Results) -> pd.DataFrame:
    bench = results.benchmarks
    table = pd.DataFrame({
        "machine": bench["machine"], "variant": bench["variant"], "model": bench["model"],
        "backend": bench["backend"], "batch": bench["batch"],
        "median ms": bench["median_s"] * 1e3, "IQR ms": bench["iqr_s"] * 1e3, "p95 ms": bench["p95_s"] * 1e3,
        "samples/s": bench["samples_per_s"], "rounds": bench["rounds"], "threads": bench["threads"],
        "provider": bench["provider"], **_load(bench),
    })
    return table.dropna(axis=1, how="all")


def _load(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The machine's load while each row was measured (`report.noise`): empty columns, dropped, where not recorded."""
    return {"load avg": frame["load_avg"], "others' CPU": frame["others_cpu"], "steal": frame["steal"]}


def _stability(frame: pd.DataFrame) -> pd.Series:
    return pd.Series([stability_text(u, r) for u, r in zip(frame["unstable"], frame["unstable_reason"])],
                     index=frame.index, dtype=object)


def speedup_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({
        "machine": frame["machine"], "backend": frame["backend"], "batch": frame["batch"], "variant": frame["variant"],
        "speedup": frame["speedup"], "CI low": frame["ci_low"], "CI high": frame["ci_high"],
        "measured by": frame["source"].map(SOURCES).fillna(frame["source"]),
        "samples": frame["processes"] * frame["blocks_per_process"], "FLOP-ratio ideal": frame["flop_ratio"],
        "stability": _stability(frame), **_load(frame),
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
    """The fastest verified deployment per machine and batch, with its paired speedup over dense float32 on the
    baseline backend the results name (in the column's label where there is one, else a column of its own)."""
    frame = results.fastest
    baselines = baseline_backends(results)
    label = f"speedup vs dense fp32 on {baselines[0]}" if len(baselines) == 1 else "speedup vs dense fp32"
    columns = {
        "machine": frame["machine"], "batch": frame["batch"], "variant": frame["variant"], "backend": frame["backend"],
        "precision": frame["precision"], "latency ms (median)": frame["latency_s"] * 1e3,
        label: frame["speedup_vs_dense_fp32"],
    }
    if len(baselines) > 1:
        columns["dense fp32 on"] = frame["baseline_backend"]
    columns |= {
        "CI low": frame["ci_low"], "CI high": frame["ci_high"],
        "compute bound ms": pd.to_numeric(frame["compute_bound_s"]) * 1e3,
        "% of the bound": pd.to_numeric(frame["bound_fraction"]) * 100, "ceiling precision": frame["ceiling_precision"],
        "time by operator": frame["time_by_operator"].map(
            lambda entry: f"{entry['profiler']}: {shares_text(entry)}" if isinstance(entry, dict) else None),
        "stability": _stability(frame), **_load(frame),
        "ΔR² vs its fp32 model": pd.to_numeric(frame["val_r2_delta"]), "verified by": frame["verified_by"],
        "ABBA cycles": frame["cycles"],
        "finalists (speedup)": frame["finalists"].map(_finalists_text),
    }
    return one_machine_unnamed(results, pd.DataFrame(columns)).dropna(axis=1, how="all")


def _finalists_text(finalists: object) -> str | None:
    """Every backend re-timed at that batch, with its paired speedup: how the fastest deployment was chosen."""
    if not isinstance(finalists, (list, tuple)) or not finalists:
        return None
    return "; ".join(f"{f['variant']} on {f['backend']} {f['speedup']:.2f}×" for f in finalists)


def skipped_table(results: Results) -> pd.DataFrame:
    """What the suite did not run, and why (an unavailable backend, a precision a backend does not run, ...)."""
    frame = results.skipped
    return one_machine_unnamed(results, pd.DataFrame({"machine": frame["machine"], "cases": frame["cases"],
                                                      "reason": frame["reason"]}))


def crosscheck_table(results: Results) -> pd.DataFrame:
    checks = results.checks
    return pd.DataFrame({
        "machine": checks["machine"], "reference": checks["check"], "backend": checks["backend"],
        "batch": checks["batch"], "variant": checks["variant"], "suite median ms": checks["median_s"] * 1e3,
        "reference median ms": pd.to_numeric(checks["reference_median_s"]) * 1e3,
        "suite / reference": checks["ratio"], "rounds": checks["rounds"],
        "re-measured suite / reference": checks["ratios"].map(
            lambda r: ", ".join(f"{v:.3f}" for v in r[1:]) or None if isinstance(r, list) else None),
        "verdict": checks["verdict"],
    }).dropna(axis=1, how="all")


def artifacts_table(manifest: ManifestView) -> pd.DataFrame:
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


def runs_table(results: Results, manifest: ManifestView | None) -> pd.DataFrame:
    runs = results.runs
    table = pd.DataFrame({
        "machine": runs["machine"], "results file": runs["file"].map(lambda f: Path(f).name),
        "CPU": runs["cpu_model"], "GPU": runs["gpu_name"], "driver": runs["driver"], "versions": runs["versions"],
        "benchmarked": dates(runs["datetime"]), "commit": runs["commit"],
    })
    if manifest is not None and manifest.versions:
        table["exported with"] = ", ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items()))
    return table.dropna(axis=1, how="all")


def _latency_point(bench: pd.DataFrame) -> tuple[str, int] | None:
    """The backend (the headline one if measured, else the first) and its largest batch with a dense run."""
    dense = bench[bench["variant"] == BASELINE_VARIANT]
    if dense.empty:
        return None
    backends = sorted(dense["backend"].unique())
    backend = HEADLINE_BACKEND if HEADLINE_BACKEND in backends else backends[0]
    return backend, int(dense[dense["backend"] == backend]["batch"].max())


def comparison_table(results: Results, speedup: pd.DataFrame, manifest: ManifestView | None,
                     histories: Sequence[History]) -> pd.DataFrame:
    """The design notes' table: dense, magnitude, structured side by side on each machine."""
    rows = []
    for machine, bench in results.benchmarks.groupby("machine", sort=False):
        point = _latency_point(bench)
        at_point = bench if point is None else bench[(bench["backend"] == point[0]) & (bench["batch"] == point[1])]
        headline = artifact(manifest, timed_file(at_point[at_point["variant"] == BASELINE_VARIANT]),
                            BASELINE_VARIANT, BASELINE_VARIANT, None)
        headline_format = None if headline is None else headline["format"]
        for variant in sorted(bench["variant"].unique(), key=variant_rank):
            runs = bench[bench["variant"] == variant]
            model = str(runs["model"].iloc[0])
            matched = artifact(manifest, timed_file(at_point[at_point["variant"] == variant]), model, variant,
                               headline_format)
            source = matched if matched is not None else runs.iloc[0]
            row: dict[str, object] = {
                "machine": machine, "model": model, "variant": variant,
                "parameters (stored)": source["params"], "non-zero": source["nonzero_params"],
                "widths": source["widths"],
            }
            if matched is not None:
                row |= {"file": matched["file"], "file bytes": matched["bytes"]}
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
            metrics = validation(histories, variant, matched)
            if metrics is not None:
                row |= {"val R²": metrics["val_r2"], "residual RMS": metrics["val_residual_rms"]}
            rows.append(row)
    table = pd.DataFrame(rows).dropna(axis=1, how="all")
    order = [c for c in COMPARISON_COLUMNS if c in table.columns]
    return table[order].drop(columns="model" if (table["model"] == table["variant"]).all() else [])


def fastest_section(results: Results, why_not: str) -> Section:
    """The fastest deployment per batch, or (`why_not`, the summary's sentence) why none was measured."""
    table = fastest_table(results)
    if table.empty:
        return Section("fastest", FASTEST_TITLE, why_not)
    baselines = baseline_backends(results)
    on = f"on {baselines[0]}" if len(baselines) == 1 else "on the baseline backend each row names"
    return Section("fastest", FASTEST_TITLE,
                   "Per batch, the variant and backend within the accuracy budget (float32 variants by their parity "
                   "check, low-precision files by the export's within_budget; ΔR² is against the variant's own float32 "
                   f"model) with the highest speedup over dense float32 {on}: each backend's fastest verified case in "
                   f"the latency matrix is a finalist, timed against dense {on} in A B B A blocks (at each switch of "
                   "runtime a 50 ms wait, for ONNX Runtime's idle threads to stop spinning, and an untimed call: a "
                   "switch between runtimes is not timed). Latency is the winner's median per call; the speedup the "
                   "median of the cycles' ratios with a bootstrap 95 % CI.", table)


def detail_sections(results: Results, speedup: pd.DataFrame, manifest: ManifestView | None,
                    histories: Sequence[History]) -> list[Section]:
    """Every section after the summary and the fastest deployment, in the report's order; one whose input is
    missing is its title and one line saying so, one that does not apply to these results is left out."""
    sections = [
        Section("runs", "Machines and runs", "One row per results file; runs are keyed by machine.",
                runs_table(results, manifest)),
        Section("comparison", "Model comparison",
                "Dense, magnitude and structured side by side. Latency is the median on the named backend and batch; "
                "file bytes are of the named exported artifact; R² and residual RMS are on the validation split "
                "(pruning history: final stage, stage 0 for dense).",
                comparison_table(results, speedup, manifest, histories)),
        Section("latency", "Latency and throughput",
                "pytest-benchmark statistics per call (one call = one batch); p95 from the stored rounds where at "
                "least 20 were kept. A variant's rounds alternate with dense calls (its paired speedup), so at small "
                "batches its call starts with dense's weights in cache; dense's own rounds do not alternate. "
                f"{LOAD_NOTE}", latency_table(results)),
        Section("speedup", "Speedup over dense",
                "No variant was measured paired with dense on the same backend and batch: no speedups (a ratio of "
                "medians timed apart is not shown as one).") if speedup.empty else
        Section("speedup", "Speedup over dense",
                "Every speedup is paired: each latency benchmark sandwiches its rounds between dense calls "
                "(interleaved rounds), and the headline backends also alternate A B B A blocks in fresh processes "
                "(preferred where both exist). Median with a bootstrap 95 % CI; FLOP-ratio ideal = dense FLOPs / "
                f"variant FLOPs. {STABILITY_NOTE} {LOAD_NOTE}", speedup_table(speedup)),
    ]
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
                                f"same machine. A ratio off by {_pct(TIMEIT_TOLERANCE)} or more is measured again (up "
                                f"to {TIMEIT_REMEASURES} times, the two calls in A B B A order); one that no "
                                f"re-measurement brings within {_pct(TIMEIT_TOLERANCE)} is unverified (the machine was "
                                "too noisy to confirm it; every ratio is shown), and only one that every "
                                f"re-measurement puts more than {_pct(TIMEIT_FAULT_BOUND)} off on the same side fails "
                                "the run, as a harness fault.", crosscheck_table(results)))
    if not results.skipped.empty:
        sections.append(Section("skipped", "Not run", "Cases the suite skipped or never generated on these machines, "
                                "with the reason (a backend that cannot run here, a precision a backend does not run).",
                                skipped_table(results)))
    sections.append(Section("artifacts", "Artifact sizes", "No manifest given (--manifest): artifact sizes omitted.")
                    if manifest is None else
                    Section("artifacts", "Artifact sizes", f"From {manifest.path}; parity is against eager PyTorch.",
                            artifacts_table(manifest)))
    recorded = architecture.recorded(histories)
    if recorded is not None:
        sections.append(Section("architecture", architecture.TITLE, architecture.note(recorded),
                                architecture.groups_table(recorded)))
    sections.append(Section("pruning", "Pruning history", "Validation metrics after each stage (0 = dense).",
                            pruning_table(histories)) if histories else
                    Section("pruning", "Pruning history", "No pruning history given (--history): omitted."))
    return sections
