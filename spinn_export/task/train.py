"""Training and fine-tuning on the data + physics loss, deterministic for a seed."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.progress import progress as progress_lines
from spinn_export.task.data import Dataset
from spinn_export.task.metrics import Metrics, evaluate


@dataclass(frozen=True)
class TrainConfig:
    """One training run; `epochs` 0 means none (pruning without fine-tuning)."""

    epochs: int = 12
    batch_size: int = 512
    lr: float = 3e-3
    min_lr: float = 2e-5
    physics_weight: float = 0.1
    physics_points: int = 32
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise UserError(f"--epochs must be zero or more, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"learning rate must be positive, got {self.lr}")
        if not (self.physics_weight >= 0 and math.isfinite(self.physics_weight)):
            raise UserError(f"--physics-weight must be zero or positive, got {self.physics_weight}")


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    data_loss: float
    physics_loss: float
    val: Metrics


@dataclass(frozen=True)
class TrainResult:
    history: tuple[EpochRecord, ...] = field(default_factory=tuple)

    @property
    def final(self) -> Metrics:
        return self.history[-1].val


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {name!r}")
    return torch.device(name)


def train(model: nn.Module, dataset: Dataset, config: TrainConfig, *, desc: str = "train",
          progress: bool = True) -> TrainResult:
    """Adam with cosine decay; a fresh optimizer per call, because pruning changes parameter shapes.

    The physics term is the mean squared PDE residual at collocation points drawn afresh every step
    (`Physics.points`: the task's own domain where it has one), so it regularises the model beyond
    the labelled batch as well.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    n = len(dataset.x_train)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch, eta_min=config.min_lr
    )
    use_physics = dataset.physics is not None and config.physics_weight > 0
    x_train, y_train = dataset.x_train.to(device), dataset.y_train.to(device)
    history: list[EpochRecord] = []
    bar = progress_lines(range(1, config.epochs + 1), desc=desc, unit="epoch", enabled=progress, leave=False)
    for epoch in bar:
        order = torch.randperm(n, generator=generator).to(device)
        totals = torch.zeros(3)
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            data_loss = nn.functional.mse_loss(model(x_train[index]), y_train[index])
            loss = data_loss
            physics_loss = torch.zeros(())
            if use_physics:
                points = dataset.physics.points(dataset.x_train, config.physics_points, generator).to(device)
                physics_loss = dataset.physics.mean_square(model, points)
                loss = data_loss + config.physics_weight * physics_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            totals += torch.tensor([loss.item(), data_loss.item(), physics_loss.item()])
        if not torch.isfinite(totals).all():
            raise UserError(f"training diverged at epoch {epoch} (non-finite loss); "
                            "lower the learning rate or --physics-weight")
        mean = totals / steps_per_epoch
        val = evaluate(model.cpu(), dataset, "val")
        model.to(device).train()
        history.append(EpochRecord(epoch, float(mean[0]), float(mean[1]), float(mean[2]), val))
        bar.set_postfix(loss=f"{mean[0]:.2e}", val_r2=f"{val.r2:.4f}")
    model.cpu().eval()
    return TrainResult(tuple(history))
