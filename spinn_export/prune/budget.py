"""The width plan: per-layer widths that meet a parameter, FLOP, latency or explicit-width target (`plan_widths`),
and the per-round targets of a schedule (`round_targets`).

Explicit widths are checked and kept; every other target kind is a `walk.Budget` walked in the mode's order
(`walk.Uniform`, `walk.Global`), so this module only picks and composes the strategies. A latency target is solved
against a `walk.LatencyEstimator` (`prune.latency` measures one); nothing here measures, so it stays pure and
testable with any table.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from spinn_export.errors import UserError
from spinn_export.model.architecture import Architecture
from spinn_export.prune.target import Target
from spinn_export.prune.walk import LatencyEstimator, Walk, counted, order_of, timed

MODES = ("uniform", "global")
RoundTo = int | tuple[int, ...] | None  # one block for every hidden layer, or one per layer


@dataclass(frozen=True)
class PrunePlan:
    """Planned hidden widths, with the target beside what they achieve (relative to `baseline`)."""

    baseline: Architecture
    target: Target
    mode: str
    widths: tuple[int, ...]
    target_value: int | None
    min_width: int
    round_to: RoundTo

    @property
    def architecture(self) -> Architecture:
        """The baseline's graph at the planned widths (shapes only)."""
        return self.baseline.with_widths(self.widths)

    @property
    def params(self) -> int:
        return self.baseline.params_at(self.widths)

    @property
    def flops_per_sample(self) -> int:
        return self.baseline.flops_at(self.widths)

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
            "round_to": list(self.round_to) if isinstance(self.round_to, tuple) else self.round_to,
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


def layer_steps(architecture: Architecture, round_to: RoundTo) -> tuple[int, ...]:
    """Each prunable group's block: `round_to` for all, one per group, or 1 (unit by unit)."""
    if isinstance(round_to, tuple):
        if len(round_to) != len(architecture.widths):
            raise ValueError(f"round_to gives {len(round_to)} blocks for {len(architecture.widths)} prunable groups")
        steps = round_to
    else:
        steps = (round_to or 1,) * len(architecture.widths)
    if any(step < 1 for step in steps):
        raise UserError(f"--round-to must be a positive integer, got {round_to}")
    return steps


