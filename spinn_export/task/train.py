"""Training and fine-tuning on the data + physics loss, deterministic for a seed.

Fine-tuning a pruned network can make it worse than not fine-tuning at all (a rate that suits training from scratch
throws a nearly-converged network out of its basin), so two tools live here, once, for every caller:

* `keep_best`: the run scores a held-out slice of the *training* rows before the first epoch and after every one, and
  ends in the best state it saw, the starting one included, so it never ends worse (on those rows) than it began.
  The validation split stays untouched: it is what every stage reports and the gate judges, so choosing a state on it
  would make those figures optimistic.
* `lr_range_test`: a short, seeded sweep of the rate on a copy of the model that picks one that suits the network.
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.progress import progress as progress_lines
from spinn_export.task.data import Dataset
from spinn_export.task.metrics import Metrics, evaluate

HOLDOUT_FRACTION = 0.1  # keep_best: the last 10 % of the training rows ...
HOLDOUT_MAX_ROWS = 2048  # ... at most this many: a stable score; every row held out is one the fine-tune cannot use
HOLDOUT_PHYSICS_ROWS = 1024  # of which the physics term is scored on the first (it needs derivatives)
LR_TEST_LOW, LR_TEST_HIGH = 1e-5, 1e-2  # the rates the range test sweeps (log-spaced)
LR_TEST_STEPS = 40
LR_TEST_CEILING = 3e-3  # the most the range test chooses: dense training's own rate (TrainConfig.lr)
LR_TEST_ROWS = 2048  # the fixed rows the range test scores after every step (fixed, so the curve is not batch noise)
LR_TEST_DIVERGED = 4.0  # the sweep stops once the loss exceeds this multiple of its lowest


@dataclass(frozen=True)
class TrainConfig:
    """One training run; `epochs` 0 means none (pruning without fine-tuning).

    `keep_best`: end in the state that scored best on the held-out training rows (`holdout_rows`), the starting
    state included, and train on the rest; False (dense training) trains on every training row and ends where it ends.
    """

    epochs: int = 12
    batch_size: int = 512
    lr: float = 3e-3
    min_lr: float = 2e-5
    physics_weight: float = 0.1
    physics_points: int = 32
    seed: int = 0
    device: str = "cpu"
    keep_best: bool = False

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
    holdout_loss: float | None = None  # keep_best: the objective on the held-out training rows after this epoch


@dataclass(frozen=True)
class TrainResult:
    """`history` has one record per epoch run. With keep_best, `kept_epoch` is the epoch whose state the model ends in
    (0: the starting state), `start_holdout_loss` the starting state's score and `stopped` why training ended early
    (a non-finite loss: the best state is kept instead of failing)."""

    history: tuple[EpochRecord, ...] = field(default_factory=tuple)
    kept_epoch: int | None = None
    start_holdout_loss: float | None = None
    stopped: str | None = None

    @property
    def final(self) -> Metrics:
        """The last epoch's validation metrics (the model's own unless keep_best restored an earlier state)."""
        return self.history[-1].val

    @property
    def kept_holdout_loss(self) -> float | None:
        """The held-out score of the state the model ends in (keep_best only)."""
        if self.kept_epoch is None:
            return None
        if self.kept_epoch == 0:
            return self.start_holdout_loss
        return next(r.holdout_loss for r in self.history if r.epoch == self.kept_epoch)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {name!r}")
    return torch.device(name)


def holdout_rows(n_train: int) -> int:
    """How many of the last training rows keep_best scores on: 10 %, at most 2,048, at least one (of two or more)."""
    if n_train < 2:
        raise UserError(f"fine-tuning that keeps its best state needs at least 2 training rows, got {n_train}; "
                        "give more data")
    return max(1, min(HOLDOUT_MAX_ROWS, int(n_train * HOLDOUT_FRACTION)))


def fit_rows(dataset: Dataset, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The training rows a run fits: all of them, or with keep_best all but the held-out last slice."""
    if not config.keep_best:
        return dataset.x_train, dataset.y_train
    cut = len(dataset.x_train) - holdout_rows(len(dataset.x_train))
    return dataset.x_train[:cut], dataset.y_train[:cut]


