"""Unit importance scores, summed over every member of a group and comparable across groups.

Every score is divided by what removing the unit saves (its parameters: `Architecture.unit_costs`): a unit of a wide
group must earn its larger cost. Criteria:

* `l1`, `l2`: the norm of all the unit's weights in every layer of its group, incoming rows and outgoing columns
  (`-in` / `-out` for only one side). Biases and per-feature parameters are not included: a removed unit's constant
  is folded into the next bias where that is exact, and a slope says nothing of a unit's size.
* `taylor`: first-order Taylor estimate of the training-loss change when the unit is removed, |dL/dg| for a gate g
  multiplying the unit wherever a layer reads it (g = 1 -> 0 removes it exactly: a group reaches the rest of the
  network only through layers). The loss is the one training uses (data + physics); the gates also scale the
  unit's input derivatives, so the PDE residual term is included exactly. |.| per batch, averaged over batches
  (Molchanov et al.).
* `random`: the control.
"""
from __future__ import annotations

import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.graph import Node, call, run, tensors_of
from spinn_export.model.groups import layer_nodes
from spinn_export.model.network import Network
from spinn_export.task.data import Dataset

CRITERIA = ("l1", "l1-in", "l1-out", "l2", "l2-in", "l2-out", "taylor", "random")


def _norm_scores(network: Network, criterion: str) -> list[torch.Tensor]:
    norm, _, side = criterion.partition("-")
    p = 1 if norm == "l1" else 2
    architecture = network.architecture
    tensors = weight_values(network)
    weights = {layer.weight for layer in architecture.layers} | {t.name for t in architecture.graph.tensors
                                                                  if len(t.shape) == 2}
    analysis = architecture.analysis
    scores = []
    for group, channels in zip(analysis.groups, analysis.channels):
        if not group.prunable:
            continue
        total = torch.zeros(group.width)
        for (name, dim), per_unit in channels.items():
            if name not in weights or (dim == 0 and side == "out") or (dim == 1 and side == "in"):
                continue
            per_channel = tensors[name].detach().abs().pow(p).sum(dim=1 - dim)
            total += per_channel[torch.from_numpy(per_unit)].sum(dim=1)
        scores.append(total.pow(1.0 / p))
    return scores


def weight_values(network: Network) -> dict[str, torch.Tensor]:
    """Every stored tensor and every value computed from them alone (a factored or normalised layer weight), as the
    model holds them now."""
    architecture = network.architecture
    tensors = {k: v.detach() for k, v in network.tensors.items()}
    derived = [n for n in architecture.graph.nodes if all(o in architecture.weight_only for o in n.outputs)]
    if not derived:
        return tensors
    with torch.no_grad():
        for node in derived:
            tensors.update(call(node, tensors))
    return tensors


class _Gated(nn.Module):
    """The network with one gate per unit multiplying it wherever a layer reads it (all ones: the same function)."""

    def __init__(self, network: Network, gates: list[torch.Tensor]) -> None:
        super().__init__()
        architecture = network.architecture
        self.graph = architecture.graph
        self.model = network.module
        self.gates = gates
        analysis = architecture.analysis
        prunable = [(c, g) for c, g in zip(analysis.channels, analysis.groups) if g.prunable]
        self.scatter: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        for node in layer_nodes(self.graph).values():
            axis = (node.args[0].name, len(architecture.shapes[node.args[0].name]) - 1)
            for index, (channels, _) in enumerate(prunable):
                if axis in channels:
                    per_unit = torch.from_numpy(channels[axis])
                    units = torch.arange(per_unit.shape[0]).repeat_interleave(per_unit.shape[1])
                    self.scatter.setdefault(node.name, []).append((index, per_unit.reshape(-1), units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def edge(node: Node, index: int, value: torch.Tensor) -> torch.Tensor:
            if index != 0 or node.name not in self.scatter:
                return value
            gate = torch.ones(value.shape[-1], dtype=value.dtype)
            for group, channels, units in self.scatter[node.name]:
                gate = gate.scatter(0, channels, self.gates[group][units])
            return value * gate

        return run(self.graph, tensors_of(self.graph, self.model), x, edge=edge)[0]


def _taylor_scores(network: Network, dataset: Dataset, batches: int, batch_size: int,
                   physics_weight: float, physics_points: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    architecture, model = network.architecture, network.module
    gates = [torch.ones(w, requires_grad=True) for w in architecture.widths]
    gated = _Gated(network, gates)
    totals = [torch.zeros(w) for w in architecture.widths]
    use_physics = dataset.physics is not None and physics_weight > 0
    was_training = model.training
    model.eval()
    n = len(dataset.x_train)
    for _ in range(batches):
        index = torch.randint(n, (min(batch_size, n),), generator=generator)
        loss = nn.functional.mse_loss(gated(dataset.x_train[index]), dataset.y_train[index])
        if use_physics:
            points = dataset.physics.points(dataset.x_train, physics_points, generator)
            loss = loss + physics_weight * dataset.physics.mean_square(gated, points)
        grads = torch.autograd.grad(loss, gates)
        for total, grad in zip(totals, grads):
            total.add_(grad.abs())  # in place, as += on a tensor: accumulates into totals
    model.train(was_training)
    return [total / batches for total in totals]


def unit_scores(
    network: Network,
    criterion: str = "l1",
    *,
    dataset: Dataset | None = None,
    batches: int = 32,
    batch_size: int = 512,
    physics_weight: float = 0.1,
    physics_points: int = 32,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """One score per unit of each prunable group (higher = more important), normalised by its cost."""
    if criterion not in CRITERIA:
        raise UserError(f"unknown importance criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    architecture = network.architecture
    if criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        raw = [torch.rand(w, generator=generator) for w in architecture.widths]
    elif criterion == "taylor":
        if dataset is None:
            raise UserError("the taylor criterion needs data batches: pass a dataset (or use l1, l2 or random)")
        raw = _taylor_scores(network, dataset, batches, batch_size, physics_weight, physics_points, seed)
    else:
        raw = _norm_scores(network, criterion)
    scores = tuple(r.detach().float() / cost for r, cost in zip(raw, architecture.unit_costs()))
    if not all(torch.isfinite(s).all() for s in scores):
        raise UserError("importance scores are not finite (NaN/inf weights or loss); check the checkpoint")
    return scores
