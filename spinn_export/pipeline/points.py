"""What a sweep's worker runs: one point's pruning and fine-tuning, self-contained (`PointJob` in, `PointOutput`
out), so that it can run in another process or on another machine (`pipeline.executors`).

Kept apart from `pipeline.sweep` (which exports, measures and writes) so a worker imports only pruning, the task
and the model: a job is unpickled by module, and a Dask or Ray worker on another machine should not have to load
the report's plotting stack to fine-tune a model.
"""
from __future__ import annotations

import functools
import json
import math
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from spinn_export.bench.measurer import measuring
from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.record import HISTORY_NAME, HistoryRecord
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.data import TARGETS_FLAG, Dataset, resolve_dataset
from spinn_export.task.physics import load_physics
from spinn_export.usercode import absolute

LATENCY = "lat:"
EXAMPLE = "fractions of parameters to remove such as 0.3,0.5,0.685,0.8, or latency budgets such as lat:0.4"


@dataclass(frozen=True)
class SweepTarget:
    """One point's budget as given: a fraction of parameters to remove (`kind` params), or `lat:R`, a latency
    budget of R times dense's on the sweep's backend and batch (`kind` latency)."""

    kind: str
    value: float

    @property
    def text(self) -> str:
        return f"{LATENCY if self.kind == 'latency' else ''}{self.value:g}"

    @property
    def slug(self) -> str:
        """The text as part of a file name (no colon)."""
        return self.text.replace(":", "")

    def budget(self, backend: str, batch: int) -> Target:
        if self.kind == "latency":
            return Target.latency(self.value, backend, batch)
        return Target.params(self.value)


def parse_targets(text: str) -> tuple[SweepTarget, ...]:
    """'0.3,0.5,lat:0.4' -> targets, each strictly between 0 and 1, none twice; a mistake is one line."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise UserError(f"--targets is empty: give {EXAMPLE}")
    targets: list[SweepTarget] = []
    for item in items:
        if not item:
            raise UserError(f"--targets {text!r} has an empty entry: give {EXAMPLE}, separated by commas")
        kind, number = ("latency", item[len(LATENCY):]) if item.startswith(LATENCY) else ("params", item)
        try:
            value = float(number)
        except ValueError:
            raise UserError(f"--targets: {item!r} is neither a fraction nor a latency budget: give {EXAMPLE}") from None
        if not (math.isfinite(value) and 0.0 < value < 1.0):
            meaning = ("the fraction of dense's latency allowed, e.g. lat:0.4" if kind == "latency"
                       else "the fraction of parameters to remove, e.g. 0.685")
            raise UserError(f"--targets: {item} is outside (0, 1): a target is {meaning}")
        target = SweepTarget(kind, value)
        if target in targets:
            raise UserError(f"--targets names {target.text} twice")
        targets.append(target)
    return tuple(targets)


@dataclass(frozen=True)
class DataSource:
    """How to build the dataset, rather than the dataset: a worker rebuilds it (a user's physics function, run
    from its file, does not pickle by reference). Paths are absolute, since a worker's directory is its own."""

    data: str | None = None
    inputs: str | None = None
    targets: str | None = None
    physics: str | None = None
    seed: int = 0
    targets_flag: str = TARGETS_FLAG

    @classmethod
    def of(cls, data: str | None, inputs: str | None, targets: str | None, physics: str | None,
           seed: int, targets_flag: str = TARGETS_FLAG) -> DataSource:
        """The CLI's data flags, with a data file and a physics PATH.py made absolute (`targets_flag`: the flag
        that named the target columns, for messages)."""
        return cls(None if data is None else str(Path(data).resolve()), inputs, targets,
                   None if physics is None else absolute(physics), seed, targets_flag)

    def load(self) -> Dataset:
        physics = None if self.physics is None else load_physics(self.physics)
        return resolve_dataset(self.data, self.inputs, self.targets, self.seed, physics, self.targets_flag)


@functools.lru_cache(maxsize=2)
def _dataset(source: DataSource) -> Dataset:
    """A worker process builds the dataset once and reuses it for every point it fine-tunes."""
    return source.load()


@dataclass(frozen=True)
class PointJob:
    """One point to prune and fine-tune, self-contained (what a worker on another machine receives).

    `threads`: torch threads for the worker (None: the worker's own setting, for a cluster the user runs).
    `progress`: pruning's own progress lines, for a job run in the sweep's process (a worker's would interleave)."""

    name: str
    target: SweepTarget
    config: PruneConfig
    checkpoint: bytes
    data: DataSource
    metadata: tuple[tuple[str, str], ...]
    threads: int | None = None
    progress: bool = False


@dataclass(frozen=True)
class PointOutput:
    """What a worker returns: the files `spinn-export prune` writes, by name, and where and how long it ran."""

    name: str
    files: tuple[tuple[str, bytes], ...]
    host: str
    wall_s: float

    @property
    def history(self) -> HistoryRecord:
        """The point's history.json through its record (a worker of another release is refused in one line)."""
        text = dict(self.files)[HISTORY_NAME]
        return HistoryRecord.from_dict(json.loads(text), f"point {self.name}'s {HISTORY_NAME}")


def finetune_point(job: PointJob) -> PointOutput:
    """Prune and fine-tune one point (in a worker): `structured.prune` into a scratch directory, returned as bytes."""

    started = time.perf_counter()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    with tempfile.TemporaryDirectory(prefix="spinn-sweep-") as scratch:
        source = Path(scratch) / "input.safetensors"
        source.write_bytes(job.checkpoint)
        checkpoint = load_checkpoint(source)
        out = Path(scratch) / "out"
        with measuring(job.config.measured_on) as measurer:
            prune(checkpoint.network, _dataset(job.data), job.config, out,
                  metadata=dict(job.metadata), progress=job.progress, measurer=measurer)
        files = tuple((path.name, path.read_bytes()) for path in sorted(out.iterdir()))
    return PointOutput(job.name, files, socket.gethostname(), time.perf_counter() - started)
