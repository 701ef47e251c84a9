"""`spinn-export sweep`: accuracy against measured speed. Prune one checkpoint to several targets (fine-tuning
each), export every point, measure each point's paired speedup over dense, and write the Pareto front.

Two phases, deliberately apart:

1. Fine-tuning is independent per point, so it scales out: every point is a `PointJob` submitted to an executor
   (`pipeline.executors`: local processes by default, or a Dask or Ray cluster). A job carries everything a
   worker needs by value or by recipe (the checkpoint's bytes; how to rebuild the dataset, since a user's
   physics function loaded from a file does not pickle), and returns the files `spinn-export prune` writes as
   bytes, so workers need no filesystem shared with this machine (a user's --data and --physics files
   excepted) and this process is the only writer of DIR.
2. Timing never runs concurrently: after every future is done (and a local pool or cluster is stopped), each
   point is measured here, one measurement at a time, by `bench.paired.paired_speedups`: ABBA blocks against
   dense in fresh processes forked from a server that imported only the libraries, so ONNX Runtime's global
   thread pool is created in each measuring process before its sessions, and this process's own state (the
   exporter's sessions) cannot leak in. It is the same measurement as `spinn-export bench --paired`, without
   pytest's latency matrix, which a sweep does not report. Every row records the machine that measured it.

DIR is built under a temporary name beside it and renamed into place only when complete, so a failed or
interrupted sweep leaves nothing half-written under DIR.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinn_export.bench.backends import get_backend, torch_device_name
from spinn_export.bench.paired import PairedConfig, PairedResult, paired_speedups
from spinn_export.bench.timing import default_threads
from spinn_export.bench.variants import refs_from_manifest
from spinn_export.defaults import LATENCY_BACKEND, LATENCY_BATCH
from spinn_export.errors import UserError, first_line, require_file
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import Format, formats, get_format
from spinn_export.files import sha256_of, staged_directory
from spinn_export.model.checkpoint import Checkpoint, save_checkpoint
from spinn_export.model.importer import open_model
from spinn_export.pipeline.config import RunConfig
from spinn_export.pipeline.executors import DEFAULT_EXECUTOR, get_executor
from spinn_export.pipeline.points import EXAMPLE, DataSource, PointJob, PointOutput, SweepTarget, finetune_point
from spinn_export.prune.budget import plan_widths
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.latency import AUTO
from spinn_export.report.pareto import JSON_NAME, Sweep, SweepPoint, load_sweep, write_sweep
from spinn_export.task.data import Dataset, check_model_fits, dataset_metadata
from spinn_export.task.metrics import evaluate

# --quick measures in 2 fresh processes, not PairedConfig's 4: the smoke run's statistical power for half the
# measuring time (8 points of the reference SPINN at batch 4096: ABBA is most of a quick sweep's wall time on 2 cores);
# the CI still resamples processes, so it widens rather than hides what 2 processes miss.
QUICK_PAIRED_PROCESSES = 2


@dataclass(frozen=True)
class SweepConfig:
    """A sweep. `quick`, `rounds`, `finetune_epochs`, `round_to` and `seed` shape each point's pruning as in the
    main job (`RunConfig.prune`: quick is 2 rounds of 1 fine-tuning epoch); `magnitude` adds a magnitude point at
    each parameter target. `workers` (default: one per physical core, at most one per point) sizes the local pool
    or the cluster started here when no `address` is given. `backend` and `batch` are where every point is measured,
    and where latency budgets and `round_to` "auto" measure (the defaults of `prune --target-latency`)."""

    targets: tuple[SweepTarget, ...]
    method: str = "structured"
    magnitude: bool = True
    backend: str = LATENCY_BACKEND
    batch: int = LATENCY_BATCH
    quick: bool = False
    rounds: int | None = None
    finetune_epochs: int | None = None
    round_to: int | str | None = None
    seed: int = 0
    executor: str = DEFAULT_EXECUTOR
    address: str | None = None
    workers: int | None = None
    paired: PairedConfig = field(default_factory=PairedConfig)

    def __post_init__(self) -> None:
        if not self.targets:
            raise UserError(f"a sweep needs targets: give {EXAMPLE}")
        if self.batch < 1 or (self.workers is not None and self.workers < 1):
            raise UserError(f"--batch and --workers must be positive integers, got {self.batch} and {self.workers}")
        if self.method == "magnitude" and any(t.kind == "latency" for t in self.targets):
            raise UserError("a latency budget needs --method structured: masked (magnitude) models keep full-size "
                            "matrices, so no magnitude budget changes their latency")

    def prune_config(self, target: SweepTarget, method: str) -> PruneConfig:
        where = {"backend": self.backend, "batch": self.batch} if self.round_to == AUTO else {}
        base = RunConfig(quick=self.quick, target=target.budget(self.backend, self.batch), round_to=self.round_to,
                         seed=self.seed, **where).prune(method)
        epochs = base.finetune.epochs if self.finetune_epochs is None else self.finetune_epochs
        return dataclasses.replace(base, rounds=self.rounds or base.rounds,
                                   finetune=dataclasses.replace(base.finetune, epochs=epochs))

    def methods(self, target: SweepTarget) -> tuple[str, ...]:
        """The sweep's method at every target, and magnitude alongside at parameter targets."""
        companion = self.magnitude and self.method == "structured" and target.kind == "params"
        return (self.method, "magnitude") if companion else (self.method,)


