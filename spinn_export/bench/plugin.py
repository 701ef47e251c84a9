"""The pytest-benchmark suite: options, the models (built once per session, or a user's manifest),
loaded-and-checked runners, the GEMM ceiling, and the "spinn" section of the benchmark JSON.

    pytest bench                                  the default matrix (every available backend)
    pytest bench --spinn-quick                    a smoke run in under two minutes
    pytest bench --spinn-artifacts DIR            benchmark DIR/manifest.json's models instead
    pytest bench --benchmark-json out.json        what `spinn-export report` and `gate` read
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from spinn_export.bench import machine
from spinn_export.bench.backends import REGISTRY, Backend, Runner, get_backend, resolve_backends
from spinn_export.bench.variants import ModelRef, open_runner, refs_from_manifest
from spinn_export.errors import UserError
from spinn_export.bench.paired import PairedConfig, PairedResult
from spinn_export.bench.timing import default_threads, fix_threads

DEFAULT_BATCHES = "1,64,1024,8192"
QUICK_BATCHES = "1,8192"
CHECKPOINT_OF = {"dense": "dense", "structured": "structured", "magnitude-masked": "magnitude",
                 "magnitude-csr": "magnitude", "dense-int8": "dense", "structured-int8": "structured"}
BUILTIN_VARIANTS = tuple(CHECKPOINT_OF)
QUICK_VARIANTS = "dense,structured"
STRUCTURED_REDUCTION = 0.685  # the headline model: 68.5 % of the parameters removed,
STRUCTURED_ROUND_TO = 32  # in widths that are multiples of 32, as `spinn-export run` prunes it (SIMD-friendly)
SLOW_BY_DEFAULT = ("aoti-cpu",)  # AOTInductor packages take minutes to build: ask for them by name
PAIRED_BY_DEFAULT = ("ort-cpu", "ort-cuda")  # paired runs take ~1 min per backend: the headline ones by default
PAIRED = PairedConfig()
QUICK_PAIRED = PairedConfig(processes=2, cycles=4)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spinn", "spinn-export benchmarks")
    group.addoption("--spinn-backends", default=None,
                    help="comma-separated backends or families (eager, compile, ...); default: all but aoti-cpu")
    group.addoption("--spinn-batches", default=None, help=f"batch sizes (default {DEFAULT_BATCHES}; quick {QUICK_BATCHES})")
    group.addoption("--spinn-variants", default=None,
                    help=f"variants (default: all; built-in: {', '.join(BUILTIN_VARIANTS)}; quick {QUICK_VARIANTS})")
    group.addoption("--spinn-quick", action="store_true", help="fewer batches, variants and rounds: a smoke run")
    group.addoption("--spinn-artifacts", default=None, metavar="DIR",
                    help="benchmark the models of DIR/manifest.json (spinn-export export) instead of the built-in ones")
    group.addoption("--spinn-threads", type=int, default=None, help="intra-op threads for every backend (default: physical cores)")
    group.addoption("--spinn-paired", default=None, metavar="BACKENDS",
                    help="backends for the paired ABBA speedup, or 'none' (default: ort-cpu/ort-cuda where benchmarked, "
                         "else the first backend)")
    group.addoption("--spinn-paired-processes", type=int, default=None,
                    help=f"fresh processes per paired measurement (default {PAIRED.processes}; quick {QUICK_PAIRED.processes})")
    group.addoption("--spinn-paired-cycles", type=int, default=None,
                    help=f"ABBA cycles per process and batch (default {PAIRED.cycles}; quick {QUICK_PAIRED.cycles})")
    group.addoption("--spinn-paired-variants", default="structured", metavar="VARIANTS",
                    help="variants paired against dense (default: structured; 'all': every benchmarked variant)")


@dataclass
class Settings:
    backends: list[Backend]
    batches: tuple[int, ...]
    variants: tuple[str, ...]
    threads: int
    paired_backends: list[Backend]
    paired_variants: tuple[str, ...]
    paired: PairedConfig
    artifacts: Path | None
    manifest_refs: dict[str, ModelRef] | None = None
    refs: dict[str, ModelRef] | None = None
    runners: dict[tuple[str, str], Runner] = field(default_factory=dict)
    ceiling_gflops: float | None = None
    medians: dict[tuple[str, str, int], float] = field(default_factory=dict)
    paired_results: list[PairedResult] = field(default_factory=list)


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"{option} must be comma-separated positive integers like 1,64, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{option} must be comma-separated positive integers like 1,64, got {text!r}")
    return values


def _settings(config: pytest.Config) -> Settings:
    quick = config.getoption("spinn_quick")
    default_backends = ",".join(name for name in REGISTRY if name not in SLOW_BY_DEFAULT)
    backends = resolve_backends(config.getoption("spinn_backends") or default_backends)
    batches = _ints(config.getoption("spinn_batches") or (QUICK_BATCHES if quick else DEFAULT_BATCHES), "--spinn-batches")
    artifacts = config.getoption("spinn_artifacts")
    manifest_refs = None
    if artifacts:
        manifest_refs = {ref.variant: ref for ref in refs_from_manifest(Path(artifacts))}
        known = tuple(manifest_refs)
    else:
        known = BUILTIN_VARIANTS
    requested = config.getoption("spinn_variants") or (QUICK_VARIANTS if quick else ",".join(known))
    variants = tuple(v.strip() for v in requested.split(",") if v.strip())
    unknown = [v for v in variants if v not in known]
    if unknown or not variants:
        raise UserError(f"unknown variant(s) {unknown or requested!r}: choose from {', '.join(known)}")
    headline = [b.name for b in backends if b.name in PAIRED_BY_DEFAULT] or [backends[0].name]
    paired_text = config.getoption("spinn_paired") or ",".join(headline)
    paired_backends = [] if paired_text == "none" else resolve_backends(paired_text)
    pair_text = config.getoption("spinn_paired_variants")
    pair_names = [v for v in variants if v != "dense"] if pair_text == "all" else [
        v.strip() for v in pair_text.split(",") if v.strip()]
    if any(v not in known for v in pair_names):
        raise UserError(f"unknown --spinn-paired-variants {pair_text!r}: choose from all, {', '.join(known)}")
    paired_variants = tuple(v for v in pair_names if v in variants and v != "dense")  # only benchmarked ones
    paired = QUICK_PAIRED if quick else PAIRED
    paired = replace(paired, processes=config.getoption("spinn_paired_processes") or paired.processes,
                     cycles=config.getoption("spinn_paired_cycles") or paired.cycles)
    threads = config.getoption("spinn_threads") or default_threads()
    return Settings(backends, batches, variants, fix_threads(threads), paired_backends, paired_variants,
                    paired, Path(artifacts) if artifacts else None, manifest_refs)


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark reads its options (its configure hook runs last)
def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[SETTINGS] = _settings(config)
    except UserError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("spinn_quick"):
        if float(config.option.benchmark_max_time) == 1.0:
            config.option.benchmark_max_time = 0.2
        if config.option.benchmark_min_rounds == 5:
            config.option.benchmark_min_rounds = 3


SETTINGS = pytest.StashKey[Settings]()


def _supported(variant: str, backend: Backend, settings: Settings) -> bool:
    """Pairs that can never run are not generated (int8 is ONNX-only, CSR is eager-only)."""
    if settings.manifest_refs is not None:
        return settings.manifest_refs[variant].unsupported_reason(backend) is None
    if variant.endswith("-int8"):
        return backend.format == "onnx"
    if variant == "magnitude-csr":
        return backend.sparse
    return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[SETTINGS]
    if "case" in metafunc.fixturenames:
        cases = [(v, b.name, n) for b in settings.backends for n in settings.batches for v in settings.variants
                 if _supported(v, b, settings)]
        metafunc.parametrize("case", cases, ids=[f"{b}-b{n}-{v}" for v, b, n in cases])
    if "timeit_case" in metafunc.fixturenames:  # bench/test_timeit.py: every ort-cpu (variant, batch)
        ort_cpu = get_backend("ort-cpu")
        pairs = [pytest.param((v, n), id=f"b{n}-{v}") for n in settings.batches for v in settings.variants
                 if _supported(v, ort_cpu, settings)]
        if ort_cpu not in settings.backends:
            pairs = [pytest.param(None, id="no-ort-cpu", marks=pytest.mark.skip(
                reason="ort-cpu is not among --spinn-backends: no timeit cross-check"))]
        metafunc.parametrize("timeit_case", pairs)
    if "paired_backend" in metafunc.fixturenames:
        names = [b.name for b in settings.paired_backends]
        metafunc.parametrize("paired_backend", names, ids=names)


def build_builtin_models(directory: Path, variants: tuple[str, ...], formats: set[str]) -> dict[str, ModelRef]:
    """Dense (the reference spec, seeded random weights: timing does not need training), structured at
    68.5 % fewer parameters (uniform plan), magnitude at the same non-zero count; exported and verified."""
    import torch

    from spinn_export.prune.budget import plan_widths
    from spinn_export.model.checkpoint import save_checkpoint
    from spinn_export.export.formats import FORMATS
    from spinn_export.prune.magnitude import magnitude_prune
    from spinn_export.export.manifest import export_checkpoints
    from spinn_export.model.mlp import build_model
    from spinn_export.prune.structured import structured_prune_once
    from spinn_export.model.spec import SPINN_REFERENCE

    spec = SPINN_REFERENCE
    torch.manual_seed(0)
    dense = build_model(spec).eval()
    plan = plan_widths(spec, STRUCTURED_REDUCTION, round_to=STRUCTURED_ROUND_TO)
    pruned_spec, structured = structured_prune_once(dense, spec, plan)
    magnitude = magnitude_prune(copy.deepcopy(dense), spec, pruned_spec.params)
    models = {"dense": (dense, spec), "structured": (structured, pruned_spec), "magnitude": (magnitude, spec)}
    wanted = {CHECKPOINT_OF[v] for v in variants} | {"dense"}  # dense: the paired baseline
    paths = {}
    for name in wanted:
        model, model_spec = models[name]
        paths[name] = save_checkpoint(directory / f"{name}.safetensors", model, model_spec, {"variant": name})
    out = directory / "export"
    # The refs are read from the manifest's records, so an eager-only run still exports one (cheap) format.
    float_formats = [FORMATS[f] for f in ("torchscript", "onnx", "exported-program", "aoti") if f in formats] or [
        FORMATS["torchscript"]]
    export_checkpoints(list(paths.values()), out, float_formats)
    int8 = [paths[CHECKPOINT_OF[v]] for v in variants if v.endswith("-int8")]
    if int8 and "onnx" in formats:
        export_checkpoints(int8, out, [FORMATS["onnx-int8"]])
    return {ref.variant: ref for ref in refs_from_manifest(out)}


@pytest.fixture(scope="session")
def spinn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session's settings with the models ready and the machine's GEMM ceiling measured."""
    settings = request.config.stash[SETTINGS]
    if settings.refs is None:
        if settings.manifest_refs is not None:
            settings.refs = settings.manifest_refs
        else:
            formats = {b.format for b in settings.backends + settings.paired_backends}
            settings.refs = build_builtin_models(tmp_path_factory.mktemp("spinn-models"), settings.variants, formats)
        settings.ceiling_gflops = machine.gemm_ceiling(settings.threads)
    return settings


