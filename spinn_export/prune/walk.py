"""The budget solver's two strategies, one object each: a mode (`Uniform`, `Global`: which unit goes next) and a
target kind's `Budget` (params, FLOPs, latency: what a width vector costs and where the walk stops). `Walk` composes
them; `budget.plan_widths` picks them for a target.

The walk removes one neuron (or one block of a layer's `round_to`) at a time from the layer the mode puts first,
until the budget is met. A parameter or FLOP budget lands on whichever of the last two states is closer to it (each
step changes the count by one block's worth, so the plan lands within half a block of the target). A latency target
is a budget to stay within, as in NetAdapt and HALP: the walk stops at the first state that meets it.

* uniform: the next neuron comes from the layer that keeps the largest fraction of its baseline width, so every
  hidden layer keeps the same fraction to within one neuron.
* global: the next neuron is the lowest-scoring one left in any layer (scores from `importance.unit_scores`, already
  normalised by each neuron's parameter cost). Against a latency target the cost that matters is latency, so there
  the next block is the one that loses the least importance per unit of latency it saves (NetAdapt/HALP-like).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from spinn_export.errors import UserError
from spinn_export.model.architecture import Architecture
from spinn_export.prune.target import Target

STRIDE = 4  # a walk that does not depend on the values is read every STRIDE-th state, then densely where it crosses
LOOKAHEAD = 8  # states read per request, so a measured table times many shapes per chunk

Measure = Callable[[Sequence[Sequence[int]]], list[float]]


class LatencyEstimator(Protocol):
    """Estimated latencies of whole width vectors, in any unit as long as it is the same for all of them."""

    def latency(self, vectors: Sequence[Sequence[int]]) -> list[float]:
        """One estimate per hidden-width vector; a table measures what it lacks for all of them at once."""


@dataclass(frozen=True)
class Budget:
    """A target kind as the walk sees it: what width vectors cost (`measure`), dense's cost (`full`), the most a plan
    may cost (`goal`), the goal in the target's own units (`value`: parameters or FLOPs; None for latency), and
    whether the walk lands on the nearer of the two states around the goal (`nearest`) or on the first within it."""

    target: Target
    measure: Measure
    full: float
    goal: float
    value: int | None
    nearest: bool

    def require_reachable(self, low: Sequence[int]) -> None:
        """A one-line error where even the smallest allowed widths `low` cost more than the goal."""
        smallest = self.measure([low])[0]
        if smallest <= self.goal:
            return
        floor = smallest / self.full
        if self.target.kind == "latency":
            raise UserError(
                f"target {self.target.describe()} cannot be met: even the smallest allowed widths {list(low)} keep an "
                f"estimated {floor:.3f} of dense latency, so the achievable range is {floor:.3f} to 1; raise the "
                "target, or lower --min-width or --round-to"
            )
        raise UserError(
            f"target {self.target.describe()} is impossible: it would take a layer below the minimum width "
            f"{low[0]} (the smallest allowed model removes only {1.0 - floor:.2%}); lower the target or --min-width"
        )


def counted(architecture: Architecture, baseline: Architecture, target: Target) -> Budget:
    """A parameter or FLOP budget: a fraction of `baseline`'s count, counted on the graph at any widths."""
    def measure(vectors: Sequence[Sequence[int]]) -> list[float]:
        return [float(architecture.cost_at(v, target.kind)) for v in vectors]

    full = baseline.cost_at(baseline.widths, target.kind)
    goal = (1.0 - float(target.reduction or 0)) * full
    return Budget(target, measure, full, goal, round(goal), nearest=True)


def timed(baseline: Architecture, target: Target, latency: LatencyEstimator | None) -> Budget:
    """A latency budget: a fraction of the estimator's latency for `baseline`."""
    if latency is None:
        raise ValueError("a latency target is solved against measured latencies: use prune.latency.plan_latency")
    full = latency.latency([baseline.widths])[0]
    return Budget(target, latency.latency, full, float(target.latency_ratio or 0) * full, None, nearest=False)


