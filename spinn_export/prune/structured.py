"""Structured neuron removal and the iterative prune / fine-tune schedule.

`shrink` copies the kept rows of layer i and the kept columns of layer i+1 into new, smaller
nn.Linear layers, so the result is a plain dense model that really runs faster.  A removed
neuron's output is replaced by a constant, folded into the next layer's bias:

* `bias`: the activation of its bias (exact when its incoming weights are zero),
* `mean`: its mean activation over calibration data (the best constant in least squares),
* `none`: zero (the same as masking the neuron).

`prune` runs N rounds whose per-round reductions compound to the target; after each round it
fine-tunes with the training loss (data + physics) via `train.train`, which builds a fresh Adam
each call.  That is the correct optimizer handling here: shrinking changes every parameter's
shape, so moment estimates of the old tensors no longer belong to any parameter.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spinn_export.files import write_json, write_text
from spinn_export.prune.budget import MODES, PrunePlan, Target, plan_widths, round_targets
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.task.data import Dataset, check_model_fits
from spinn_export.errors import UserError
from spinn_export.prune.importance import CRITERIA, neuron_scores, require_plain_mlp
from spinn_export.prune.magnitude import magnitude_prune, zeros_frozen
from spinn_export.task.metrics import evaluate
from spinn_export.model.mlp import ACTIVATION_MODULES, build_model, count_nonzero, linear_layers
from spinn_export.model.spec import MLPSpec
from spinn_export.task.train import TrainConfig, train
from spinn_export.progress import progress as progress_lines

FOLDS = ("mean", "bias", "none")
METHODS = ("structured", "magnitude")
ON_DROP = ("record", "stop", "rollback")


def select_keep(scores: Sequence[torch.Tensor], widths: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """The indices of the `width` highest-scoring neurons of each hidden layer, in original order."""
    return tuple(torch.sort(torch.topk(s, w).indices).values for s, w in zip(scores, widths))


def shrink(
    model: nn.Module,
    spec: MLPSpec,
    keep: Sequence[torch.Tensor],
    *,
    fold: str = "bias",
    calibration: torch.Tensor | None = None,
) -> tuple[MLPSpec, nn.Sequential]:
    """A new, smaller dense MLP holding only the `keep` neurons of each hidden layer.

    Layers are processed in order, so a removed neuron's constant (bias or mean activation) is
    taken in the model whose earlier removals are already folded in.
    """
    if fold not in FOLDS:
        raise UserError(f"unknown fold {fold!r}: choose one of {', '.join(FOLDS)}")
    if fold == "mean" and calibration is None:
        raise UserError("fold='mean' needs calibration inputs (or use fold='bias')")
    require_plain_mlp(model, spec)
    if len(keep) != len(spec.widths):
        raise ValueError(f"keep has {len(keep)} index sets for {len(spec.widths)} hidden layers")
    activation = ACTIVATION_MODULES[spec.activation]()
    layers = linear_layers(model)
    new_spec = spec.with_widths([len(k) for k in keep])
    new_model = build_model(new_spec)
    hidden = calibration
    inputs = torch.arange(spec.in_features)
    carried = torch.zeros(layers[0].out_features)
    with torch.no_grad():
        for index, (layer, target) in enumerate(zip(layers, linear_layers(new_model))):
            weight = layer.weight[:, inputs]
            bias = layer.bias + carried
            if index < len(keep):
                kept = keep[index].long()
                removed = torch.ones(layer.out_features, dtype=torch.bool)
                removed[kept] = False
                if fold == "mean":
                    outputs = activation(hidden @ weight.T + bias)
                    constant = outputs[:, removed].mean(dim=0)
                    hidden = outputs[:, kept]
                elif fold == "bias":
                    constant = activation(bias[removed])
                else:
                    constant = torch.zeros(int(removed.sum()))
                carried = layers[index + 1].weight[:, removed] @ constant
                weight, bias, inputs = weight[kept], bias[kept], kept
            target.weight.copy_(weight)
            target.bias.copy_(bias)
    return new_spec, new_model.train(model.training)


def structured_prune_once(
    model: nn.Module,
    spec: MLPSpec,
    plan: PrunePlan,
    *,
    importance: str = "l1",
    scores: Sequence[torch.Tensor] | None = None,
    dataset: Dataset | None = None,
    fold: str = "bias",
    calibration: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[MLPSpec, nn.Sequential]:
    """Score (unless `scores` are given), keep the top neurons per `plan.widths`, shrink. No fine-tuning."""
    if scores is None:
        scores = neuron_scores(model, spec, importance, dataset=dataset, seed=seed)
    return shrink(model, spec, select_keep(scores, plan.widths), fold=fold, calibration=calibration)


FINETUNE = TrainConfig(epochs=4, lr=1e-3)


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides a pruning run; defaults are the CLI's.

    `finetune` is the training run after each round (epochs 0: none); its loss (data + physics weight)
    is also what the taylor criterion scores. Round r fine-tunes with seed `seed + r`.
    """

    target: Target
    method: str = "structured"
    rounds: int = 3
    finetune: TrainConfig = FINETUNE
    importance: str = "l1"
    mode: str = "uniform"
    min_width: int = 1
    round_to: int | None = None
    fold: str = "mean"
    calibration_samples: int = 4096
    tolerance: float | None = None
    on_drop: str = "record"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (("--method", self.method, METHODS), ("--importance", self.importance, CRITERIA),
                                     ("--mode", self.mode, MODES), ("--fold", self.fold, FOLDS),
                                     ("--on-drop", self.on_drop, ON_DROP)):
            if value not in allowed:
                raise UserError(f"{name} {value!r} is not supported: choose one of {', '.join(allowed)}")
        if self.rounds < 1:
            raise UserError(f"--rounds must be at least 1, got {self.rounds}")
        if self.tolerance is not None and not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise UserError(f"--tolerance must be a non-negative R2 drop like 0.01, got {self.tolerance}")
        if self.on_drop != "record" and self.tolerance is None:
            raise UserError(f"--on-drop {self.on_drop} needs --tolerance (the largest allowed drop in validation R2)")

    def train_config(self, round_index: int) -> TrainConfig:
        return dataclasses.replace(self.finetune, seed=self.seed + round_index)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "target": self.target.to_dict()}


