"""Width groups: which channels of a graph must be removed together, and which may not be removed at all.

Every dimension of every tensor and value is an axis (but the batch dimension, told apart by running the graph at
two batch sizes), and every channel of every axis is a node of a union-find. Each operation couples channels by its
rule (`model.rules`: one rule per ATen op; a layer couples its input's features with its weight's columns, an
element-wise op its operands' channels with its output's on every axis, a concatenation or split by offsets, ...).

A connected set of channels is a unit: removing a neuron removes exactly one unit, zeroing it everywhere. Units with
the same number of channels on every axis are interchangeable and form a group, whose width is its number of units.
It is sound by construction because the analysis fails closed: the model's input and output features, every axis an
op without a rule touches, and every axis a rule freezes (a mean or a softmax over the features, a reshape that mixes
them, ...) are frozen with the op named, and so is every unit coupled to them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinn_export.model.coupling import Axis, packet, tensor_args
from spinn_export.model.graph import LINEAR, Graph, Node, Ref
from spinn_export.model.rules import rule_of

REASONS = {
    "layer_norm": "normalises across the features", "native_layer_norm": "normalises across the features",
    "group_norm": "normalises across the features", "native_group_norm": "normalises across the features",
    "index_select": "selects features by index", "index": "indexes the features", "gather": "gathers features",
    "select": "selects a feature", "scaled_dot_product_attention": "mixes the features",
    "repeat": "repeats the features", "roll": "rolls the features", "flip": "reverses the features",
}
NO_LAYER = "no weight matrix holds these channels (a fixed input embedding): kept whole"


@dataclass(frozen=True)
class Group:
    """A set of interchangeable units: `width` of them, `multiplicity` channels each per axis. `frozen` says why
    it may not be pruned (None: it may). `name` is the first layer whose outputs it holds."""

    name: str
    width: int
    frozen: str | None
    multiplicity: tuple[tuple[Axis, int], ...]
    members: tuple[str, ...]

    @property
    def prunable(self) -> bool:
        return self.frozen is None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "frozen": self.frozen, "members": list(self.members)}


@dataclass
class Analysis:
    """Every group, and for each group the channel indices of each unit on each axis (unit order: the order of the
    channels on the group's first axis); `lengths` is every axis's length."""

    groups: tuple[Group, ...]
    channels: list[dict[Axis, np.ndarray]]  # per group: axis -> (width, multiplicity) channel indices
    lengths: dict[Axis, int] = field(default_factory=dict)

    @property
    def prunable(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.prunable)


def weight_only(graph: Graph) -> set[str]:
    """The stored tensors and every value computed from them alone (a transposed, normalised or factored weight):
    what a layer may multiply by and still be a layer."""
    found = {t.name for t in graph.tensors}
    for node in graph.nodes:
        refs = node.refs()
        if refs and node.op.startswith("aten.") and all(r in found for r in refs):
            found.update(node.outputs)
    return found


def layer_nodes(graph: Graph) -> dict[str, Node]:
    """`linear(x, W[, b])` with W (and b) weights or values of weights alone, and x an activation: the layers."""
    weights = weight_only(graph)
    found = {}
    for node in graph.nodes:
        x, weight, bias = node.arg(0), node.arg(1), node.arg(2)
        if (node.op == LINEAR and isinstance(x, Ref) and x.name not in weights and isinstance(weight, Ref)
                and weight.name in weights and (bias is None or (isinstance(bias, Ref) and bias.name in weights))):
            found[node.name] = node
    return found


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = np.arange(size, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = int(parent[root])
        while parent[a] != root:
            parent[a], a = root, int(parent[a])
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class Coupler:
    """What a rule sees: the shapes (at two batch sizes, to tell the batch dimension apart) and the couplings and
    freezes it records."""

    def __init__(self, graph: Graph, shapes: Mapping[str, tuple[int, ...]],
                 other_batch: Mapping[str, tuple[int, ...]]) -> None:
        self.graph, self.shapes, self.other_batch = graph, shapes, other_batch
        self.offsets: dict[Axis, int] = {}
        self.total = 0
        self.pairs: list[tuple[Axis, Axis, int, int]] = []  # (axis a, axis b, offset in b, count)
        self.frozen: dict[Axis, str] = {}

    def shape(self, name: str) -> tuple[int, ...] | None:
        shape = self.shapes.get(name)
        return None if shape is None else tuple(shape)

    def rank(self, name: str) -> int:
        shape = self.shapes.get(name)
        return 0 if shape is None else len(shape)

    def is_batch(self, axis: Axis) -> bool:
        name, dim = axis
        other = self.other_batch.get(name)
        return other is not None and dim < len(other) and other[dim] != self.shapes[name][dim]

    def axis(self, name: str, dim: int) -> Axis | None:
        shape = self.shapes.get(name)
        if shape is None or not shape or not -len(shape) <= dim < len(shape):
            return None
        key = (name, dim % len(shape))
        if self.is_batch(key):
            return None  # the batch is never pruned
        if key not in self.offsets:
            self.offsets[key] = self.total
            self.total += shape[key[1]]
        return key

    def length(self, axis: Axis) -> int:
        return self.shapes[axis[0]][axis[1]]

    def couple(self, a: Axis, b: Axis, offset_b: int = 0) -> None:
        """a's channel i is b's channel offset_b + i, for every channel of a."""
        batch_a = self.shape(a[0]) is not None and self.is_batch((a[0], a[1] % max(self.rank(a[0]), 1)))
        batch_b = self.shape(b[0]) is not None and self.is_batch((b[0], b[1] % max(self.rank(b[0]), 1)))
        if batch_a or batch_b:
            if batch_a != batch_b:  # a batch dimension met a fixed one: neither can be reasoned about
                for axis in (a, b):
                    self.freeze(axis, "meets the batch dimension")
            return
        key_a, key_b = self.axis(*a), self.axis(*b)
        if key_a is None or key_b is None:
            return
        count = self.length(key_a)
        if offset_b < 0 or offset_b + count > self.length(key_b):
            self.freeze(key_a, "is coupled out of range")
            self.freeze(key_b, "is coupled out of range")
            return
        self.pairs.append((key_a, key_b, offset_b, count))

    def freeze(self, axis: Axis, reason: str) -> None:
        key = self.axis(*axis)
        if key is not None:
            self.frozen.setdefault(key, reason)

    def freeze_value(self, name: str, reason: str) -> None:
        for dim in range(self.rank(name)):
            self.freeze((name, dim), reason)

    def freeze_node(self, node: Node, reason: str) -> None:
        what = f"{packet(node.op)} at node {node.name!r} {reason}"
        for name in [*tensor_args(node), *node.outputs]:
            self.freeze_value(name, what)


def analyse(graph: Graph, shapes: Mapping[str, tuple[int, ...]],
            other_batch: Mapping[str, tuple[int, ...]] | None = None) -> Analysis:
    """The groups of `graph` (shapes as `graph.shapes` gives them; `other_batch`: the same at another batch size)."""
    c = Coupler(graph, shapes, other_batch if other_batch is not None else {})
    c.freeze_value(graph.input, "the model's input features")
    for node in graph.nodes:
        names = [*tensor_args(node), *node.outputs]
        if not any(c.rank(name) for name in names):
            continue  # integer arithmetic on sizes
        rule = rule_of(node.op)
        if rule is None:
            c.freeze_node(node, REASONS.get(packet(node.op), "is not an operation spinn-export can prove works "
                                                              "feature by feature"))
            continue
        try:
            rule.couple(c, node)
        except (IndexError, TypeError, ValueError, AttributeError, KeyError):  # arguments the rule does not read
            c.freeze_node(node, "has arguments spinn-export does not read")
    c.freeze_value(graph.output, "the model's outputs")
    return _components(c, graph)


def _components(c: Coupler, graph: Graph) -> Analysis:
    forest = _UnionFind(c.total)
    for axis_a, axis_b, offset_b, count in c.pairs:
        start_a, start_b = c.offsets[axis_a], c.offsets[axis_b] + offset_b
        for i in range(count):
            forest.union(start_a + i, start_b + i)
    roots = np.array([forest.find(i) for i in range(c.total)], dtype=np.int64)
    axes = sorted(c.offsets, key=c.offsets.__getitem__)
    frozen_reason: dict[int, str] = {}
    for axis, reason in c.frozen.items():
        start = c.offsets[axis]
        for root in roots[start:start + c.length(axis)]:
            frozen_reason.setdefault(int(root), reason)
    unit_channels: dict[int, dict[Axis, list[int]]] = {}
    for axis in axes:
        start = c.offsets[axis]
        for channel, root in enumerate(roots[start:start + c.length(axis)]):
            unit_channels.setdefault(int(root), {}).setdefault(axis, []).append(channel)
    by_signature: dict[tuple[Any, ...], list[int]] = {}
    for root, per_axis in unit_channels.items():
        signature = tuple(sorted((axis, len(chs)) for axis, chs in per_axis.items()))
        by_signature.setdefault((frozen_reason.get(root), signature), []).append(root)
    order = {axis: index for index, axis in enumerate(axes)}
    layers = layer_nodes(graph)
    layer_rows = [((node.args[1].name, 0), _stored_source(graph, node.args[1].name)) for node in layers.values()]
    members = _members(graph, layers)
    stored = graph.tensor_info
    groups = []
    for (frozen, signature), units in by_signature.items():
        first = min((axis for axis, _ in signature), key=order.__getitem__)
        units.sort(key=lambda r: unit_channels[r][first][0])
        per_axis = {axis: np.array([unit_channels[r][axis] for r in units], dtype=np.int64) for axis, _ in signature}
        owners = [weight for axis, weight in layer_rows if axis in per_axis]
        weighed = owners or any(len(stored[axis[0]].shape) >= 2 for axis in per_axis if axis[0] in stored)
        reason = NO_LAYER if frozen is None and not weighed else frozen
        name = _layer_name(owners[0]) if owners else first[0]
        names = tuple(dict.fromkeys(members[axis] for axis, _ in signature if axis in members))
        groups.append((order[first], Group(name, len(units), reason, signature, names), per_axis))
    groups.sort(key=lambda item: item[0])
    seen: dict[str, int] = {}
    final = []
    for _, group, _ in groups:
        count = seen[group.name] = seen.get(group.name, 0) + 1
        final.append(group if count == 1 else Group(f"{group.name}#{count}", group.width, group.frozen,
                                                    group.multiplicity, group.members))
    lengths = {axis: c.length(axis) for axis in axes}
    return Analysis(tuple(final), [per_axis for _, _, per_axis in groups], lengths)


def _layer_name(weight: str) -> str:
    """`first` for `first.weight` and for a parametrised `first.parametrizations.weight.original1`."""
    owner = weight.partition(".parametrizations.")[0] if ".parametrizations." in weight else weight.rpartition(".")[0]
    return owner or weight


def _stored_source(graph: Graph, name: str) -> str:
    """The first stored tensor a weight-only value is computed from (`B` for `2 pi B`, `U` for `U @ V`)."""
    producers = graph.producers()
    stored = graph.tensor_info
    while name not in stored and name in producers:
        refs = producers[name].refs()
        if not refs:
            break
        name = refs[0]
    return name


def _members(graph: Graph, layers: Mapping[str, Node]) -> dict[Axis, str]:
    """What each stored tensor's axis is, in words, for the report."""
    found: dict[Axis, str] = {}
    stored = graph.tensor_info
    for node in layers.values():
        weight, bias = node.args[1].name, node.arg(2)
        if weight in stored:
            found.setdefault((weight, 0), f"{weight} (rows)")
            found.setdefault((weight, 1), f"{weight} (columns)")
        if isinstance(bias, Ref) and bias.name in stored:
            found.setdefault((bias.name, 0), f"{bias.name} (bias)")
    for info in graph.tensors:
        for dim in range(len(info.shape)):
            found.setdefault((info.name, dim), f"{info.name} (per feature)" if len(info.shape) == 1
                             else f"{info.name} (dim {dim})")
    return found
