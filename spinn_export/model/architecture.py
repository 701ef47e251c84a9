"""A network's architecture: its graph, its width groups, and every cost figure, at its own widths or any others.

The one representation of a model's shape for every stage. `widths` are the prunable groups' widths in graph order
(for a plain MLP: its hidden layers'), and every figure (parameters, FLOPs, layer shapes) is counted from the graph
as a function of them, so a budget can be solved without building the candidate models.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from spinn_export.errors import UserError
from spinn_export.model.coupling import Axis, Contraction, packet
from spinn_export.model.graph import LINEAR, SHAPE_BATCH, Graph, Node, Ref, shapes
from spinn_export.model.groups import NO_LAYER, Analysis, Group, analyse, layer_nodes, weight_only
from spinn_export.model.rules import rule_of
from spinn_export.model.spec import ACTIVATIONS, FLOAT32_BYTES, SOURCES


@dataclass(frozen=True)
class Layer:
    """One `linear` node: its weight (and bias) names, and how many rows it multiplies per sample (1 for a plain
    (batch, features) input; T for T tokens)."""

    node: str
    weight: str
    bias: str | None
    rows_per_sample: int


@dataclass(frozen=True)
class Architecture:
    """`graph` with its tensors' shapes; `source` is one of SOURCES."""

    graph: Graph
    source: str = "spec"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown architecture source {self.source!r}")

    def validated(self) -> Architecture:
        """This architecture, once its graph has run on its tensors' shapes: a damaged file fails
        here, in one line, and not in the middle of a stage."""
        if self.shapes[self.graph.output][0] != SHAPE_BATCH or len(self.shapes[self.graph.output]) != 2:
            raise UserError(f"the graph's output has shape {self.shapes[self.graph.output]} for {SHAPE_BATCH} rows; "
                            "spinn-export needs one (batch, outputs) tensor")
        return self

    # ------------------------------------------------------------------ structure

    @cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return shapes(self.graph)

    @cached_property
    def _shapes_at_more_rows(self) -> dict[str, tuple[int, ...]]:
        """The shapes at two more rows: an axis whose length moves with them is a batch axis."""
        return shapes(self.graph, SHAPE_BATCH + 2)

    @cached_property
    def analysis(self) -> Analysis:
        return analyse(self.graph, self.shapes, self._shapes_at_more_rows)

    @cached_property
    def weight_only(self) -> frozenset[str]:
        """Stored tensors and the values computed from them alone (a layer's weight may be such a value)."""
        return frozenset(weight_only(self.graph))

    @property
    def groups(self) -> tuple[Group, ...]:
        return self.analysis.groups

    @property
    def prunable(self) -> tuple[Group, ...]:
        return self.analysis.prunable

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(g.width for g in self.prunable)

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.prunable)

    @property
    def in_features(self) -> int:
        return self.graph.in_features

    @property
    def out_features(self) -> int:
        return self.shapes[self.graph.output][-1]

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        """Every `linear` whose weight is a stored tensor or a value of stored tensors alone, in graph order."""
        found = []
        for node in layer_nodes(self.graph).values():
            weight, bias = node.arg(1), node.arg(2)
            x = self.shapes[node.args[0].name]
            rows = math.prod(x[1:-1]) if len(x) > 2 else 1
            found.append(Layer(node.name, weight.name, bias.name if isinstance(bias, Ref) else None, rows))
        return tuple(found)

    @property
    def activation(self) -> str | None:
        """The activation most layers are followed by (what a latency probe of one layer uses), if any."""
        counts = Counter(packet(n.op) for n in self.graph.nodes if packet(n.op) in ACTIVATIONS)
        return counts.most_common(1)[0][0] if counts else None

    @cached_property
    def is_chain(self) -> bool:
        """Linear, activation, ..., Linear with nothing else: a plain MLP."""
        nodes = self.graph.nodes
        return (len(nodes) % 2 == 1 and all(n.op == LINEAR for n in nodes[::2])
                and len({packet(n.op) for n in nodes[1::2]} - set(ACTIVATIONS)) == 0
                and len({packet(n.op) for n in nodes[1::2]}) <= 1
                and all(n.args[0] == Ref(prev.name) for prev, n in itertools.pairwise(nodes)))

    # ------------------------------------------------------------------ costs at any widths

    @cached_property
    def _axes(self) -> dict[Axis, tuple[int, list[tuple[int, int]]]]:
        """Per non-batch axis of every value: (fixed channels, [(prunable group index, channels per unit)]), so its
        length at any widths is fixed + the sum of width x channels."""
        prunable_index = {id(g): i for i, g in enumerate(self.prunable)}
        per_axis: dict[Axis, tuple[int, list[tuple[int, int]]]] = {}
        for group in self.groups:
            for axis, count in group.multiplicity:
                fixed, varying = per_axis.get(axis, (0, []))
                if group.prunable:
                    varying = [*varying, (prunable_index[id(group)], count)]
                else:
                    fixed += count * group.width
                per_axis[axis] = (fixed, varying)
        return per_axis

    @cached_property
    def _dims(self) -> list[tuple[str, list[tuple[int, list[tuple[int, int]]]]]]:
        """Per stored tensor and weight-only value, per dimension: its `_axes` entry."""
        names = [t.name for t in self.graph.tensors] + sorted(self.weight_only - set(self.graph.tensor_info))
        return [(name, [self._axes.get((name, d), (size, [])) for d, size in enumerate(self.shapes[name])])
                for name in names if name in self.shapes]

    def _per_sample_length(self, axis: Axis, widths: Sequence[int]) -> float:
        """An axis's length at `widths`; a batch axis counts what one row of input gives it (1, or T tokens)."""
        if axis in self._axes:
            fixed, varying = self._axes[axis]
            return fixed + sum(widths[g] * count for g, count in varying)
        value, dim = axis
        length = self.shapes[value][dim]
        return length / SHAPE_BATCH if self._shapes_at_more_rows[value][dim] != length else length

    @cached_property
    def contractions(self) -> tuple[tuple[Node, Contraction], ...]:
        """Every node that multiplies and accumulates per sample (its rule's `contraction`), layers or not: a
        product of two activations, or an einsum decomposed into `bmm` between views, costs FLOPs like a layer.
        Products of weights alone (low-rank factors) are computed once, not per sample."""
        found = []
        for node in self.graph.nodes:
            rule = rule_of(node.op)
            if rule is not None and rule.contraction is not None and node.outputs[0] not in self.weight_only:
                found.append((node, rule.contraction(node, self.shapes)))
        return tuple(found)

    def _check(self, widths: Sequence[int]) -> None:
        if len(widths) != len(self.widths):
            raise ValueError(f"{len(widths)} widths for {len(self.widths)} prunable groups")

    def weight_shapes_at(self, widths: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """The shape of every stored tensor and weight-only value at `widths`."""
        self._check(widths)
        return {name: tuple(fixed + sum(widths[g] * count for g, count in varying) for fixed, varying in dims)
                for name, dims in self._dims}

    def tensor_shapes_at(self, widths: Sequence[int]) -> dict[str, tuple[int, ...]]:
        found = self.weight_shapes_at(widths)
        return {t.name: found[t.name] for t in self.graph.tensors}

    def params_at(self, widths: Sequence[int]) -> int:
        """The stored tensors' elements, as the module holds them (a low-rank layer counts its factors)."""
        return sum(math.prod(shape) for shape in self.tensor_shapes_at(widths).values())

    def layer_shapes_at(self, widths: Sequence[int]) -> list[tuple[int, int]]:
        """(out, in) of every layer's weight, in graph order."""
        found = self.weight_shapes_at(widths)
        return [tuple(found[layer.weight]) for layer in self.layers]  # type: ignore[misc]

    def _multiply_accumulates(self, widths: Sequence[int]) -> list[tuple[float, float, bool]]:
        """Per contraction at `widths`, per sample: (output elements, summed length, bias add)."""
        self._check(widths)
        found = []
        for node, contraction in self.contractions:
            out = node.outputs[0]
            elements = math.prod(self._per_sample_length((out, d), widths) for d in range(len(self.shapes[out])))
            summed = math.prod(self._per_sample_length(axis, widths) for axis in contraction.summed)
            found.append((elements, summed, contraction.bias))
        return found

    def flops_at(self, widths: Sequence[int]) -> int:
        """Two FLOPs per multiply-accumulate plus one per bias add, per sample, of every contraction (activations
        not counted)."""
        return round(sum(elements * (2 * summed + bias)
                         for elements, summed, bias in self._multiply_accumulates(widths)))

    def cost_at(self, widths: Sequence[int], kind: str) -> int:
        """What a budget counts: FLOPs per sample (`flops`), else parameters."""
        return self.flops_at(widths) if kind == "flops" else self.params_at(widths)

    def unit_costs(self, widths: Sequence[int] | None = None) -> tuple[int, ...]:
        """Parameters one unit of each prunable group takes with it, at `widths` (default: its own)."""
        widths = list(self.widths if widths is None else widths)
        full = self.params_at(widths)
        return tuple(full - self.params_at([w - (i == g) for i, w in enumerate(widths)]) for g in range(len(widths)))

    def with_widths(self, widths: Sequence[int]) -> Architecture:
        """The same graph with its tensors resized to `widths` (no values: for costs and random models)."""
        resized = self.tensor_shapes_at(widths)
        return Architecture(self.graph.with_tensors(dataclasses.replace(t, shape=resized[t.name])
                                                    for t in self.graph.tensors), self.source)

    @property
    def params(self) -> int:
        """Every stored tensor element, trainable or fixed (a fixed Fourier matrix is weights the model carries)."""
        return sum(math.prod(t.shape) for t in self.graph.tensors)

    @property
    def flops_per_sample(self) -> int:
        return self.flops_at(self.widths)

    @property
    def macs_per_sample(self) -> int:
        return round(sum(elements * summed for elements, summed, _ in self._multiply_accumulates(self.widths)))

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        return self.layer_shapes_at(self.widths)

    @property
    def weight_bytes(self) -> int:
        return self.params * FLOAT32_BYTES

    # ------------------------------------------------------------------ description

    def describe(self) -> str:
        """`18 -> 512 -> 512 -> 512 -> 256 -> 2 (tanh, 666,882 parameters)` for a plain MLP; the groups otherwise."""
        if self.is_chain:
            dims = (self.in_features, *self.widths, self.out_features)
            return f"{' -> '.join(map(str, dims))} ({self.activation or 'linear'}, {self.params:,} parameters)"
        frozen = self.frozen_reasons()
        groups = ", ".join(f"{g.name}={g.width}" for g in self.prunable) or "none"
        return (f"{self.in_features} -> {self.out_features}, {len(self.layers)} layers, prunable groups {groups}"
                f"{f', {len(frozen)} frozen' if frozen else ''} ({self.params:,} parameters)")

    def frozen_reasons(self) -> list[str]:
        """Why each frozen group may not be pruned, one line each; the input's and the output's own features (never
        pruned, by definition) and width-1 broadcast operands are left out."""
        return [f"{g.name} ({g.width} wide): {g.frozen}" for g in self.groups
                if g.frozen and not g.frozen.startswith(("the model's input", "the model's output", "broadcast"))
                and not (g.frozen == NO_LAYER and g.width == 1)]

    def to_dict(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "widths": list(self.widths),
                "groups": [g.to_dict() for g in self.groups], "params": self.params,
                "flops_per_sample": self.flops_per_sample, "source": self.source}

    def summary(self) -> dict[str, Any]:
        """The architecture and every figure derived from it, as `info --json` prints it."""
        return {**self.to_dict(), "macs_per_sample": self.macs_per_sample, "weight_bytes": self.weight_bytes,
                "activation": self.activation}

    def require_prunable(self, label: str) -> None:
        """A one-line error naming what froze every group, where nothing may be pruned."""
        if not self.prunable:
            reasons = "; ".join(self.frozen_reasons()) or "every feature is the model's input or output"
            raise UserError(f"{label}: no width of this network can be pruned soundly ({reasons})")
