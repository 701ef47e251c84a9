"""The schedule: N rounds of a method, each fine-tuned, judged against the dense model's validation R² (`Schedule`).

Each round's fine-tune uses the training loss (data + physics) via `train.train`, which builds a fresh Adam each call.
That is the correct optimizer handling here: shrinking changes every parameter's shape, so moment estimates of the
old tensors no longer belong to any parameter. One constant rate left some pruned networks worse than no fine-tune
at all, so each round's fine-tune keeps its best state on held-out training rows, the just-pruned one included
(`TrainConfig.keep_best`), at the rate a range test chose for that network (`train.lr_range_test`) unless `--lr`
fixes it; each stage records both.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spinn_export.model.network import Network
from spinn_export.progress import progress as progress_lines
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.methods import Method
from spinn_export.prune.record import Stage
from spinn_export.task.data import Dataset
from spinn_export.task.train import lr_range_test, train

Record = Callable[[int, Network, float], Stage]  # (round, network, its start time) -> its saved stage


@dataclass(frozen=True)
class Outcome:
    """The rounds' stages (round 1 on), the network the run ends with, why it stopped early, and every group whose
    removed units' constants were folded."""

    stages: tuple[Stage, ...]
    network: Network
    stopped: str | None
    folded: frozenset[str]


@dataclass(frozen=True)
class Schedule:
    """Rounds, fine-tuning and the tolerance policy of `config` (its method is handed to `run`)."""

    config: PruneConfig
    dataset: Dataset
    progress: bool = True

    def run(self, method: Method, network: Network, record: Record, dense_r2: float) -> Outcome:
        """Cut, fine-tune and record each round; a round that lowers validation R² past the tolerance is recorded,
        stops the run, or is rolled back (`on_drop`)."""
        stages: list[Stage] = []
        folded: set[str] = set()
        stopped: str | None = None
        rounds = range(1, self.config.rounds + 1)
        bar = progress_lines(rounds, desc=f"{method.name} prune", unit="round", enabled=self.progress)
        for index in bar:
            started = time.perf_counter()
            previous = network.with_module(copy.deepcopy(network.module))
            cut = method.cut(network, index)
            network = cut.network
            folded.update(cut.folded)
            tuned = self._finetune(method, network, index) if self.config.finetune.epochs else {}
            stage = dataclasses.replace(record(index, network, started), **tuned, one_shot=cut.one_shot)
            bar.set_postfix(widths=",".join(map(str, network.architecture.widths)), val_r2=f"{stage.val_r2:.4f}")
            stopped = self._verdict(dense_r2 - stage.val_r2, index)
            if stopped is not None and self.config.on_drop == "rollback":
                stage = dataclasses.replace(stage, rolled_back=True)
                network = previous
            stages.append(stage)
            if stopped is not None:
                break
        bar.close()
        return Outcome(tuple(stages), network, stopped, frozenset(folded))

    def _verdict(self, drop: float, index: int) -> str | None:
        """Why the run stops after round `index`, which lowered validation R² by `drop`; None: it goes on."""
        tolerance, on_drop = self.config.tolerance, self.config.on_drop
        if tolerance is None or not drop > tolerance or on_drop == "record":  # (a NaN drop goes on)
            return None
        reason = f"round {index} lowered validation R2 by {drop:.4f} (> tolerance {tolerance})"
        if on_drop == "rollback":
            return f"{reason}; rolled back to stage {index - 1}"
        return f"{reason}; stopped after it"

    def _finetune(self, method: Method, network: Network, index: int) -> dict[str, Any]:
        """Round `index`'s fine-tune in place, inside what the method keeps frozen: the range test's rate (unless
        `--lr` fixed it), keeping the best state on held-out training rows; returns the Stage fields it sets."""
        settings = self.config.train_config(index)
        with method.frozen(network):
            if self.config.lr_test:
                lr = lr_range_test(network.module, self.dataset, settings,
                                   freeze=lambda module: method.frozen(network.with_module(module))).lr
                settings = dataclasses.replace(settings, lr=lr, min_lr=min(settings.min_lr, lr / 10))
            result = train(network.module, self.dataset, settings, desc=f"round {index} fine-tune",
                           progress=self.progress)
        return {"finetune_lr": settings.lr, "finetune_kept_epoch": result.kept_epoch}
