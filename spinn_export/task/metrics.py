"""Accuracy and physics metrics of a model on a dataset split."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.task.data import Dataset

RESIDUAL_POINTS = 2048


@dataclass(frozen=True)
class Metrics:
    r2: float
    r2_per_output: tuple[float, ...]
    rel_l2: float
    residual_rms: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "r2": self.r2,
            "r2_per_output": list(self.r2_per_output),
            "rel_l2": self.rel_l2,
            "residual_rms": self.residual_rms,
        }


def r2_scores(prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, ...]:
    ss_res = (prediction - target).pow(2).sum(dim=0)
    ss_tot = (target - target.mean(dim=0)).pow(2).sum(dim=0)
    return tuple(float(v) for v in 1.0 - ss_res / ss_tot)


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(prediction - target) / torch.linalg.vector_norm(target))


def residual_rms(model: nn.Module, dataset: Dataset, inputs: torch.Tensor) -> float | None:
    """RMS of the data's physics residual at (up to RESIDUAL_POINTS of) `inputs`; None when no physics is known."""
    if dataset.physics is None:
        return None
    return float(dataset.physics.mean_square(model, inputs[:RESIDUAL_POINTS]).detach().sqrt())


def evaluate(model: nn.Module, dataset: Dataset, split: str = "val") -> Metrics:
    inputs: torch.Tensor = getattr(dataset, f"x_{split}")
    targets: torch.Tensor = getattr(dataset, f"y_{split}")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        prediction = model(inputs)
    per_output = r2_scores(prediction, targets)
    metrics = Metrics(
        r2=sum(per_output) / len(per_output),
        r2_per_output=per_output,
        rel_l2=relative_l2(prediction, targets),
        residual_rms=residual_rms(model, dataset, inputs),
    )
    model.train(was_training)
    if not all(math.isfinite(v) for v in per_output):
        raise UserError(f"the model produces non-finite predictions on the {split} rows; a network that does is "
                        "not measured (if pruning or fine-tuning made it so, try --lr with a lower rate, or report "
                        "the network to spinn-export)")
    return metrics
