"""The budget solver: per-layer widths that meet a parameter, FLOP, latency or explicit-width target.

Widths are found by removing one neuron (or one `round_to` block; a layer may have its own block)
at a time from the layer chosen by the mode, until the budget is met, and then keeping whichever of
the last two states is closer to it.  Each step changes the count by one neuron's worth, so the
plan lands within half a neuron's (block's) worth of the target: as close as the layer sizes allow.
A latency target is a budget to stay within, as in NetAdapt and HALP: its walk stops at the first
state that meets it.

* uniform: the next neuron comes from the layer that keeps the largest fraction of its baseline
  width, so every hidden layer keeps the same fraction to within one neuron.
* global: the next neuron is the lowest-scoring one left in any layer (scores from
  `importance.neuron_scores`, already normalised by each neuron's parameter cost).  Against a
  latency target the cost that matters is latency, so there the next block is the one that loses
  the least importance per unit of latency it saves (NetAdapt/HALP-like), read from the table.

A latency target is solved against a `LatencyModel` (`prune.latency` measures one); this module
only walks the widths, so it stays pure and testable with any table.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from spinn_export.errors import UserError
from spinn_export.model.architecture import Architecture
from spinn_export.prune.target import Target

MODES = ("uniform", "global")
STRIDE = 4  # a walk that does not depend on the values is read every STRIDE-th state, then densely where it crosses
LOOKAHEAD = 8  # states read per request, so a measured table times many shapes per chunk
RoundTo = int | tuple[int, ...] | None  # one block for every hidden layer, or one per layer


class LatencyModel(Protocol):
    """Estimated latencies of whole width vectors, in any unit as long as it is the same for all of them."""

    def latency(self, vectors: Sequence[Sequence[int]]) -> list[float]:
        """One estimate per hidden-width vector; a table measures what it lacks for all of them at once."""


def cost(architecture: Architecture, kind: str) -> int:
    """The quantity a target counts at the architecture's own widths: parameters, or FLOPs per sample."""
    return architecture.cost_at(architecture.widths, kind)


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


def layer_steps(spec: Architecture, round_to: RoundTo) -> tuple[int, ...]:
    """Each prunable group's block: `round_to` for all, one per group, or 1 (unit by unit)."""
    if isinstance(round_to, tuple):
        if len(round_to) != len(spec.widths):
            raise ValueError(f"round_to gives {len(round_to)} blocks for {len(spec.widths)} prunable groups")
        steps = round_to
    else:
        steps = (round_to or 1,) * len(spec.widths)
    if any(step < 1 for step in steps):
        raise UserError(f"--round-to must be a positive integer, got {round_to}")
    return steps


