"""Latency of every (variant, backend, batch), grouped per "<backend> batch=<B>", and every variant's paired
speedup over dense from the same rounds.

Each round of a variant's benchmark is sandwiched between calls of dense on the same backend and input
(one before each round, one after the last): the rounds give the variant's latency to pytest-benchmark
and, against the dense calls around them, its speedup with a bootstrap CI (`session.record_interleaved`); fresh
processes repeat those rounds after the matrix (`test_processes.py`) and the speedup pools them all.
The rounds share pytest-benchmark's time budget (--benchmark-max-time) with the dense calls, so pairing
costs no extra time. Peak memory comes from a fresh process per (backend, variant) (`bench.memory`),
measured before the timing starts, never alongside it.
"""
from __future__ import annotations

import contextlib

import pytest

from spinn_export.bench.backends import get_backend, sample_input
from spinn_export.bench.paired import sandwich_ratios
from spinn_export.bench.session import (
    InterleavedCase,
    SuiteState,
    baseline_for,
    peak_memory_for,
    record_interleaved,
    rounds_within_budget,
    runner_for,
)
from spinn_export.bench.timing import time_block, warm_up

MIN_ROUNDS = 20  # the speedup's CI is a bootstrap over rounds: fewer leave it wide at the largest batches


def test_latency(benchmark, spinn_case: tuple[str, str, int], spinn_session: SuiteState,
                 request: pytest.FixtureRequest) -> None:
    variant, backend_name, batch = spinn_case
    backend = get_backend(backend_name)
    reason = backend.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{backend_name}: {reason}")
    ref = spinn_session.refs[variant]
    unsupported = ref.unsupported_reason(backend)
    if unsupported is not None:
        pytest.skip(unsupported)
    runner = runner_for(spinn_session, backend, ref)
    x = sample_input(batch, ref.in_features)
    call = runner.prepare(x)
    baseline = baseline_for(spinn_session, backend, ref)
    calls = [call]
    if baseline is not None:
        baseline_runner = runner_for(spinn_session, backend, baseline)
        baseline_call = baseline_runner.prepare(x)
        calls.append(baseline_call)
    memory = peak_memory_for(spinn_session, backend, ref)
    config = spinn_session.settings.backend_configs.get(backend_name)
    artifact = None if ref.variant.sparse else ref.file(backend.format)  # CSR is built in memory from the checkpoint
    benchmark.group = f"{backend_name} batch={batch}"
    benchmark.extra_info.update(
        variant=variant, role=ref.variant.role, precision=ref.variant.precision, model=ref.model,
        max_abs_error=runner.parity.max_abs_error,  # its check against eager float32 before timing
        artifact=None if artifact is None else artifact.name,
        backend=backend_name, device=backend.device, batch=batch,
        params=ref.params, nonzero_params=ref.nonzero_params, flops_per_sample=ref.flops_per_sample,
        widths=list(ref.widths), provider=runner.provider, threads=runner.threads, device_name=runner.device_name,
        backend_options=config.to_dict() if config is not None else {},
        peak_memory_bytes=memory.peak_bytes.get(batch), memory_method=memory.method,
        **({"memory_note": memory.reason} if memory.reason else {}),
    )
    per_round = sum(warm_up(c) for c in calls)
    rounds = rounds_within_budget(request.config, per_round, MIN_ROUNDS)
    baseline_times: list[float] = []
    with contextlib.ExitStack() as guards:  # compile: refuses recompiles while timed
        guards.enter_context(runner.guard())
        if baseline is None:
            benchmark.pedantic(call, rounds=rounds)
        else:
            guards.enter_context(baseline_runner.guard())
            benchmark.pedantic(call, setup=lambda: baseline_times.append(time_block(baseline_call, 1)), rounds=rounds)
            baseline_times.append(time_block(baseline_call, 1))
    if benchmark.stats is None:  # --benchmark-disable: nothing was timed
        return
    stats = benchmark.stats.stats
    gflops = ref.flops_per_sample * batch / stats.median / 1e9
    benchmark.extra_info["gflops"] = gflops
    benchmark.extra_info.update(spinn_session.ceiling_fields(backend.device, ref.variant.precision, gflops))
    if baseline is not None:  # suite/test_processes.py adds fresh processes' rounds to these after the matrix
        ratios = tuple(sandwich_ratios(baseline_times, list(stats.data)))
        record_interleaved(spinn_session, backend_name, batch,
                           InterleavedCase(baseline, ref, (ratios,), benchmark.extra_info, per_round))
