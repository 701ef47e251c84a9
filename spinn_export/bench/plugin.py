"""The benchmark suite's pytest plug-in (registered through the `pytest11` entry point, like pytest-benchmark's):
hooks only. Its options and settings are `bench.options`, what the session builds and measures is `bench.session`,
the test modules are `bench/suite/`.

    spinn-export bench DIR [--backends ...]        from any folder, on DIR/manifest.json's models
    pytest bench                                   from the checkout: the default matrix on built-in models
    pytest bench --spinn-quick                     a smoke run in under two minutes
    pytest bench --spinn-artifacts DIR             benchmark DIR/manifest.json's models instead
    pytest bench --benchmark-json out.json         what `spinn-export report` and `gate` read

Without --spinn-artifacts the models come from whoever implements the `pytest_spinn_models` hook (`bench.hooks`):
the pipeline's reference models, which `spinn-export bench` and the checkout's bench/conftest.py register; bench
builds no models of its own. Being a pytest11 plug-in, it is loaded into every pytest session of an environment that
has spinn-export installed; it does no work unless the suite's tests are collected or a `--spinn-*` option is given,
but its imports (`bench.options`, `bench.session`, `bench.timing`) load torch, about 1-2 s of every such session's
start.
"""
from __future__ import annotations

from typing import Any

import pytest

from spinn_export.bench import hooks
from spinn_export.bench.bound import bound_text
from spinn_export.bench.ceilings import measure_ceilings
from spinn_export.bench.load import load_text, start_interval
from spinn_export.bench.options import (
    OPTIONS,
    TIMEIT_BACKEND,
    SuiteSettings,
    manifest_models,
    not_generated,
    suite_settings,
    supported,
)
from spinn_export.bench.paired import ABBA_METHOD
from spinn_export.bench.record import SPINN_KEY, BenchRecord
from spinn_export.bench.session import SETTINGS, SKIPPED, STATE, SuiteState
from spinn_export.bench.stability import stability
from spinn_export.bench.timing import fix_threads
from spinn_export.bench.timing import machine_info as measured_on
from spinn_export.errors import UserError
from spinn_export.export.formats import rate_unit
from spinn_export.runtimes.profile import shares_text


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = set(metafunc.fixturenames)
    if not names & {"spinn_case", "spinn_timeit_case", "spinn_paired_backend", "spinn_backend", "spinn_fastest_batch"}:
        return
    settings = settings_of(metafunc.config)
    if "spinn_case" in names:
        cases = [(v, b.name, n) for b in settings.backends for n in settings.batches for v in settings.variants
                 if supported(v, b, settings)]
        metafunc.parametrize("spinn_case", cases, ids=[f"{b}-b{n}-{v}" for v, b, n in cases])
    if "spinn_timeit_case" in names:  # suite/test_timeit.py: the timeit backend's variants at both ends of the
        timed = [b for b in settings.backends if b.name == TIMEIT_BACKEND]  # batch range (call overhead; compute)
        ends = sorted({min(settings.batches), max(settings.batches)})
        checked = [v for v in settings.variants if v == "dense" or v in settings.paired_variants]  # the headline
        pairs = [pytest.param((v, n), id=f"b{n}-{v}") for b in timed for n in ends
                 for v in checked if supported(v, b, settings)]
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