@dataclass(frozen=True)
class Stage:
    """One row of the history: the model after round `stage` (0 = the dense input) and fine-tuning."""

    stage: int
    widths: tuple[int, ...]
    params: int
    nonzero_params: int
    flops_per_sample: int
    val_r2: float
    val_rel_l2: float
    val_residual_rms: float | None
    checkpoint: str
    wall_s: float
    rolled_back: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}


@dataclass(frozen=True)
class PruneResult:
    config: PruneConfig
    plan: PrunePlan
    target_nonzero: int
    stages: tuple[Stage, ...]
    spec: MLPSpec
    model: nn.Sequential
    stopped: str | None
    wall_s: float

    @property
    def final(self) -> Stage:
        return [s for s in self.stages if not s.rolled_back][-1]

    def to_dict(self) -> dict[str, Any]:
        """history.json: the target (as asked) beside what the final model achieved."""
        base, final = self.plan.baseline, self.final
        return {
            "method": self.config.method,
            "target": {**self.config.target.to_dict(), "target_value": self.plan.target_value,
                       "planned_widths": list(self.plan.widths), "nonzero_params": self.target_nonzero},
            "achieved": {
                "widths": list(final.widths),
                "params": final.params,
                "nonzero_params": final.nonzero_params,
                "flops_per_sample": final.flops_per_sample,
                "params_reduction": 1.0 - final.params / base.params,
                "nonzero_reduction": 1.0 - final.nonzero_params / self.stages[0].nonzero_params,
                "flops_reduction": 1.0 - final.flops_per_sample / base.flops_per_sample,
            },
            "stopped": self.stopped,
            "wall_s": self.wall_s,
            "config": self.config.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
        }


def _record(index: int, model: nn.Sequential, spec: MLPSpec, dataset: Dataset, out_dir: Path, name: str,
            metadata: dict[str, str], started: float) -> Stage:
    metrics = evaluate(model, dataset, "val")
    checkpoint = f"stage_{index}.safetensors"
    stage = Stage(index, spec.widths, spec.params, count_nonzero(model), spec.flops_per_sample, metrics.r2,
                  metrics.rel_l2, metrics.residual_rms, checkpoint, time.perf_counter() - started)
    save_checkpoint(out_dir / checkpoint, model, spec, {**metadata, "variant": name, "stage": str(index),
                                                        "val_r2": f"{metrics.r2:.6f}"})
    return stage


