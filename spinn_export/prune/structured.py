"""Structured neuron removal and the iterative prune / fine-tune schedule.

Each round shrinks the network's width groups (`shrink`: every layer a smaller dense matrix, removed units folded
into the next biases where exact, and the result proven against the original before anything is saved).

`prune` runs N rounds whose per-round reductions compound to the target; after each round it
fine-tunes with the training loss (data + physics) via `train.train`, which builds a fresh Adam
each call.  That is the correct optimizer handling here: shrinking changes every parameter's
shape, so moment estimates of the old tensors no longer belong to any parameter.

One constant rate left some pruned networks worse than no fine-tune at all, so each round's fine-tune keeps its best
state on held-out training rows, the just-pruned one included (`TrainConfig.keep_best`), at the rate a range test
chose for that network (`train.lr_range_test`) unless `--lr` fixes it; each stage records both.

A latency target (and `--round-to auto`) is planned against measurements (`prune.latency`) before
anything is written: the plan is checked end to end, the rounds then shrink towards its widths,
and the pruned model is measured paired against dense at the end (history.json's
`achieved.latency_ratio`). The measurements are the caller's `Measurer` (pruning comes before bench).
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

from spinn_export.defaults import LATENCY_BACKEND, LATENCY_BATCH
from spinn_export.errors import UserError
from spinn_export.files import write_json, write_text
from spinn_export.model.architecture import Architecture
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import count_nonzero
from spinn_export.model.network import Network
from spinn_export.progress import progress as progress_lines
from spinn_export.prune.budget import MODES, PrunePlan, RoundTo, plan_widths, round_targets
from spinn_export.prune.importance import CRITERIA, unit_scores
from spinn_export.prune.latency import (
    AUTO,
    LatencyLookup,
    LatencyPlan,
    Measurer,
    Ratio,
    auto_round_to,
    plan_latency,
)
from spinn_export.prune.magnitude import magnitude_prune, zeros_frozen
from spinn_export.prune.shrink import FOLDS, foldable_groups, select_keep, shrink
from spinn_export.prune.target import Target
from spinn_export.task.data import Dataset, check_model_fits
from spinn_export.task.metrics import evaluate
from spinn_export.task.train import TrainConfig, lr_range_test, train

METHODS = ("structured", "magnitude")
ON_DROP = ("record", "stop", "rollback")


def structured_prune_once(
    network: Network,
    plan: PrunePlan,
    *,
    importance: str = "l1",
    scores: Sequence[torch.Tensor] | None = None,
    dataset: Dataset | None = None,
    fold: str = "bias",
    calibration: torch.Tensor | None = None,
    seed: int = 0,
) -> Network:
    """Score (unless `scores` are given), keep the top units per `plan.widths`, shrink (proven). No fine-tuning."""
    if scores is None:
        scores = unit_scores(network, importance, dataset=dataset, seed=seed)
    return shrink(network, select_keep(scores, plan.widths), fold=fold, calibration=calibration)


FINETUNE = TrainConfig(epochs=4, lr=1e-3)


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides a pruning run; defaults are the CLI's.

    `finetune` is the training run after each round (epochs 0: none); its loss (data + physics weight)
    is also what the taylor criterion scores. Round r fine-tunes with seed `seed + r`, always keeping its best state
    on held-out training rows. `lr_test`: each round's rate comes from a range test on the pruned network (True), or
    is `finetune.lr` as given (False: `--lr`).

    `round_to` is a block for every hidden width, or "auto" (each layer's multiple read from a measured
    latency table). `backend` and `batch` say where `--round-to auto` measures (default ort-cpu at 4096); a
    latency target names its own, and these must then agree with it or be left out.

    With a latency target, method magnitude keeps the non-zero count of the structured plan for that
    target (the main job's baseline; masking makes no model faster, so the CLI refuses to prune to a
    latency target by magnitude).
    """

    target: Target
    method: str = "structured"
    rounds: int = 3
    finetune: TrainConfig = FINETUNE
    importance: str = "l1"
    mode: str = "uniform"
    min_width: int = 1
    round_to: int | str | None = None
    fold: str = "mean"
    calibration_samples: int = 4096
    tolerance: float | None = None
    on_drop: str = "record"
    seed: int = 0
    backend: str | None = None
    batch: int | None = None
    lr_test: bool = True

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
        if not (self.round_to is None or self.round_to == AUTO
                or (isinstance(self.round_to, int) and self.round_to >= 1)):
            raise UserError(f"--round-to must be a positive integer or {AUTO}, got {self.round_to!r}")
        if self.round_to == AUTO and self.target.kind == "widths":
            raise UserError(f"--round-to {AUTO} chooses the widths' multiples, but --widths gives the widths; drop one")
        given = {"--backend": self.backend, "--batch": self.batch}
        if self.measured_on is None and any(v is not None for v in given.values()):
            raise UserError("--backend and --batch say where latency is measured: they apply only with "
                            f"--target-latency or --round-to {AUTO}")
        if self.target.kind == "latency":
            own = {"--backend": self.target.backend, "--batch": self.target.batch}
            clash = [flag for flag, value in given.items() if value is not None and value != own[flag]]
            if clash:
                raise UserError(f"{' and '.join(clash)} disagree with the latency target's "
                                f"({self.target.backend} at batch {self.target.batch}); give them once")

    @property
    def measured_on(self) -> tuple[str, int] | None:
        """The backend and batch latencies are measured on: a latency target's, or --round-to auto's; else None."""
        if self.target.kind == "latency":
            return str(self.target.backend), int(self.target.batch or 0)
        if self.round_to == AUTO:
            return self.backend or LATENCY_BACKEND, self.batch or LATENCY_BATCH
        return None

    def train_config(self, round_index: int) -> TrainConfig:
        """Round `round_index`'s fine-tune: its seed, and keep_best (a fine-tune never ends worse than it began)."""
        return dataclasses.replace(self.finetune, seed=self.seed + round_index, keep_best=True)

    def to_dict(self) -> dict[str, Any]:
        """Every field; `backend` and `batch` only when given (records of runs without them stay as they were)."""
        data = {**dataclasses.asdict(self), "target": self.target.to_dict()}
        return {k: v for k, v in data.items() if v is not None or k not in ("backend", "batch")}


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
    finetune_lr: float | None = None  # the round's fine-tuning rate (range test or --lr); None: no fine-tune
    finetune_kept_epoch: int | None = None  # the epoch whose state it kept (0: the just-pruned state)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}