def objective(model: nn.Module, dataset: Dataset, x: torch.Tensor, y: torch.Tensor, points: torch.Tensor | None,
              physics_weight: float) -> float:
    """The training loss of `model` on fixed rows (data MSE + weight × mean squared residual at `points`), unbatched
    and without a step: how keep_best and the range test score a state."""
    with torch.no_grad():
        loss = nn.functional.mse_loss(model(x), y)
    if dataset.physics is not None and physics_weight > 0 and points is not None:
        loss = loss + physics_weight * dataset.physics.mean_square(model, points).detach()
    return float(loss)


def holdout_score(model: nn.Module, dataset: Dataset, config: TrainConfig) -> float:
    """The objective keep_best scores on the held-out training rows: what pruning compares candidate networks by
    (never the validation split, which the stages report)."""
    return _Best(dataset, config, torch.device("cpu")).score(model)


def train(model: nn.Module, dataset: Dataset, config: TrainConfig, *, desc: str = "train",
          progress: bool = True) -> TrainResult:
    """Adam with cosine decay; a fresh optimizer per call, because pruning changes parameter shapes.

    The physics term is the mean squared PDE residual at collocation points drawn afresh every step
    (`Physics.points`: the task's own domain where it has one), so it regularises the model beyond
    the labelled batch as well.

    With `config.keep_best` the last 10 % of the training rows (at most 2,048; never the validation split, which the
    stages report) are held out of the fit and scored with the same objective before the first epoch and after every
    one; the model ends in the best state scored, the starting one included. A non-finite loss then ends training in
    that state instead of failing.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    x_fit, y_fit = fit_rows(dataset, config)
    n = len(x_fit)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch, eta_min=config.min_lr
    )
    use_physics = dataset.physics is not None and config.physics_weight > 0
    x_train, y_train = x_fit.to(device), y_fit.to(device)
    best = _Best.start(model, dataset, config, device) if config.keep_best else None
    history: list[EpochRecord] = []
    stopped = None
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
                points = dataset.physics.points(x_fit, config.physics_points, generator).to(device)
                physics_loss = dataset.physics.mean_square(model, points)
                loss = data_loss + config.physics_weight * physics_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            totals += torch.tensor([loss.item(), data_loss.item(), physics_loss.item()])
        held_out = best.score(model) if best is not None else None
        if not torch.isfinite(totals).all() or (held_out is not None and not math.isfinite(held_out)):
            if best is None:
                raise UserError(f"training diverged at epoch {epoch} (non-finite loss); "
                                "lower the learning rate or --physics-weight")
            stopped = f"non-finite loss at epoch {epoch}: ended in the best state before it"
            break
        mean = totals / steps_per_epoch
        val = evaluate(model.cpu(), dataset, "val")
        model.to(device).train()
        history.append(EpochRecord(epoch, float(mean[0]), float(mean[1]), float(mean[2]), val, held_out))
        if best is not None:
            best.offer(model, epoch, held_out)  # type: ignore[arg-type]
        bar.set_postfix(loss=f"{mean[0]:.2e}", val_r2=f"{val.r2:.4f}")
    bar.close()
    if best is None:
        model.cpu().eval()
        return TrainResult(tuple(history))
    best.restore(model)
    model.cpu().eval()
    return TrainResult(tuple(history), best.epoch, best.start_loss, stopped)


class _Best:
    """keep_best's bookkeeping: the held-out rows, and the best state scored on them so far (a copy of its tensors)."""

    def __init__(self, dataset: Dataset, config: TrainConfig, device: torch.device) -> None:
        cut = len(dataset.x_train) - holdout_rows(len(dataset.x_train))
        self.dataset, self.weight = dataset, config.physics_weight
        self.x, self.y = dataset.x_train[cut:].to(device), dataset.y_train[cut:].to(device)
        self.points = self.x[:HOLDOUT_PHYSICS_ROWS]
        self.epoch, self.loss, self.start_loss = 0, math.inf, math.inf
        self.state: dict[str, torch.Tensor] = {}

    @classmethod
    def start(cls, model: nn.Module, dataset: Dataset, config: TrainConfig, device: torch.device) -> _Best:
        best = cls(dataset, config, device)
        best.start_loss = best.score(model)
        best.offer(model, 0, best.start_loss, force=True)
        return best

    def score(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        try:
            return objective(model, self.dataset, self.x, self.y, self.points, self.weight)
        finally:
            model.train(was_training)

    def offer(self, model: nn.Module, epoch: int, loss: float, *, force: bool = False) -> None:
        if force or loss < self.loss:
            self.epoch, self.loss = epoch, loss
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)