class Order(Protocol):
    """A mode: the priority of removing a block from layer `index` at `widths` (lower goes first); `saved` is what
    that removal saves where the walk measured it (latency-aware global mode only)."""

    def priority(self, widths: Sequence[int], index: int, saved: float) -> tuple[float, float, int]: ...


@dataclass(frozen=True)
class Uniform:
    """Every layer keeps the same fraction of its baseline width."""

    baseline: tuple[int, ...]

    def priority(self, widths: Sequence[int], index: int, saved: float) -> tuple[float, float, int]:
        return (-widths[index] / self.baseline[index], 0.0, index)


@dataclass(frozen=True)
class Global:
    """The lowest-scoring block left in any layer; with `per_parameter` (latency-aware), the one that loses the least
    importance per unit of latency it saves (scores are per parameter; importance per latency needs them whole)."""

    ranked: tuple[torch.Tensor, ...]
    start: tuple[int, ...]
    steps: tuple[int, ...]
    per_parameter: tuple[int, ...] | None

    def priority(self, widths: Sequence[int], index: int, saved: float) -> tuple[float, float, int]:
        removed = self.start[index] - widths[index]
        block = self.ranked[index][removed : removed + self.steps[index]]
        if self.per_parameter is None:
            return (float(block.mean()), 0.0, index)
        lost = float(block.sum()) * self.per_parameter[index]
        return (lost / saved if saved > 0 else math.inf, lost, index)  # saves nothing measurable: last resort


def order_of(mode: str, architecture: Architecture, baseline: Architecture, scores: Sequence[torch.Tensor] | None,
             steps: tuple[int, ...], latency_aware: bool) -> Order:
    """The mode's strategy object (`uniform` or `global`)."""
    if mode == "uniform":
        return Uniform(baseline.widths)
    if scores is None or [len(s) for s in scores] != list(architecture.widths):
        raise ValueError("global mode needs one score per hidden neuron of each layer of `architecture`")
    ranked = tuple(torch.sort(s.detach().float()).values for s in scores)
    return Global(ranked, architecture.widths, steps, architecture.unit_costs() if latency_aware else None)


@dataclass(frozen=True)
class Walk:
    """The states from the widest allowed widths down, one block at a time, in the order's priority."""

    steps: tuple[int, ...]
    low: tuple[int, ...]
    order: Order

    def stepped(self, widths: list[int], index: int) -> list[int]:
        return [w - self.steps[index] if i == index else w for i, w in enumerate(widths)]

    def movable(self, widths: list[int]) -> list[int]:
        return [i for i in range(len(widths)) if widths[i] - self.steps[i] >= self.low[i]]

    def chosen(self, widths: list[int], candidates: list[int], saved: dict[int, float]) -> list[int]:
        """The state after removing a block from the candidate layer the order puts first."""
        return self.stepped(widths, min(candidates, key=lambda i: self.order.priority(widths, i, saved.get(i, 0.0))))

    def measured(self, state: list[int], budget: Budget) -> list[int]:
        """Latency-aware: each step reads what every candidate saves, so the walk depends on the values; the first
        state within the budget (one is: `Budget.require_reachable` held the floor to it, so a layer is movable)."""
        current = budget.measure([state])[0]
        while current > budget.goal:
            candidates = self.movable(state)
            current, *after = budget.measure([state, *(self.stepped(state, i) for i in candidates)])
            state = self.chosen(state, candidates, {i: current - v for i, v in zip(candidates, after)})
            current = budget.measure([state])[0]
        return state

    def along(self, state: list[int], budget: Budget) -> list[int]:
        """The walk's path does not depend on the values: read it sparsely (`first_within`), then land."""
        path = [state]
        while candidates := self.movable(path[-1]):
            path.append(self.chosen(path[-1], candidates, {}))
        index, values = first_within(path, budget.goal, budget.measure)
        if budget.nearest and index and values[index - 1] - budget.goal < budget.goal - values[index]:
            return path[index - 1]
        return path[index]


def first_within(path: list[list[int]], goal: float, measure: Measure) -> tuple[int, dict[int, float]]:
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
