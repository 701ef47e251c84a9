"""Where a call's time goes, as the runtime's own profiler reports it: seconds per call by operator type, split
into the matrix products and everything else (activations, quantisation, layout changes).

Honest only as shares: a profiled call runs slower than a timed one, and runtimes fuse differently. OpenVINO fuses
tanh (or its sigmoid form) and requantisation into `FullyConnected` as post-ops where it can, and ONNX Runtime fuses
an activation into the Gemm before it (`FusedGemm`), so the GEMM share includes what was fused, and what is left
outside is what the runtime could not fuse (QuantizeLinear/DequantizeLinear, unfused activations). `note` says so.
Each profiled call's wall time is kept too (`wall_s`): what it took beyond its operators (`unprofiled_s`) is the
per-call overhead the runtime's own counters do not see (binding inputs, allocating outputs, the Python call).
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

PROFILED_CALLS = 5  # after the warm-up: each operator's figure is the median of these
GEMM_OPERATORS = frozenset({  # ONNX Runtime kernels and OpenVINO CPU-plugin node types that are matrix products
    "Gemm", "MatMul", "FusedGemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QGemm", "QLinearMatMul",
    "DynamicQuantizeMatMul", "FullyConnected",
})


def is_gemm(operator: str) -> bool:
    """A matrix product (OpenVINO names its variants FullyConnected*, e.g. FullyConnectedQuantizedLegacy)."""
    return operator in GEMM_OPERATORS or operator.startswith("FullyConnected")


@dataclass(frozen=True)
class TimeByOperator:
    """Median seconds per call of each operator type, from `profiler` over `calls` profiled calls, and the median
    wall time of those calls (None where not timed)."""

    profiler: str
    calls: int
    by_operator: tuple[tuple[str, float], ...]  # largest first
    note: str
    wall_s: float | None = None

    @property
    def unprofiled_s(self) -> float | None:
        """Wall time per call outside every operator the profiler reports: the per-call overhead it does not see."""
        return None if self.wall_s is None else self.wall_s - self.gemm_s - self.other_s

    @property
    def gemm_s(self) -> float:
        return sum(seconds for name, seconds in self.by_operator if is_gemm(name))

    @property
    def other_s(self) -> float:
        return sum(seconds for name, seconds in self.by_operator if not is_gemm(name))

    @property
    def gemm_share(self) -> float:
        total = self.gemm_s + self.other_s
        return self.gemm_s / total if total > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "by_operator": dict(self.by_operator), "gemm_s": self.gemm_s, "other_s": self.other_s,
                "gemm_share": self.gemm_share, "unprofiled_s": self.unprofiled_s}


def summarize_calls(profiler: str, calls: Iterable[Mapping[str, float]], note: str,
                    walls: Iterable[float] = ()) -> TimeByOperator:
    """Per-call {operator type: seconds} into each operator's median over the calls (0 where a call lacked it);
    `walls`: each profiled call's wall seconds."""
    calls, walls = list(calls), list(walls)
    names = sorted({name for call in calls for name in call})
    medians = {name: statistics.median(call.get(name, 0.0) for call in calls) for name in names}
    ordered = tuple(sorted(medians.items(), key=lambda item: -item[1]))
    return TimeByOperator(profiler, len(calls), ordered, note, statistics.median(walls) if walls else None)


def shares_text(entry: Mapping[str, Any], top: int = 4) -> str:
    """A stored `TimeByOperator.to_dict` as one phrase: the GEMM share, then the largest operators' shares."""
    by_operator = entry["by_operator"]
    total = sum(by_operator.values())
    if total <= 0:
        return "no operator time reported"
    largest = ", ".join(f"{name} {seconds / total:.0%}" for name, seconds in list(by_operator.items())[:top])
    wall, outside = entry.get("wall_s"), entry.get("unprofiled_s")
    overhead = f"; {outside / wall:.0%} of the profiled call's wall time outside its operators" if wall else ""
    return f"GEMMs {entry['gemm_share']:.0%} of the profiled time ({largest}){overhead}"