def runner_for(settings: Settings, backend: Backend, ref: ModelRef) -> Runner:
    """Loaded once per (backend, variant) and checked against eager PyTorch before it is timed."""
    key = (backend.name, ref.variant)
    if key not in settings.runners:
        settings.runners[key] = open_runner(backend, ref, settings.threads)
    return settings.runners[key]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info.update(machine.machine_info())


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    settings = config.stash[SETTINGS]
    output_json["spinn"] = {
        "ceiling_gflops": settings.ceiling_gflops,
        "threads": settings.threads,
        "paired": [result.to_dict() for result in settings.paired_results],
    }


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    settings = config.stash.get(SETTINGS, None)
    if settings is None or not (settings.paired_results or settings.ceiling_gflops):
        return
    write = terminalreporter.write_line
    terminalreporter.section("spinn: paired speedups (ABBA, fresh processes)")
    if settings.ceiling_gflops:
        write(f"GEMM ceiling: {settings.ceiling_gflops:.1f} GFLOP/s at {settings.threads} thread(s)")
    for r in settings.paired_results:
        write(f"{r.backend:>22} batch={r.batch:<5} {r.variant:>18} vs {r.baseline}: {r.speedup_median:5.2f}x "
              f"[{r.ci_low:.2f}, {r.ci_high:.2f}] (+-{r.ci_half_width:.1%}; FLOP ratio {r.flop_ratio:.2f}; "
              f"{r.processes} processes x {r.blocks_per_process} blocks)")