@dataclass(frozen=True)
class LRTest:
    """A learning-rate range test: the rates tried, the objective on fixed rows after each (inf where non-finite), the
    rate where it was lowest, the rate where it blew up (None: not within the sweep) and the rate chosen."""

    rates: tuple[float, ...]
    losses: tuple[float, ...]
    lowest: float
    diverged: float | None
    lr: float


def lr_range_test(model: nn.Module, dataset: Dataset, config: TrainConfig, *, low: float = LR_TEST_LOW,
                  high: float = LR_TEST_HIGH, steps: int = LR_TEST_STEPS,
                  freeze: Callable[[nn.Module], contextlib.AbstractContextManager[Any]] | None = None) -> LRTest:
    """Adam on a copy of `model` (the model is not touched) for `steps` steps at rates rising log-evenly from `low` to
    `high`, scoring the training objective on fixed rows after each step, until it blows up (non-finite, or
    LR_TEST_DIVERGED times its lowest); deterministic for `config.seed`.

    The rate chosen lies halfway, on a log scale, between the rate where the objective was lowest and the one where it
    blew up (`high` if it never did), at most LR_TEST_CEILING. Why not the lowest point itself, or a fraction of it: a
    few dozen steps at each rate measure the shock of having just raised it, so the lowest point understates what a
    fine-tune of several epochs with cosine decay can use (on the built-in SPINN the lowest point, about 2e-4, ended
    0.003 R² below the midpoint's 5e-4 to 1e-3 after three rounds; docs/prune.md has the figures). It trains on the
    rows a keep_best run fits (never its held-out slice, nor the validation split). `freeze` wraps the steps
    (magnitude pruning keeps zeros at zero).
    """
    if not (0 < low < high and math.isfinite(high)) or steps < 2:
        raise UserError(f"a learning-rate range test needs 0 < low < high and 2 or more steps, got {low}, {high}, "
                        f"{steps}")
    device = resolve_device(config.device)
    probe = copy.deepcopy(model).to(device).train()
    generator = torch.Generator().manual_seed(config.seed)
    x_fit, y_fit = fit_rows(dataset, config)
    scored = torch.randperm(len(x_fit), generator=generator)[:LR_TEST_ROWS]
    x_score, y_score = x_fit[scored].to(device), y_fit[scored].to(device)
    use_physics = dataset.physics is not None and config.physics_weight > 0
    points = (dataset.physics.points(x_fit, 4 * config.physics_points, generator).to(device)  # type: ignore[union-attr]
              if use_physics else None)
    optimizer = torch.optim.Adam(probe.parameters(), lr=low)
    rates = [low * (high / low) ** (i / (steps - 1)) for i in range(steps)]
    losses: list[float] = []
    diverged = None
    with freeze(probe) if freeze is not None else contextlib.nullcontext():
        for rate in rates:
            for group in optimizer.param_groups:
                group["lr"] = rate
            index = torch.randint(len(x_fit), (min(config.batch_size, len(x_fit)),), generator=generator)
            loss = nn.functional.mse_loss(probe(x_fit[index].to(device)), y_fit[index].to(device))
            if use_physics:
                batch_points = dataset.physics.points(x_fit, config.physics_points, generator)  # type: ignore[union-attr]
                loss = loss + config.physics_weight * dataset.physics.mean_square(  # type: ignore[union-attr]
                    probe, batch_points.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            probe.eval()
            score = objective(probe, dataset, x_score, y_score, points, config.physics_weight)
            probe.train()
            losses.append(score if math.isfinite(score) else math.inf)
            if not math.isfinite(score) or score > LR_TEST_DIVERGED * min(losses):
                diverged = rate
                break
    best = min(range(len(losses)), key=losses.__getitem__)
    if not math.isfinite(losses[best]):  # the very first step blew up: the lowest rate there is
        return LRTest(tuple(rates[: len(losses)]), tuple(losses), low, diverged, low)
    chosen = math.sqrt(rates[best] * (diverged if diverged is not None else high))
    return LRTest(tuple(rates[: len(losses)]), tuple(losses), rates[best], diverged,
                  min(high, LR_TEST_CEILING, max(low, chosen)))
