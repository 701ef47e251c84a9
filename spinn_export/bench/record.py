"""bench.json's `spinn` block as one record: what the suite's plug-in writes and what the report reads back.

Each list's entry keys are declared here, once; the entries themselves are the `to_dict` of the suite's results
(`bench.paired`, `bench.fastest`, `bench.ceiling_fraction`). Plain data only (no torch): the report reads results where
torch is not installed.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spinn_export.bench.variants import FP32
from spinn_export.records import Schema

SPINN_KEY = "spinn"  # the block's key at the top level of pytest-benchmark's JSON
# Version 1: the previous release's block (no schema); version 2 adds the schema name and this version.
SCHEMA = Schema("spinn-export.bench", 2, "benchmark suite's results",
                "give results written by the spinn-export benchmark suite (pytest bench --benchmark-json)")
# The outside timer's result file (`bench/outside_timer.py`, read by `report.limits`). Version 1: the previous
# release's ({"schema": 1, "kind": "outside-timer"}); version 2 stamps the schema name.
OUTSIDE_SCHEMA = Schema("spinn-export.outside-timer", 2, "outside-timer result",
                        "write one with `python bench/outside_timer.py RUN --out FILE`", unstamped=(1,))
PAIRED_KEYS = ("backend", "batch", "variant", "baseline", "speedup_median", "ci_low", "ci_high", "processes",
               "blocks_per_process", "flop_ratio", "method")
FASTEST_KEYS = ("batch", "variant", "backend", "latency_s", "speedup_vs_dense_fp32", "ci_low", "ci_high",
                "val_r2_delta", "baseline_backend")
FASTEST_DETAILS = ("precision", "verified_by", "baseline_latency_s", "cycles", "calls_per_block", "method",
                   "finalists", "compute_bound_s", "bound_fraction", "ceiling_precision", "ceiling_gflops",
                   "time_by_operator", "same_kernel")  # recorded where measured; the report shows them as they are
FRACTION_KEYS = ("device", "precision", "backend", "variant", "batch", "fraction", "ci_low", "ci_high",
                 "case_gflops", "gemm_gflops", "ceiling_gemm", "cycles")
CEILING_KEYS = ("gflops", "method", "native", "features", "reason")
SKIPPED_KEYS = ("reason", "cases")
# The previous release's files from before the suite measured a ceiling per precision: one float32 CPU GEMM.
LEGACY_CEILING = {"method": "float32 GEMM (recorded before per-precision ceilings)", "native": True, "features": None,
                  "reason": None}
NOT_MEASURED_BEFORE = "the suite that wrote these results predates it"


@dataclass(frozen=True)
class BenchRecord:
    """The suite's own figures beside pytest-benchmark's (docs/ARCHITECTURE.md, "Benchmark results"): GEMM ceilings
    per device and precision, the thread count and backend options, paired speedups, the fastest verified deployment
    per batch (or why a batch has none), the ceiling fractions, and what was skipped."""

    ceilings: dict[str, dict[str, dict[str, Any]]]
    threads: int | None
    backend_options: dict[str, dict[str, Any]]
    paired: tuple[dict[str, Any], ...]
    fastest: tuple[dict[str, Any], ...]
    fastest_skipped: tuple[dict[str, Any], ...]
    ceiling_fractions: tuple[dict[str, Any], ...]
    skipped: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {**SCHEMA.stamp(), **{f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str | os.PathLike[str]) -> BenchRecord:
        """The block of this release or the previous one (`from_release_1`); any other is refused in one line, and
        so is an entry that lacks one of its declared keys."""
        return SCHEMA.parse(data, path, from_release_1, cls._built)

    @classmethod
    def _built(cls, fields: dict[str, Any]) -> BenchRecord:
        record = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        for name, keys in (("paired", PAIRED_KEYS), ("fastest", FASTEST_KEYS), ("ceiling_fractions", FRACTION_KEYS),
                           ("skipped", SKIPPED_KEYS)):
            for entry in getattr(record, name):
                missing = [k for k in keys if k not in entry]
                if missing:
                    raise KeyError(f"an entry of {SPINN_KEY}.{name} lacks {', '.join(missing)}")
        return record

    def ceiling_rows(self) -> list[dict[str, Any]]:
        """One row per device and precision (`features` as text)."""
        return [{"device": device, "precision": precision, **{k: entry.get(k) for k in CEILING_KEYS},
                 "features": ", ".join(entry.get("features") or []) or None}
                for device, by_precision in self.ceilings.items() for precision, entry in by_precision.items()]


def from_release_1(data: Mapping[str, Any]) -> dict[str, Any]:
    """The previous release's block as version 2. Its writers grew over time: the first recorded one float32 CPU
    GEMM (`ceiling_gflops`) instead of `ceilings` and no fastest deployment (that batch is then one skipped row saying
    so), paired entries without `method` were ABBA's, and a file of pytest-benchmark alone has no block at all."""
    data = {k: v for k, v in data.items() if v is not None}
    if "ceilings" not in data:
        legacy = data.get("ceiling_gflops")
        data["ceilings"] = {} if legacy is None else {"cpu": {FP32: {**LEGACY_CEILING, "gflops": float(legacy)}}}
    if "fastest" not in data:
        data["fastest"], data["fastest_skipped"] = [], [{"batch": None, "reason": NOT_MEASURED_BEFORE}]
    defaults = {"threads": None, "backend_options": {}, "fastest_skipped": [], "ceiling_fractions": [], "skipped": []}
    kept = {f.name: data[f.name] for f in dataclasses.fields(BenchRecord) if f.name in data}
    return {**defaults, **kept, "paired": [{"method": "abba", **entry} for entry in data.get("paired", [])]}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