def _bounds(architecture: Architecture, min_width: int, steps: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Per-layer (lowest, highest) allowed widths; errors where no allowed width exists."""
    lows, highs = [], []
    for index, (width, step) in enumerate(zip(architecture.widths, steps)):
        if width < min_width:
            raise UserError(
                f"--min-width {min_width} is wider than {_named(architecture, index)} ({width} neurons); "
                "lower --min-width"
            )
        low, high = math.ceil(min_width / step) * step, width // step * step
        if high < low:
            raise UserError(
                f"--round-to {step} cannot be met: {_named(architecture, index)} has {width} neurons, fewer than the "
                f"smallest allowed multiple of {step} (>= --min-width {min_width}); use a smaller --round-to"
            )
        lows.append(low)
        highs.append(high)
    return lows, highs


def lowest_widths(architecture: Architecture, min_width: int, round_to: RoundTo) -> list[int]:
    """The narrowest widths a plan may reach: what bounds every budget from below."""
    return _bounds(architecture, min_width, layer_steps(architecture, round_to))[0]


def _named(architecture: Architecture, index: int) -> str:
    """How messages name prunable group `index`: `hidden layer i` in a plain MLP, else the group's name."""
    return f"hidden layer {index}" if architecture.is_chain else f"group {architecture.group_names[index]!r}"


def _explicit(architecture: Architecture, widths: tuple[int, ...], min_width: int,
              steps: tuple[int, ...]) -> tuple[int, ...]:
    if len(widths) != len(architecture.widths):
        names = "" if architecture.is_chain else f" ({', '.join(architecture.group_names)})"
        raise UserError(f"--widths gives {len(widths)} widths but the model has {len(architecture.widths)} prunable "
                        f"{'hidden layers' if architecture.is_chain else 'groups'}{names}")
    for index, (want, have, step) in enumerate(zip(widths, architecture.widths, steps)):
        if want > have:
            raise UserError(f"--widths asks {_named(architecture, index)} for {want} neurons but it has only "
                            f"{have}; pruning cannot grow a layer")
        if want < min_width:
            raise UserError(f"--widths takes {_named(architecture, index)} to {want} neurons, "
                            f"below the minimum width {min_width}")
        if want % step:
            raise UserError(f"--round-to {step} cannot be met: --widths gives {_named(architecture, index)} "
                            f"{want} neurons")
    return widths


def plan_widths(
    architecture: Architecture,
    target: Target | float,
    *,
    mode: str = "uniform",
    scores: Sequence[torch.Tensor] | None = None,
    min_width: int = 1,
    round_to: RoundTo = None,
    baseline: Architecture | None = None,
    latency: LatencyEstimator | None = None,
) -> PrunePlan:
    """Widths for `architecture` that reach `target` (a float means a parameter reduction).

    Reductions and uniform fractions are relative to `baseline` (default: `architecture` itself), so an iterative
    schedule can plan each round of an already-pruned network against the original. A latency target needs
    `latency`, the table its estimates come from; its ratio is relative to the table's estimate for `baseline`, and
    its solver asks the table once per step for everything the step reads.
    """
    target = target if isinstance(target, Target) else Target.params(target)
    baseline = baseline or architecture
    if mode not in MODES:
        raise UserError(f"unknown pruning mode {mode!r}: choose uniform or global")
    if min_width < 1:
        raise UserError(f"--min-width must be at least 1, got {min_width}")
    steps = layer_steps(architecture, round_to)
    if (baseline.in_features, baseline.group_names, baseline.out_features) != (
            architecture.in_features, architecture.group_names, architecture.out_features):
        raise ValueError(f"baseline {baseline.to_dict()} is not an ancestor of {architecture.to_dict()}")
    if target.kind == "widths":
        widths = _explicit(architecture, target.resolve(architecture).widths or (), min_width, steps)
        return PrunePlan(baseline, target, mode, widths, None, min_width, round_to)
    budget = timed(baseline, target, latency) if target.kind == "latency" else counted(architecture, baseline, target)
    low, start = _bounds(architecture, min_width, steps)
    budget.require_reachable(low)
    latency_aware = mode == "global" and target.kind == "latency"
    walk = Walk(steps, tuple(low), order_of(mode, architecture, baseline, scores, steps, latency_aware))
    widths = walk.measured(start, budget) if latency_aware else walk.along(start, budget)
    return PrunePlan(baseline, target, mode, tuple(widths), budget.value, min_width, round_to)


def round_targets(baseline: Architecture, target: Target, rounds: int, round_to: RoundTo = None) -> tuple[Target, ...]:
    """Per-round targets (relative to `baseline`) whose per-round fractions compound to `target`.

    Round j of N removes 1 - (1 - r)^(j/N); explicit widths shrink geometrically per layer. A latency
    target is planned into explicit widths first (`prune.latency.plan_latency`): latency is a property of
    the widths, so the rounds then shrink towards those.
    """
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    if target.kind == "latency":
        raise ValueError("plan a latency target into widths first (prune.latency.plan_latency)")
    if target.kind != "widths":
        keep = 1.0 - float(target.reduction or 0)
        return (*(Target(target.kind, reduction=1.0 - keep ** (j / rounds)) for j in range(1, rounds)), target)
    final = target.widths or ()
    steps = layer_steps(baseline, round_to)
    rounded = []
    for j in range(1, rounds):
        widths = []
        for start, end, step in zip(baseline.widths, final, steps):
            wanted = start * (end / start) ** (j / rounds)
            widths.append(min(max(round(wanted / step) * step, end), max(start // step * step, end)))
        rounded.append(Target.of_widths(widths))
    return (*rounded, target)