def prune(
    model: nn.Module,
    spec: MLPSpec,
    dataset: Dataset,
    config: PruneConfig,
    out_dir: str | Path,
    *,
    metadata: dict[str, str] | None = None,
    progress: bool = True,
) -> PruneResult:
    """Prune in rounds with fine-tuning; write every stage, the final checkpoint and the history.

    The input model is not modified.  With `--method magnitude` the same rounds zero weights
    instead of removing neurons, down to the parameter count the structured plan reaches.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    require_plain_mlp(model, spec)
    check_model_fits(dataset, spec, model)
    baseline = spec
    model = copy.deepcopy(model).cpu()
    generator = torch.Generator().manual_seed(config.seed)
    calibration = dataset.x_train[torch.randperm(len(dataset.x_train), generator=generator)[: config.calibration_samples]]

    def scores_of(m: nn.Module, s: MLPSpec, round_index: int) -> tuple[torch.Tensor, ...]:
        return neuron_scores(m, s, config.importance, dataset=dataset, physics_weight=config.finetune.physics_weight,
                             seed=config.seed + round_index)

    needs_scores = config.mode == "global"
    plan = plan_widths(baseline, config.target, mode=config.mode, min_width=config.min_width, round_to=config.round_to,
                       scores=scores_of(model, spec, 0) if needs_scores else None)
    metadata = {**(metadata or {}), "seed": str(config.seed), "pruning": json.dumps(config.to_dict())}
    stages = [_record(0, model, spec, dataset, out_dir, metadata.get("variant", "dense"), metadata, started)]
    start_nonzero, target_nonzero = stages[0].nonzero_params, plan.params
    if config.method == "magnitude" and target_nonzero >= start_nonzero:
        raise UserError(f"the model already has only {start_nonzero:,} non-zero parameters, not more than the target {target_nonzero:,}")
    targets = round_targets(baseline, config.target, config.rounds, config.round_to)
    stopped: str | None = None
    bar = progress_lines(targets, desc=f"{config.method} prune", unit="round", enabled=progress)
    for index, target in enumerate(bar, start=1):
        round_started = time.perf_counter()
        previous = (spec, copy.deepcopy(model))
        if config.method == "structured":
            scores = scores_of(model, spec, index)
            step = plan_widths(spec, target, mode=config.mode, scores=scores, min_width=config.min_width,
                               round_to=config.round_to, baseline=baseline)
            spec, model = structured_prune_once(model, spec, step, scores=scores, fold=config.fold, calibration=calibration)
            frozen: contextlib.AbstractContextManager = contextlib.nullcontext()
        else:
            fraction = index / config.rounds
            nonzero = round(start_nonzero * (target_nonzero / start_nonzero) ** fraction)
            magnitude_prune(model, spec, target_nonzero if index == config.rounds else nonzero)
            frozen = zeros_frozen(model)
        if config.finetune.epochs:
            with frozen:
                train(model, dataset, config.train_config(index), desc=f"round {index} fine-tune", progress=progress)
        stage = _record(index, model, spec, dataset, out_dir, config.method, metadata, round_started)
        bar.set_postfix(widths=",".join(map(str, spec.widths)), val_r2=f"{stage.val_r2:.4f}")
        drop = stages[0].val_r2 - stage.val_r2
        if config.tolerance is not None and drop > config.tolerance and config.on_drop != "record":
            reason = f"round {index} lowered validation R2 by {drop:.4f} (> tolerance {config.tolerance})"
            if config.on_drop == "rollback":
                stage = dataclasses.replace(stage, rolled_back=True)
                spec, model = previous
                stopped = f"{reason}; rolled back to stage {index - 1}"
            else:
                stopped = f"{reason}; stopped after it"
            stages.append(stage)
            break
        stages.append(stage)
    bar.close()
    result = PruneResult(config, plan, target_nonzero, tuple(stages), spec, model, stopped, time.perf_counter() - started)
    final = result.final
    save_checkpoint(out_dir / f"{config.method}.safetensors", model, spec,
                    {**metadata, "variant": config.method, "stage": str(final.stage), "val_r2": f"{final.val_r2:.6f}"})
    write_history(result, out_dir)
    return result


def write_history(result: PruneResult, out_dir: Path) -> None:
    """history.json (the contract) and history.csv (one row per stage, for spreadsheets and pandas)."""
    import pandas as pd

    history = result.to_dict()
    frame = pd.DataFrame(history["stages"])
    frame["widths"] = frame["widths"].map(lambda w: " ".join(map(str, w)))
    write_text(out_dir / "history.csv", frame.to_csv(index=False))
    write_json(out_dir / "history.json", history)