def _bounds(spec: Architecture, min_width: int, steps: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Per-layer (lowest, highest) allowed widths; errors where no allowed width exists."""
    lows, highs = [], []
    for index, (width, step) in enumerate(zip(spec.widths, steps)):
        if width < min_width:
            raise UserError(
                f"--min-width {min_width} is wider than {_named(spec, index)} ({width} neurons); lower --min-width"
            )
        low, high = math.ceil(min_width / step) * step, width // step * step
        if high < low:
            raise UserError(
                f"--round-to {step} cannot be met: {_named(spec, index)} has {width} neurons, fewer than the "
                f"smallest allowed multiple of {step} (>= --min-width {min_width}); use a smaller --round-to"
            )
        lows.append(low)
        highs.append(high)
    return lows, highs


def lowest_widths(spec: Architecture, min_width: int, round_to: RoundTo) -> list[int]:
    """The narrowest widths a plan may reach: what bounds every budget from below."""
    return _bounds(spec, min_width, layer_steps(spec, round_to))[0]


def _named(spec: Architecture, index: int) -> str:
    """How messages name prunable group `index`: `hidden layer i` in a plain MLP, else the group's name."""
    return f"hidden layer {index}" if spec.is_chain else f"group {spec.group_names[index]!r}"


def _explicit(spec: Architecture, widths: tuple[int, ...], min_width: int, steps: tuple[int, ...]) -> tuple[int, ...]:
    if len(widths) != len(spec.widths):
        names = "" if spec.is_chain else f" ({', '.join(spec.group_names)})"
        raise UserError(f"--widths gives {len(widths)} widths but the model has {len(spec.widths)} prunable "
                        f"{'hidden layers' if spec.is_chain else 'groups'}{names}")
    for index, (want, have, step) in enumerate(zip(widths, spec.widths, steps)):
        if want > have:
            raise UserError(f"--widths asks {_named(spec, index)} for {want} neurons but it has only {have}; "
                            "pruning cannot grow a layer")
        if want < min_width:
            raise UserError(f"--widths takes {_named(spec, index)} to {want} neurons, "
                            f"below the minimum width {min_width}")
        if want % step:
            raise UserError(f"--round-to {step} cannot be met: --widths gives {_named(spec, index)} {want} neurons")
    return widths


def plan_widths(
    spec: Architecture,
    target: Target | float,
    *,
    mode: str = "uniform",
    scores: Sequence[torch.Tensor] | None = None,
    min_width: int = 1,
    round_to: RoundTo = None,
    baseline: Architecture | None = None,
    latency: LatencyModel | None = None,
) -> PrunePlan:
    """Widths for the model `spec` that reach `target` (a float means a parameter reduction).

    Reductions and uniform fractions are relative to `baseline` (default: `spec` itself), so an
    iterative schedule can plan each round of an already-pruned model against the original. A latency
    target needs `latency`, the table its estimates come from; its ratio is relative to the table's
    estimate for `baseline`, and its solver asks the table once per step for everything the step reads.
    """
    target = target if isinstance(target, Target) else Target.params(target)
    baseline = baseline or spec
    if mode not in MODES:
        raise UserError(f"unknown pruning mode {mode!r}: choose uniform or global")
    if min_width < 1:
        raise UserError(f"--min-width must be at least 1, got {min_width}")
    steps = layer_steps(spec, round_to)
    if (baseline.in_features, baseline.group_names, baseline.out_features) != (
            spec.in_features, spec.group_names, spec.out_features):
        raise ValueError(f"baseline {baseline.to_dict()} is not an ancestor of {spec.to_dict()}")

    def make(widths: Sequence[int], value: int | None) -> PrunePlan:
        return PrunePlan(baseline, target, mode, tuple(widths), value, min_width, round_to)

    if target.kind == "widths":
        return make(_explicit(spec, target.resolve(spec).widths or (), min_width, steps), None)

    if target.kind == "latency":
        if latency is None:
            raise ValueError("a latency target is solved against measured latencies: use prune.latency.plan_latency")
        measure = latency.latency
        full = measure([baseline.widths])[0]
        goal, value = float(target.latency_ratio or 0) * full, None
    else:
        def measure(vectors: Sequence[Sequence[int]]) -> list[float]:
            return [float(spec.cost_at(v, target.kind)) for v in vectors]

        full = cost(baseline, target.kind)
        goal = (1.0 - float(target.reduction or 0)) * full
        value = round(goal)
    low, state = _bounds(spec, min_width, steps)
    smallest = measure([low])[0]
    if smallest > goal:
        floor = smallest / full
        if target.kind == "latency":
            raise UserError(
                f"target {target.describe()} cannot be met: even the smallest allowed widths {low} keep an estimated "
                f"{floor:.3f} of dense latency, so the achievable range is {floor:.3f} to 1; raise the target, or "
                "lower --min-width or --round-to"
            )
        raise UserError(
            f"target {target.describe()} is impossible: it would take a layer below the minimum width "
            f"{low[0]} (the smallest allowed model removes only {1.0 - floor:.2%}); lower the target or --min-width"
        )
    latency_aware = mode == "global" and target.kind == "latency"
    if mode == "global":
        if scores is None or [len(s) for s in scores] != list(spec.widths):
            raise ValueError("global mode needs one score per hidden neuron of each layer of `spec`")
        ranked = [torch.sort(s.detach().float()).values for s in scores]
        per_parameter = spec.unit_costs()  # scores are per parameter; importance per latency needs them whole

    def stepped(widths: list[int], index: int) -> list[int]:
        return [w - steps[index] if i == index else w for i, w in enumerate(widths)]

    def movable(widths: list[int]) -> list[int]:
        return [i for i in range(len(widths)) if widths[i] - steps[i] >= low[i]]

    def priority(widths: list[int], index: int, saved: float) -> tuple[float, float, int]:
        """Lower is removed first."""
        if mode == "uniform":
            return (-widths[index] / baseline.widths[index], 0.0, index)
        removed = spec.widths[index] - widths[index]
        block = ranked[index][removed : removed + steps[index]]
        if not latency_aware:
            return (float(block.mean()), 0.0, index)
        lost = float(block.sum()) * per_parameter[index]
        return (lost / saved if saved > 0 else math.inf, lost, index)  # saves nothing measurable: last resort

    def following(widths: list[int], saved: dict[int, float]) -> list[int] | None:
        """The next state of the walk (None at the smallest allowed widths)."""
        candidates = movable(widths)
        if not candidates:
            return None
        return stepped(widths, min(candidates, key=lambda i: priority(widths, i, saved.get(i, 0.0))))

    if latency_aware:  # each step reads what every candidate saves: the walk depends on the values
        current = measure([state])[0]
        while current > goal:
            candidates = movable(state)
            current, *after = measure([state, *(stepped(state, i) for i in candidates)])
            state = following(state, {i: current - v for i, v in zip(candidates, after)})  # type: ignore[assignment]
            current = measure([state])[0]  # (not None above: the floor is within the goal)
        return make(state, value)  # a latency target is a budget: the first state within it
    path = [state]
    while (ahead := following(path[-1], {})) is not None:
        path.append(ahead)
    index, values = _first_within(path, goal, measure)
    state = path[index]
    if target.kind != "latency" and index and values[index - 1] - goal < goal - values[index]:
        state = path[index - 1]
    return make(state, value)


def _first_within(path: list[list[int]], goal: float,
                  measure: Callable[[Sequence[Sequence[int]]], list[float]]) -> tuple[int, dict[int, float]]:
    """The index of the first state of `path` whose value is within `goal` (the last one is), and the values read.

    Reads every STRIDE-th state, LOOKAHEAD at a time, then every state between the first within the goal and the
    one read before it: the first crossing wherever the values fall monotonically between the states read (always,
    for parameters and FLOPs), at a fraction of the measurements a latency table would take state by state.
    """
    values: dict[int, float] = {}

    def read(indices: Sequence[int]) -> None:
        todo = [i for i in indices if i not in values]
        values.update(zip(todo, measure([path[i] for i in todo])))

    sampled = [*range(0, len(path) - 1, STRIDE), len(path) - 1]
    crossing = 0  # the first state read that is within the goal (there is one: the last state is)
    for start in range(0, len(sampled), LOOKAHEAD):
        read(sampled[start:start + LOOKAHEAD])
        within = [n for n in range(start, min(start + LOOKAHEAD, len(sampled))) if values[sampled[n]] <= goal]
        if within:
            crossing = within[0]
            break
    before = sampled[crossing - 1] + 1 if crossing else 0
    read(range(before, sampled[crossing]))
    first = next(i for i in range(before, sampled[crossing] + 1) if values[i] <= goal)
    return first, values


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
