"""Pruning, composed: a method (`methods`: structured or magnitude), a target kind (`budget.plan_widths`'s walk, or
`latency.plan_latency` for a latency target) and a schedule (`schedule.Schedule`: rounds and fine-tuning), put
together by `prune`, which also writes every stage, the final checkpoint and the history.

Each round shrinks the network's width groups (`shrink`: every layer a smaller dense matrix, removed units folded
into the next biases where exact, and the result proven against the original before anything is saved); the rounds'
reductions compound to the target.

A latency target (and `--round-to auto`) is planned against measurements (`prune.latency`) before
anything is written: the plan is checked end to end, the rounds then shrink towards its widths,
and the pruned model is measured paired against dense at the end (history.json's
`achieved.latency_ratio`). The measurements are the caller's `Measurer` (pruning comes before bench).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import count_nonzero
from spinn_export.model.network import Network
from spinn_export.prune.budget import PrunePlan, plan_widths
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.history import PruneResult, write_history
from spinn_export.prune.importance import unit_scores
from spinn_export.prune.latency import AUTO, LatencyLookup, LatencyPrediction, Measurer, auto_round_to, plan_latency
from spinn_export.prune.methods import method_for, round_scores
from spinn_export.prune.record import Stage
from spinn_export.prune.schedule import Schedule
from spinn_export.prune.shrink import select_keep, shrink
from spinn_export.task.data import Dataset, check_model_fits, dataset_metadata
from spinn_export.task.metrics import evaluate


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
    scores = round_scores(original, dataset, config, 0) if config.mode == "global" else None
    plan, latency = _choose(config, original, scores, measurer, progress)
    if measurer is not None:
        measurer.release()  # nothing is measured again until the end: no worker idles through fine-tuning
    metadata = {**dataset_metadata(dataset), **(metadata or {}), "seed": str(config.seed),
                "pruning": json.dumps(config.to_dict())}
    dense_stage = _record(0, original, dataset, out_dir, metadata.get("variant", "dense"), metadata, started)
    method = method_for(config, dataset, original, plan, latency is not None, dense_stage.nonzero_params)

    def record(index: int, network: Network, round_started: float) -> Stage:
        return _record(index, network, dataset, out_dir, method.name, metadata, round_started)

    run = Schedule(config, dataset, progress).run(method, original, record, dense_stage.val_r2)
    achieved = None
    if measurer is not None and latency is not None and config.method == "structured":
        achieved = measurer.ratio(original, run.network, final=True)
    folds = tuple(name for name in baseline.group_names if name in run.folded and config.fold != "none")
    result = PruneResult(config, plan, plan.params, (dense_stage, *run.stages), run.network, run.stopped,
                         time.perf_counter() - started, latency, achieved, folds)
    final = result.final
    save_checkpoint(out_dir / f"{config.method}.safetensors", run.network,
                    {**metadata, "variant": config.method, "stage": str(final.stage), "val_r2": f"{final.val_r2:.6f}"})
    write_history(result, out_dir)
    return result


def _choose(config: PruneConfig, dense: Network, scores: Sequence[torch.Tensor] | None, measurer: Measurer | None,
            progress: bool) -> tuple[PrunePlan, LatencyPrediction | None]:
    """The final widths, in the blocks the rounds move in (`plan.round_to`): from the budget alone, or from the
    latency table (a latency target's prediction beside them)."""
    baseline = dense.architecture
    common = {"mode": config.mode, "scores": scores, "min_width": config.min_width}
    if config.measured_on is None or measurer is None:
        return plan_widths(baseline, config.target, round_to=config.block, **common), None
    lookup = LatencyLookup(measurer, baseline)
    round_to = auto_round_to(lookup, baseline, config.target, **common) if config.round_to == AUTO else config.block
    latency = None
    if config.target.kind == "latency":
        latency = plan_latency(lookup, dense, config.target, round_to=round_to,
                               log=print if progress else lambda _: None, **common)
        plan = latency.plan
    else:
        plan = plan_widths(baseline, config.target, round_to=round_to, **common)
    if progress:
        print(f"  latency table {lookup.path}: {lookup.measured} layer shapes measured now ({lookup.seconds:.0f} s), "
              f"{len(lookup.table.costs) - lookup.measured} from the cache", flush=True)
    return plan, latency
