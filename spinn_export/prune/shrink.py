"""Remove units from any graph, fold what can be folded, and prove the result before anyone uses it.

`shrink` keeps the given units of every prunable group: each tensor is sliced along every axis of a group, so every
layer becomes a smaller dense matrix. A removed unit's value where a layer reads it is replaced by a constant,
folded into that layer's bias, where that is exact (`foldable`: the group's values reach the rest of the network only
through layers, possibly after element-wise operations of that value alone, so the removed unit acts on the network
only through those layers' inputs):

* `bias`: its value when its own layer's inputs are zero (the activation of its bias, for a plain MLP),
* `mean`: its mean value on calibration inputs (the best constant in least squares),
* `none`: zero.

Elsewhere (a residual stream, U/V gates, a Fourier embedding) the removed unit is zero. Groups are processed in graph
order, so a unit's constant is taken in the network whose earlier removals are already folded in.

The proof (`prove`, on every prune): the pruned network must compute what the original computes with the removed
channels zeroed at every value and, where folded, set to their constants at the layers that read them. The
reference is the original graph run by the interpreter with those replacements, independent of the slicing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.architecture import Architecture
from spinn_export.model.graph import Graph, Node, Ref, TensorInfo, build_module, run, tensors_of
from spinn_export.model.groups import LINEAR, POINTWISE, packet

FOLDS = ("mean", "bias", "none")
PROOF_ROWS = 256
PROOF_SEED = 20_251_206
PROOF_ATOL, PROOF_RTOL = 1e-5, 1e-4


class ProofError(UserError):
    """The pruned network does not compute what the original does with the removed channels zeroed (a bug: nothing
    is saved)."""


@dataclass
class Plan:
    """What one prune removes, per value and per layer input: the masks and constants both the pruned network and
    the proof's reference are built from."""

    removed: dict[str, torch.Tensor]  # value or tensor -> bool mask over its features (True: removed)
    keep: dict[tuple[str, int], torch.Tensor]  # axis -> kept channel indices
    constants: dict[str, torch.Tensor]  # layer node -> constant per input feature (0 where none)
    folded: tuple[str, ...]  # names of the groups whose constants were folded

    def reference_hooks(self) -> dict[str, Any]:
        def after(name: str, value: Any) -> Any:
            mask = self.removed.get(name)
            return value if mask is None else torch.where(mask, torch.zeros((), dtype=value.dtype), value)

        def edge(node: Node, index: int, value: Any) -> Any:
            constant = self.constants.get(node.name) if index == 0 else None
            if constant is None:
                return value
            mask = self.removed[node.args[0].name]
            return torch.where(mask, constant.to(value.dtype), value)

        return {"after": after, "edge": edge}


