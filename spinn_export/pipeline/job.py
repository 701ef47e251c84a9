"""`spinn-export run`: train -> prune (structured and magnitude) -> export -> benchmark -> report -> gate.

Every stage is resumable (`pipeline.stages`). The benchmark stage runs the packaged suite through
`spinn-export bench` in a fresh process (ONNX Runtime's process-wide thread pool must be created before
any session, and the export stage's sessions were not), so the main job works from any folder.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spinn_export.bench.variants import possible_variants
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.mlp import build_model
from spinn_export.model.spec import SPINN_REFERENCE
from spinn_export.pipeline.stages import Stage, run_stage
from spinn_export.prune.budget import Target
from spinn_export.prune.structured import FINETUNE, PruneConfig, prune
from spinn_export.report.gate import GateOutcome, GatePolicy, SpeedupRule, format_rows, load_policy, run_gate
from spinn_export.report.writer import build_report, summary_table
from spinn_export.task.data import builtin_dataset
from spinn_export.task.train import TrainConfig, train

TARGET = 0.685
HEADLINE_BACKEND = "ort-cpu"  # what the default gate judges, and the backend paired in every run
# Every fp32 variant, and the structured model quantised (the quantised dense and magnitude models add time,
# not a comparison the report makes).
MAIN_VARIANTS = tuple(v.name for v in possible_variants(["fp32", "int8"]) if not v.quantised or v.role == "structured")


@dataclass(frozen=True)
class RunConfig:
    """The whole main job; `quick` trades accuracy and statistical power for a smoke run."""

    out: Path = Path("runs/default")
    quick: bool = False
    seed: int = 0
    target: float = TARGET
    round_to: int | None = 32  # widths in multiples of 32 keep GEMMs on full SIMD tiles
    policy: Path | None = None

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(epochs=3 if self.quick else TrainConfig.epochs, seed=self.seed)

    def prune(self, method: str) -> PruneConfig:
        finetune = dataclasses.replace(FINETUNE, epochs=1 if self.quick else FINETUNE.epochs)
        return PruneConfig(Target.params(self.target), method=method, seed=self.seed, round_to=self.round_to,
                           rounds=2 if self.quick else PruneConfig.rounds, finetune=finetune)

    @property
    def formats(self) -> str | None:
        """None: every default format (each one a registered plug-in)."""
        return "onnx" if self.quick else None

    @property
    def bench_args(self) -> list[str]:
        """`spinn-export bench` options: by default every backend that is not slow (CUDA ones skip without a GPU)."""
        common = ["--batches", ",".join(map(str, self.batches)), "--paired", HEADLINE_BACKEND]
        if self.quick:
            return [*common, "--quick", "--backends", f"eager-cpu,{HEADLINE_BACKEND}"]
        return [*common, "--variants", ",".join(MAIN_VARIANTS)]

    @property
    def batches(self) -> tuple[int, ...]:
        return (1, 8192) if self.quick else (1, 64, 1024, 8192)


@dataclass(frozen=True)
class RunOutcome:
    html: Path
    gate: GateOutcome
    summary: pd.DataFrame
    reused: tuple[str, ...] = field(default_factory=tuple)


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
    histories = (structured_dir / "history.json", magnitude_dir / "history.json")
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
        command = [sys.executable, "-m", "spinn_export", "bench", str(artifacts), *config.bench_args,
                   "--json", str(results)]
        print("  spinn-export " + " ".join(command[3:]), flush=True)
        completed = subprocess.run(command, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if completed.returncode != 0:
            raise UserError(f"the benchmark stage failed (spinn-export bench exit {completed.returncode}); "
                            "see its output above")

    def do_report() -> None:
        build_report([results], manifest, [structured_dir, magnitude_dir], report_dir,
                     command=f"spinn-export run{' --quick' if config.quick else ''} --out {out}")

    return [
        Stage("train", (), dataclasses.asdict(config.train), (dense,), do_train),
        Stage("prune-structured", (dense,), config.prune("structured").to_dict(), (structured, histories[0]),
              do_prune("structured", structured_dir)),
        Stage("prune-magnitude", (dense,), config.prune("magnitude").to_dict(), (magnitude, histories[1]),
              do_prune("magnitude", magnitude_dir)),
        Stage("export", (dense, structured, magnitude), {"formats": config.formats}, (manifest,), do_export),
        Stage("bench", (manifest,), {"args": config.bench_args}, (results,), do_bench),
        Stage("report", (results, manifest, *histories), {}, (report_dir / "report.html",), do_report),
    ]


def run(config: RunConfig) -> RunOutcome:
    all_stages = stages(config)
    reused = tuple(s.name for i, s in enumerate(all_stages, 1) if not run_stage(s, config.out, i, len(all_stages) + 1))
    print(f"[{len(all_stages) + 1}/{len(all_stages) + 1}] gate", flush=True)
    results = config.out / "bench.json"
    gate = run_gate(results, resolve_policy(config))
    summary = summary_table([results], config.out / "artifacts" / "manifest.json",
                            [config.out / "prune-structured", config.out / "prune-magnitude"])
    return RunOutcome(html=config.out / "report" / "report.html", gate=gate, summary=summary, reused=reused)


def format_summary(outcome: RunOutcome) -> str:
    gate = "passed" if outcome.gate.passed else "FAILED"
    return "\n".join([
        outcome.summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
        "",
        format_rows(outcome.gate.rows),
        f"gate {gate}",
        f"report: {outcome.html.resolve()}",
    ])
