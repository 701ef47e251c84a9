"""`spinn-export run`: train (or import the user's model) -> prune (structured and magnitude) -> export ->
benchmark -> report -> gate.

Every stage is resumable (`pipeline.stages`). The benchmark stage runs the packaged suite through
`spinn-export bench` in a fresh process (ONNX Runtime's process-wide thread pool must be created before
any session, and the export stage's sessions were not), so the main job works from any folder.

With a `UserModel` the first stage imports the user's MLP (as `spinn-export import` does: nothing is
unpickled unless they vouch for the file) instead of training the built-in SPINN, and pruning fine-tunes
on the user's data, held to the user's physics when given. Everything a stage depends on (the model and
data files, the physics file, the column names) is in its record, so a resumed run notices a change.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from spinn_export.bench.measurer import measuring
from spinn_export.bench.variants import FP32, possible_variants
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import formats, parse_formats, unavailable_formats
from spinn_export.model.architecture import SOURCES, Architecture
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.importer import import_model
from spinn_export.model.mlp import architecture_of, build_model
from spinn_export.model.spec import SPINN_REFERENCE
from spinn_export.pipeline.stages import Stage, run_stage
from spinn_export.prune.budget import Target
from spinn_export.prune.structured import FINETUNE, PruneConfig, prune
from spinn_export.report.gate import GateOutcome, GatePolicy, SpeedupRule, format_rows, load_policy, run_gate
from spinn_export.report.render import terminal_table
from spinn_export.report.summary import headline
from spinn_export.report.writer import build_report, fastest_summary, summary_table
from spinn_export.task.data import Dataset, builtin_dataset, check_model_fits, dataset_metadata, load_user_dataset
from spinn_export.task.metrics import evaluate
from spinn_export.task.physics import load_physics
from spinn_export.task.train import TrainConfig, train

TARGET = 0.685
ROUND_TO = 32  # the built-in SPINN's widths in multiples of 32 keep its GEMMs on full SIMD tiles
# pytest-benchmark's time per case (default 1 s): 0.35 s keeps the default matrix (every CPU backend x 4 batches x
# 5-6 variants, each case paired with dense, structured's pairing repeated in a fresh process, peak memory, the
# fastest deployment) near 6 minutes on 2 cores; the suite never times fewer than its minimum rounds
# (test_latency.MIN_ROUNDS), so the largest batches keep their CIs (0.3 s saved nothing measurable: the matrix
# took 218 s either way, its time being the large batches' minimum rounds). The main job adds no ABBA measurement
# (--paired none): the fresh processes already sample what differs between processes, for every backend.
CASE_SECONDS = 0.35
MAIN_PROCESSES = 2  # the matrix's process and one fresh one for structured's speedups (3 took the stage to 405 s)
HEADLINE_BACKEND = "ort-cpu"  # what the default gate judges


def main_formats() -> tuple[str, ...]:
    """The default formats plus every low-precision one this machine can produce (bf16 only where the CPU has
    native BF16): the main job measures every precision it can verify, not only float32. Slow formats that
    add no precision (AOTInductor) stay opt-in."""
    skipped = unavailable_formats()
    return tuple(name for name, fmt in formats().items()
                 if fmt.default or (fmt.precision != FP32 and name not in skipped))


def main_variants(format_names: tuple[str, ...]) -> tuple[str, ...]:
    """Every fp32 variant, and the structured model in each low precision exported (the quantised dense and
    magnitude models add time, not a comparison the report makes)."""
    exported = {formats()[name].precision for name in format_names}
    return tuple(v.name for v in possible_variants([FP32, *sorted(exported - {FP32})])
                 if not v.quantised or v.role == "structured")


@dataclass(frozen=True)
class UserModel:
    """`run --model`: the user's trained network (read as `model.importer` reads it: a .pt2, a state_dict with
    `model_code`, a trusted pickled module, or a bare state_dict as a plain MLP), the data it was trained on and
    optionally its physics (`--physics`, see `task.physics`), pruned instead of a freshly trained built-in SPINN."""

    model: Path
    data: Path
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    physics: str | None = None
    activation: str | None = None
    trust_pickle: bool = False
    model_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": str(self.model), "activation": self.activation, "trust_pickle": self.trust_pickle,
                "model_code": self.model_code, "data": str(self.data), "inputs": list(self.inputs),
                "targets": list(self.targets), "physics": self.physics}

    @property
    def arguments(self) -> list[str]:
        """The `spinn-export run` flags that name it."""
        words = ["--model", str(self.model)]
        words += ["--model-code", self.model_code] if self.model_code else []
        words += ["--activation", self.activation] if self.activation else []
        words += ["--trust-pickle"] if self.trust_pickle else []
        words += ["--data", str(self.data), "--inputs", ",".join(self.inputs), "--targets", ",".join(self.targets)]
        return words + (["--physics", self.physics] if self.physics else [])


def default_round_to(model: UserModel | None) -> int | None:
    """Widths in multiples of 32 for the built-in SPINN; a user's model of any widths is pruned neuron by neuron
    unless --round-to asks for blocks (a block of 32 can be a third of a small layer, or more than all of it)."""
    return ROUND_TO if model is None else None


@dataclass(frozen=True)
class RunConfig:
    """The whole main job; `quick` trades accuracy and statistical power for a smoke run.

    `model` None: train the built-in SPINN on the built-in task. `bench_batches` narrows the benchmark
    (default: 1 and 8192 when quick, else 1, 64, 1024 and 8192). `round_to` may be "auto"; `backend` and `batch`
    say where it measures (as `PruneConfig`'s; a latency target names its own).

    With a latency target the magnitude baseline keeps the structured plan's non-zero count (`PruneConfig`): the
    plan is cached with the latency table, so both prune stages get the same widths.
    """

    out: Path = Path("runs/default")
    quick: bool = False
    seed: int = 0
    target: Target = Target.params(TARGET)
    round_to: int | str | None = ROUND_TO
    policy: Path | None = None
    model: UserModel | None = None
    bench_batches: tuple[int, ...] | None = None
    backend: str | None = None
    batch: int | None = None

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(epochs=3 if self.quick else TrainConfig.epochs, seed=self.seed)

    def prune(self, method: str) -> PruneConfig:
        finetune = dataclasses.replace(FINETUNE, epochs=1 if self.quick else FINETUNE.epochs)
        return PruneConfig(self.target, method=method, seed=self.seed, round_to=self.round_to,
                           rounds=2 if self.quick else PruneConfig.rounds, finetune=finetune, backend=self.backend,
                           batch=self.batch)

    @property
    def formats(self) -> str:
        """The formats the export stage writes (each one a registered plug-in): `main_formats`, or ONNX when quick."""
        return "onnx" if self.quick else ",".join(main_formats())

    @property
    def bench_args(self) -> list[str]:
        """`spinn-export bench` options: by default every backend that is not slow (CUDA ones skip without a GPU)."""
        common = ["--batches", ",".join(map(str, self.batches)), "--paired", "none"]
        if self.quick:
            return [*common, "--quick", "--backends", f"eager-cpu,{HEADLINE_BACKEND}"]
        variants = main_variants(tuple(self.formats.split(",")))
        return [*common, "--variants", ",".join(variants), "--processes", str(MAIN_PROCESSES), "--",
                f"--benchmark-max-time={CASE_SECONDS}"]

    @property
    def batches(self) -> tuple[int, ...]:
        if self.bench_batches is not None:
            return self.bench_batches
        return (1, 8192) if self.quick else (1, 64, 1024, 8192)

    @property
    def command(self) -> str:
        """The `spinn-export run` command line of this run, as the report shows it."""
        words = ["spinn-export", "run", *(self.model.arguments if self.model else [])]
        if self.target != RunConfig.target:
            words += target_arguments(self.target)
        if self.round_to != default_round_to(self.model):
            words += ["--round-to", str(self.round_to or 1)]
        if self.target.kind != "latency":  # a latency target's flags name its backend and batch already
            words += [word for flag, value in (("--backend", self.backend), ("--batch", self.batch)) if value
                      for word in (flag, str(value))]
        words += ["--quick"] if self.quick else []
        words += ["--seed", str(self.seed)] if self.seed else []
        words += ["--policy", str(self.policy)] if self.policy else []
        return shlex.join([*words, "--out", str(self.out)])


def target_arguments(target: Target) -> list[str]:
    """The budget flags that ask for `target`."""
    if target.kind == "widths":
        return ["--widths", ",".join(map(str, target.widths or ()))]
    if target.kind == "latency":
        return ["--target-latency", f"{target.latency_ratio:g}", "--backend", str(target.backend),
                "--batch", str(target.batch)]
    return ["--target" if target.kind == "params" else "--target-flops", f"{target.reduction:g}"]


@dataclass(frozen=True)
class Source:
    """Where the dense model comes from and what it is pruned on: the data (with its physics) and, for a user's
    model, the model imported in memory. Built before any stage runs, so a mistake in them costs nothing."""

    dataset: Dataset
    imported: tuple[Architecture, nn.Module] | None = None
    files: tuple[Path, ...] = ()  # the user's data and physics files: inputs of the stages that read them
    code: tuple[Path, ...] = ()  # the file of --model-code: an input of the import stage


def prepare(config: RunConfig) -> Source:
    """Read and check everything the stages will need: the data, the physics on the model, the model's shape."""
    user = config.model
    if user is None:
        return Source(builtin_dataset(config.seed))
    physics = None if user.physics is None else load_physics(user.physics)
    dataset = load_user_dataset(user.data, list(user.inputs), list(user.targets), config.seed, physics)
    architecture, model = import_model(user.model, activation=user.activation, trust_pickle=user.trust_pickle,
                                       model_code=user.model_code, in_features=dataset.in_features)
    architecture.require_prunable(str(user.model))
    check_model_fits(dataset, architecture, model)
    physics_file = () if physics is None or physics.source is None else (physics.source,)
    code_file = () if user.model_code is None else _code_file(user.model_code)
    return Source(dataset, (architecture, model), (user.data, *physics_file), code_file)


def _code_file(model_code: str) -> tuple[Path, ...]:
    """--model-code's file, an input of the stages that read the model (a resumed run notices an edit)."""
    target = model_code.rpartition(":")[0]
    return (Path(target),) if target.endswith(".py") and Path(target).is_file() else ()


@dataclass(frozen=True)
class RunOutcome:
    html: Path
    results: Path  # the benchmark JSON the summary and the gate read
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


def stages(config: RunConfig, source: Source, policy: GatePolicy) -> list[Stage]:
    out = config.out
    dense = out / "dense.safetensors"
    structured_dir, magnitude_dir = out / "prune-structured", out / "prune-magnitude"
    structured, magnitude = structured_dir / "structured.safetensors", magnitude_dir / "magnitude.safetensors"
    histories = (structured_dir / "history.json", magnitude_dir / "history.json")
    artifacts = out / "artifacts"
    manifest = artifacts / "manifest.json"
    results = out / "bench.json"
    report_dir = out / "report"
    dataset = source.dataset
    user = config.model
    source_params = {} if user is None else {"model": user.to_dict()}

    def save_dense(model: nn.Module, architecture: Architecture, extra: dict[str, str]) -> None:
        save_checkpoint(dense, model, architecture, {"variant": "dense", **extra, **dataset_metadata(dataset),
                                             "seed": str(config.seed), "val_r2": f"{evaluate(model, dataset).r2:.6f}"})

    def do_train() -> None:
        model = build_model(SPINN_REFERENCE)
        train(model, dataset, config.train, desc="train dense")
        save_dense(model, architecture_of(SPINN_REFERENCE), {})

    def do_prune(method: str, out_dir: Path) -> Callable[[], None]:
        def action() -> None:
            checkpoint = load_checkpoint(dense)
            settings = config.prune(method)
            with measuring(settings.measured_on) as measurer:
                prune(checkpoint.model, checkpoint.architecture, dataset, settings, out_dir,
                      metadata=dataset_metadata(dataset), measurer=measurer)
        return action

    def do_export() -> None:
        export_checkpoints([dense, structured, magnitude], artifacts, parse_formats(config.formats))
        for name, reason in unavailable_formats().items():  # a precision this machine cannot run says why
            print(f"  skipped {name}: {reason}", flush=True)

    def do_bench() -> None:
        # the suite's long tables go to OUT/bench.log (not a stage parameter: where the log goes changes no result)
        command = [sys.executable, "-m", "spinn_export", "bench", str(artifacts), "--json", str(results),
                   "--log", str(out / "bench.log"), *config.bench_args]  # bench_args may end with -- PYTEST ARGS
        print("  spinn-export " + " ".join(command[3:]), flush=True)
        completed = subprocess.run(command, env={**os.environ, "PYTHONWARNINGS": "ignore"}, check=False)
        if completed.returncode != 0:
            raise UserError(f"the benchmark stage failed (spinn-export bench exit {completed.returncode}); "
                            f"see its message above and {out / 'bench.log'}")

    def do_report() -> None:
        build_report([results], manifest, [structured_dir, magnitude_dir], report_dir, command=config.command,
                     gate=run_gate(results, policy))  # the verdict belongs in the report's summary

    if user is None or source.imported is None:
        first = Stage("train", (), dataclasses.asdict(config.train), (dense,), do_train)
    else:
        architecture, model = source.imported

        def do_import() -> None:
            print(f"  imported {architecture.describe()} from {user.model} ({SOURCES[architecture.source]})",
                  flush=True)
            for reason in architecture.frozen_reasons():
                print(f"  frozen {reason}", flush=True)
            save_dense(model, architecture, {"source": str(user.model)})

        first = Stage("import", (user.model, *source.code), user.to_dict(), (dense,), do_import)
    return [
        first,
        Stage("prune-structured", (dense, *source.files), {**config.prune("structured").to_dict(), **source_params},
              (structured, histories[0]), do_prune("structured", structured_dir)),
        Stage("prune-magnitude", (dense, *source.files), {**config.prune("magnitude").to_dict(), **source_params},
              (magnitude, histories[1]), do_prune("magnitude", magnitude_dir)),
        Stage("export", (dense, structured, magnitude), {"formats": config.formats}, (manifest,), do_export),
        Stage("bench", (manifest,), {"args": config.bench_args}, (results,), do_bench),
        Stage("report", (results, manifest, *histories), {"policy": dataclasses.asdict(policy)},
              (report_dir / "report.html",), do_report),
    ]


def run(config: RunConfig) -> RunOutcome:
    policy = resolve_policy(config)  # an unreadable policy file fails now, not after the benchmark
    all_stages = stages(config, prepare(config), policy)
    reused = tuple(s.name for i, s in enumerate(all_stages, 1) if not run_stage(s, config.out, i, len(all_stages) + 1))
    print(f"[{len(all_stages) + 1}/{len(all_stages) + 1}] gate", flush=True)
    results = config.out / "bench.json"
    gate = run_gate(results, policy)
    summary = summary_table([results], config.out / "artifacts" / "manifest.json",
                            [config.out / "prune-structured", config.out / "prune-magnitude"])
    return RunOutcome(html=config.out / "report" / "report.html", results=results, gate=gate, summary=summary,
                      reused=reused)


def format_summary(outcome: RunOutcome) -> str:
    """What the job prints last: the answer in a sentence, the fastest verified deployment (or why it was not
    measured), the summary, the fastest deployment per batch and the gate as clean tables."""
    gate = "passed" if outcome.gate.passed else "FAILED"
    fastest, per_batch = fastest_summary([outcome.results])
    return "\n".join([
        headline(outcome.summary),
        fastest,
        "",
        terminal_table(outcome.summary),
        "",
        *([terminal_table(per_batch), ""] if not per_batch.empty else []),
        format_rows(outcome.gate.rows),
        f"gate {gate}",
        f"report: {outcome.html.resolve()}",
    ])
