"""The pruning methods, one object each: what one round does to the network, and what fine-tuning must then keep as
it is. `Structured` removes units (`shrink`, proven) towards the round's target; `Magnitude` zeroes the smallest
weights towards a non-zero count. `schedule.Schedule` runs either, round by round, as Torch-Pruning's pruner runs
its importance under a scheduler; `method_for` is the one place that reads `PruneConfig.method`.
"""
from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from spinn_export.errors import UserError
from spinn_export.model.network import Network
from spinn_export.prune.budget import PrunePlan, RoundTo, plan_widths, round_targets
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.importance import unit_scores
from spinn_export.prune.magnitude import magnitude_prune, zeros_frozen
from spinn_export.prune.shrink import foldable_groups, select_keep, shrink
from spinn_export.prune.target import Target
from spinn_export.task.data import Dataset
from spinn_export.task.train import holdout_score


@dataclass(frozen=True)
class Round:
    """What one round did: the network after it, the groups whose removed units' constants it folded, and whether
    the last round went on from dense pruned once to its widths (it scored better)."""

    network: Network
    folded: tuple[str, ...] = ()
    one_shot: bool = False


class Method(Protocol):
    """A pruning method: `name` (history.json's `method`, the checkpoint's variant), one round's cut, and what a
    fine-tune must keep as it is (a context manager around the training steps)."""

    name: ClassVar[str]

    def cut(self, network: Network, index: int) -> Round: ...

    def frozen(self, network: Network) -> AbstractContextManager[Any]: ...


def round_scores(network: Network, dataset: Dataset, config: PruneConfig, index: int) -> tuple[torch.Tensor, ...]:
    """Round `index`'s unit scores (round 0: the dense network's, which global mode plans the final widths by)."""
    return unit_scores(network, config.importance, dataset=dataset, physics_weight=config.finetune.physics_weight,
                       seed=config.seed + index)


@dataclass(frozen=True)
class Structured:
    """Remove whole units: round r shrinks towards `targets[r - 1]` (planned against `original`'s architecture, in
    blocks of `round_to`), folding removed units' constants (measured on `calibration`) where it can."""

    name: ClassVar[str] = "structured"
    config: PruneConfig
    dataset: Dataset
    original: Network
    targets: tuple[Target, ...]
    round_to: RoundTo
    calibration: torch.Tensor

    def cut(self, network: Network, index: int) -> Round:
        config, architecture = self.config, network.architecture
        scores = round_scores(network, self.dataset, config, index)
        step = plan_widths(architecture, self.targets[index - 1], mode=config.mode, scores=scores,
                           min_width=config.min_width, round_to=self.round_to, baseline=self.original.architecture)
        folded = tuple(name for name, f in zip(architecture.group_names, foldable_groups(architecture)) if f)
        pruned = shrink(network, select_keep(scores, step.widths), fold=config.fold, calibration=self.calibration)
        if index == config.rounds > 1:
            once = select_keep(round_scores(self.original, self.dataset, config, index), step.widths)
            one_shot = shrink(self.original, once, fold=config.fold, calibration=self.calibration)
            start, from_one_shot = self._last_round_start(pruned, one_shot)
            return Round(start, folded, from_one_shot)
        return Round(pruned, folded)

    def _last_round_start(self, rounds: Network, one_shot: Network) -> tuple[Network, bool]:
        """The last round goes on from the better, on the held-out training rows, of the network pruned round by
        round and dense pruned once to the same widths: a schedule of several rounds then never ends below a one-shot
        prune (keep_best keeps what the fine-tune starts from). Rounds can lose what one cut keeps: a TorchPhysics
        Harmonic FCN's second round left it at R² -4.97 where one cut to the same widths gave -2.19."""
        settings = self.config.train_config(self.config.rounds)
        if holdout_score(one_shot.module, self.dataset, settings) < holdout_score(rounds.module, self.dataset,
                                                                                   settings):
            return one_shot, True
        return rounds, False

    def frozen(self, network: Network) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()


@dataclass(frozen=True)
class Magnitude:
    """Zero the smallest weights in place: round r of N keeps start x (target / start)^(r / N) non-zero parameters,
    the last exactly `target`; a fine-tune keeps the zeros zero."""

    name: ClassVar[str] = "magnitude"
    rounds: int
    start: int
    target: int

    def __post_init__(self) -> None:
        if self.target >= self.start:
            raise UserError(f"the model already has only {self.start:,} non-zero parameters, "
                            f"not more than the target {self.target:,}")

    def cut(self, network: Network, index: int) -> Round:
        nonzero = round(self.start * (self.target / self.start) ** (index / self.rounds))
        magnitude_prune(network, self.target if index == self.rounds else nonzero)
        return Round(network)

    def frozen(self, network: Network) -> AbstractContextManager[Any]:
        return zeros_frozen(network)


def method_for(config: PruneConfig, dataset: Dataset, original: Network, plan: PrunePlan, latency: bool,
               dense_nonzero: int) -> Method:
    """The config's method, aimed at `plan`: magnitude at its parameter count, structured at the config's target in
    rounds (at the plan's widths where a latency target chose them: latency is a property of the widths)."""
    if config.method == "magnitude":
        return Magnitude(config.rounds, dense_nonzero, plan.params)
    target = Target.of_widths(plan.widths) if latency else config.target
    generator = torch.Generator().manual_seed(config.seed)
    rows = dataset.x_train[torch.randperm(len(dataset.x_train), generator=generator)[: config.calibration_samples]]
    targets = round_targets(original.architecture, target, config.rounds, plan.round_to)
    return Structured(config, dataset, original, targets, plan.round_to, rows)
