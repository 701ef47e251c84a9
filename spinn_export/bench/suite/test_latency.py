"""Latency of every (variant, backend, batch): grouped per "<backend> batch=<B>" so the variants sit side by side."""
from __future__ import annotations

import pytest

from spinn_export.bench.backends import get_backend, sample_input
from spinn_export.bench.plugin import SuiteState, runner_for
from spinn_export.bench.timing import warm_up


def test_latency(benchmark, spinn_case: tuple[str, str, int], spinn_session: SuiteState) -> None:
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
    call = runner.prepare(sample_input(batch, ref.in_features))
    warm_up(call)
    config = spinn_session.settings.backend_configs.get(backend_name)
    artifact = None if ref.variant.sparse else ref.file(backend.format)  # CSR is built in memory from the checkpoint
    benchmark.group = f"{backend_name} batch={batch}"
    benchmark.extra_info.update(
        variant=variant, role=ref.variant.role, precision=ref.variant.precision, model=ref.model,
        artifact=None if artifact is None else artifact.name,
        backend=backend_name, device=backend.device, batch=batch,
        params=ref.params, nonzero_params=ref.nonzero_params, flops_per_sample=ref.flops_per_sample,
        widths=list(ref.widths), provider=runner.provider, threads=runner.threads, device_name=runner.device_name,
        backend_options=config.to_dict() if config is not None else {},
    )
    with runner.guard():  # compile: refuses recompiles while timed
        benchmark(call)
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        gflops = ref.flops_per_sample * batch / median / 1e9
        benchmark.extra_info.update(gflops=gflops, provider=runner.provider)
        if backend.device == "cpu":
            benchmark.extra_info["ceiling_fraction"] = gflops / spinn_session.ceiling_gflops
