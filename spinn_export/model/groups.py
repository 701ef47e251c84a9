"""Width groups: which features of a graph must be removed together, and which may not be removed at all.

Every tensor's last dimension (its features), and every dimension of a weight a layer reads, is an axis; every
channel of every axis is a node of a union-find. Operations couple channels:

* `linear(x, W, b)`: x's feature c with W's column c, the output's feature r with W's row r and b's entry r;
* element-wise operations (activations, `add`, `sub`, `mul`, `div`, ...): each operand's feature c with the
  output's feature c, where the operand has the output's width (a per-neuron parameter is sliced with its group);
  an operand of width 1 is broadcast and stays whole;
* `cat` on the features: input i's feature c with the output's feature offset_i + c (a Fourier embedding's cos
  and sin of one frequency become one unit).

A connected set of channels is a unit: removing a neuron removes exactly one unit. Units with the same number of
channels in every axis are interchangeable and form a group, whose width is its number of units. It is sound by
construction because the analysis fails closed: the model's input and output features, every axis an operation
outside the lists above touches (a reshape, a reduction, LayerNorm, attention, ...) and every broadcast operand are
frozen, with the operation named, and so is every unit coupled to them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinn_export.model.graph import LINEAR, Graph, Node, Ref

Axis = tuple[str, int]  # (value name, dimension)

CAT = "aten.cat.default"
POINTWISE = frozenset({
    "tanh", "sigmoid", "relu", "gelu", "silu", "sin", "cos", "exp", "expm1", "log", "log1p", "neg", "abs", "sqrt",
    "rsqrt", "reciprocal", "square", "softplus", "elu", "selu", "celu", "leaky_relu", "hardtanh", "hardsigmoid",
    "hardswish", "mish", "erf", "sign", "clamp", "clamp_min", "clamp_max", "relu6", "sinh", "cosh", "asinh", "atan",
    "tan", "pow", "dropout", "alias", "clone", "detach", "_to_copy", "to", "lift_fresh_copy", "contiguous",
    "add", "sub", "mul", "div", "rsub", "maximum", "minimum", "fmod", "remainder", "atan2", "where", "addcmul",
    "addcdiv", "lerp", "logaddexp", "hypot",
})
SIZE_OPS = frozenset({"sym_size"})  # read a size; only the batch size (dimension 0) leaves the features alone
REASONS = {
    "layer_norm": "normalises across the features", "native_layer_norm": "normalises across the features",
    "group_norm": "normalises across the features", "batch_norm": "normalises with statistics per feature",
    "_native_batch_norm_legit_no_training": "normalises with statistics per feature",
    "view": "reshapes the features", "reshape": "reshapes the features", "unflatten": "reshapes the features",
    "flatten": "reshapes the features", "sum": "reduces over the features", "mean": "reduces over the features",
    "amax": "reduces over the features", "softmax": "mixes the features", "_softmax": "mixes the features",
    "matmul": "multiplies two activations", "bmm": "multiplies two activations",
    "scaled_dot_product_attention": "mixes the features", "slice": "slices the features",
    "select": "selects a feature", "split": "splits the features", "transpose": "transposes the features",
    "permute": "permutes the features", "unsqueeze": "adds a dimension beside the features",
}


def packet(op: str) -> str:
    """`aten.add.Tensor` -> `add`."""
    return op.split(".")[1] if op.startswith("aten.") else op


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
    channels on the group's first axis), and the fixed channels (frozen groups' and broadcast ones) per axis."""

    groups: tuple[Group, ...]
    channels: list[dict[Axis, np.ndarray]]  # per group: axis -> (width, multiplicity) channel indices
    lengths: dict[Axis, int] = field(default_factory=dict)

    @property
    def prunable(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.prunable)


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class _Builder:
    def __init__(self, graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.graph, self.shapes = graph, shapes
        self.offsets: dict[Axis, int] = {}
        self.total = 0
        self.pairs: list[tuple[Axis, int, Axis, int, int]] = []  # (axis a, offset a, axis b, offset b, count)
        self.frozen: dict[Axis, str] = {}
        self.linear_out: list[tuple[Axis, str]] = []  # output axes of layers, with the layer's weight name
        self.members: dict[Axis, str] = {}

    def axis(self, name: str, dim: int = -1) -> Axis | None:
        shape = self.shapes.get(name)
        if shape is None or not shape:
            return None
        key = (name, dim % len(shape))
        if key not in self.offsets:
            self.offsets[key] = self.total
            self.total += shape[key[1]]
        return key

    def length(self, axis: Axis) -> int:
        return self.shapes[axis[0]][axis[1]]

    def couple(self, a: Axis | None, b: Axis | None, offset_b: int = 0) -> None:
        if a is not None and b is not None:
            self.pairs.append((a, 0, b, offset_b, self.length(a)))

    def freeze(self, axis: Axis | None, reason: str) -> None:
        if axis is not None:
            self.frozen.setdefault(axis, reason)

    def freeze_all(self, name: str, reason: str) -> None:
        shape = self.shapes.get(name, ())
        if name in self.graph.tensor_info:
            for dim in range(len(shape)):
                self.freeze(self.axis(name, dim), reason)
        else:
            self.freeze(self.axis(name), reason)


def _tensor_refs(values: Any) -> list[str]:
    found: list[str] = []
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, Ref):
            found.append(value.name)
        elif isinstance(value, (tuple, list)):
            stack.extend(reversed(value))
    return found


