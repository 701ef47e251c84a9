"""The budget solver: per-layer widths that meet a parameter, FLOP or explicit-width target.

Widths are found by removing one neuron (or one `round_to` block) at a time from the layer chosen
by the mode, until the budget is met, and then keeping whichever of the last two states is closer
to it.  Each step changes the count by one neuron's worth, so the plan lands within half a
neuron's (block's) worth of the target: as close as the layer sizes allow.

* uniform: the next neuron comes from the layer that keeps the largest fraction of its baseline
  width, so every hidden layer keeps the same fraction to within one neuron.
* global: the next neuron is the lowest-scoring one left in any layer (scores from
  `importance.neuron_scores`, already normalised by each neuron's cost).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from spinn_export.errors import UserError
from spinn_export.model.spec import MLPSpec

KINDS = ("params", "flops", "widths")
MODES = ("uniform", "global")


@dataclass(frozen=True)
class Target:
    """What to reach: a fractional reduction of parameters or FLOPs, or explicit hidden widths."""

    kind: str
    reduction: float | None = None
    widths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown target kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.kind == "widths":
            if not self.widths:
                raise UserError("an explicit-width target needs widths, e.g. --widths 256,256,256,128")
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
            return
        r = self.reduction
        if r is None or not math.isfinite(r) or not 0.0 < r < 1.0:
            flag = "--target" if self.kind == "params" else "--target-flops"
            raise UserError(
                f"{flag} {r} is impossible: give the fraction to remove, strictly between 0 and 1 (e.g. 0.685)"
            )

    @classmethod
    def params(cls, reduction: float) -> "Target":
        return cls("params", reduction=float(reduction))

    @classmethod
    def flops(cls, reduction: float) -> "Target":
        return cls("flops", reduction=float(reduction))

    @classmethod
    def of_widths(cls, widths: Sequence[int]) -> "Target":
        return cls("widths", widths=tuple(widths))

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "widths":
            return {"kind": "widths", "widths": list(self.widths or ())}
        return {"kind": self.kind, "reduction": self.reduction}

    def describe(self) -> str:
        if self.kind == "widths":
            return f"widths {list(self.widths or ())}"
        return f"{self.reduction:.2%} fewer {self.kind}"


def cost(spec: MLPSpec, kind: str) -> int:
    """The quantity a target counts: parameters, or FLOPs per sample."""
    return spec.flops_per_sample if kind == "flops" else spec.params


@dataclass(frozen=True)
class PrunePlan:
    """Planned hidden widths, with the target beside what they achieve (relative to `baseline`)."""

    baseline: MLPSpec
    target: Target
    mode: str
    widths: tuple[int, ...]
    target_value: int | None
    min_width: int
    round_to: int | None

    @property
    def spec(self) -> MLPSpec:
        return self.baseline.with_widths(self.widths)

    @property
    def params(self) -> int:
        return self.spec.params

    @property
    def flops_per_sample(self) -> int:
        return self.spec.flops_per_sample

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.params / self.baseline.params

    @property
    def flops_reduction(self) -> float:
        return 1.0 - self.flops_per_sample / self.baseline.flops_per_sample

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "target_value": self.target_value,
            "mode": self.mode,
            "min_width": self.min_width,
            "round_to": self.round_to,
            "widths": list(self.widths),
            "params": self.params,
            "flops_per_sample": self.flops_per_sample,
            "params_reduction": self.params_reduction,
            "flops_reduction": self.flops_reduction,
        }

    def describe(self) -> str:
        achieved = (f"{self.params_reduction:.2%} fewer params ({self.params:,}), "
                    f"{self.flops_reduction:.2%} fewer FLOPs ({self.flops_per_sample:,}/sample)")
        goal = self.target.describe()
        if self.target_value is not None:
            goal += f" ({self.target_value:,} {self.target.kind})"
        return f"target {goal}; achieved {achieved} with widths {list(self.widths)}"


def _bounds(spec: MLPSpec, min_width: int, round_to: int | None) -> tuple[list[int], list[int]]:
    """Per-layer (lowest, highest) allowed widths; errors where no allowed width exists."""
    step = round_to or 1
    low = math.ceil(min_width / step) * step
    highs = []
    for index, width in enumerate(spec.widths):
        if width < min_width:
            raise UserError(
                f"--min-width {min_width} is wider than hidden layer {index} ({width} neurons); lower --min-width"
            )
        high = width // step * step
        if high < low:
            raise UserError(
                f"--round-to {round_to} cannot be met: hidden layer {index} has {width} neurons, fewer than the "
                f"smallest allowed multiple of {round_to} (>= --min-width {min_width}); use a smaller --round-to"
            )
        highs.append(high)
    return [low] * len(spec.widths), highs


def _explicit(spec: MLPSpec, widths: tuple[int, ...], min_width: int, round_to: int | None) -> tuple[int, ...]:
    if len(widths) != len(spec.widths):
        raise UserError(f"--widths gives {len(widths)} hidden widths but the model has {len(spec.widths)} hidden layers")
    for index, (want, have) in enumerate(zip(widths, spec.widths)):
        if want > have:
            raise UserError(f"--widths asks hidden layer {index} for {want} neurons but it has only {have}; pruning cannot grow a layer")
        if want < min_width:
            raise UserError(f"--widths takes hidden layer {index} to {want} neurons, below the minimum width {min_width}")
        if round_to and want % round_to:
            raise UserError(f"--round-to {round_to} cannot be met: --widths gives hidden layer {index} {want} neurons")
    return widths


def plan_widths(
    spec: MLPSpec,
    target: Target | float,
    *,
    mode: str = "uniform",
    scores: Sequence[torch.Tensor] | None = None,
    min_width: int = 1,
    round_to: int | None = None,
    baseline: MLPSpec | None = None,
) -> PrunePlan:
    """Widths for the model `spec` that reach `target` (a float means a parameter reduction).

    Reductions and uniform fractions are relative to `baseline` (default: `spec` itself), so an
    iterative schedule can plan each round of an already-pruned model against the original.
    """
    target = target if isinstance(target, Target) else Target.params(target)
    baseline = baseline or spec
    if mode not in MODES:
        raise UserError(f"unknown pruning mode {mode!r}: choose uniform or global")
    if min_width < 1:
        raise UserError(f"--min-width must be at least 1, got {min_width}")
    if round_to is not None and round_to < 1:
        raise UserError(f"--round-to must be a positive integer, got {round_to}")
    if (baseline.in_features, len(baseline.widths), baseline.out_features) != (spec.in_features, len(spec.widths), spec.out_features):
        raise ValueError(f"baseline {baseline.to_dict()} is not an ancestor of {spec.to_dict()}")

    def make(widths: Sequence[int], value: int | None) -> PrunePlan:
        return PrunePlan(baseline, target, mode, tuple(widths), value, min_width, round_to)

    if target.kind == "widths":
        return make(_explicit(spec, target.widths or (), min_width, round_to), None)

    low, state = _bounds(spec, min_width, round_to)
    goal = (1.0 - float(target.reduction or 0)) * cost(baseline, target.kind)
    value = round(goal)
    smallest = cost(spec.with_widths(low), target.kind)
    if smallest > goal:
        floor = 1.0 - smallest / cost(baseline, target.kind)
        raise UserError(
            f"target {target.describe()} is impossible: it would take a layer below the minimum width "
            f"{low[0]} (the smallest allowed model removes only {floor:.2%}); lower the target or --min-width"
        )
    step = round_to or 1
    if mode == "global":
        if scores is None or [len(s) for s in scores] != list(spec.widths):
            raise ValueError("global mode needs one score per hidden neuron of each layer of `spec`")
        ranked = [torch.sort(s.detach().float()).values for s in scores]

    def priority(index: int) -> float:
        """Lower is removed first."""
        if mode == "uniform":
            return -state[index] / baseline.widths[index]
        removed = spec.widths[index] - state[index]
        return float(ranked[index][removed : removed + step].mean())

    previous: list[int] | None = None
    while cost(spec.with_widths(state), target.kind) > goal:
        candidates = [i for i in range(len(state)) if state[i] - step >= low[i]]
        choice = min(candidates, key=lambda i: (priority(i), i))
        previous = list(state)
        state[choice] -= step
    if previous is not None:
        over = cost(spec.with_widths(previous), target.kind) - goal
        under = goal - cost(spec.with_widths(state), target.kind)
        if over < under:
            state = previous
    return make(state, value)


def round_targets(baseline: MLPSpec, target: Target, rounds: int, round_to: int | None = None) -> tuple[Target, ...]:
    """Per-round targets (relative to `baseline`) whose per-round fractions compound to `target`.

    Round j of N removes 1 - (1 - r)^(j/N); explicit widths shrink geometrically per layer.
    """
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    if target.kind != "widths":
        keep = 1.0 - float(target.reduction or 0)
        return tuple(Target(target.kind, reduction=1.0 - keep ** (j / rounds)) for j in range(1, rounds)) + (target,)
    final = target.widths or ()
    step = round_to or 1
    steps = []
    for j in range(1, rounds):
        widths = []
        for start, end in zip(baseline.widths, final):
            wanted = start * (end / start) ** (j / rounds)
            widths.append(min(max(round(wanted / step) * step, end), max(start // step * step, end)))
        steps.append(Target.of_widths(widths))
    return (*steps, target)
