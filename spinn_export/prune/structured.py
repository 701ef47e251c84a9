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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from spinn_export.errors import UserError
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import count_nonzero
from spinn_export.model.network import Network
from spinn_export.progress import progress as progress_lines
from spinn_export.prune.budget import PrunePlan, RoundTo, plan_widths, round_targets
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.history import PruneResult, Stage, write_history
from spinn_export.prune.importance import unit_scores
from spinn_export.prune.latency import (
    AUTO,
    LatencyLookup,
    LatencyPlan,
    Measurer,
    auto_round_to,
    plan_latency,
)
from spinn_export.prune.magnitude import magnitude_prune, zeros_frozen
from spinn_export.prune.shrink import foldable_groups, select_keep, shrink
from spinn_export.prune.target import Target
from spinn_export.task.data import Dataset, check_model_fits, dataset_metadata
from spinn_export.task.metrics import evaluate
from spinn_export.task.train import holdout_score, lr_range_test, train


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
    metadata = {**dataset_metadata(dataset), **(metadata or {}), "seed": str(config.seed),
                "pruning": json.dumps(config.to_dict())}
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
        tuned_from = None
        if config.method == "structured":
            scores = scores_of(network, index)
            step = plan_widths(network.architecture, target, mode=config.mode, scores=scores,
                               min_width=config.min_width, round_to=round_to, baseline=baseline)
            keep = select_keep(scores, step.widths)
            folded.update(name for name, f in zip(network.architecture.group_names,
                                                  foldable_groups(network.architecture)) if f)
            network = shrink(network, keep, fold=config.fold, calibration=calibration)
            if index == config.rounds > 1:
                one_shot = shrink(original, select_keep(scores_of(original, index), step.widths), fold=config.fold,
                                  calibration=calibration)
                network, tuned_from = _last_round_start(network, one_shot, dataset, config)
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
            _record(index, network, dataset, out_dir, config.method, metadata, round_started), **tuned,
            one_shot=tuned_from == "one-shot")
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


def _last_round_start(rounds: Network, one_shot: Network, dataset: Dataset,
                      config: PruneConfig) -> tuple[Network, str]:
    """The last round goes on from the better, on the held-out training rows, of the network pruned round by round
    and dense pruned once to the same widths: a schedule of several rounds then never ends below a one-shot prune
    (keep_best keeps what the fine-tune starts from). Rounds can lose what one cut keeps: a TorchPhysics Harmonic
    FCN's second round left it at R² -4.97 where one cut to the same widths gave -2.19."""
    settings = config.train_config(config.rounds)
    if holdout_score(one_shot.module, dataset, settings) < holdout_score(rounds.module, dataset, settings):
        return one_shot, "one-shot"
    return rounds, "rounds"


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