def analyse(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> Analysis:
    """The groups of `graph` (shapes as `graph.shapes` gives them)."""
    b = _Builder(graph, shapes)
    tensors = graph.tensor_info
    b.freeze(b.axis(graph.input), "the model's input features")
    for node in graph.nodes:
        _couple(b, node, tensors)
    b.freeze(b.axis(graph.output), "the model's outputs")
    return _components(b)


def _couple(b: _Builder, node: Node, tensors: Mapping[str, Any]) -> None:
    name = packet(node.op)
    outputs = [o for o in node.outputs if len(b.shapes.get(o, ())) >= 1]
    refs = [r for r in _tensor_refs((node.args, tuple(v for _, v in node.kwargs))) if len(b.shapes.get(r, ())) >= 1]
    if node.op == LINEAR and _is_layer(node, tensors, b.shapes):
        x, weight, bias = node.args[0].name, node.args[1].name, node.arg(2)
        b.couple(b.axis(x), b.axis(weight, 1))
        b.couple(b.axis(node.outputs[0]), b.axis(weight, 0))
        if isinstance(bias, Ref):
            b.couple(b.axis(bias.name, 0), b.axis(weight, 0))
            b.members[(bias.name, 0)] = f"{bias.name} (bias)"
        b.linear_out.append(((weight, 0), weight))
        b.members.setdefault((weight, 0), f"{weight} (rows)")
        b.members.setdefault((weight, 1), f"{weight} (columns)")
        return
    if name in POINTWISE and len(outputs) == 1:
        out = outputs[0]
        width = b.shapes[out][-1]
        for ref in refs:
            axis = b.axis(ref)
            if b.shapes[ref][-1] == width:
                b.couple(axis, b.axis(out))
                if ref in tensors:
                    b.members.setdefault(axis, f"{ref} (per feature)")  # type: ignore[arg-type]
            else:
                b.freeze(axis, f"broadcast along the features by {name} at node {node.name!r}")
        return
    if node.op == CAT and len(outputs) == 1 and isinstance(node.args[0], tuple):
        out = outputs[0]
        rank = len(b.shapes[out])
        dim = int(node.arg(1) or 0) % rank
        offset = 0
        for ref in _tensor_refs(node.args[0]):
            if dim == rank - 1:
                b.couple(b.axis(ref), b.axis(out), offset)
                offset += b.shapes[ref][-1]
            else:
                b.couple(b.axis(ref), b.axis(out))
        return
    if name in SIZE_OPS and node.arg(1) == 0:
        return
    reason = f"{name} at node {node.name!r} " + REASONS.get(name, "is not an operation spinn-export can prove "
                                                                   "works feature by feature")
    for ref in refs + outputs:
        b.freeze_all(ref, reason)


def _is_layer(node: Node, tensors: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """linear(x, W, b) with W a stored 2-D weight and b absent or a stored vector: a layer, not a product of two
    activations."""
    weight, bias = node.arg(1), node.arg(2)
    return (isinstance(node.args[0], Ref) and isinstance(weight, Ref) and weight.name in tensors
            and len(shapes[weight.name]) == 2 and not node.kwargs
            and (bias is None or (isinstance(bias, Ref) and bias.name in tensors and len(shapes[bias.name]) == 1)))


def _components(b: _Builder) -> Analysis:
    forest = _UnionFind(b.total)
    for axis_a, off_a, axis_b, off_b, count in b.pairs:
        start_a, start_b = b.offsets[axis_a] + off_a, b.offsets[axis_b] + off_b
        for i in range(count):
            forest.union(start_a + i, start_b + i)
    roots = np.array([forest.find(i) for i in range(b.total)], dtype=np.int64)
    axes = sorted(b.offsets, key=b.offsets.__getitem__)
    frozen_reason: dict[int, str] = {}
    for axis, reason in b.frozen.items():
        start = b.offsets[axis]
        for root in roots[start:start + b.length(axis)]:
            frozen_reason.setdefault(int(root), reason)
    # per unit: axis -> channel indices
    unit_channels: dict[int, dict[Axis, list[int]]] = {}
    for axis in axes:
        start = b.offsets[axis]
        for channel, root in enumerate(roots[start:start + b.length(axis)]):
            unit_channels.setdefault(int(root), {}).setdefault(axis, []).append(channel)
    by_signature: dict[tuple[Any, ...], list[int]] = {}
    for root, per_axis in unit_channels.items():
        signature = tuple(sorted((axis, len(chs)) for axis, chs in per_axis.items()))
        by_signature.setdefault((frozen_reason.get(root), signature), []).append(root)
    order = {axis: index for index, axis in enumerate(axes)}
    groups = []
    for (frozen, signature), units in by_signature.items():
        first = min((axis for axis, _ in signature), key=order.__getitem__)
        units.sort(key=lambda r: unit_channels[r][first][0])
        per_axis = {axis: np.array([unit_channels[r][axis] for r in units], dtype=np.int64) for axis, _ in signature}
        layers = [weight for axis, weight in b.linear_out if axis in per_axis]
        reason = "no layer computes these features" if frozen is None and not layers else frozen
        name = layers[0].rpartition(".")[0] or layers[0] if layers else f"{first[0]}"
        members = tuple(dict.fromkeys(b.members[axis] for axis, _ in signature if axis in b.members))
        groups.append((order[first], Group(name, len(units), reason, signature, members), per_axis))
    groups.sort(key=lambda item: item[0])
    names: dict[str, int] = {}
    final = []
    for _, group, _ in groups:
        count = names[group.name] = names.get(group.name, 0) + 1
        final.append(group if count == 1 else Group(f"{group.name}#{count}", group.width, group.frozen,
                                                    group.multiplicity, group.members))
    lengths = {axis: b.length(axis) for axis in axes}
    return Analysis(tuple(final), [per_axis for _, _, per_axis in groups], lengths)
