"""Benchmark results, the exporter's manifest and the pruning history as pandas frames.

`report` and `gate` read only these files (docs/ARCHITECTURE.md, "Contracts between stages"), so
every number they print comes from here: measured timings, never a figure typed into a table.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinn_export.bench.record import (
    CEILING_KEYS,
    FASTEST_DETAILS,
    FASTEST_KEYS,
    FRACTION_KEYS,
    PAIRED_KEYS,
    SPINN_KEY,
    BenchRecord,
)
from spinn_export.bench.variants import BASELINE_ROLE, FP32, Variant
from spinn_export.errors import UserError
from spinn_export.export.formats import ceiling_precision
from spinn_export.export.manifest import MANIFEST_NAME, Manifest, read_manifest
from spinn_export.prune.record import HISTORY_NAME, HistoryRecord
from spinn_export.report.noise import LOAD_COLUMNS, STABILITY_COLUMNS, load_columns, stability_columns

BASELINE_VARIANT = Variant(BASELINE_ROLE).name
REQUIRED_EXTRA_INFO = ("variant", "backend", "batch")
METHOD_PREFERENCE = ("abba", "interleaved")  # where both exist: ABBA's fresh processes also sample process effects
CHECK_COLUMNS = ("check", "variant", "backend", "batch", "median_s", "reference_median_s", "ratio", "rounds", "ratios",
                 "verdict")
BENCH_KEY = ["machine", "variant", "backend", "batch"]
SPEEDUP_KEY = ["machine", "backend", "batch", "variant"]
LIBRARIES = ("python", "torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "cuda", "cudnn")
CEILING_COLUMNS = ("machine", "device", "precision", *CEILING_KEYS)
FASTEST_COLUMNS = (*FASTEST_KEYS, *FASTEST_DETAILS, *STABILITY_COLUMNS, *LOAD_COLUMNS)


@dataclass(frozen=True)
class Results:
    """Benchmarks of one or more pytest-benchmark JSON files, keyed by machine.

    benchmarks: one row per benchmark (times in seconds, as pytest-benchmark stores them);
    paired: one row per paired speedup of the files' `spinn.paired` lists (maybe empty): ABBA in fresh
    processes, or a latency benchmark's interleaved rounds (`method`), with its stability verdict (`unstable`: None
    where the file predates it) and the machine's load while it was measured (`report.noise`; so do the benchmarks);
    runs: one row per file, with its machine, hardware, versions and date;
    checks: one row per cross-check of the suite's timing against an independent measurement
    (the suite's timeit check: `extra_info["check"]`), kept out of `benchmarks` (maybe empty);
    ceilings: one row per machine, device and precision (`spinn.ceilings`; `gflops` NaN where not measured,
    `reason` says why); each benchmark row carries its own (`ceiling_precision`, `ceiling_gflops`);
    ceiling_fractions: each backend's dense float32 fraction of its ceiling, measured paired with the ceiling's
    GEMM (`spinn.ceiling_fractions`; empty for files written before it was measured);
    fastest: the fastest verified deployment per machine and batch (`spinn.fastest`), and fastest_skipped why a
    batch has none (`spinn.fastest_skipped`, or one row per file written before it was measured);
    skipped: reason -> cases the suite skipped or never generated (`spinn.skipped`; maybe empty).
    """

    benchmarks: pd.DataFrame
    paired: pd.DataFrame
    runs: pd.DataFrame
    checks: pd.DataFrame
    ceilings: pd.DataFrame
    fastest: pd.DataFrame
    fastest_skipped: pd.DataFrame
    skipped: pd.DataFrame
    ceiling_fractions: pd.DataFrame


@dataclass(frozen=True)
class ManifestView:
    """The exporter's manifest as its record reads it (`export.manifest.Manifest`), with one row per artifact."""

    path: Path
    record: Manifest
    artifacts: pd.DataFrame

    @property
    def versions(self) -> dict[str, str]:
        return self.record.versions

    @property
    def unavailable(self) -> dict[str, str]:
        """Formats not produced here, and why."""
        return self.record.unavailable


@dataclass(frozen=True)
class History:
    """One pruning run as its record reads it (`prune.record.HistoryRecord`), with one row per stage (0 = dense)."""

    path: Path
    record: HistoryRecord
    stages: pd.DataFrame

    @property
    def method(self) -> str:
        """The variant the run produced."""
        return self.record.method

    @property
    def architecture(self) -> dict[str, Any] | None:
        """The network as its groups (None in histories written before it was recorded)."""
        return self.record.architecture

    @property
    def kept(self) -> pd.DataFrame:
        """The stages less rounds that were rolled back: the model saved went through these, and ends in the last."""
        if "rolled_back" not in self.stages.columns:
            return self.stages
        return self.stages[~self.stages["rolled_back"].eq(True)].reset_index(drop=True)


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file or raise a one-line UserError naming the file and what it should be."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist or is not a file: check the path")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}; give the file that spinn-export wrote") from None