@pytest.fixture(scope="session")
def spinn_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SuiteState:
    """The session's models, ready and verified, and the machine's GEMM ceilings per precision, on the devices of
    the backends that can run here, at the fixed thread count."""

    settings = settings_of(request.config)
    fix_threads(settings.threads)
    refs = settings.manifest_refs
    if refs is None:
        directory = request.config.hook.pytest_spinn_models(config=request.config,
                                                            directory=tmp_path_factory.mktemp("spinn-models"))
        if directory is None:
            raise pytest.UsageError("no models to benchmark: give --spinn-artifacts DIR (written by spinn-export "
                                    "export), or run `spinn-export bench`, which builds the reference models")
        refs = manifest_models(directory)
    devices = [b.device for b in settings.backends if b.unavailable_reason() is None]
    state = SuiteState(settings, refs, measure_ceilings(devices, settings.threads))
    request.config.stash[STATE] = state
    return state


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """The load the machine carried while each suite test ran (`bench.load`): in its benchmark's extra_info, and for
    the tests that record paired figures of their own, through `SuiteState.load_now` while they run."""
    state = item.config.stash.get(STATE, None)
    if state is None:  # not the suite's session (or no suite fixture yet): stay inert
        return (yield)
    state.interval = start_interval()
    try:
        return (yield)
    finally:
        sample, state.interval = state.load_now().to_dict(), None
        funcargs = getattr(item, "funcargs", {})
        if funcargs.get("benchmark") is not None:
            funcargs["benchmark"].extra_info["load"] = sample
        if "spinn_fastest_batch" in funcargs:
            state.fastest_loads[int(funcargs["spinn_fastest_batch"])] = sample


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
        machine_info.update(measured_on())


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    if STATE not in config.stash:
        return
    state = config.stash[STATE]
    output_json[SPINN_KEY] = BenchRecord(
        ceilings={device: {p: c.to_dict() for p, c in by_precision.items()}
                  for device, by_precision in state.ceilings.items()},
        threads=state.settings.threads,
        backend_options={name: c.to_dict() for name, c in state.settings.backend_configs.items()},
        paired=tuple(result.to_dict() for result in state.paired_results),
        fastest=tuple({**r.to_dict(), **stability(r.speedup_vs_dense_fp32, r.ci_low, r.ci_high).to_dict(),
                       "load": state.fastest_loads.get(r.batch)} for r in state.fastest),
        fastest_skipped=tuple(r.to_dict() for r in state.fastest_skipped),
        ceiling_fractions=tuple(r.to_dict() for r in state.ceiling_fractions),
        skipped=tuple({"reason": reason, "cases": cases} for reason, cases in skip_reasons(config).items()),
    ).to_dict()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("spinn: GEMM ceilings")
    for device, by_precision in state.ceilings.items():
        for precision, c in by_precision.items():
            figure = f"{c.gflops:8.1f} {rate_unit(precision)} ({c.method})" if c.gflops is not None else "not measured"
            write(f"{device:>4} {precision:>4}: {figure}; native: {'yes' if c.native else 'no'}"
                  f"{f' ({c.reason})' if c.reason else ''}")
    for f in state.ceiling_fractions:
        write(f"{f.device:>4} {f.precision:>4}: {f.variant} on {f.backend} at batch {f.batch}: {f.fraction:.0%} "
              f"[{f.ci_low:.0%}, {f.ci_high:.0%}] of the ceiling, paired with {f.ceiling_gemm} "
              f"({f.case_gflops:.1f} vs {f.gemm_gflops:.1f} {rate_unit(f.precision)}, {f.cycles} A B B A cycles)")
    terminalreporter.section("spinn: skipped, with the reason")
    for reason, cases in skip_reasons(config).items():
        write(f"{cases:4} case(s): {reason}")
    terminalreporter.section("spinn: fastest verified deployment vs dense float32")
    for r in state.fastest:
        bound = (f"; {r.bound_fraction:.0%} of its {r.ceiling_precision} compute bound ({r.compute_bound_s * 1e3:.3f} "
                 f"ms at {r.ceiling_gflops:.0f} {rate_unit(r.ceiling_precision)})" if r.bound_fraction else "")
        noise = _noise(_fastest_stability(r), state.fastest_loads.get(r.batch))
        write(f"batch={r.batch:<5} {r.variant} on {r.backend}: {r.latency_s * 1e3:.3f} ms, "
              f"{r.speedup_vs_dense_fp32:.2f}x [{r.ci_low:.2f}, {r.ci_high:.2f}] over dense float32 on "
              f"{r.baseline_backend} ({r.verified_by}){bound}{noise}")
        if r.time_by_operator:
            write(f"{'':11}time by operator ({r.time_by_operator['profiler']}): {shares_text(r.time_by_operator)}")
        if r.same_kernel:  # issue 30: the like-for-like bound (bench.bound)
            write(f"{'':11}{bound_text(r.same_kernel)}")
    for skipped in state.fastest_skipped:
        write(f"batch={skipped.batch:<5} not measured: {skipped.reason}")
    terminalreporter.section("spinn: paired speedups over dense")
    for r in state.paired_results:
        how = (f"{r.processes} processes x {r.blocks_per_process} blocks" if r.method == ABBA_METHOD
               else f"{r.processes} process(es) x {r.blocks_per_process} interleaved rounds")
        write(f"{r.backend:>22} batch={r.batch:<5} {r.variant:>18} vs {r.baseline}: {r.speedup_median:5.2f}x "
              f"[{r.ci_low:.2f}, {r.ci_high:.2f}] (+-{r.ci_half_width:.1%}; FLOP ratio {r.flop_ratio:.2f}; {how})"
              f"{_noise(r.stability.reasons, r.load)}")
    if state.flagged_checks:
        terminalreporter.section("spinn: timing cross-checks not confirmed (a noisy machine, not a harness fault)")
        for line in state.flagged_checks:
            write(line)


def _fastest_stability(r: Any) -> tuple[str, ...]:
    """Why a fastest deployment's speedup is unstable (its CI: one process of A B B A cycles), or ()."""
    return stability(r.speedup_vs_dense_fp32, r.ci_low, r.ci_high).reasons


def _noise(reasons: tuple[str, ...], load: dict[str, Any] | None) -> str:
    """' UNSTABLE: why (the load then)' for an unstable figure, '' for a stable one."""
    if not reasons:
        return ""
    return f" UNSTABLE: {'; '.join(reasons)}{f' ({load_text(load)})' if load else ''}"

