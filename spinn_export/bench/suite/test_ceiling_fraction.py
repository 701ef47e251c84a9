"""Each backend's dense float32 model at the session's largest batch as a fraction of the float32 GEMM ceiling,
measured paired with the GEMM that set the ceiling (`bench.ceiling_fraction`): `spinn.ceiling_fractions`.

Only dense float32 at the largest batch: that is where a backend's efficiency is a property of its kernels (the
largest matrices, the precision every backend runs) and not of call overhead, and one case per backend keeps it
to seconds. Every case still has its single-shot fraction in its `extra_info` (the matrix's median over the
session's ceiling), which the report shows beside this one.
"""
from __future__ import annotations

from dataclasses import asdict

import pytest

from spinn_export.bench import ceilings
from spinn_export.bench.backends import get_backend, sample_input
from spinn_export.bench.ceiling_fraction import PairedFraction, measure_fraction
from spinn_export.bench.paired import switches_runtime
from spinn_export.bench.session import SuiteState, runner_for
from spinn_export.bench.variants import FP32

MIN_CYCLES = 4


def fraction_cycles(paired_cycles: int) -> int:
    """A quarter of a paired speedup's ABBA cycles, at least `MIN_CYCLES`: at the largest batch each block is one
    call of a ~0.1 s model and as long a run of GEMMs, so a cycle (with its two switches) costs ~0.6 s, and the
    main job's bench stage has 6 minutes for everything (4 cycles gave OpenVINO's dense 83 % [77, 90] here)."""
    return max(MIN_CYCLES, paired_cycles // 4)


def test_paired_ceiling_fraction(spinn_backend: str, spinn_session: SuiteState) -> None:
    settings = spinn_session.settings
    backend, batch = get_backend(spinn_backend), max(settings.batches)
    unavailable = backend.unavailable_reason()
    if unavailable is not None:
        pytest.skip(f"{spinn_backend}: {unavailable}")
    dense = spinn_session.dense
    why_not = "no dense model in the run" if dense is None else dense.unsupported_reason(backend)
    if why_not is not None:
        pytest.skip(f"{spinn_backend}: {why_not}")
    ceiling = ceilings.case_ceiling(spinn_session.ceilings, backend.device, FP32)
    if ceiling is None:
        pytest.skip(f"{spinn_backend}: no {FP32} ceiling was measured on {backend.device}")
    gemm, gemm_call, gemm_flops = ceilings.ceiling_gemm(ceiling, backend.device, FP32, settings.threads)
    runner = runner_for(spinn_session, backend, dense)
    cycles = fraction_cycles(settings.paired.cycles)
    call = runner.prepare(sample_input(batch, dense.in_features))  # compile-*: compiles this batch's graph here
    with runner.guard():  # and refuses recompiles while timed
        measured = measure_fraction(call, dense.flops_per_sample * batch, gemm_call, gemm_flops, cycles,
                                    settings.paired, across_runtimes=switches_runtime(gemm.runtime, backend.runtime))
    result = PairedFraction(**asdict(measured), backend=spinn_backend, variant=dense.name, batch=batch,
                            precision=FP32, device=backend.device, ceiling_gemm=gemm.name, cycles=cycles)
    spinn_session.ceiling_fractions.append(result)
    assert 0 < result.ci_low <= result.fraction <= result.ci_high