@dataclass(frozen=True)
class PruneResult:
    """A finished run. `latency`: a latency target's plan and checks; `achieved_latency`: the pruned model's paired
    latency over dense's (structured pruning to a latency target only)."""

    config: PruneConfig
    plan: PrunePlan
    target_nonzero: int
    stages: tuple[Stage, ...]
    network: Network
    stopped: str | None
    wall_s: float
    latency: LatencyPlan | None = None
    achieved_latency: Ratio | None = None
    folded: tuple[str, ...] = ()  # the groups whose removed units' constants were folded into the next biases

    @property
    def final(self) -> Stage:
        return [s for s in self.stages if not s.rolled_back][-1]

    def to_dict(self) -> dict[str, Any]:
        """history.json: the target (as asked) beside what the final model achieved."""
        base, final = self.plan.baseline, self.final
        target = {**self.config.target.to_dict(), "target_value": self.plan.target_value,
                  "planned_widths": list(self.plan.widths), "nonzero_params": self.target_nonzero}
        if self.config.round_to == AUTO:
            target["round_to"] = (list(self.plan.round_to) if isinstance(self.plan.round_to, tuple)
                                  else self.plan.round_to)
        if self.latency is not None:
            target["latency"] = self.latency.to_dict()
        latency = {}
        if self.achieved_latency is not None:
            measured_on = {"backend": self.config.target.backend, "batch": self.config.target.batch}
            latency = {"latency_ratio": self.achieved_latency.ratio,
                       "latency": {**self.achieved_latency.to_dict(), **measured_on}}
        return {
            "method": self.config.method,
            "target": target,
            "achieved": {
                "widths": list(final.widths),
                "params": final.params,
                "nonzero_params": final.nonzero_params,
                "flops_per_sample": final.flops_per_sample,
                "params_reduction": 1.0 - final.params / base.params,
                "nonzero_reduction": 1.0 - final.nonzero_params / self.stages[0].nonzero_params,
                "flops_reduction": 1.0 - final.flops_per_sample / base.flops_per_sample,
                **latency,
            },
            "architecture": architecture_record(self.plan.baseline, self.network.architecture, self.folded),
            "stopped": self.stopped,
            "wall_s": self.wall_s,
            "config": self.config.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
        }


