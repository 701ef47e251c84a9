"""What decides a pruning run (`PruneConfig`, the CLI's defaults), validated once, before any work."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from spinn_export.defaults import LATENCY_BACKEND, LATENCY_BATCH
from spinn_export.errors import SettingError
from spinn_export.prune.budget import MODES
from spinn_export.prune.importance import CRITERIA
from spinn_export.prune.latency import AUTO
from spinn_export.prune.shrink import FOLDS
from spinn_export.prune.target import Target
from spinn_export.task.train import TrainConfig

METHODS = ("structured", "magnitude")
ON_DROP = ("record", "stop", "rollback")

FINETUNE = TrainConfig(epochs=4, lr=1e-3)


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides a pruning run; defaults are the CLI's. Its errors name settings by field, never by
    flag (`errors.SettingError`): command-line validation stays in `cli/`.

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
        """Values only: a message names a setting as `{field}` (`errors.SettingError`); the CLI gives its flags."""
        for field, value, allowed in (("method", self.method, METHODS), ("importance", self.importance, CRITERIA),
                                      ("mode", self.mode, MODES), ("fold", self.fold, FOLDS),
                                      ("on_drop", self.on_drop, ON_DROP)):
            if value not in allowed:
                raise SettingError(f"{{{field}}} {{value!r}} is not supported: choose one of {{allowed}}",
                                   value=value, allowed=", ".join(allowed))
        if self.rounds < 1:
            raise SettingError("{rounds} must be at least 1, got {value}", value=self.rounds)
        if self.tolerance is not None and not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise SettingError("{tolerance} must be a non-negative R2 drop like 0.01, got {value}",
                               value=self.tolerance)
        if self.on_drop != "record" and self.tolerance is None:
            raise SettingError("{on_drop} {value} needs {tolerance} (the largest allowed drop in validation R2)",
                               value=self.on_drop)
        if not (self.round_to is None or self.round_to == AUTO
                or (isinstance(self.round_to, int) and self.round_to >= 1)):
            raise SettingError("{round_to} must be a positive integer or {auto}, got {value!r}", auto=AUTO,
                               value=self.round_to)
        if self.round_to == AUTO and self.target.kind == "widths":
            raise SettingError("{round_to} {auto} chooses the widths' multiples, but {widths} gives the widths; "
                               "drop one", auto=AUTO)
        self._check_measured_on()

    def _check_measured_on(self) -> None:
        """`backend` and `batch` apply only where latency is measured, and agree with a latency target's own."""
        given = {"backend": self.backend, "batch": self.batch}
        if self.measured_on is None and any(v is not None for v in given.values()):
            raise SettingError("{backend} and {batch} say where latency is measured: they apply only with "
                               "{latency_ratio} or {round_to} {auto}", auto=AUTO)
        if self.target.kind == "latency":
            own = {"backend": self.target.backend, "batch": self.target.batch}
            clash = [field for field, value in given.items() if value is not None and value != own[field]]
            if clash:
                raise SettingError(" and ".join(f"{{{field}}}" for field in clash) + " disagree with the latency "
                                   "target's ({backend_value} at batch {batch_value}); give them once",
                                   backend_value=self.target.backend, batch_value=self.target.batch)

    @property
    def block(self) -> int | None:
        """A fixed `round_to` (None: unit by unit, or `auto`, whose multiples the latency table chooses)."""
        return self.round_to if isinstance(self.round_to, int) else None

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
