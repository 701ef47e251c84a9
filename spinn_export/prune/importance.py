"""Neuron importance scores, comparable across layers so that a global ranking means something.

Every score is divided by what removing the neuron saves (fan-in + fan-out + 1 parameters): a
neuron of a wide layer must earn its larger cost.  Criteria:

* `l1`, `l2`: the norm of all the neuron's weights, incoming and outgoing (`-in` / `-out` for
  only the incoming row or only the outgoing column).  Biases are not included: a neuron's bias
  is folded into the next layer when it is removed, so it is not lost.
* `taylor`: first-order Taylor estimate of the training-loss change when the neuron is removed,
  |dL/dg| for a gate g multiplying the neuron's output (g = 1 -> 0).  The loss is the one
  training uses (data + physics); the gate also scales the neuron's input derivatives, so the
  PDE residual term is included exactly.  |.| per batch, averaged over batches (Molchanov et al.).
* `random`: the control.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.mlp import ACTIVATION_MODULES
from spinn_export.model.spec import MLPSpec
from spinn_export.task.data import Dataset

CRITERIA = ("l1", "l1-in", "l1-out", "l2", "l2-in", "l2-out", "taylor", "random")


def require_plain_mlp(model: nn.Module, spec: MLPSpec) -> nn.Sequential:
    """Accept only `build_model(spec)`'s layout (Linear, act, ..., Linear) with the spec's shapes."""
    hint = "convert other MLPs with spinn_export.model.mlp.mlp_from_module (or `spinn-export import`)"
    if not isinstance(model, nn.Sequential):
        raise UserError(f"unsupported model {type(model).__name__}: pruning needs a plain nn.Sequential MLP; {hint}")
    children = list(model)
    activation = ACTIVATION_MODULES[spec.activation]
    expected = 2 * len(spec.layer_shapes) - 1
    layout_ok = len(children) == expected and all(
        isinstance(m, nn.Linear) if i % 2 == 0 else type(m) is activation for i, m in enumerate(children)
    )
    if not layout_ok:
        raise UserError(
            f"unsupported model: expected Linear/{spec.activation} layers alternating ({expected} modules), "
            f"got {[type(m).__name__ for m in children]}; {hint}"
        )
    shapes = [tuple(m.weight.shape) for m in children[::2]]
    if shapes != spec.layer_shapes or any(m.bias is None for m in children[::2]):
        raise UserError(f"the model's layer shapes {shapes} (with biases) do not match its spec {spec.layer_shapes}")
    return model


def neuron_costs(spec: MLPSpec) -> tuple[int, ...]:
    """Parameters removed with one neuron of each hidden layer: fan-in + fan-out + 1 (its bias)."""
    d = spec.dims
    return tuple(d[i] + d[i + 2] + 1 for i in range(len(spec.widths)))


def _norm_scores(layers: list[nn.Linear], criterion: str) -> list[torch.Tensor]:
    norm, _, side = criterion.partition("-")
    p = 1 if norm == "l1" else 2
    scores = []
    for incoming, outgoing in itertools.pairwise(layers):
        parts = []
        if side in ("", "in"):
            parts.append(incoming.weight.detach().abs().pow(p).sum(dim=1))
        if side in ("", "out"):
            parts.append(outgoing.weight.detach().abs().pow(p).sum(dim=0))
        scores.append(sum(parts).pow(1.0 / p))
    return scores


class _Gated(nn.Module):
    """The MLP with a gate multiplying each hidden neuron's output (all ones: the same function)."""

    def __init__(self, model: nn.Sequential, gates: list[torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.gates = gates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = iter(self.gates)
        for module in self.model:
            x = module(x)
            if not isinstance(module, nn.Linear):
                x = x * next(gates)
        return x


def _taylor_scores(
    model: nn.Sequential, spec: MLPSpec, dataset: Dataset, batches: int, batch_size: int,
    physics_weight: float, physics_points: int, seed: int,
) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    gates = [torch.ones(w, requires_grad=True) for w in spec.widths]
    gated = _Gated(model, gates)
    totals = [torch.zeros(w) for w in spec.widths]
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


def neuron_scores(
    model: nn.Module,
    spec: MLPSpec,
    criterion: str = "l1",
    *,
    dataset: Dataset | None = None,
    batches: int = 32,
    batch_size: int = 512,
    physics_weight: float = 0.1,
    physics_points: int = 32,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """One score per hidden neuron and layer (higher = more important), normalised by its cost."""
    if criterion not in CRITERIA:
        raise UserError(f"unknown importance criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    model = require_plain_mlp(model, spec)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    if criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        raw = [torch.rand(w, generator=generator) for w in spec.widths]
    elif criterion == "taylor":
        if dataset is None:
            raise UserError("the taylor criterion needs data batches: pass a dataset (or use l1, l2 or random)")
        raw = _taylor_scores(model, spec, dataset, batches, batch_size, physics_weight, physics_points, seed)
    else:
        raw = _norm_scores(layers, criterion)
    scores = tuple(r.detach().float() / cost for r, cost in zip(raw, neuron_costs(spec)))
    if not all(torch.isfinite(s).all() for s in scores):
        raise UserError("importance scores are not finite (NaN/inf weights or loss); check the checkpoint")
    return scores