def architecture_record(dense: Architecture, pruned: Architecture, folded: Sequence[str]) -> dict[str, Any]:
    """The network as its groups: each group's width before and after, why a frozen one is frozen, what it slices,
    and whether its removed units were folded (history.json's `architecture`; the report shows it)."""
    after = {g.name: g.width for g in pruned.groups}
    return {"source": dense.source, "in_features": dense.in_features, "out_features": dense.out_features,
            "groups": [{"name": g.name, "dense_width": g.width, "width": after.get(g.name, g.width),
                        "frozen": g.frozen, "members": list(g.members), "folded": g.name in folded}
                       for g in dense.groups]}


def _record(index: int, network: Network, dataset: Dataset, out_dir: Path, name: str, metadata: dict[str, str],
            started: float) -> Stage:
    metrics = evaluate(network.module, dataset, "val")
    checkpoint = f"stage_{index}.safetensors"
    architecture = network.architecture
    stage = Stage(index, architecture.widths, architecture.params, count_nonzero(network.module),
                  architecture.flops_per_sample, metrics.r2, metrics.rel_l2, metrics.residual_rms, checkpoint,
                  time.perf_counter() - started)
    save_checkpoint(out_dir / checkpoint, network, {**metadata, "variant": name, "stage": str(index),
                                                    "val_r2": f"{metrics.r2:.6f}"})
    return stage