def select_keep(scores: Sequence[torch.Tensor], widths: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """The indices of the `width` highest-scoring units of each prunable group, in original order."""
    return tuple(torch.sort(torch.topk(s, w).indices).values for s, w in zip(scores, widths))


def layer_nodes(graph: Graph) -> dict[str, Node]:
    info = graph.tensor_info
    return {n.name: n for n in graph.nodes
            if n.op == LINEAR and isinstance(n.arg(1), Ref) and n.arg(1).name in info and isinstance(n.args[0], Ref)}


def foldable(architecture: Architecture, group_index: int) -> bool:
    """Whether the prunable group's values reach the rest of the network only through layers (after element-wise
    operations of that value alone), each with a bias of its own: then a removed unit acts only through those
    layers' inputs, and its constant can be folded into their biases."""
    group = architecture.prunable[group_index]
    graph = architecture.graph
    values = {axis[0] for axis, _ in group.multiplicity if axis[0] not in graph.tensor_info}
    consumers = graph.consumers()
    layers = layer_nodes(graph)
    for value in values:
        for node, _ in consumers.get(value, []):
            if node.name in layers and node.args[0] == Ref(value):
                bias = node.arg(2)
                if isinstance(bias, Ref) and len(consumers.get(bias.name, [])) > 1:
                    return False  # a bias shared by two layers cannot take two layers' constants
                continue
            activations = [r for r in node.refs() if r not in graph.tensor_info]
            if packet(node.op) in POINTWISE and activations == [value] and node.outputs[0] in values:
                continue
            return False
    return bool(values)


def foldable_groups(architecture: Architecture) -> tuple[bool, ...]:
    """`foldable` for every prunable group, in order."""
    return tuple(foldable(architecture, index) for index in range(len(architecture.prunable)))


def _last_axis(architecture: Architecture, value: str) -> tuple[str, int]:
    return value, len(architecture.shapes[value]) - 1


def plan(architecture: Architecture, model: nn.Module, keep_units: Sequence[torch.Tensor], fold: str,
         calibration: torch.Tensor | None) -> Plan:
    """Masks for `keep_units` (per prunable group), and each foldable group's constants, group by group: a group's
    constants are measured in the network with the earlier groups' removals already in place."""
    if fold not in FOLDS:
        raise UserError(f"unknown fold {fold!r}: choose one of {', '.join(FOLDS)}")
    if fold == "mean" and calibration is None:
        raise UserError("fold='mean' needs calibration inputs (or use fold='bias')")
    analysis, graph = architecture.analysis, architecture.graph
    prunable = [i for i, g in enumerate(analysis.groups) if g.prunable]
    if len(keep_units) != len(prunable):
        raise ValueError(f"keep has {len(keep_units)} index sets for {len(prunable)} prunable groups")
    tensors = {k: v.detach() for k, v in tensors_of(graph, model).items()}
    removed_axis = {axis: torch.zeros(length, dtype=torch.bool) for axis, length in analysis.lengths.items()}
    layers = layer_nodes(graph)
    result = Plan({}, {}, {}, ())
    folded = []
    for position, (group_index, kept) in enumerate(zip(prunable, keep_units)):
        group, channels = analysis.groups[group_index], analysis.channels[group_index]
        drop = torch.ones(group.width, dtype=torch.bool)
        drop[torch.as_tensor(kept, dtype=torch.long)] = False
        if not drop.any():
            continue
        exits = [n for n in layers.values() if _last_axis(architecture, n.args[0].name) in channels]
        constants = None
        if fold != "none" and foldable(architecture, position):
            roots = [n for n in layers.values() if _last_axis(architecture, n.outputs[0]) in channels]
            constants = _exit_values(graph, tensors, result, exits, roots, fold, calibration)
            folded.append(group.name)
        for axis, per_unit in channels.items():
            removed_axis[axis][torch.from_numpy(per_unit[drop.numpy()].reshape(-1))] = True
        result.removed = {axis[0]: mask.clone() for axis, mask in removed_axis.items()
                          if mask.any() and axis[0] not in graph.tensor_info}
        for node in exits if constants is not None else []:
            axis = _last_axis(architecture, node.args[0].name)
            mask = torch.zeros(analysis.lengths[axis], dtype=torch.bool)
            mask[torch.from_numpy(channels[axis][drop.numpy()].reshape(-1))] = True
            previous = result.constants.get(node.name, torch.zeros(analysis.lengths[axis]))
            result.constants[node.name] = torch.where(mask, constants[node.name], previous)
    result.keep = {axis: torch.nonzero(~mask).flatten() for axis, mask in removed_axis.items()}
    result.folded = tuple(folded)
    return result


def _exit_values(graph: Graph, tensors: dict[str, torch.Tensor], current: Plan, exits: list[Node], roots: list[Node],
                 fold: str, calibration: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per exit layer, the value per input feature it reads, in the network with the earlier groups' replacements:
    its mean over `calibration` (`mean`), or, for `bias`, what it reads when the group's own layers (`roots`) get
    nothing but the constants folded into them so far (their incoming weights zero)."""
    hooks = current.reference_hooks()
    recorded: dict[str, torch.Tensor] = {}
    exit_names, root_names = {n.name for n in exits}, {n.name for n in roots}

    def edge(node: Node, index: int, value: Any) -> Any:
        value = hooks["edge"](node, index, value)
        if index == 0 and node.name in exit_names:
            recorded[node.name] = value
        if fold == "bias" and index == 0 and node.name in root_names:
            constant, mask = current.constants.get(node.name), current.removed.get(node.args[0].name)
            if constant is None or mask is None:
                return torch.zeros_like(value)
            return torch.where(mask, constant.to(value.dtype), torch.zeros_like(value))
        return value

    x = calibration if fold == "mean" else torch.zeros(1, graph.in_features)
    with torch.no_grad():
        run(graph, tensors, x, edge=edge, after=hooks["after"])
    return {name: value.reshape(-1, value.shape[-1]).mean(dim=0) for name, value in recorded.items()}


def shrink(model: nn.Module, architecture: Architecture, keep: Sequence[torch.Tensor], *, fold: str = "bias",
           calibration: torch.Tensor | None = None) -> tuple[Architecture, nn.Module]:
    """A new, smaller network holding only the `keep` units of each prunable group, proven against the original
    (`prove`) before it is returned."""
    removal = plan(architecture, model, keep, fold, calibration)
    graph = architecture.graph
    tensors = {k: v.detach() for k, v in tensors_of(graph, model).items()}
    sliced: dict[str, torch.Tensor] = {}
    for info in graph.tensors:
        value = tensors[info.name]
        for dim in range(value.dim()):
            index = removal.keep.get((info.name, dim))
            if index is not None and len(index) != value.shape[dim]:
                value = value.index_select(dim, index)
        sliced[info.name] = value.clone()
    nodes = list(graph.nodes)
    infos = list(graph.tensors)
    layers = layer_nodes(graph)
    for name, constant in removal.constants.items():
        node = layers[name]
        weight, bias = node.args[1].name, node.arg(2)
        carried = tensors[weight] @ constant  # what the removed inputs' constants add, per (unsliced) output
        out_keep = removal.keep.get((weight, 0))
        if out_keep is not None:
            carried = carried.index_select(0, out_keep)
        if isinstance(bias, Ref):
            sliced[bias.name] = sliced[bias.name] + carried
        else:
            fresh = f"{name}_folded_bias"
            sliced[fresh] = carried
            infos.append(TensorInfo(fresh, tuple(carried.shape), trainable=True))
            nodes[nodes.index(node)] = replace(node, args=(*node.args[:2], Ref(fresh)))
    pruned_graph = Graph(graph.input, graph.in_features, tuple(nodes), graph.output,
                         tuple(replace(t, shape=tuple(sliced[t.name].shape)) for t in infos))
    trainable = {t.name: t.trainable for t in infos}
    values = {name: nn.Parameter(v) if trainable[name] else v for name, v in sliced.items()}
    pruned = Architecture(pruned_graph, architecture.source)
    module = build_module(pruned_graph, values).train(model.training)
    prove(architecture, tensors, removal, pruned, module)
    return pruned, module


def prove(architecture: Architecture, tensors: dict[str, torch.Tensor], removal: Plan, pruned: Architecture,
          module: nn.Module) -> None:
    """Raise ProofError unless the pruned module equals the original with the removed channels zeroed (and, where
    folded, set to their constants where layers read them) on random inputs, to float32 precision."""
    rows = np.random.default_rng(PROOF_SEED).standard_normal((PROOF_ROWS, architecture.in_features), dtype=np.float32)
    x = torch.from_numpy(rows)
    with torch.no_grad():
        expected, _ = run(architecture.graph, tensors, x, **removal.reference_hooks())
        got = module(x)
    scale = max(1.0, float(expected.abs().max()))
    error = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not (error <= PROOF_ATOL * scale + PROOF_RTOL * float(expected.abs().max())):
        raise ProofError(f"the pruned network (widths {list(pruned.widths)}) differs from the original with the "
                         f"removed channels zeroed by {error:.3g} on random inputs; nothing was saved (please report "
                         "this network to spinn-export)")
