"""`spinn-export run`: train -> prune (structured and magnitude) -> export -> benchmark -> report -> gate.

Each stage records what it was given (its parameters and the sha256 of its inputs) and what it
made (the sha256 of its outputs) in OUT/stages/<name>.json.  A stage whose record matches and
whose outputs are still there, unchanged, is not redone, so an interrupted run resumes where it
stopped and a finished one only re-prints its summary.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spinn_export.atomic import write_json
from spinn_export.prune.budget import Target
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.task.data import builtin_dataset
from spinn_export.errors import UserError
from spinn_export.export.formats import parse_formats
from spinn_export.report.gate import GateOutcome, GatePolicy, SpeedupRule, format_rows, load_policy, run_gate
from spinn_export.export.manifest import export_checkpoints, sha256_of
from spinn_export.model.mlp import build_model
from spinn_export.prune.structured import PruneConfig, prune
from spinn_export.report.writer import build_report
from spinn_export.model.spec import SPINN_REFERENCE
from spinn_export.task.train import TrainConfig, train

TARGET = 0.685
HEADLINE_BACKEND = "ort-cpu"


@dataclass(frozen=True)
class RunConfig:
    """The whole main job; `quick` trades accuracy and statistical power for a smoke run."""

    out: Path = Path("runs/default")
    quick: bool = False
    seed: int = 0
    target: float = TARGET
    round_to: int | None = 32  # widths in multiples of 32 keep GEMMs on full SIMD tiles
    backends: str = "eager-cpu,compile-cpu,torchscript-cpu,exported-program-cpu,ort-cpu"
    policy: Path | None = None

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(epochs=3 if self.quick else TrainConfig.epochs, seed=self.seed)

    def prune(self, method: str) -> PruneConfig:
        return PruneConfig(Target.params(self.target), method=method, seed=self.seed, round_to=self.round_to,
                           rounds=2 if self.quick else PruneConfig.rounds,
                           finetune_epochs=1 if self.quick else PruneConfig.finetune_epochs)

    @property
    def formats(self) -> str:
        return "onnx" if self.quick else "torchscript,onnx,exported-program,onnx-int8"

    @property
    def bench_args(self) -> list[str]:
        if self.quick:
            return ["--spinn-quick", "--spinn-backends", "eager-cpu,ort-cpu", "--spinn-paired", "ort-cpu"]
        return ["--spinn-backends", self.backends, "--spinn-paired", HEADLINE_BACKEND,
                "--spinn-variants", "dense,structured,magnitude-masked,magnitude-csr,structured-int8"]

    @property
    def batches(self) -> tuple[int, ...]:
        return (1, 8192) if self.quick else (1, 64, 1024, 8192)


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[Path, ...]
    params: dict[str, Any]
    outputs: tuple[Path, ...]
    action: Callable[[], None]


@dataclass(frozen=True)
class RunOutcome:
    html: Path
    gate: GateOutcome
    summary: pd.DataFrame
    reused: tuple[str, ...] = field(default_factory=tuple)


def _record_path(out: Path, name: str) -> Path:
    return out / "stages" / f"{name}.json"


def _digests(paths: Sequence[Path]) -> dict[str, str]:
    return {str(p): sha256_of(p) for p in paths}


def _is_current(stage: Stage, out: Path) -> bool:
    record_path = _record_path(out, stage.name)
    if not record_path.is_file() or not all(p.is_file() for p in stage.outputs):
        return False
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (record.get("params") == json.loads(json.dumps(stage.params, default=str))
            and record.get("inputs") == _digests(stage.inputs)
            and record.get("outputs") == _digests(stage.outputs))


def run_stage(stage: Stage, out: Path, index: int, total: int) -> bool:
    """Run `stage` unless its record says its outputs are current; True if it ran."""
    if _is_current(stage, out):
        print(f"[{index}/{total}] {stage.name}: up to date, reused", flush=True)
        return False
    print(f"[{index}/{total}] {stage.name} ...", flush=True)
    started = time.perf_counter()
    stage.action()
    missing = [str(p) for p in stage.outputs if not p.is_file()]
    if missing:
        raise RuntimeError(f"stage {stage.name} did not produce {missing}")
    write_json(_record_path(out, stage.name), {
        "params": json.loads(json.dumps(stage.params, default=str)),
        "inputs": _digests(stage.inputs), "outputs": _digests(stage.outputs),
        "wall_s": round(time.perf_counter() - started, 2)})
    print(f"[{index}/{total}] {stage.name}: done in {time.perf_counter() - started:.0f} s", flush=True)
    return True


def bench_directory() -> Path:
    """The suite ships beside the package in the checkout (bench/), not inside it."""
    for candidate in (Path.cwd() / "bench", Path(__file__).resolve().parent.parent / "bench"):
        if (candidate / "conftest.py").is_file():
            return candidate
    raise UserError("cannot find the benchmark suite bench/: run `spinn-export run` from the spinn-export checkout")


def default_policy(config: RunConfig) -> GatePolicy:
    """Without a policy file: the structured model must not be slower than dense at the largest batch."""
    return GatePolicy(variant="structured", rules=(SpeedupRule(HEADLINE_BACKEND, max(config.batches), 1.0),))


def resolve_policy(config: RunConfig) -> GatePolicy:
    if config.policy is not None:
        policy = load_policy(config.policy)
        if policy is None:
            raise UserError(f"{config.policy} has no [tool.spinn_export.gate] table")
        return policy
    local = Path("pyproject.toml")
    policy = load_policy(local) if local.is_file() else None
    if policy is not None and all(rule.batch in config.batches for rule in policy.rules):
        return policy
    return default_policy(config)


def stages(config: RunConfig) -> list[Stage]:
    out = config.out
    dense = out / "dense.safetensors"
    structured_dir, magnitude_dir = out / "prune-structured", out / "prune-magnitude"
    structured, magnitude = structured_dir / "structured.safetensors", magnitude_dir / "magnitude.safetensors"
    artifacts = out / "artifacts"
    manifest = artifacts / "manifest.json"
    results = out / "bench.json"
    report_dir = out / "report"

    def do_train() -> None:
        dataset = builtin_dataset(config.seed)
        model = build_model(SPINN_REFERENCE)
        result = train(model, dataset, config.train, desc="train dense")
        save_checkpoint(dense, model, SPINN_REFERENCE, {
            "variant": "dense", "dataset": dataset.name, "seed": str(config.seed), "val_r2": f"{result.final.r2:.6f}",
            "inputs": ",".join(dataset.input_names), "targets": ",".join(dataset.target_names)})

    def do_prune(method: str, out_dir: Path) -> Callable[[], None]:
        def action() -> None:
            checkpoint = load_checkpoint(dense)
            prune(checkpoint.model, checkpoint.spec, builtin_dataset(config.seed), config.prune(method), out_dir,
                  metadata={k: v for k, v in checkpoint.metadata.items() if k in ("dataset", "inputs", "targets")})
        return action

    def do_export() -> None:
        export_checkpoints([dense, structured, magnitude], artifacts, parse_formats(config.formats))

    def do_bench() -> None:
        command = [sys.executable, "-m", "pytest", str(bench_directory()), "-q", "-p", "no:cacheprovider",
                   "--spinn-artifacts", str(artifacts), "--spinn-batches", ",".join(map(str, config.batches)),
                   *config.bench_args, "--benchmark-json", str(results)]
        print("  " + " ".join(command[2:]), flush=True)
        completed = subprocess.run(command, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if completed.returncode != 0:
            results.unlink(missing_ok=True)
            raise UserError(f"the benchmark suite failed (pytest exit {completed.returncode}); see its output above")

    def do_report() -> None:
        build_report([results], manifest, [structured_dir, magnitude_dir], report_dir,
                     command=f"spinn-export run{' --quick' if config.quick else ''} --out {out}")

    train_params = dataclasses.asdict(config.train)
    return [
        Stage("train", (), train_params, (dense,), do_train),
        Stage("prune-structured", (dense,), config.prune("structured").to_dict(),
              (structured, structured_dir / "history.json"), do_prune("structured", structured_dir)),
        Stage("prune-magnitude", (dense,), config.prune("magnitude").to_dict(),
              (magnitude, magnitude_dir / "history.json"), do_prune("magnitude", magnitude_dir)),
        Stage("export", (dense, structured, magnitude), {"formats": config.formats}, (manifest,), do_export),
        Stage("bench", (manifest,), {"args": config.bench_args, "batches": list(config.batches)}, (results,), do_bench),
        Stage("report", (results, manifest, structured_dir / "history.json", magnitude_dir / "history.json"), {},
              (report_dir / "report.html",), do_report),
    ]


def run(config: RunConfig) -> RunOutcome:
    all_stages = stages(config)
    reused = tuple(s.name for i, s in enumerate(all_stages, 1) if not run_stage(s, config.out, i, len(all_stages) + 1))
    print(f"[{len(all_stages) + 1}/{len(all_stages) + 1}] gate", flush=True)
    gate = run_gate(config.out / "bench.json", resolve_policy(config))
    report_dir = config.out / "report"
    summary = pd.read_csv(report_dir / "csv" / "comparison.csv")
    return RunOutcome(html=report_dir / "report.html", gate=gate, summary=summary, reused=reused)


def format_summary(outcome: RunOutcome) -> str:
    gate = "passed" if outcome.gate.passed else "FAILED"
    return "\n".join([
        outcome.summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
        "",
        format_rows(outcome.gate.rows),
        f"gate {gate}",
        f"report: {outcome.html.resolve()}",
    ])
