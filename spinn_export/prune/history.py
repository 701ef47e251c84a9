"""What a pruning run leaves behind: one `Stage` per round, the `PruneResult`, and its history.json / history.csv
(the report reads them)."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinn_export.files import write_json, write_text
from spinn_export.model.architecture import Architecture
from spinn_export.model.network import Network
from spinn_export.prune.budget import PrunePlan
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.latency import AUTO, LatencyPlan, Ratio


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
    one_shot: bool = False  # the last round went on from dense pruned once to its widths (it scored better)

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


def write_history(result: PruneResult, out_dir: Path) -> None:
    """history.json (the contract) and history.csv (one row per stage, for spreadsheets and pandas)."""
    import pandas as pd

    history = result.to_dict()
    frame = pd.DataFrame(history["stages"])
    frame["widths"] = frame["widths"].map(lambda w: " ".join(map(str, w)))
    write_text(out_dir / "history.csv", frame.to_csv(index=False))
    write_json(out_dir / "history.json", history)
