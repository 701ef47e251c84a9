"""Channel-coupling rules for the ops that move channels between axes or name sizes: transposes, reshapes,
concatenation, splits and slices (registered in `model.rules`' table)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from spinn_export.model.coupling import UNBOUNDED, Coupler, Kept, packet, tensor_args
from spinn_export.model.coupling import dim_of as _dim
from spinn_export.model.graph import Node


def _permutation(node: Node, rank: int) -> list[int]:
    name = packet(node.op)
    if name in ("t", "numpy_T"):
        return list(range(rank))[::-1] if rank == 2 else list(range(rank))
    if name == "transpose":
        order = list(range(rank))
        a, b = _dim(node.arg(1), rank), _dim(node.arg(2), rank)
        order[a], order[b] = order[b], order[a]
        return order
    return [_dim(d, rank) for d in node.arg(1)]  # permute: output dim i is input dim order[i]


def permute(c: Coupler, node: Node) -> None:
    source, out = node.args[0].name, node.outputs[0]
    for out_dim, in_dim in enumerate(_permutation(node, c.rank(source))):
        c.couple((source, in_dim), (out, out_dim))


def _non_unit(shape: Sequence[int]) -> list[int]:
    return [dim for dim, size in enumerate(shape) if size != 1]


def reshape(c: Coupler, node: Node) -> None:
    """A reshape that only adds or drops dimensions of length 1 maps each dimension onto one; any other reshape
    mixes channels across axes and freezes them."""
    source, out = node.args[0].name, node.outputs[0]
    a, b = _non_unit(c.shape(source)), _non_unit(c.shape(out))
    same = (len(a) == len(b) and all(c.shape(source)[i] == c.shape(out)[j] and c.is_batch((source, i)) ==
                                     c.is_batch((out, j)) for i, j in zip(a, b)))
    if not same:
        c.freeze_node(node, "reshapes the features")
        return
    for i, j in zip(a, b):
        c.couple((source, i), (out, j))


def resize_sizes(node: Node, kept: Kept) -> Node:
    """view/reshape/expand: each literal size of a pruned output dimension becomes its pruned length."""
    out, sizes = node.outputs[0], node.arg(1)
    if not isinstance(sizes, tuple):
        return node
    new = tuple(len(kept(out, dim)) if isinstance(size, int) and size > 0 else size
                for dim, size in enumerate(sizes))
    return replace(node, args=(node.args[0], new, *node.args[2:]))


def concatenate(c: Coupler, node: Node) -> None:
    """Along a channel axis, input i's channel k is the output's channel offset_i + k; along any other, the
    operands' axes are the output's."""
    out = node.outputs[0]
    rank = c.rank(out)
    dim = _dim(node.arg(1), rank)
    offset = 0
    for ref in tensor_args(node):
        if c.shape(ref) is None or c.rank(ref) != rank:
            c.freeze_node(node, "concatenates tensors of different ranks")
            return
        for d in range(rank):
            if d != dim:
                c.couple((ref, d), (out, d))
        c.couple((ref, dim), (out, dim), offset)
        offset += c.shape(ref)[dim]


def split(c: Coupler, node: Node) -> None:
    """Output i holds the input's channels offset_i ... offset_i + size_i - 1 on the split axis (GLU-style halves
    pair up through whatever combines them); every other axis is shared."""
    source = node.args[0].name
    rank = c.rank(source)
    dim = _dim(node.arg(2), rank)
    offset = 0
    for out in node.outputs:
        if c.shape(out) is None:
            continue
        for d in range(rank):
            c.couple((out, d), (source, d), offset if d == dim else 0)
        offset += c.shape(out)[dim]


def resize_split(node: Node, kept: Kept) -> Node:
    """A split's sizes become the pruned lengths of its outputs (equal chunks may become unequal ones)."""
    dim = 0 if node.arg(2) is None else int(node.arg(2))
    sizes = tuple(len(kept(out, dim)) for out in node.outputs)
    return replace(node, op="aten.split_with_sizes.default", args=(node.args[0], sizes, dim))


def slicing(c: Coupler, node: Node) -> None:
    """`x[..., start:end]` with step 1: the output's channel k is the input's start + k. A channel axis sliced with
    a stride or from the end is frozen."""
    source, out = node.args[0].name, node.outputs[0]
    rank = c.rank(source)
    dim = _dim(node.arg(1), rank)
    start, end, step = node.arg(2), node.arg(3), node.arg(4) if node.arg(4) is not None else 1
    for d in range(rank):
        if d != dim:
            c.couple((source, d), (out, d))
    if c.is_batch((source, dim)):
        return
    start = 0 if start is None else start
    end = UNBOUNDED if end is None else end
    if step != 1 or not isinstance(start, int) or not isinstance(end, int) or start < 0 or end < 0:
        c.freeze_node(node, "slices the features with a stride or from the end")
        return
    c.couple((out, dim), (source, dim), min(start, c.shape(source)[dim]))


def resize_slice(node: Node, kept: Kept) -> Node:
    """A slice's bounds count the kept channels before them (the rule froze negative bounds and strides)."""
    source = node.args[0].name
    dim = int(node.arg(1) or 0)
    channels = list(kept(source, dim))
    start, end = node.arg(2) or 0, node.arg(3)
    if not isinstance(start, int):
        return node
    new_start = sum(1 for ch in channels if ch < start)
    new_end = sum(1 for ch in channels if ch < end) if isinstance(end, int) and end < UNBOUNDED else end
    return replace(node, args=(node.args[0], node.args[1], new_start, new_end, *node.args[4:]))


def sym_size(c: Coupler, node: Node) -> None:
    source = node.args[0].name
    dim = _dim(node.arg(1), c.rank(source))
    if not c.is_batch((source, dim)):
        c.freeze((source, dim), f"sym_size at node {node.name!r} reads the number of features")


def squeeze_unsqueeze(c: Coupler, node: Node) -> None:
    reshape(c, node)
