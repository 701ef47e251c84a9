"""Remove units from any graph, fold what can be folded, and prove the result before anyone uses it.

`shrink` keeps the given units of every prunable group: each tensor is sliced along every axis of a group, and every
size an op names (`view`, `split`, `slice`) is rewritten, so every layer becomes a smaller dense matrix and the
user's tensors stay the user's (factors stay factors, a tied weight stays one tensor). A removed unit is zero
everywhere (`model.rules`); where the unit's value reaches the rest of the network only through layers, the value it
would have had is folded into those layers' biases instead (`foldable`):

* `bias`: its value when its own layer's inputs are zero (the activation of its bias, for a plain MLP),
* `mean`: its mean value on calibration inputs (the best constant in least squares),
* `none`: zero.

Groups are processed in graph order, so a unit's constant is taken in the network whose earlier removals are
already in place.

The proof (`prove`, on every prune): the pruned network must compute, column by column at each column's own scale,
what the original computes with the removed channels zeroed in every tensor and value and the folded constants
added where they were folded, on the user's own rows and random rows over their range (`model.probe`), in float64.
The reference is the original graph run by the interpreter, independent of the slicing.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.architecture import Architecture
from spinn_export.model.coupling import packet
from spinn_export.model.graph import Graph, Node, Ref, TensorInfo, build_module, fresh_name, run
from spinn_export.model.groups import Axis, layer_nodes
from spinn_export.model.network import Network
from spinn_export.model.probe import disagreement, probe_rows
from spinn_export.model.rules import POINTWISE, resized

FOLDS = ("mean", "bias", "none")


class ProofError(UserError):
    """The pruned network does not compute what the original does with the removed units zeroed (a bug: nothing
    is saved)."""


@dataclass
class Removal:
    """What one prune removes: per tensor and value, a mask per dimension (True: removed), the kept channels per
    axis, and what each folded layer adds to its output (at its original width)."""

    removed: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    keep: dict[Axis, torch.Tensor] = field(default_factory=dict)
    added: dict[str, torch.Tensor] = field(default_factory=dict)  # layer output -> constant contribution
    folded: tuple[str, ...] = ()

    def zeroed(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: _zero(value, self.removed.get(name)) for name, value in tensors.items()}

    def after(self, name: str, value: Any) -> Any:
        """The reference's hook: a folded layer's constant added, then the removed channels zeroed."""
        if name in self.added and isinstance(value, torch.Tensor):
            value = value + self.added[name].to(value.dtype)
        return _zero(value, self.removed.get(name))


def _zero(value: Any, masks: dict[int, torch.Tensor] | None) -> Any:
    if not masks or not isinstance(value, torch.Tensor):
        return value
    for dim, mask in masks.items():
        shape = [1] * value.dim()
        shape[dim] = -1
        value = value.masked_fill(mask.reshape(shape), 0)
    return value


def select_keep(scores: Sequence[torch.Tensor], widths: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """The indices of the `width` highest-scoring units of each prunable group, in original order."""
    return tuple(torch.sort(torch.topk(s, w).indices).values for s, w in zip(scores, widths))


def _last_axis(architecture: Architecture, value: str) -> Axis:
    return value, len(architecture.shapes[value]) - 1


def foldable(architecture: Architecture, group_index: int) -> bool:
    """Whether the prunable group's values reach the rest of the network only through layers (after element-wise
    operations of that value alone), each with a bias of its own or none: then a removed unit acts only through
    those layers' inputs, and its constant can be folded into their biases."""
    group = architecture.prunable[group_index]
    graph = architecture.graph
    weights = architecture.weight_only
    stored = graph.tensor_info
    values = {axis[0] for axis, _ in group.multiplicity if axis[0] not in weights}
    consumers = graph.consumers()
    layers = layer_nodes(graph)
    for value in values:
        if value == graph.output:
            return False
        for node, _ in consumers.get(value, []):
            if node.name in layers and node.args[0] == Ref(value) and _last_axis(architecture, value) in dict(
                    group.multiplicity):
                bias = node.arg(2)
                if isinstance(bias, Ref) and (bias.name not in stored or len(consumers.get(bias.name, [])) > 1):
                    return False  # a computed or shared bias cannot take one layer's constants
                continue
            activations = [r for r in node.refs() if r not in weights]
            if packet(node.op) in POINTWISE and activations == [value] and node.outputs[0] in values:
                continue
            return False
    return bool(values)


