"""What a pruning run leaves behind: one `Stage` per round, the `PruneResult`, and its history.json (through its
record, `prune.record`) / history.csv (the report reads them)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinn_export.files import write_text
from spinn_export.model.architecture import Architecture
from spinn_export.model.network import Network
from spinn_export.prune.budget import PrunePlan
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.latency import AUTO, LatencyPrediction, Ratio
from spinn_export.prune.record import HISTORY_NAME, HistoryRecord, Stage, kept


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
    latency: LatencyPrediction | None = None
    achieved_latency: Ratio | None = None
    folded: tuple[str, ...] = ()  # the groups whose removed units' constants were folded into the next biases

    @property
    def final(self) -> Stage:
        return kept(self.stages)

    def record(self) -> HistoryRecord:
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
        return HistoryRecord(
            method=self.config.method,
            target=target,
            achieved={
                "widths": list(final.widths),
                "params": final.params,
                "nonzero_params": final.nonzero_params,
                "flops_per_sample": final.flops_per_sample,
                "params_reduction": 1.0 - final.params / base.params,
                "nonzero_reduction": 1.0 - final.nonzero_params / self.stages[0].nonzero_params,
                "flops_reduction": 1.0 - final.flops_per_sample / base.flops_per_sample,
                **latency,
            },
            architecture=architecture_record(self.plan.baseline, self.network.architecture, self.folded),
            stopped=self.stopped,
            wall_s=self.wall_s,
            config=self.config.to_dict(),
            stages=self.stages,
        )


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
    import pandas as pd  # start-up: pandas only to write history.csv (the report reads history.json, prune.record)

    record = result.record()
    frame = pd.DataFrame([s.to_dict() for s in record.stages])
    frame["widths"] = frame["widths"].map(lambda w: " ".join(map(str, w)))
    write_text(out_dir / "history.csv", frame.to_csv(index=False))
    record.write(out_dir / HISTORY_NAME)
