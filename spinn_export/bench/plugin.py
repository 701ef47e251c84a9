"""The benchmark suite's pytest plugin (registered through the `pytest11` entry point, like pytest-benchmark's):
its options, the models (built once per session, or a user's manifest), loaded-and-checked runners, the
GEMM ceilings per precision (`ceilings.measure_ceilings`), every passed latency case's median (for the fastest
verified deployment, `suite/test_verified_fastest.py`) and every skip's reason, and the "spinn" section of the
benchmark JSON. The test modules are in `bench/suite/`.

    spinn-export bench DIR [--backends ...]        from any folder, on DIR/manifest.json's models
    pytest bench                                   from the checkout: the default matrix on built-in models
    pytest bench --spinn-quick                     a smoke run in under two minutes
    pytest bench --spinn-artifacts DIR             benchmark DIR/manifest.json's models instead
    pytest bench --benchmark-json out.json         what `spinn-export report` and `gate` read

Being a pytest11 plugin, it is loaded into every pytest session of an environment that has
spinn-export installed; it stays inert (no torch import, no work) unless the suite's tests are
collected or a `--spinn-*` option is given.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from spinn_export.bench.paired import ABBA_METHOD, PairedConfig, PairedResult
from spinn_export.bench.variants import FP32, ModelRef, Variant, possible_variants
from spinn_export.errors import UserError

DEFAULT_BATCHES = "1,64,1024,8192"
QUICK_BATCHES = "1,8192"
QUICK_VARIANTS = "dense,structured"
STRUCTURED_REDUCTION = 0.685  # the headline model: 68.5 % of the parameters removed,
STRUCTURED_ROUND_TO = 32  # in widths that are multiples of 32, as `spinn-export run` prunes it (SIMD-friendly)
PAIRED_BY_DEFAULT = ("ort-cpu", "ort-cuda")  # ABBA runs take ~1 min per backend: the headline ones by default
TIMEIT_BACKEND = "ort-cpu"  # the cross-check times ONNX Runtime's own session.run against the suite's harness
PAIRED = PairedConfig()
QUICK_PAIRED = PairedConfig(processes=2, cycles=4)
# The latency matrix's own process plus fresh ones that repeat each case's interleaved rounds after the matrix
# (suite/test_processes.py): three halve the run-to-run spread of the speedups that one process gives
# (its median moves only by a third of one process's luck) at about 10 s per backend on 2 cores.
INTERLEAVED_PROCESSES = 3


@dataclass(frozen=True)
class SuiteOption:
    """One suite option: `--spinn-<name>` to pytest, `--<name>` to `spinn-export bench` (one table for both)."""

    name: str
    help: str
    metavar: str | None = None
    kind: str = "text"  # text, flag (store_true), int, repeat (append)

    @property
    def dest(self) -> str:
        return "spinn_" + self.name.replace("-", "_")

    def argparse_kwargs(self) -> dict[str, Any]:
        if self.kind == "flag":
            return {"action": "store_true", "dest": self.dest, "help": self.help}
        kwargs: dict[str, Any] = {"dest": self.dest, "default": None, "help": self.help, "metavar": self.metavar}
        if self.kind == "int":
            kwargs["type"] = int
        if self.kind == "repeat":
            kwargs["action"] = "append"
        return kwargs

    def pytest_args(self, value: Any) -> list[str]:
        """The value as pytest arguments (what `spinn-export bench` passes on)."""
        if value is None or value is False:
            return []
        if self.kind == "flag":
            return [f"--spinn-{self.name}"]
        return [f"--spinn-{self.name}={item}" for item in (value if self.kind == "repeat" else [value])]


OPTIONS = (
    SuiteOption("backends", "comma-separated backends, families (eager, compile, ...), devices (cpu, cuda) or all; "
                            "default: every backend that is not slow (see `spinn-export backends`)", "NAMES"),
    SuiteOption("batches", f"batch sizes (default {DEFAULT_BATCHES}; quick {QUICK_BATCHES})", "SIZES"),
    SuiteOption("variants", f"variants (default: all the models offer; quick {QUICK_VARIANTS})", "NAMES"),
    SuiteOption("quick", "fewer batches, variants and rounds: a smoke run", kind="flag"),
    SuiteOption("artifacts", "benchmark the models of DIR/manifest.json (spinn-export export) instead of the built-in "
                             "ones", "DIR"),
    SuiteOption("threads", "intra-op threads for every backend (default: physical cores)", "N", "int"),
    SuiteOption("backend-option", "a backend's own option, BACKEND:KEY=VALUE (e.g. compile-cpu:mode=max-autotune); "
                                  "repeatable; `spinn-export backends` lists each backend's options", "B:K=V",
                "repeat"),
    SuiteOption("paired", "backends that also get the ABBA speedup in fresh processes, or 'none' (every case is "
                          "paired with dense in its own rounds anyway; default: ort-cpu/ort-cuda where benchmarked)",
                "BACKENDS"),
    SuiteOption("paired-variants", "variants whose speedups also get fresh processes: ABBA on the --paired backends "
                                   "and --processes' repeats of the interleaved rounds on every backend (the rest are "
                                   "paired in the matrix's rounds only; default: structured; 'all': every "
                                   "benchmarked variant)", "NAMES"),
    SuiteOption("paired-processes", f"fresh processes per paired measurement (default {PAIRED.processes}; quick "
                                    f"{QUICK_PAIRED.processes})", "N", "int"),
    SuiteOption("paired-cycles", f"ABBA cycles per process and batch (default {PAIRED.cycles}; quick "
                                 f"{QUICK_PAIRED.cycles})", "N", "int"),
    SuiteOption("processes", "processes that time the --paired-variants' interleaved rounds with dense: the matrix's "
                             f"own plus N-1 fresh ones after it, pooled (default {INTERLEAVED_PROCESSES}; 1: the "
                             "matrix's only)",
                "N", "int"),
    SuiteOption("no-memory", "skip the peak-memory measurement (one fresh process per backend and variant)",
                kind="flag"),
)


@dataclass(frozen=True)
class SuiteSettings:
    """The validated choices of one benchmark session (`suite_settings` builds them from option values)."""

    backends: tuple[Any, ...]
    batches: tuple[int, ...]
    variants: tuple[str, ...]
    threads: int
    backend_configs: dict[str, Any]
    paired_backends: tuple[Any, ...]
    paired_variants: tuple[str, ...]
    paired: PairedConfig
    quick: bool
    manifest_refs: dict[str, ModelRef] | None = None
    memory: bool = True
    processes: int = INTERLEAVED_PROCESSES


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

    @property
    def dense(self) -> ModelRef | None:
        """The session's dense float32 model, what every speedup and fraction is measured on or against."""
        return next((r for r in self.refs.values() if r.variant.is_baseline), None)

    def ceiling_fields(self, device: str, precision: str, gflops: float) -> dict[str, Any]:
        """A case's ceiling (its device's, at its own precision: int8-static runs as int8) and its fraction of it;
        nothing where that ceiling was not measured."""
        from spinn_export.bench.ceilings import case_ceiling, ceiling_precision

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


