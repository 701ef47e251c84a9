"""What one benchmark session builds and measures as it goes (`SuiteState`, mutable by design: filled by the
fixture and the suite's tests), and the helpers the tests share to reach it: runners loaded and checked once, the
dense baseline a case is paired with, peak memory, and round budgets."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from spinn_export.bench.ceilings import case_ceiling
from spinn_export.bench.load import combined
from spinn_export.bench.memory import PeakMemory, peak_memory
from spinn_export.bench.options import SuiteSettings
from spinn_export.bench.paired import PairedResult, pooled_result
from spinn_export.bench.variants import ModelRef, open_runner
from spinn_export.export.formats import ceiling_precision

SETTINGS = pytest.StashKey[SuiteSettings]()
STATE = pytest.StashKey["SuiteState"]()
SKIPPED = pytest.StashKey[dict[str, int]]()  # reason -> suite tests skipped with it


@dataclass
class SuiteState:
    """What the session builds and measures as it goes (mutable by design: filled by fixtures and tests)."""

    settings: SuiteSettings
    refs: dict[str, ModelRef]
    ceilings: dict[str, dict[str, Any]]  # device -> precision -> ceilings.Ceiling
    runners: dict[tuple[str, str], Any] = field(default_factory=dict)
    paired_results: list[PairedResult] = field(default_factory=list)
    peak_memory: dict[tuple[str, str], Any] = field(default_factory=dict)
    # (backend, batch, variant) -> the interleaved case: its rounds' ratios per process and its extra_info
    interleaved: dict[tuple[str, int, str], InterleavedCase] = field(default_factory=dict)
    latencies: dict[tuple[str, int, str], float] = field(default_factory=dict)  # (backend, batch, variant) -> median s
    fastest: list[Any] = field(default_factory=list)  # bench.fastest.Fastest per batch measured,
    fastest_skipped: list[Any] = field(default_factory=list)  # and bench.fastest.NotMeasured per batch not
    ceiling_fractions: list[Any] = field(default_factory=list)  # bench.ceiling_fraction.PairedFraction per backend
    flagged_checks: list[str] = field(default_factory=list)  # cross-checks the machine was too noisy to confirm
    interval: Any = None  # bench.load.Interval: when the running test began (set by the plug-in around each test)
    fastest_loads: dict[int, Any] = field(default_factory=dict)  # batch -> the load its fastest deployment was timed in

    @property
    def dense(self) -> ModelRef | None:
        """The session's dense float32 model, what every speedup and fraction is measured on or against."""
        return next((r for r in self.refs.values() if r.variant.is_baseline), None)

    def load_now(self) -> Any:
        """`bench.load.LoadSample` of the machine since the running test began (None outside a test)."""
        return None if self.interval is None else self.interval.sample()

    def ceiling_fields(self, device: str, precision: str, gflops: float) -> dict[str, Any]:
        """A case's ceiling (its device's, at its own precision: int8-static runs as int8) and its fraction of it;
        nothing where that ceiling was not measured."""

        ceiling = case_ceiling(self.ceilings, device, precision)
        if ceiling is None:
            return {}
        return {"ceiling_precision": ceiling_precision(precision), "ceiling_gflops": ceiling.gflops,
                "ceiling_fraction": gflops / ceiling.gflops}


@dataclass(frozen=True)
class InterleavedCase:
    """One latency case paired with dense by interleaved rounds: what later processes add to and update."""

    baseline: ModelRef
    candidate: ModelRef
    ratios_by_process: tuple[tuple[float, ...], ...]
    extra_info: dict[str, Any]  # the benchmark's own (pytest-benchmark writes it to the JSON at the end)
    round_seconds: float  # one round (a dense call and a candidate call) after warm-up, for later processes' budget
    loads: tuple[Any, ...] = ()  # bench.load.LoadSample of each test that timed its rounds so far


def record_interleaved(state: SuiteState, backend: str, batch: int, case: InterleavedCase) -> PairedResult:
    """Pool the case's processes into its speedup: in the paired results (replacing the case's earlier figure)
    and in the benchmark's extra_info, with the load the machine carried over every test that timed its rounds."""


    key = (backend, int(batch), case.candidate.name)
    now = state.load_now()
    case = dataclasses.replace(case, loads=case.loads + ((now,) if now is not None else ()))
    state.interleaved[key] = case
    result = pooled_result(backend, batch, case.baseline, case.candidate, case.ratios_by_process, state.settings.paired)
    result = dataclasses.replace(result, load=combined(case.loads).to_dict() if case.loads else None)
    state.paired_results = [r for r in state.paired_results
                            if (r.method, r.backend, r.batch, r.variant) != (result.method, *key)] + [result]
    case.extra_info.update(speedup_vs=case.baseline.name, speedup=result.speedup_median,
                           speedup_ci=[result.ci_low, result.ci_high], speedup_processes=result.processes,
                           **{f"speedup_{k}": v for k, v in result.stability.to_dict().items()})
    return result


def runner_for(state: SuiteState, backend: Any, ref: ModelRef) -> Any:
    """Loaded once per (backend, variant) and checked against eager PyTorch before it is timed."""

    key = (backend.name, ref.name)
    if key not in state.runners:
        config = state.settings.backend_configs.get(backend.name)
        state.runners[key] = open_runner(backend, ref, state.settings.threads, config)
    return state.runners[key]


def baseline_for(state: SuiteState, backend: Any, ref: ModelRef) -> ModelRef | None:
    """The dense float32 model `ref` is paired against on `backend`, or None (`ref` is dense, or dense cannot run)."""
    if ref.variant.is_baseline:
        return None
    dense = state.dense
    return dense if dense is not None and dense.unsupported_reason(backend) is None else None


def peak_memory_for(state: SuiteState, backend: Any, ref: ModelRef) -> Any:
    """`bench.memory.PeakMemory` of `ref` on `backend` at every batch of the session (one fresh process, cached)."""

    key = (backend.name, ref.name)
    if key not in state.peak_memory:
        settings = state.settings
        state.peak_memory[key] = (
            peak_memory(backend, ref, settings.batches, settings.threads, settings.backend_configs.get(backend.name))
            if settings.memory else PeakMemory("none", dict.fromkeys(settings.batches), "--no-memory was given"))
    return state.peak_memory[key]


def rounds_within_budget(config: pytest.Config, per_round: float, minimum: int) -> int:
    """Rounds of `per_round` seconds that fit pytest-benchmark's --benchmark-max-time, but at least `minimum`
    (and --benchmark-min-rounds)."""

    options = config.option
    return max(minimum, int(options.benchmark_min_rounds),
               math.ceil(float(options.benchmark_max_time) / max(per_round, 1e-9)))