def prune(
    dense: Network,
    dataset: Dataset,
    config: PruneConfig,
    out_dir: str | Path,
    *,
    metadata: dict[str, str] | None = None,
    progress: bool = True,
    measurer: Measurer | None = None,
) -> PruneResult:
    """Prune in rounds with fine-tuning; write every stage, the final checkpoint and the history.

    `dense` is not modified.  With `--method magnitude` the same rounds zero weights
    instead of removing neurons, down to the parameter count the structured plan reaches.
    `measurer` takes the latency measurements a latency target or `--round-to auto` needs (the caller's:
    `bench.measurer.BackendMeasurer` on the config's backend and batch, or a synthetic one).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if config.measured_on is not None and measurer is None:
        raise ValueError("a latency target or --round-to auto needs a Measurer (bench.measurer.BackendMeasurer)")
    baseline = dense.architecture
    baseline.require_prunable("prune")
    config = dataclasses.replace(config, target=config.target.resolve(baseline))
    check_model_fits(dataset, dense)
    original = dense.with_module(copy.deepcopy(dense.module).cpu())
    network = original
    generator = torch.Generator().manual_seed(config.seed)
    calibration = dataset.x_train[torch.randperm(len(dataset.x_train),
                                                 generator=generator)[: config.calibration_samples]]

    def scores_of(current: Network, round_index: int) -> tuple[torch.Tensor, ...]:
        return unit_scores(current, config.importance, dataset=dataset, physics_weight=config.finetune.physics_weight,
                           seed=config.seed + round_index)

    scores = scores_of(network, 0) if config.mode == "global" else None
    round_to, plan, latency = _plan(config, original, scores, measurer, progress)
    if measurer is not None:
        measurer.release()  # nothing is measured again until the end: no worker idles through fine-tuning
    metadata = {**(metadata or {}), "seed": str(config.seed), "pruning": json.dumps(config.to_dict())}
    stages = [_record(0, network, dataset, out_dir, metadata.get("variant", "dense"), metadata, started)]
    start_nonzero, target_nonzero = stages[0].nonzero_params, plan.params
    if config.method == "magnitude" and target_nonzero >= start_nonzero:
        raise UserError(f"the model already has only {start_nonzero:,} non-zero parameters, "
                        f"not more than the target {target_nonzero:,}")
    targets = round_targets(baseline, Target.of_widths(plan.widths) if latency else config.target, config.rounds,
                            round_to)
    stopped: str | None = None
    folded: set[str] = set()
    bar = progress_lines(targets, desc=f"{config.method} prune", unit="round", enabled=progress)
    for index, target in enumerate(bar, start=1):
        round_started = time.perf_counter()
        previous = network.with_module(copy.deepcopy(network.module))
        if config.method == "structured":
            scores = scores_of(network, index)
            step = plan_widths(network.architecture, target, mode=config.mode, scores=scores,
                               min_width=config.min_width, round_to=round_to, baseline=baseline)
            keep = select_keep(scores, step.widths)
            folded.update(name for name, f in zip(network.architecture.group_names,
                                                  foldable_groups(network.architecture)) if f)
            network = shrink(network, keep, fold=config.fold, calibration=calibration)
            frozen: contextlib.AbstractContextManager = contextlib.nullcontext()
        else:
            fraction = index / config.rounds
            nonzero = round(start_nonzero * (target_nonzero / start_nonzero) ** fraction)
            magnitude_prune(network, target_nonzero if index == config.rounds else nonzero)
            frozen = zeros_frozen(network)
        tuned: dict[str, Any] = {}
        if config.finetune.epochs:
            with frozen:
                tuned = _finetune(network, dataset, config, index, progress)
        stage = dataclasses.replace(
            _record(index, network, dataset, out_dir, config.method, metadata, round_started), **tuned)
        bar.set_postfix(widths=",".join(map(str, network.architecture.widths)), val_r2=f"{stage.val_r2:.4f}")
        drop = stages[0].val_r2 - stage.val_r2
        if config.tolerance is not None and drop > config.tolerance and config.on_drop != "record":
            reason = f"round {index} lowered validation R2 by {drop:.4f} (> tolerance {config.tolerance})"
            if config.on_drop == "rollback":
                stage = dataclasses.replace(stage, rolled_back=True)
                network = previous
                stopped = f"{reason}; rolled back to stage {index - 1}"
            else:
                stopped = f"{reason}; stopped after it"
            stages.append(stage)
            break
        stages.append(stage)
    bar.close()
    achieved = None
    if latency is not None and config.method == "structured":
        achieved = measurer.ratio(original, network, final=True)  # type: ignore[union-attr]
    folds = tuple(name for name in baseline.group_names if name in folded and config.fold != "none")
    result = PruneResult(config, plan, target_nonzero, tuple(stages), network, stopped,
                         time.perf_counter() - started, latency, achieved, folds)
    final = result.final
    save_checkpoint(out_dir / f"{config.method}.safetensors", network,
                    {**metadata, "variant": config.method, "stage": str(final.stage), "val_r2": f"{final.val_r2:.6f}"})
    write_history(result, out_dir)
    return result


def _finetune(network: Network, dataset: Dataset, config: PruneConfig, index: int, progress: bool) -> dict[str, Any]:
    """Round `index`'s fine-tune in place: the range test's rate (unless `--lr` fixed it), keeping the best state on
    held-out training rows; returns the Stage fields it sets."""
    settings = config.train_config(index)
    if config.lr_test:
        freeze = (lambda m: zeros_frozen(network.with_module(m))) if config.method == "magnitude" else None
        lr = lr_range_test(network.module, dataset, settings, freeze=freeze).lr
        settings = dataclasses.replace(settings, lr=lr, min_lr=min(settings.min_lr, lr / 10))
    result = train(network.module, dataset, settings, desc=f"round {index} fine-tune", progress=progress)
    return {"finetune_lr": settings.lr, "finetune_kept_epoch": result.kept_epoch}


def _plan(config: PruneConfig, dense: Network, scores: Sequence[torch.Tensor] | None,
          measurer: Measurer | None, progress: bool) -> tuple[RoundTo, PrunePlan, LatencyPlan | None]:
    """The final widths (and the blocks the rounds move in): from the budget alone, or from the latency table."""
    baseline = dense.architecture
    if config.measured_on is None:
        return config.round_to, plan_widths(baseline, config.target, mode=config.mode, scores=scores,  # type: ignore[arg-type]
                                            min_width=config.min_width, round_to=config.round_to), None  # type: ignore[arg-type]
    lookup = LatencyLookup(measurer, baseline)  # type: ignore[arg-type]
    common: dict[str, Any] = {"mode": config.mode, "scores": scores, "min_width": config.min_width}
    round_to: RoundTo = (auto_round_to(lookup, baseline, config.target, **common)  # type: ignore[assignment]
                         if config.round_to == AUTO else config.round_to)
    latency = None
    if config.target.kind == "latency":
        latency = plan_latency(lookup, dense, config.target, round_to=round_to,
                               log=print if progress else lambda _: None, **common)
        plan, round_to = latency.plan, latency.plan.round_to
    else:
        plan = plan_widths(baseline, config.target, round_to=round_to, **common)
    if progress:
        print(f"  latency table {lookup.path}: {lookup.measured} layer shapes measured now ({lookup.seconds:.0f} s), "
              f"{len(lookup.table.costs) - lookup.measured} from the cache", flush=True)
    return round_to, plan, latency


def write_history(result: PruneResult, out_dir: Path) -> None:
    """history.json (the contract) and history.csv (one row per stage, for spreadsheets and pandas)."""
    import pandas as pd

    history = result.to_dict()
    frame = pd.DataFrame(history["stages"])
    frame["widths"] = frame["widths"].map(lambda w: " ".join(map(str, w)))
    write_text(out_dir / "history.csv", frame.to_csv(index=False))
    write_json(out_dir / "history.json", history)
