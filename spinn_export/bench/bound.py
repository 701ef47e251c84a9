"""The deployment's distance to a like-for-like limit: its own kernels at its own shapes (`bench.layer_models`), timed
interleaved with it, and where its time goes.

The square-GEMM ceiling says what the machine's best library reaches on a 1024³ GEMM; a deployment runs another
kernel at other shapes (K = 18 for a first layer), so its share of that ceiling mixes the kernel's efficiency at those
shapes with everything else. Here every one-layer model of the deployed file, and the empty model (the per-call
floor), runs on the deployment's backend with its settings, in rounds interleaved with the deployment itself
(`paired.interleaved_blocks`: the deployment's block before the first round and after every round), so each round
gives every figure from the same seconds of the machine. Per round:

    floor      f   the empty model's call
    quantise   q_j - f      an int8 layer's input quantisation (one per layer; the deployment fuses it elsewhere)
    gemm       g_j - q_j    the GEMM and its epilogue (bias, scales); q_j = f where there is no quantiser
    activation a_j - g_j    the activation after it
    other      T - (f + the rest)   between layers; negative where the deployment fuses what the layers run apart

The same-kernel bound is f + sum_j max(g_j - q_j, 0) + sum_j' max(q_j' - f, 0): one call's floor, each layer's GEMM
(its GEMM-only model less its quantiser), and the quantisers no runtime can fold into the kernel before them (j': the
graph input's, which nothing before it computes, and every dynamic one, whose scale needs the whole tensor's range
first). A static quantiser of a layer's output (QDQ: a constant scale) is an elementwise epilogue that a runtime may
run inside the previous GEMM (OpenVINO does), so it is not counted: counting it made the bound exceed the fused
deployment's own time. `share` is bound / T (1.0: the deployment runs at the
speed of its own GEMMs), `floor_compute_share` is (f + quantise + gemm + activation) / T: the share of the time the
one-layer models account for (at batch 1, how much is the floor and the work, and how much is avoidable overhead).
Each is the median over rounds, with `paired.summarize`'s bootstrap 95 % CI; the stored split is each part's median
over rounds, and `other` the median latency less those, so the parts sum to the latency.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spinn_export.bench.backends import sample_input
from spinn_export.bench.layer_models import layer_models
from spinn_export.bench.paired import interleaved_blocks, summarize
from spinn_export.bench.timing import Call, Clock, time_block, warm_up
from spinn_export.errors import UserError

PARTS = ("floor_s", "quantise_s", "gemm_s", "activation_s", "other_s")


@dataclass(frozen=True)
class LayerCalls:
    """One layer's prepared calls: its shape as text, then its one-layer models (quantise absent without one,
    activation absent where none follows); `foldable`: its quantiser may run inside the kernel before it."""

    shape: str
    gemm: Call
    quantise: Call | None = None
    activation: Call | None = None
    foldable: bool = False


@dataclass(frozen=True)
class LayerSeconds:
    """One round's seconds per call of a layer's models (`foldable` as in `LayerCalls`)."""

    gemm: float
    quantise: float | None = None
    activation: float | None = None
    foldable: bool = False


@dataclass(frozen=True)
class Split:
    """One call of the deployment, in seconds: the parts (`PARTS`) sum to `latency_s`; `bound_s` is the same-kernel
    bound (see the module's docstring)."""

    latency_s: float
    floor_s: float
    quantise_s: float
    gemm_s: float
    activation_s: float
    other_s: float
    bound_s: float

    @property
    def share(self) -> float:
        return self.bound_s / self.latency_s

    @property
    def floor_compute_share(self) -> float:
        return (self.latency_s - self.other_s) / self.latency_s


def split(latency: float, floor: float, layers: Sequence[LayerSeconds]) -> Split:
    """The deployment's `latency` split by its one-layer models' times and the empty model's `floor` (pure)."""
    quantise = sum(layer.quantise - floor for layer in layers if layer.quantise is not None)
    gemm = sum(layer.gemm - (layer.quantise if layer.quantise is not None else floor) for layer in layers)
    activation = sum(layer.activation - layer.gemm for layer in layers if layer.activation is not None)
    bound = floor + sum(max(layer.gemm - (layer.quantise if layer.quantise is not None else floor), 0.0)
                        + (max(layer.quantise - floor, 0.0) if layer.quantise is not None and not layer.foldable
                           else 0.0)
                        for layer in layers)  # no part takes less than nothing
    return Split(latency, floor, quantise, gemm, activation, latency - floor - quantise - gemm - activation, bound)


@dataclass(frozen=True)
class SameKernelBound:
    """`Fastest.same_kernel`: the bound, the deployment's share of it (median, CI), the share the floor and the
    compute account for, the median split, each layer's median seconds, and how it was measured."""

    bound_s: float
    share: float
    ci_low: float
    ci_high: float
    floor_compute_share: float
    split: dict[str, float]
    layers: tuple[dict[str, Any], ...]
    rounds: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _calls_per_block(call: Call, block_seconds: float, clock: Clock) -> int:
    return max(1, round(block_seconds / max(warm_up(call, clock=clock), 1e-9)))


def measure_bound(deployment: Call, floor: Call, layers: Sequence[LayerCalls], rounds: int, block_seconds: float,
                  bootstrap: int = 2000, seed: int = 0, clock: Clock = time.perf_counter,
                  method: str = "") -> SameKernelBound:
    """`rounds` rounds of the floor's and every one-layer model's block, each between two blocks of the deployment
    (blocks of about `block_seconds`, sized on each call's warm-up median); the split and share per round."""
    others: list[Call] = [floor]
    for layer in layers:
        others += [c for c in (layer.quantise, layer.gemm, layer.activation) if c is not None]
    counts = [_calls_per_block(call, block_seconds, clock) for call in (deployment, *others)]
    anchors, times = interleaved_blocks(deployment, others, rounds, counts, clock)
    per_round = []
    for i in range(rounds):
        seconds = iter(series[i] for series in times)
        floor_s = next(seconds)
        measured = [LayerSeconds(quantise=next(seconds) if layer.quantise is not None else None, gemm=next(seconds),
                                 activation=next(seconds) if layer.activation is not None else None,
                                 foldable=layer.foldable)
                    for layer in layers]
        per_round.append((split((anchors[i] + anchors[i + 1]) / 2.0, floor_s, measured), measured))
    splits = [s for s, _ in per_round]
    share, low, high = summarize([[s.share for s in splits]], bootstrap, seed)
    layer_rows = tuple({"shape": layer.shape, **{kind: statistics.median(getattr(m[j], kind) for _, m in per_round)
                                                for kind in ("quantise", "gemm", "activation")
                                                if getattr(layer, kind) is not None}}
                       for j, layer in enumerate(layers))
    medians = {name: statistics.median(getattr(s, name) for s in splits) for name in ("latency_s", *PARTS[:-1])}
    medians["other_s"] = medians["latency_s"] - sum(medians[name] for name in PARTS[:-1])  # the parts still sum up
    return SameKernelBound(statistics.median(s.bound_s for s in splits), share, low, high,
                           statistics.median(s.floor_compute_share for s in splits), medians, layer_rows, rounds,
                           method)


def bound_text(entry: dict[str, Any]) -> str:
    """A stored `SameKernelBound.to_dict` (or {"reason": ...}) as one line for the console and the report."""
    if "reason" in entry:
        return f"same-kernel bound not measured: {entry['reason']}"
    parts = entry["split"]
    total = parts["latency_s"]
    spent = ", ".join(f"{name.removesuffix('_s')} {parts[name] / total:.0%}" for name in PARTS)
    return (f"{entry['share']:.0%} [{entry['ci_low']:.0%}, {entry['ci_high']:.0%}] of its same-kernel, same-shape "
            f"bound ({entry['bound_s'] * 1e3:.3f} ms); time: {spent}; floor + compute "
            f"{entry['floor_compute_share']:.0%}")


def deployment_bound(backend: Any, source: Path | None, batch: int, threads: int, config: Any, deployment: Call,
                     rounds: int, block_seconds: float, reference: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """`SameKernelBound.to_dict` of the deployment `source` (the file `backend` opens) at `batch`, timed against its
    prepared call `deployment`, plus `floors`: the empty model's call time on its backend and, given as
    `reference` (backend, config), on the reference's; or {"reason": why not} where the file is not ONNX or no layer
    could be cut."""


    if source is None or source.suffix != ".onnx":
        return {"reason": f"{backend.name} runs {source.name if source else 'an in-memory model'}, not an ONNX file: "
                          "its layers cannot be cut out as one-layer models"}
    with tempfile.TemporaryDirectory() as tmp:
        cut = layer_models(source, Path(tmp))
        if not cut.layers:
            return {"reason": "no GEMM could be cut out as a one-layer model" +
                              (f" ({'; '.join(cut.left_out)})" if cut.left_out else "")}
        try:
            floor = backend.load(cut.floor, threads, config).prepare(sample_input(batch, cut.in_features))
            layers = []
            for layer in cut.layers:
                x = sample_input(batch, layer.in_features)
                calls = {kind: backend.load(path, threads, config).prepare(x) for kind, path in layer.files.items()}
                layers.append(LayerCalls(layer.shape(batch), calls["gemm"], calls.get("quantise"),
                                         calls.get("activation"), layer.foldable))
        except UserError as exc:  # a cut the backend refuses: the deployment's own figures still stand
            return {"reason": f"{backend.name} cannot run a one-layer model of {source.name}: {exc}"}
        method = (f"{len(layers)} one-layer models cut from {source.name} and an empty model, on {backend.name} with "
                  f"the deployment's settings, {rounds} rounds interleaved with it"
                  + (f"; left out: {'; '.join(cut.left_out)}" if cut.left_out else ""))
        result = measure_bound(deployment, floor, layers, rounds, block_seconds, method=method).to_dict()
        floors = {backend.name: result["split"]["floor_s"]}
        if reference is not None and reference[0].name != backend.name:
            other = reference[0].load(cut.floor, threads, reference[1]).prepare(sample_input(batch, cut.in_features))
            floors[reference[0].name] = statistics.median(
                time_block(other, _calls_per_block(other, block_seconds, time.perf_counter)) for _ in range(rounds))
    return {**result, "floors": floors}
