"""Latency of every (variant, backend, batch): grouped per "<backend> batch=<B>" so the variants sit side by side."""
from __future__ import annotations

import pytest

from spinn_export.bench.backends import get_backend, sample_input
from spinn_export.bench.timing import warm_up

from spinn_export.bench.plugin import Settings, runner_for


def test_latency(benchmark, case: tuple[str, str, int], spinn: Settings) -> None:
    variant, backend_name, batch = case
    backend = get_backend(backend_name)
    reason = backend.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{backend_name}: {reason}")
    ref = spinn.refs[variant]
    unsupported = ref.unsupported_reason(backend)
    if unsupported is not None:
        pytest.skip(unsupported)
    runner = runner_for(spinn, backend, ref)
    call = runner.prepare(sample_input(batch, ref.in_features))
    warm_up(call)
    benchmark.group = f"{backend_name} batch={batch}"
    benchmark.extra_info.update(
        variant=variant, model=ref.model, backend=backend_name, device=backend.device, batch=batch,
        params=ref.params, nonzero_params=ref.nonzero_params, flops_per_sample=ref.flops_per_sample,
        widths=list(ref.widths), provider=runner.provider, threads=runner.threads, device_name=runner.device_name,
    )
    with runner.guard():  # compile: refuses recompiles while timed
        benchmark(call)
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        gflops = ref.flops_per_sample * batch / median / 1e9
        benchmark.extra_info.update(gflops=gflops, provider=runner.provider)
        if spinn.ceiling_gflops and backend.device == "cpu":
            benchmark.extra_info["ceiling_fraction"] = gflops / spinn.ceiling_gflops
        spinn.medians[(backend_name, variant, batch)] = median