def foldable_groups(architecture: Architecture) -> tuple[bool, ...]:
    """`foldable` for every prunable group, in order."""
    return tuple(foldable(architecture, index) for index in range(len(architecture.prunable)))


def removal_of(network: Network, keep_units: Sequence[torch.Tensor], fold: str,
               calibration: torch.Tensor | None) -> Removal:
    """Masks for `keep_units` (per prunable group), and each foldable group's constants, group by group: a group's
    constants are measured in the network with the earlier groups' removals already in place."""
    if fold not in FOLDS:
        raise UserError(f"unknown fold {fold!r}: choose one of {', '.join(FOLDS)}")
    if fold == "mean" and calibration is None:
        raise UserError("fold='mean' needs calibration inputs (or use fold='bias')")
    architecture = network.architecture
    analysis, graph = architecture.analysis, architecture.graph
    prunable = [i for i, g in enumerate(analysis.groups) if g.prunable]
    if len(keep_units) != len(prunable):
        raise ValueError(f"keep has {len(keep_units)} index sets for {len(prunable)} prunable groups")
    tensors = {k: v.detach() for k, v in network.tensors.items()}
    removed_axis = {axis: torch.zeros(length, dtype=torch.bool) for axis, length in analysis.lengths.items()}
    layers = layer_nodes(graph)
    result = Removal()
    folded = []
    for position, (group_index, kept) in enumerate(zip(prunable, keep_units)):
        group, channels = analysis.groups[group_index], analysis.channels[group_index]
        drop = torch.ones(group.width, dtype=torch.bool)
        drop[torch.as_tensor(kept, dtype=torch.long)] = False
        if not drop.any():
            continue
        if fold != "none" and foldable(architecture, position):
            exits = [n for n in layers.values() if _last_axis(architecture, n.args[0].name) in channels]
            roots = [n for n in layers.values() if _last_axis(architecture, n.outputs[0]) in channels]
            for name, added in _folded(graph, tensors, result, exits, roots, channels, drop, fold,
                                       calibration).items():
                result.added[name] = result.added.get(name, torch.zeros_like(added)) + added
            folded.append(group.name)
        for axis, per_unit in channels.items():
            removed_axis[axis][torch.from_numpy(per_unit[drop.numpy()].reshape(-1))] = True
        result.removed = {}
        for (name, dim), mask in removed_axis.items():
            if mask.any():
                result.removed.setdefault(name, {})[dim] = mask.clone()
    result.keep = {axis: torch.nonzero(~mask).flatten() for axis, mask in removed_axis.items()}
    result.folded = tuple(folded)
    return result


