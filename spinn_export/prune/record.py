"""history.json as one record: what `spinn-export prune` writes and what the report and the gate read back.

Plain data only (no torch), so the report can read a history where torch is not installed.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinn_export.errors import UserError
from spinn_export.files import write_json
from spinn_export.records import Schema, read_json

HISTORY_NAME = "history.json"
# Version 1: the previous release's history.json (no schema); version 2 adds the schema name and this version.
SCHEMA = Schema("spinn-export.history", 2, "pruning history", "give the --out DIR of spinn-export prune")


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage:
        return cls(**{**data, "widths": tuple(data["widths"])})


def kept(stages: tuple[Stage, ...] | list[Stage]) -> Stage:
    """The stage a pruning run kept: the last one not rolled back."""
    return [stage for stage in stages if not stage.rolled_back][-1]


@dataclass(frozen=True)
class HistoryRecord:
    """A pruning run as history.json holds it: the target as asked beside what the final model achieved
    (docs/ARCHITECTURE.md, "Pruning"), the network as its groups, the config, and one `Stage` per round."""

    method: str
    target: dict[str, Any]
    achieved: dict[str, Any]
    architecture: dict[str, Any] | None
    stopped: str | None
    wall_s: float
    config: dict[str, Any]
    stages: tuple[Stage, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**SCHEMA.stamp(), **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | os.PathLike[str]) -> HistoryRecord:
        """A history of this release or the previous one (`from_release_1`); any other is refused in one line."""
        return SCHEMA.parse(data, path, from_release_1, cls._built)

    @classmethod
    def _built(cls, fields: dict[str, Any]) -> HistoryRecord:
        stages = tuple(Stage.from_dict(s) for s in fields.pop("stages"))
        if not stages:
            raise ValueError("no stages")
        return cls(**fields, stages=stages)

    @property
    def final(self) -> Stage:
        return kept(self.stages)

    def write(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> HistoryRecord:
        """DIR/history.json (or the file itself), or one line naming it and the fix."""
        path = Path(path)
        if path.is_dir():
            path = path / HISTORY_NAME
        if not path.is_file():
            raise UserError(f"pruning history {path} does not exist or is not a file: {SCHEMA.rewrite}")
        return cls.from_dict(read_json(path, SCHEMA), path)


def from_release_1(data: dict[str, Any]) -> dict[str, Any]:
    """A history of the previous release as version 2. Its later writers recorded every field; the first ones had no
    `method` (structured was the only one), `architecture`, nor the stages' fine-tuning and roll-back fields (the
    `Stage` defaults say what those runs did)."""
    defaults = {"method": "structured", "target": {}, "achieved": {}, "architecture": None, "stopped": None,
                "wall_s": float("nan"), "config": {}}
    stage_fields = {f.name for f in dataclasses.fields(Stage)}
    stages = [{k: v for k, v in stage.items() if k in stage_fields} for stage in data["stages"]]
    return {**defaults, **data, "stages": stages}