def plan_jobs(config: SweepConfig, checkpoint: Checkpoint, checkpoint_bytes: bytes, data: DataSource,
              dataset: Dataset) -> list[PointJob]:
    """Every point's job; a target that no widths can meet is refused here, before any work (where the widths come
    from measured latencies, pruning finds out)."""
    metadata = tuple({**dataset_metadata(dataset), "variant": checkpoint.variant}.items())
    jobs = []
    for target in config.targets:
        for method in config.methods(target):
            prune_config = config.prune_config(target, method)
            if prune_config.measured_on is None:
                try:
                    plan_widths(checkpoint.network.architecture, prune_config.target, min_width=prune_config.min_width,
                                round_to=prune_config.block)
                except UserError as exc:
                    raise UserError(f"--targets {target.text}: {exc}") from None
            jobs.append(PointJob(f"{method}-{target.slug}", target, prune_config, checkpoint_bytes, data, metadata))
    return jobs


def run_jobs(jobs: Sequence[PointJob], config: SweepConfig, log: Callable[[str], None]) -> list[PointOutput]:
    """Fine-tune every point: side by side on the executor, then, here and one at a time, the points whose pruning
    times latencies (a latency budget, `--round-to auto`: `PruneConfig.measured_on`), since timing never shares the
    machine.

    Returns when every job is done and the executor is stopped, so nothing runs during the measurements after."""
    side_by_side = [job for job in jobs if job.config.measured_on is None]
    alone = [job for job in jobs if job.config.measured_on is not None]
    outputs: list[PointOutput] = []
    if side_by_side:
        executor = get_executor(config.executor)
        workers = config.workers or max(1, min(len(side_by_side), default_threads()))
        # a pool or cluster started here shares this machine's cores; a cluster the user runs has its own settings
        threads = max(1, default_threads() // workers) if config.address is None else None
        where = config.address or f"{workers} worker{'s' * (workers > 1)} here"
        log(f"fine-tuning {len(side_by_side)} point{'s' * (len(side_by_side) > 1)} on {executor.name} ({where})")
        with executor.open(workers, config.address) as pool:
            futures = {pool.submit(finetune_point, dataclasses.replace(job, threads=threads)): job
                       for job in side_by_side}
            try:
                for future in concurrent.futures.as_completed(futures):
                    outputs.append(_finished(futures[future], future.result, log))
            finally:
                for future in futures:
                    future.cancel()
    for job in alone:
        log(f"fine-tuning {job.name} here (its pruning times latencies: nothing else runs meanwhile)")
        outputs.append(_finished(job, functools.partial(finetune_point, dataclasses.replace(job, progress=True)), log))
    order = [job.name for job in jobs]
    return sorted(outputs, key=lambda output: order.index(output.name))


def _finished(job: PointJob, result: Callable[[], PointOutput], log: Callable[[str], None]) -> PointOutput:
    """A job's output, with one log line; a failed point is one line naming it (the other points are cancelled)."""
    try:
        output = result()
    except UserError as exc:
        raise UserError(f"point {job.name} failed: {first_line(exc)}") from None
    final = output.history.final
    log(f"  {job.name}: widths {list(final.widths)}, val R2 {final.val_r2:.4f}, on {output.host} in "
        f"{output.wall_s:.0f} s")
    return output


def export_format(backend_format: str) -> Format:
    """The float32 format the backend opens (ONNX for backends that run the checkpoint: cheap, and checked)."""
    for fmt in formats().values():
        if fmt.float32 and fmt.runtime_format == backend_format and fmt.available() is None:
            return fmt
    return get_format("onnx")


def check_out_dir(out: Path) -> None:
    """DIR is new, empty, or an earlier sweep's (which the new one replaces); anything else is refused."""
    if out.is_dir() and any(out.iterdir()) and not (out / JSON_NAME).is_file():
        raise UserError(f"--out {out} holds files that are not a sweep's (no {JSON_NAME}); a sweep replaces its "
                        "directory, so choose a new or empty one")


def measure(points: Sequence[PointOutput], baseline_name: str, artifacts: Path, config: SweepConfig,
            log: Callable[[str], None]) -> dict[str, PairedResult]:
    """Each point's paired speedup over the baseline, by point name (ABBA in fresh processes, one at a time)."""
    refs = {ref.model: ref for ref in refs_from_manifest(artifacts)
            if not ref.variant.quantised and not ref.variant.sparse}
    candidates = [refs[point.name] for point in points]
    threads = default_threads()
    log(f"measuring {len(candidates)} points against {baseline_name} on {config.backend} at batch {config.batch} "
        f"({threads} threads; ABBA, {config.paired.processes} fresh processes, one at a time)")
    results = paired_speedups(config.backend, refs[baseline_name], candidates, [config.batch], threads, config.paired)
    by_variant = {result.variant: result for result in results}
    return {ref.model: by_variant[ref.name] for ref in candidates}


def point_row(output: PointOutput, job: PointJob, speed: PairedResult, measured_on: str) -> SweepPoint:
    final = output.history.final
    return SweepPoint(
        target=job.target.text, method=job.config.method, widths=final.widths, params=final.params,
        nonzero_params=final.nonzero_params, val_r2=final.val_r2, residual_rms=final.val_residual_rms,
        speedup=speed.speedup_median, ci_low=speed.ci_low, ci_high=speed.ci_high, flop_ratio=speed.flop_ratio,
        backend=speed.backend, batch=speed.batch, measured_on=measured_on, finetuned_on=output.host,
    )


def checkpoint_bytes_of(checkpoint: Checkpoint) -> bytes:
    """The checkpoint as the bytes a worker receives (a model read from another form is saved as one first)."""
    with tempfile.TemporaryDirectory(prefix="spinn-sweep-source-") as scratch:
        path = save_checkpoint(Path(scratch) / "source.safetensors", checkpoint.network, checkpoint.metadata)
        return path.read_bytes()


def run_sweep(checkpoint_path: str | os.PathLike[str], data: DataSource, config: SweepConfig,
              out: str | os.PathLike[str], log: Callable[[str], None] = print,
              model_flags: dict[str, Any] | None = None) -> Sweep:
    """Fine-tune every point (on the executor), export, measure (here, one at a time), write DIR; return its points.

    The model may be a checkpoint or any form `model.importer` reads (`model_flags`: its `--model-code`,
    `--trust-pickle`, `--activation`), traced at the data's width.

    Everything the sweep needs is checked first (backend, executor, checkpoint, data, budgets), so a mistake costs
    no work and writes nothing.
    """

    started = time.perf_counter()
    out = Path(out)
    backend = get_backend(config.backend)
    reason = backend.unavailable_reason()
    if reason is not None:
        raise UserError(f"backend {backend.name} is unavailable: {reason}")
    get_executor(config.executor).check(config.address)
    check_out_dir(out)
    require_file(checkpoint_path, "model file", "check the path of the checkpoint or model")
    dataset = data.load()
    source = open_model(checkpoint_path, in_features=dataset.in_features, **(model_flags or {}))
    if source.variant == "magnitude":
        raise UserError(f"{checkpoint_path} is a magnitude-pruned (masked) checkpoint; sweep its dense original "
                        "instead")
    architecture = source.network.architecture
    architecture.require_prunable(str(checkpoint_path))
    check_model_fits(dataset, source.network)
    checkpoint_bytes = checkpoint_bytes_of(source)
    jobs = plan_jobs(config, source, checkpoint_bytes, data, dataset)
    fmt = export_format(backend.format)
    with staged_directory(out) as stage:
        outputs = run_jobs(jobs, config, log)
        finetuned = time.perf_counter()
        for output in outputs:
            for name, content in output.files:
                (stage / "points" / output.name).mkdir(parents=True, exist_ok=True)
                (stage / "points" / output.name / name).write_bytes(content)
        baseline = source.variant
        with tempfile.TemporaryDirectory(dir=stage) as scratch:
            inputs = [Path(scratch) / f"{baseline}.safetensors"]
            inputs[0].write_bytes(checkpoint_bytes)
            for output, job in zip(outputs, jobs):
                inputs.append(Path(scratch) / f"{output.name}.safetensors")
                inputs[-1].write_bytes(dict(output.files)[f"{job.config.method}.safetensors"])
            log(f"exporting {len(inputs)} models ({fmt.name}, parity-checked)")
            export_checkpoints(inputs, stage / "artifacts", (fmt,), data=None if data.data is None else dataset)
        exported = time.perf_counter()
        speeds = measure(outputs, baseline, stage / "artifacts", config, log)
        measured_on = f"{socket.gethostname()} ({torch_device_name(backend.device)})"
        points = [point_row(output, job, speeds[output.name], measured_on) for output, job in zip(outputs, jobs)]
        dense = evaluate(source.network.module, dataset, "val")
        summary = {
            "checkpoint": str(Path(checkpoint_path).resolve()), "checkpoint_sha256": sha256_of(checkpoint_path),
            "targets": [t.text for t in config.targets], "method": config.method, "backend": config.backend,
            "batch": config.batch, "threads": default_threads(), "measured_on": measured_on, "export_format": fmt.name,
            "executor": config.executor, "address": config.address, "workers": config.workers,
            "paired": dataclasses.asdict(config.paired),
            "dense": {"model": baseline, "widths": list(architecture.widths),
                      "groups": list(architecture.group_names), "params": architecture.params,
                      "val_r2": dense.r2, "residual_rms": dense.residual_rms},
            "finetune": [{"point": o.name, "host": o.host, "wall_s": o.wall_s, "config": j.config.to_dict()}
                         for o, j in zip(outputs, jobs)],
            "wall_s": {"finetune": finetuned - started, "export": exported - finetuned,
                       "measure": time.perf_counter() - exported},
        }
        summary["wall_s"]["total"] = time.perf_counter() - started
        write_sweep(stage, points, summary)
    return load_sweep(out)
