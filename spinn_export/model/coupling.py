"""What a channel-coupling rule is and what it sees: the vocabulary `model.rules` and `model.layout` share.

A rule reads one node and tells the analysis (`groups.Coupler`) which channels of which axes must be removed
together, which axes may not be pruned at all, and, for ops whose arguments name sizes, how to rewrite those arguments
once channels are removed.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from spinn_export.model.graph import Node, Ref

Axis = tuple[str, int]  # (value name, dimension)
Shapes = Mapping[str, tuple[int, ...]]  # every value's shape, by name


class Coupler(Protocol):
    """What a rule may ask and record (`groups.Coupler` implements it)."""

    def shape(self, name: str) -> tuple[int, ...] | None: ...
    def rank(self, name: str) -> int: ...
    def is_batch(self, axis: Axis) -> bool: ...
    def couple(self, a: Axis, b: Axis, offset_b: int = 0) -> None: ...
    def freeze(self, axis: Axis, reason: str) -> None: ...
    def freeze_value(self, name: str, reason: str) -> None: ...
    def freeze_node(self, node: Node, reason: str) -> None: ...

UNBOUNDED = 1 << 62  # torch.export writes an open slice end as sys.maxsize
Kept = Callable[[str, int], "Sequence[int]"]  # (value name, dim) -> its kept channels, by original index


@dataclass(frozen=True)
class Contraction:
    """What a multiply-accumulate op does for each element of its output: a sum over `summed` (operand axes, whose
    lengths multiply), and a bias add where `bias`. Its FLOPs are the output's elements x (2 x the summed length +
    the bias add), at any widths, because the axes' lengths are the groups'."""

    summed: tuple[Axis, ...]
    bias: bool = False


@dataclass(frozen=True)
class Rule:
    """`couple(coupler, node)` records the node's channel couplings; `resize(node, kept)` rewrites a node's size
    arguments for the pruned lengths (None: the op reads no sizes); `contraction(node, shapes)` is what the op
    multiplies and accumulates (None: an op whose cost is not counted, as activations are not)."""

    couple: Callable[[Coupler, Node], None]
    resize: Callable[[Node, Kept], Node] | None = None
    contraction: Callable[[Node, Shapes], Contraction] | None = None


def packet(op: str) -> str:
    """`aten.add.Tensor` -> `add`."""
    return op.split(".")[1] if op.startswith("aten.") else op


def tensor_args(node: Node) -> list[str]:
    found: list[str] = []
    stack: list[Any] = [list(node.args), [v for _, v in node.kwargs]]
    while stack:
        value = stack.pop()
        if isinstance(value, Ref):
            found.append(value.name)
        elif isinstance(value, (tuple, list)):
            stack.extend(reversed(value))
    return found


def dim_of(value: Any, rank: int, default: int = 0) -> int:
    return (default if value is None else int(value)) % max(rank, 1)