def _folded(graph: Graph, tensors: dict[str, torch.Tensor], current: Removal, exits: list[Node], roots: list[Node],
            channels: dict[Axis, Any], drop: torch.Tensor, fold: str,
            calibration: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per exit layer's output, what the dropped units add through it: W[:, dropped] @ c[dropped], c being the
    value the layer reads there in the network with the earlier groups' removals in place: its mean over
    `calibration` (`mean`), or, for `bias`, what it reads when the group's own layers (`roots`) get zero inputs."""
    read: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    exit_names, root_names = {n.name for n in exits}, {n.name for n in roots}

    def edge(node: Node, index: int, value: Any) -> Any:
        if node.name in exit_names and index in (0, 1):
            previous = read.get(node.name, (None, None))
            read[node.name] = (value, previous[1]) if index == 0 else (previous[0], value)
        if fold == "bias" and index == 0 and node.name in root_names:
            return torch.zeros_like(value)
        return value

    x = calibration if fold == "mean" else torch.zeros(1, graph.in_features)
    with torch.no_grad():
        run(graph, current.zeroed(tensors), x, edge=edge, after=current.after)
    found = {}
    for node in exits:
        value, weight = read[node.name]
        axis = (node.args[0].name, value.dim() - 1)
        mask = torch.zeros(value.shape[-1], dtype=torch.bool)
        mask[torch.from_numpy(channels[axis][drop.numpy()].reshape(-1))] = True
        constant = value.reshape(-1, value.shape[-1]).mean(dim=0)
        found[node.outputs[0]] = weight[:, mask] @ constant[mask]
    return found


def shrink(network: Network, keep: Sequence[torch.Tensor], *, fold: str = "bias",
           calibration: torch.Tensor | None = None) -> Network:
    """A new, smaller network holding only the `keep` units of each prunable group, proven against the original
    (`prove`, on the calibration rows and their range) before it is returned."""
    removal = removal_of(network, keep, fold, calibration)
    architecture = network.architecture
    graph = architecture.graph
    tensors = {k: v.detach() for k, v in network.tensors.items()}
    sliced = {info.name: _sliced(tensors[info.name], info.name, removal).clone() for info in graph.tensors}
    infos = list(graph.tensors)
    nodes = list(graph.nodes)
    layers = {node.outputs[0]: node for node in layer_nodes(graph).values()}
    taken = {t.name for t in infos} | {o for n in nodes for o in n.outputs} | {graph.input}
    for output, added in removal.added.items():
        node = layers[output]
        rows = removal.keep.get(_last_axis(architecture, output))
        carried = added if rows is None else added.index_select(0, rows)
        bias = node.arg(2)
        if isinstance(bias, Ref):
            sliced[bias.name] = sliced[bias.name] + carried
            continue
        fresh = fresh_name(f"{node.name}_folded_bias", taken)
        taken.add(fresh)
        sliced[fresh] = carried
        infos.append(TensorInfo(fresh, tuple(carried.shape), trainable=True))
        nodes[nodes.index(node)] = Node(node.name, node.op, (*node.args[:2], Ref(fresh)), node.kwargs, node.outputs)

    def kept(value: str, dim: int) -> list[int]:
        rank = len(architecture.shapes[value])
        index = removal.keep.get((value, dim % rank))
        return list(range(architecture.shapes[value][dim % rank])) if index is None else index.tolist()

    pruned_graph = Graph(graph.input, graph.in_features, resized(nodes, kept), graph.output,
                         tuple(replace(t, shape=tuple(sliced[t.name].shape)) for t in infos))
    trainable = {t.name: t.trainable for t in infos}
    values = {name: nn.Parameter(v) if trainable[name] and v.is_floating_point() else v for name, v in sliced.items()}
    pruned = Network(Architecture(pruned_graph, architecture.source),
                     build_module(pruned_graph, values).train(network.module.training))
    prove(architecture, tensors, removal, pruned, calibration)
    return pruned


def _sliced(value: torch.Tensor, name: str, removal: Removal) -> torch.Tensor:
    for dim in range(value.dim()):
        index = removal.keep.get((name, dim))
        if index is not None and len(index) != value.shape[dim]:
            value = value.index_select(dim, index)
    return value


def prove(architecture: Architecture, tensors: dict[str, torch.Tensor], removal: Removal, pruned: Network,
          data: torch.Tensor | None = None) -> None:
    """Raise ProofError unless the pruned module equals the original with the removed units zeroed (and the folded
    constants added) on the user's rows and their range, each output column at its own scale, in float64."""
    x = probe_rows(architecture.in_features, data)
    zeroed = removal.zeroed(tensors)
    try:
        with torch.no_grad():
            expected, _ = run(architecture.graph, {k: v.double() if v.is_floating_point() else v
                                                   for k, v in zeroed.items()}, x, after=removal.after)
            got = copy.deepcopy(pruned.module).double().eval()(x)
    except RuntimeError:  # the graph casts to float32 itself (a `.float()` in forward): prove it in float32
        with torch.no_grad():
            expected, _ = run(architecture.graph, zeroed, x.float(), after=removal.after)
            got = pruned.module.eval()(x.float())
    worst = disagreement(expected, got)
    if worst is not None:
        groups = ", ".join(f"{g.name} {g.width}->{w}" for g, w in zip(architecture.prunable, pruned.architecture.widths)
                           if g.width != w) or "none"
        raise ProofError(f"the pruned network (groups {groups}) differs from the original with the removed units "
                         f"zeroed: {worst.describe()}; nothing was saved (please report this network to spinn-export)")
