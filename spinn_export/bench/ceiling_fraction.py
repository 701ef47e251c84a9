"""A case's fraction of its precision's GEMM ceiling, measured paired: the case and the ceiling's own GEMM timed
in A B B A blocks, so both rates come from the same minutes of the machine.

Why not the case's median over the ceiling measured at the start of the session: on a shared machine the load moves
both, by different amounts at different times (docs/MEASURED.md: the same case read from a third to more than all of a
ceiling measured minutes earlier). Paired, each cycle's fraction is (case FLOPs / case time) / (GEMM FLOPs / GEMM
time) with both times from one cycle; the median of the cycles, with `paired.summarize`'s bootstrap CI, is the figure.

A GEMM block is as many GEMMs as take as long as the case's block, so neither side's block is a sliver of noise;
blocks are `paired.abba_blocks` across runtimes (the ceiling's best implementation is often another
runtime than the case's: ONNX Runtime's MatMul against OpenVINO's model, whose cores ONNX Runtime's spinning
pool would take).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from spinn_export.bench.paired import (
    ABBA_METHOD,
    PairedConfig,
    abba_blocks,
    cycle_ratios,
    median_block_times,
    summarize,
)
from spinn_export.bench.timing import Call, Clock, warm_up


@dataclass(frozen=True)
class FractionCycles:
    """The measurement before it is labelled: the cycles' median fraction and CI, each side's median rate, and
    how many calls each block made."""

    fraction: float
    ci_low: float
    ci_high: float
    case_gflops: float
    gemm_gflops: float
    cases_per_block: int
    gemms_per_block: int


@dataclass(frozen=True)
class PairedFraction(FractionCycles):
    """`spinn.ceiling_fractions`: a measurement labelled with its case (backend, variant, batch, precision, device)
    and the GEMM it was paired with (`ceiling_gemm`, the implementation that set the ceiling)."""

    backend: str
    variant: str
    batch: int
    precision: str
    device: str
    ceiling_gemm: str
    cycles: int
    method: str = ABBA_METHOD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _repeated(call: Call, times: int) -> Call:
    def block() -> None:
        for _ in range(times):
            call()
    return block


def measure_fraction(case: Call, case_flops: float, gemm: Call, gemm_flops: float, cycles: int,
                     config: PairedConfig = PairedConfig(), clock: Clock = time.perf_counter,
                     across_runtimes: bool = True) -> FractionCycles:
    """`cycles` A B B A cycles of the ceiling's GEMM (A) and the case (B), each block about `config.block_seconds`
    of the case and as many GEMMs as take as long (sized on the warm-ups' medians); each cycle's fraction is the
    case's rate over the GEMM's, both from that cycle. `across_runtimes`: as `paired.abba_blocks`."""
    case_seconds, gemm_seconds = warm_up(case, clock=clock), warm_up(gemm, clock=clock)
    cases = max(1, round(config.block_seconds / max(case_seconds, 1e-12)))
    gemms = max(1, round(cases * case_seconds / max(gemm_seconds, 1e-12)))
    blocks = abba_blocks(_repeated(gemm, gemms), _repeated(case, cases), 1, cycles, clock, across_runtimes)
    case_block, gemm_block = case_flops * cases, gemm_flops * gemms
    # rate(case) / rate(GEMM) = time(GEMM) / time(case) x FLOPs(case) / FLOPs(GEMM): the cycle's time ratio, scaled
    fractions = [ratio * case_block / gemm_block for ratio in cycle_ratios(blocks)]
    median, low, high = summarize([fractions], config.bootstrap, config.seed)
    gemm_time, case_time = median_block_times(blocks)
    return FractionCycles(median, low, high, case_block / case_time / 1e9, gemm_block / gemm_time / 1e9, cases, gemms)