def _widths_text(widths: Any) -> str | None:
    return None if widths is None else ",".join(str(int(w)) for w in widths)


def _cpu_model(machine_info: dict[str, Any]) -> str | None:
    cpu = machine_info.get("cpu")
    return machine_info.get("cpu_model") or (cpu.get("brand_raw") if isinstance(cpu, dict) else None)


def _versions(machine_info: dict[str, Any]) -> str:
    """Library versions the suite adds to machine_info (flat keys), else pytest-benchmark's Python."""
    versions = {k: machine_info.get(k) for k in LIBRARIES}
    versions["python"] = versions["python"] or machine_info.get("python_version")
    return ", ".join(f"{k} {v}" for k, v in versions.items() if v)


def _benchmark_rows(data: dict[str, Any], path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Latency rows, and the cross-check rows (same timing statistics plus the reference's median)."""
    rows, checks = [], []
    for bench in data["benchmarks"]:
        info, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
        missing = [k for k in REQUIRED_EXTRA_INFO if k not in info]
        if missing or "median" not in stats:
            what = f"extra_info {', '.join(missing)}" if missing else "stats.median"
            raise UserError(f"benchmark {bench.get('name')!r} in {path} has no {what}: "
                            "give results written by the spinn-export benchmark suite (pytest bench --benchmark-json)")
        samples = stats.get("data") or []
        batch, median = int(info["batch"]), float(stats["median"])
        if "check" in info:
            checks.append({"check": info["check"], "variant": info["variant"], "backend": info["backend"],
                           "batch": batch, "median_s": median, "reference_median_s": info.get("reference_median"),
                           "ratio": info.get("ratio"), "rounds": stats.get("rounds"), "ratios": info.get("ratios"),
                           "verdict": info.get("verdict")})  # results before re-measuring had neither
            continue
        flops = info.get("flops_per_sample")
        parsed = parse_variant(info["variant"])
        precision = info.get("precision") or (parsed.precision if parsed is not None else FP32)
        rows.append({
            "variant": info["variant"], "model": info.get("model", info["variant"]), "artifact": info.get("artifact"),
            "precision": precision, "ceiling_precision": ceiling_precision(precision),
            "backend": info["backend"], "batch": batch, "device": info.get("device"),
            "device_name": info.get("device_name"), "provider": info.get("provider"), "threads": info.get("threads"),
            "params": info.get("params"), "nonzero_params": info.get("nonzero_params"),
            "flops_per_sample": flops, "widths": _widths_text(info.get("widths")),
            "median_s": median, "iqr_s": stats.get("iqr"), "q1_s": stats.get("q1"), "q3_s": stats.get("q3"),
            "p95_s": float(np.percentile(samples, 95)) if len(samples) >= 20 else np.nan,
            "rounds": stats.get("rounds"), "samples_per_s": batch / median,
            "peak_memory_bytes": info.get("peak_memory_bytes"), **load_columns(info.get("load")),
            # Recomputed from the median so that it agrees with the latency column beside it.
            "gflops": np.nan if flops is None else flops * batch / median / 1e9,
        })
    if not rows:
        raise UserError(f"{path} holds only cross-checks, no latency benchmarks: "
                        "give the JSON of a run of test_latency")
    return rows, checks


def _fastest_rows(spinn: BenchRecord) -> list[dict[str, Any]]:
    return [{**{k: entry.get(k) for k in (*FASTEST_KEYS, *FASTEST_DETAILS)}, **stability_columns(entry),
             **load_columns(entry.get("load"))} for entry in spinn.fastest]


@dataclass(frozen=True)
class _RunFile:
    """What one results file holds, as rows (before machine labels are given)."""

    run: dict[str, Any]
    benchmarks: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    ceilings: list[dict[str, Any]]
    fastest: list[dict[str, Any]]
    fastest_skipped: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    ceiling_fractions: list[dict[str, Any]]


def _read_run(path: Path) -> _RunFile:
    data = read_json(path, "benchmark results")
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or not data["benchmarks"]:
        raise UserError(f"{path} holds no benchmarks: give a pytest-benchmark JSON file (--benchmark-json)")
    machine_info = data.get("machine_info") or {}
    spinn = BenchRecord.from_dict(data.get(SPINN_KEY) or {}, path)
    commit = data.get("commit_info") or {}
    run = {
        "file": str(path), "node": machine_info.get("node") or path.stem,
        "cpu_model": _cpu_model(machine_info), "gpu_name": machine_info.get("gpu_name"),
        "driver": machine_info.get("driver"), "versions": _versions(machine_info),
        "datetime": data.get("datetime"), "commit": commit.get("id"), "dirty": commit.get("dirty"),
    }
    paired = [{**{k: entry[k] for k in PAIRED_KEYS}, **stability_columns(entry), **load_columns(entry.get("load"))}
              for entry in spinn.paired]
    fractions = [{k: e[k] for k in FRACTION_KEYS} for e in spinn.ceiling_fractions]
    return _RunFile(run, *_benchmark_rows(data, path), paired, spinn.ceiling_rows(), _fastest_rows(spinn),
                    list(spinn.fastest_skipped), list(spinn.skipped), fractions)


def _machine_labels(runs: list[dict[str, Any]], benches: list[list[dict[str, Any]]]) -> list[str]:
    """One label per file: its node, unless two files of one node measured the same thing.

    Runs of one machine that complement each other (a CPU and a CUDA run) merge under the node's
    name; repeated runs of the same benchmarks stay apart as `node/file-stem` (the same file
    given twice is then caught as a benchmark measured twice).
    """
    labels = []
    for i, run in enumerate(runs):
        keys = {(b["variant"], b["backend"], b["batch"]) for b in benches[i]}
        clash = any(other["node"] == run["node"]
                    and keys & {(b["variant"], b["backend"], b["batch"]) for b in benches[j]}
                    for j, other in enumerate(runs) if j != i)
        labels.append(f"{run['node']}/{Path(run['file']).stem}" if clash else run["node"])
    return labels


def load_results(paths: Sequence[str | os.PathLike[str]]) -> Results:
    """Merge pytest-benchmark JSON files into frames keyed by machine."""
    if not paths:
        raise UserError("give at least one benchmark results JSON file")
    read = [_read_run(Path(p)) for p in paths]
    labels = _machine_labels([f.run for f in read], [f.benchmarks for f in read])
    for label, file in zip(labels, read):
        file.run["machine"] = label
        measured = {(c["device"], c["precision"]): c["gflops"] for c in file.ceilings}
        for row in file.benchmarks:  # a case's ceiling: its own device's at its own precision, never another's
            row["ceiling_gflops"] = measured.get((row["device"], row["ceiling_precision"]))

    def rows(part: str) -> list[dict[str, Any]]:
        return [{"machine": label, **row} for label, file in zip(labels, read) for row in getattr(file, part)]

    benchmarks = pd.DataFrame(rows("benchmarks"))
    duplicated = benchmarks[benchmarks.duplicated(BENCH_KEY, keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        raise UserError(f"{first['variant']} on {first['backend']} batch {first['batch']} was measured twice on "
                        f"{first['machine']} (models {', '.join(duplicated['model'].unique())}): "
                        "give results with one model per variant")
    paired_frame = pd.DataFrame(rows("paired"), columns=["machine", *PAIRED_KEYS, *STABILITY_COLUMNS, *LOAD_COLUMNS])
    paired_frame = paired_frame.astype({"batch": int}) if not paired_frame.empty else paired_frame
    checks = pd.DataFrame(rows("checks"), columns=["machine", *CHECK_COLUMNS])
    checks = _sorted(checks, BENCH_KEY) if not checks.empty else checks
    fastest = pd.DataFrame(rows("fastest"), columns=["machine", *FASTEST_COLUMNS])
    return Results(_sorted(benchmarks, BENCH_KEY), paired_frame, pd.DataFrame([f.run for f in read]), checks,
                   pd.DataFrame(rows("ceilings"), columns=list(CEILING_COLUMNS)).astype({"gflops": float}),
                   fastest.sort_values(["machine", "batch"], kind="stable").reset_index(drop=True),
                   pd.DataFrame(rows("fastest_skipped"), columns=["machine", "batch", "reason"]),
                   pd.DataFrame(rows("skipped"), columns=["machine", "reason", "cases"]),
                   pd.DataFrame(rows("ceiling_fractions"), columns=["machine", *FRACTION_KEYS]))


def variant_rank(variant: str) -> tuple[object, ...]:
    """Display order: the suite's variants as `Variant.sort_key` orders them, then names it does not know."""
    parsed = parse_variant(variant)
    return (0, *parsed.sort_key()) if parsed is not None else (1, variant)


def parse_variant(name: str) -> Variant | None:
    """The variant a benchmarked name stands for, or None for a name the suite did not write."""
    try:
        return Variant.parse(name)
    except UserError:
        return None


def _sorted(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Machine, backend, batch, then dense / magnitude / structured / others."""
    order = [c for c in ("machine", "backend", "batch", "variant") if c in key]
    ranked = frame.assign(_rank=frame["variant"].map(variant_rank))
    by = [c if c != "variant" else "_rank" for c in order] + (["variant"] if "variant" in order else [])
    return ranked.sort_values(by, kind="stable").drop(columns="_rank").reset_index(drop=True)


def speedups(results: Results) -> pd.DataFrame:
    """Speedup of every variant over dense on the same machine, backend and batch: paired measurements only.

    A ratio of two pytest-benchmark medians taken minutes apart is not a speedup on a shared machine
    (2.74x to 5.74x over ten runs where the paired figure stayed within 3.06-3.14x), so a variant
    without a paired measurement has no row here. Where the suite measured both, the ABBA speedup
    from fresh processes is preferred to the latency matrix's interleaved rounds; `source` says
    which. `flop_ratio` is the ideal: dense FLOPs over the variant's FLOPs.
    """
    columns = [*SPEEDUP_KEY, "model", "speedup", "ci_low", "ci_high", "source", "processes", "blocks_per_process",
               "flop_ratio", *STABILITY_COLUMNS, *LOAD_COLUMNS]
    paired = results.paired[results.paired["baseline"] == BASELINE_VARIANT]
    if paired.empty:
        return pd.DataFrame(columns=columns)
    preference = {method: rank for rank, method in enumerate(METHOD_PREFERENCE)}
    paired = (paired.assign(_rank=paired["method"].map(preference).fillna(len(preference)))
              .sort_values("_rank", kind="stable").drop_duplicates(SPEEDUP_KEY).drop(columns="_rank"))
    models = results.benchmarks[[*BENCH_KEY, "model"]]
    frame = paired.merge(models, on=SPEEDUP_KEY, how="left").rename(
        columns={"speedup_median": "speedup", "method": "source"})
    frame["model"] = frame["model"].fillna(frame["variant"])
    return _sorted(frame[columns].astype({"speedup": float, "ci_low": float, "ci_high": float}), SPEEDUP_KEY)


def load_manifest(path: str | os.PathLike[str]) -> ManifestView:
    """The exporter's manifest (parsed by `manifest.read_manifest`) as one row per artifact.

    Sizes are reported as recorded, so the report does not need the artifacts themselves.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if path.name != MANIFEST_NAME:
        raise UserError(f"{path}: give DIR/{MANIFEST_NAME} as written by spinn-export export")
    if not path.is_file():
        raise UserError(f"{path}: the manifest does not exist; "
                        f"give the DIR/{MANIFEST_NAME} that spinn-export export wrote")
    manifest = read_manifest(path.parent, verify=False)
    rows = [{
        "model": a.model, "variant": a.variant, "format": a.format, "precision": a.precision, "file": a.file,
        "bytes": a.bytes,
        "params": a.params, "nonzero_params": a.nonzero_params, "flops_per_sample": a.flops_per_sample,
        "widths": _widths_text(a.widths), "checkpoint": a.checkpoint,
        "parity_passed": a.parity.get("passed"), "max_abs_error": a.parity.get("max_abs_error"),
        "val_r2": (a.accuracy or {}).get("val_r2"), "val_residual_rms": (a.accuracy or {}).get("residual_rms"),
        **_quantiser_columns(a.calibration),
    } for a in manifest.artifacts]
    return ManifestView(path, manifest, pd.DataFrame(rows))


def _quantiser_columns(calibration: dict[str, Any] | None) -> dict[str, Any]:
    """What an accuracy-controlled quantiser reached (`export.formats.onnx_int8_nncf`): None where none ran."""
    control = (calibration or {}).get("accuracy_control") or {}
    return {"control_met": control.get("met"), "control_r2_drop": control.get("r2_drop"),
            "control_max_r2_drop": control.get("max_r2_drop"), "int8_gemms": (calibration or {}).get("int8_gemms"),
            "gemms": (calibration or {}).get("gemms")}


def load_history(path: str | os.PathLike[str]) -> History:
    """A pruning directory (or its history.json); its method names the variant it produced."""
    path = Path(path)
    record = HistoryRecord.read(path)
    stages = pd.DataFrame([stage.to_dict() for stage in record.stages])
    stages["widths"] = stages["widths"].map(_widths_text)
    return History(path / HISTORY_NAME if path.is_dir() else path, record,
                   stages.sort_values("stage").reset_index(drop=True))