def record_interleaved(state: SuiteState, backend: str, batch: int, case: InterleavedCase) -> PairedResult:
    """Pool the case's processes into its speedup: in the paired results (replacing the case's earlier figure)
    and in the benchmark's extra_info."""
    from spinn_export.bench.paired import pooled_result

    key = (backend, int(batch), case.candidate.name)
    state.interleaved[key] = case
    result = pooled_result(backend, batch, case.baseline, case.candidate, case.ratios_by_process, state.settings.paired)
    state.paired_results = [r for r in state.paired_results
                            if (r.method, r.backend, r.batch, r.variant) != (result.method, *key)] + [result]
    case.extra_info.update(speedup_vs=case.baseline.name, speedup=result.speedup_median,
                           speedup_ci=[result.ci_low, result.ci_high], speedup_processes=result.processes)
    return result


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise UserError(f"{option} must be comma-separated positive integers like 1,64, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def suite_settings(values: dict[str, Any]) -> SuiteSettings:
    """Validate option values (keyed by `SuiteOption.dest`); every mistake is one UserError line.

    With --artifacts the manifest is read and every file's sha256 checked here, before anything runs.
    """
    from spinn_export.bench.backends import backends as registered
    from spinn_export.bench.backends import parse_backend_options, resolve_backends
    from spinn_export.bench.timing import default_threads
    from spinn_export.bench.variants import refs_from_manifest
    from spinn_export.export.formats import formats

    quick = bool(values.get("spinn_quick"))
    chosen = tuple(resolve_backends(values.get("spinn_backends")))
    batches = _ints(values.get("spinn_batches") or (QUICK_BATCHES if quick else DEFAULT_BATCHES), "--batches")
    artifacts = values.get("spinn_artifacts")
    manifest_refs = None
    if artifacts:
        manifest_refs = {ref.name: ref for ref in refs_from_manifest(Path(artifacts))}
        known = tuple(manifest_refs)
    else:
        precisions = dict.fromkeys([FP32, *(f.precision for f in formats().values())])
        known = tuple(v.name for v in possible_variants(precisions))
    requested = values.get("spinn_variants") or (QUICK_VARIANTS if quick else ",".join(known))
    variants = tuple(_names(requested))
    unknown = [v for v in variants if v not in known]
    if unknown or not variants:
        raise UserError(f"unknown variant(s) {', '.join(unknown) or repr(requested)}: choose from {', '.join(known)}")
    headline = [b.name for b in chosen if b.name in PAIRED_BY_DEFAULT]
    paired_text = values.get("spinn_paired") or ",".join(headline) or "none"
    paired_backends = () if paired_text == "none" else tuple(resolve_backends(paired_text))
    pair_text = values.get("spinn_paired_variants") or "structured"
    pair_names = [v for v in variants if v != "dense"] if pair_text == "all" else _names(pair_text)
    if any(v not in known for v in pair_names):
        raise UserError(f"unknown --paired-variants {pair_text!r}: choose from all, {', '.join(known)}")
    paired = QUICK_PAIRED if quick else PAIRED
    paired = replace(paired, processes=values.get("spinn_paired_processes") or paired.processes,
                     cycles=values.get("spinn_paired_cycles") or paired.cycles)
    processes = values.get("spinn_processes") or INTERLEAVED_PROCESSES
    if processes < 1:
        raise UserError(f"--processes must be a positive integer, got {processes}")
    threads = values.get("spinn_threads") or default_threads()
    if threads < 1:
        raise UserError(f"--threads must be a positive integer, got {threads}")
    options = parse_backend_options(values.get("spinn_backend_option"))
    unknown_backends = sorted(set(options) - set(registered()))
    if unknown_backends:
        raise UserError(f"--backend-option names unknown backend {unknown_backends[0]!r}: "
                        f"choose from {', '.join(registered())}")
    configs = {b.name: b.make_config(options.get(b.name)) for b in (*chosen, *paired_backends)}
    return SuiteSettings(
        backends=chosen, batches=batches, variants=variants, threads=threads, backend_configs=configs,
        paired_backends=paired_backends, paired_variants=tuple(v for v in pair_names if v in variants and v != "dense"),
        paired=paired, quick=quick, manifest_refs=manifest_refs, memory=not values.get("spinn_no_memory"),
        processes=processes,
    )


SETTINGS = pytest.StashKey[SuiteSettings]()
STATE = pytest.StashKey[SuiteState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spinn", "spinn-export benchmarks")
    for option in OPTIONS:
        group.addoption(f"--spinn-{option.name}", **option.argparse_kwargs())


def _values(config: pytest.Config) -> dict[str, Any]:
    return {option.dest: config.getoption(option.dest) for option in OPTIONS}


def pytest_configure(config: pytest.Config) -> None:
    """Validate eagerly when a --spinn-* option was given, so a mistake is a usage error before collection."""
    values = _values(config)
    if not any(values.values()):
        return
    try:
        config.stash[SETTINGS] = suite_settings(values)
    except UserError as exc:
        raise pytest.UsageError(str(exc)) from None
    if values["spinn_quick"]:
        if float(config.option.benchmark_max_time) == 1.0:
            config.option.benchmark_max_time = 0.2
        if config.option.benchmark_min_rounds == 5:
            config.option.benchmark_min_rounds = 3


def settings_of(config: pytest.Config) -> SuiteSettings:
    """The session's settings; with no --spinn-* option, the defaults, computed when the suite is collected."""
    if SETTINGS not in config.stash:
        config.stash[SETTINGS] = suite_settings(_values(config))
    return config.stash[SETTINGS]


def prospective_reason(variant: Variant, backend: Any) -> str | None:
    """Why a built-in variant could never run on `backend` (before the models exist), or None."""
    from spinn_export.bench.backends import CHECKPOINT_FORMAT
    from spinn_export.export.formats import formats

    reason = variant.unsupported_reason(backend)
    if reason is not None or variant.sparse:
        return reason
    opened = {f.runtime_format for f in formats().values() if f.precision == variant.precision}
    if variant.precision == FP32:
        opened.add(CHECKPOINT_FORMAT)
    return None if backend.format in opened else f"no {variant.precision} format is opened as {backend.format}"


def _unsupported_reason(variant: str, backend: Any, settings: SuiteSettings) -> str | None:
    """Why a pair can never run (int8 runs only where a backend runs int8, CSR only on eager), or None."""
    if settings.manifest_refs is not None:
        return settings.manifest_refs[variant].unsupported_reason(backend)
    return prospective_reason(Variant.parse(variant), backend)


def _supported(variant: str, backend: Any, settings: SuiteSettings) -> bool:
    """Pairs that can never run are not generated; the summary says why (`not_generated`)."""
    return _unsupported_reason(variant, backend, settings) is None


def not_generated(settings: SuiteSettings) -> dict[str, int]:
    """Reason -> latency cases (pairs x batches) not generated because the pair can never run."""
    counts: dict[str, int] = {}
    for backend in settings.backends:
        for variant in settings.variants:
            reason = _unsupported_reason(variant, backend, settings)
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + len(settings.batches)
    return counts


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = set(metafunc.fixturenames)
    if not names & {"spinn_case", "spinn_timeit_case", "spinn_paired_backend", "spinn_backend", "spinn_fastest_batch"}:
        return
    settings = settings_of(metafunc.config)
    if "spinn_case" in names:
        cases = [(v, b.name, n) for b in settings.backends for n in settings.batches for v in settings.variants
                 if _supported(v, b, settings)]
        metafunc.parametrize("spinn_case", cases, ids=[f"{b}-b{n}-{v}" for v, b, n in cases])
    if "spinn_timeit_case" in names:  # suite/test_timeit.py: the timeit backend's variants at both ends of the
        timed = [b for b in settings.backends if b.name == TIMEIT_BACKEND]  # batch range (call overhead; compute)
        ends = sorted({min(settings.batches), max(settings.batches)})
        checked = [v for v in settings.variants if v == "dense" or v in settings.paired_variants]  # the headline
        pairs = [pytest.param((v, n), id=f"b{n}-{v}") for b in timed for n in ends
                 for v in checked if _supported(v, b, settings)]
        if not timed:
            pairs = [pytest.param(None, id=f"no-{TIMEIT_BACKEND}", marks=pytest.mark.skip(
                reason=f"{TIMEIT_BACKEND} is not among the benchmarked backends: no timeit cross-check"))]
        metafunc.parametrize("spinn_timeit_case", pairs)
    if "spinn_fastest_batch" in names:  # suite/test_verified_fastest.py: one per batch, after the matrix
        metafunc.parametrize("spinn_fastest_batch", settings.batches, ids=[f"b{n}" for n in settings.batches])
    if "spinn_backend" in names:
        chosen = [b.name for b in settings.backends]
        metafunc.parametrize("spinn_backend", chosen, ids=chosen)
    if "spinn_paired_backend" in names:
        paired = [pytest.param(b.name, id=b.name) for b in settings.paired_backends] or [pytest.param(
            None, id="none", marks=pytest.mark.skip(reason="no backend gets ABBA blocks in fresh processes (--paired "
                                                           "none, or no headline backend benchmarked)"))]
        metafunc.parametrize("spinn_paired_backend", paired)


def build_builtin_models(directory: Path, settings: SuiteSettings) -> dict[str, ModelRef]:
    """Dense (the reference spec, seeded random weights: timing does not need training), structured at
    68.5 % fewer parameters (uniform plan), magnitude at the same non-zero count; exported in every format
    the chosen backends open, and verified."""
    import copy

    import torch

    from spinn_export.bench.variants import refs_from_manifest
    from spinn_export.export.exporter import export_checkpoints
    from spinn_export.export.formats import formats
    from spinn_export.model.checkpoint import save_checkpoint
    from spinn_export.model.mlp import architecture_of, build_model
    from spinn_export.model.spec import SPINN_REFERENCE
    from spinn_export.prune.budget import plan_widths
    from spinn_export.prune.magnitude import magnitude_prune
    from spinn_export.prune.structured import structured_prune_once

    architecture = architecture_of(SPINN_REFERENCE)
    torch.manual_seed(0)
    dense = build_model(SPINN_REFERENCE).eval()
    plan = plan_widths(architecture, STRUCTURED_REDUCTION, round_to=STRUCTURED_ROUND_TO)
    pruned, structured = structured_prune_once(dense, architecture, plan)
    magnitude = magnitude_prune(copy.deepcopy(dense), architecture, pruned.params)
    models = {"dense": (dense, architecture), "structured": (structured, pruned),
              "magnitude": (magnitude, architecture)}
    variants = [Variant.parse(v) for v in settings.variants]
    opened = {b.format for b in (*settings.backends, *settings.paired_backends)}
    usable = [f for f in formats().values() if f.runtime_format in opened and f.available() is None]
    fp32 = [f for f in usable if f.float32]
    if not fp32:  # variants are read from the manifest, so an eager-only run still exports one (cheap) format
        fp32 = [next(f for f in formats().values() if f.float32 and f.default)]
    out = directory / "export"
    for role in dict.fromkeys(["dense", *(v.role for v in variants)]):  # dense: the paired baseline
        model, model_architecture = models[role]
        path = save_checkpoint(directory / f"{role}.safetensors", model, model_architecture, {"variant": role})
        quantised = [f for f in usable if not f.float32 and any(v.role == role and v.precision == f.precision
                                                                  for v in variants)]
        export_checkpoints([path], out, fp32 + quantised)
    return {ref.name: ref for ref in refs_from_manifest(out)}


@pytest.fixture(scope="session")
def spinn_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SuiteState:
    """The session's models, ready and verified, and the machine's GEMM ceilings per precision, on the devices of
    the backends that can run here, at the fixed thread count."""
    from spinn_export.bench.ceilings import measure_ceilings
    from spinn_export.bench.timing import fix_threads

    settings = settings_of(request.config)
    fix_threads(settings.threads)
    refs = settings.manifest_refs
    if refs is None:
        refs = build_builtin_models(tmp_path_factory.mktemp("spinn-models"), settings)
    devices = [b.device for b in settings.backends if b.unavailable_reason() is None]
    state = SuiteState(settings, refs, measure_ceilings(devices, settings.threads))
    request.config.stash[STATE] = state
    return state


def runner_for(state: SuiteState, backend: Any, ref: ModelRef) -> Any:
    """Loaded once per (backend, variant) and checked against eager PyTorch before it is timed."""
    from spinn_export.bench.variants import open_runner

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
    from spinn_export.bench.memory import PeakMemory, peak_memory

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
    import math

    options = config.option
    return max(minimum, int(options.benchmark_min_rounds),
               math.ceil(float(options.benchmark_max_time) / max(per_round, 1e-9)))


SKIPPED = pytest.StashKey[dict[str, int]]()  # reason -> suite tests skipped with it


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep what the suite's tests leave for later ones and for the summary: every skip's reason, and each passed
    latency case's median (the fastest verified deployment is chosen among them)."""
    report = yield
    stash = item.config.stash
    if SETTINGS not in stash:  # not the suite's session: stay inert
        return report
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        stash.setdefault(SKIPPED, {})[reason] = stash.get(SKIPPED, {}).get(reason, 0) + 1
    funcargs = getattr(item, "funcargs", {})
    benchmark = funcargs.get("benchmark")
    if (report.when == "call" and report.passed and STATE in stash and "spinn_case" in funcargs
            and benchmark is not None and benchmark.stats is not None):
        variant, backend, batch = funcargs["spinn_case"]
        stash[STATE].latencies[(backend, int(batch), variant)] = benchmark.stats.stats.median
    return report


def skip_reasons(config: pytest.Config) -> dict[str, int]:
    """Reason -> cases: the suite's skipped tests and the pairs never generated (they could not run here)."""
    counts = dict(config.stash.get(SKIPPED, {}))
    for reason, cases in not_generated(config.stash[SETTINGS]).items():
        counts[reason] = counts.get(reason, 0) + cases
    return counts


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    if STATE in config.stash:
        from spinn_export.bench.timing import machine_info as measured_on

        machine_info.update(measured_on())


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    if STATE not in config.stash:
        return
    state = config.stash[STATE]
    output_json["spinn"] = {
        "ceilings": {device: {p: c.to_dict() for p, c in by_precision.items()}
                     for device, by_precision in state.ceilings.items()},
        "threads": state.settings.threads,
        "backend_options": {name: c.to_dict() for name, c in state.settings.backend_configs.items()},
        "paired": [result.to_dict() for result in state.paired_results],
        "fastest": [r.to_dict() for r in state.fastest],
        "fastest_skipped": [r.to_dict() for r in state.fastest_skipped],
        "ceiling_fractions": [r.to_dict() for r in state.ceiling_fractions],
        "skipped": [{"reason": reason, "cases": cases} for reason, cases in skip_reasons(config).items()],
    }


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("spinn: GEMM ceilings")
    for device, by_precision in state.ceilings.items():
        for precision, c in by_precision.items():
            figure = f"{c.gflops:8.1f} GFLOP/s ({c.method})" if c.gflops is not None else "not measured"
            write(f"{device:>4} {precision:>4}: {figure}; native: {'yes' if c.native else 'no'}"
                  f"{f' ({c.reason})' if c.reason else ''}")
    for f in state.ceiling_fractions:
        write(f"{f.device:>4} {f.precision:>4}: {f.variant} on {f.backend} at batch {f.batch}: {f.fraction:.0%} "
              f"[{f.ci_low:.0%}, {f.ci_high:.0%}] of the ceiling, paired with {f.ceiling_gemm} "
              f"({f.case_gflops:.1f} vs {f.gemm_gflops:.1f} GFLOP/s, {f.cycles} A B B A cycles)")
    terminalreporter.section("spinn: skipped, with the reason")
    for reason, cases in skip_reasons(config).items():
        write(f"{cases:4} case(s): {reason}")
    terminalreporter.section("spinn: fastest verified deployment vs dense float32 on ort-cpu")
    for r in state.fastest:
        write(f"batch={r.batch:<5} {r.variant} on {r.backend}: {r.latency_s * 1e3:.3f} ms, "
              f"{r.speedup_vs_dense_fp32:.2f}x [{r.ci_low:.2f}, {r.ci_high:.2f}] ({r.verified_by})")
    for skipped in state.fastest_skipped:
        write(f"batch={skipped.batch:<5} not measured: {skipped.reason}")
    terminalreporter.section("spinn: paired speedups over dense")
    for r in state.paired_results:
        how = (f"{r.processes} processes x {r.blocks_per_process} blocks" if r.method == ABBA_METHOD
               else f"{r.processes} process(es) x {r.blocks_per_process} interleaved rounds")
        write(f"{r.backend:>22} batch={r.batch:<5} {r.variant:>18} vs {r.baseline}: {r.speedup_median:5.2f}x "
              f"[{r.ci_low:.2f}, {r.ci_high:.2f}] (+-{r.ci_half_width:.1%}; FLOP ratio {r.flop_ratio:.2f}; {how})")
