"""`spinn-export run`: train (or import the user's model) -> prune (structured and magnitude) -> export ->
benchmark -> report -> gate.

Every stage is resumable (`pipeline.stages`); the folder's layout is written once (`RunLayout`) and the gate is
evaluated once per run, for the report and the exit code alike. The benchmark stage runs the packaged suite through
`spinn-export bench` in a fresh process (ONNX Runtime's process-wide thread pool must be created before any
session, and the export stage's sessions were not), so the main job works from any folder.

With a `UserModel` the first stage imports the user's network (as `spinn-export import` does: nothing is unpickled
unless they vouch for the file) instead of training the built-in SPINN, and pruning fine-tunes on the user's data,
held to the user's physics when given. Everything a stage depends on (the model, code and data files, the physics
file, the column names) is in its record, so a resumed run notices a change.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spinn_export.bench.measurer import measuring
from spinn_export.defaults import HEADLINE_BACKEND
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats, unavailable_formats
from spinn_export.model.architecture import SOURCES
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.importer import import_model
from spinn_export.model.mlp import mlp_network
from spinn_export.model.network import Network
from spinn_export.model.spec import SPINN_REFERENCE
from spinn_export.pipeline.config import RunConfig
from spinn_export.pipeline.stages import Stage, run_stage
from spinn_export.prune.structured import prune
from spinn_export.report.gate import GateOutcome, GatePolicy, SpeedupRule, format_rows, load_policy, run_gate
from spinn_export.report.render import terminal_table
from spinn_export.report.results import load_history, load_results
from spinn_export.report.summary import budget_sentence, headline, noise_sentences
from spinn_export.report.writer import build_report, fastest_summary, summary_table
from spinn_export.task.data import Dataset, builtin_dataset, check_model_fits, dataset_metadata, load_user_dataset
from spinn_export.task.metrics import evaluate
from spinn_export.task.physics import load_physics
from spinn_export.task.train import train


@dataclass(frozen=True)
class RunLayout:
    """Every path of the main job's folder, named once."""

    out: Path

    @property
    def dense(self) -> Path:
        return self.out / "dense.safetensors"

    @property
    def pruned(self) -> dict[str, Path]:
        """method -> its pruning directory."""
        return {method: self.out / f"prune-{method}" for method in ("structured", "magnitude")}

    def checkpoint(self, method: str) -> Path:
        return self.pruned[method] / f"{method}.safetensors"

    def history(self, method: str) -> Path:
        return self.pruned[method] / "history.json"

    @property
    def histories(self) -> list[Path]:
        return [self.history(method) for method in self.pruned]

    @property
    def artifacts(self) -> Path:
        return self.out / "artifacts"

    @property
    def manifest(self) -> Path:
        return self.artifacts / "manifest.json"

    @property
    def results(self) -> Path:
        return self.out / "bench.json"

    @property
    def bench_log(self) -> Path:
        return self.out / "bench.log"

    @property
    def report(self) -> Path:
        return self.out / "report"

    @property
    def html(self) -> Path:
        return self.report / "report.html"


@dataclass(frozen=True)
class Source:
    """Where the dense model comes from and what it is pruned on: the data (with its physics) and, for a user's
    model, the model imported in memory. Built before any stage runs, so a mistake in them costs nothing."""

    dataset: Dataset
    imported: Network | None = None
    files: tuple[Path, ...] = ()  # the user's data and physics files: inputs of the stages that read them
    code: tuple[Path, ...] = ()  # the file of --model-code: an input of the import stage


def prepare(config: RunConfig) -> Source:
    """Read and check everything the stages will need: the data, the physics on the model, the model's shape."""
    user = config.model
    if user is None:
        return Source(builtin_dataset(config.seed))
    physics = None if user.physics is None else load_physics(user.physics)
    dataset = load_user_dataset(user.data, list(user.inputs), list(user.targets), config.seed, physics)
    network = import_model(user.model, activation=user.activation, trust_pickle=user.trust_pickle,
                           model_code=user.model_code, in_features=dataset.in_features, output=user.output,
                           data=dataset.x_train)
    network.architecture.require_prunable(str(user.model))
    check_model_fits(dataset, network)
    physics_file = () if physics is None or physics.source is None else (physics.source,)
    code_file = () if user.model_code is None else _code_file(user.model_code)
    return Source(dataset, network, (user.data, *physics_file), code_file)


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
    histories: tuple[Path, ...] = ()  # the pruning histories: each variant's R² per round, for the budget sentence


def default_policy(config: RunConfig) -> GatePolicy:
    """Without a policy file: the structured model must not be slower than dense at the largest batch, nor lose more
    validation R² than the run's --max-r2-drop."""
    return GatePolicy(variant="structured", rules=(SpeedupRule(HEADLINE_BACKEND, max(config.batches), 1.0),),
                      max_r2_drop=config.max_r2_drop)


def resolve_policy(config: RunConfig) -> GatePolicy:
    """--policy's table, else ./pyproject.toml's where it covers the measured batches, else `default_policy`; a policy
    without `max_r2_drop` holds the run to its --max-r2-drop (every run's accuracy is judged)."""
    if config.policy is not None:
        policy = load_policy(config.policy)
        if policy is None:
            raise UserError(f"{config.policy} has no [tool.spinn_export.gate] table")
    else:
        local = Path("pyproject.toml")
        policy = load_policy(local) if local.is_file() else None
        if policy is None or not all(rule.batch in config.batches for rule in policy.rules):
            return default_policy(config)
    return policy if policy.max_r2_drop is not None else dataclasses.replace(policy, max_r2_drop=config.max_r2_drop)


def stages(config: RunConfig, source: Source, policy: GatePolicy,
           gate: Callable[[], GateOutcome] | None = None) -> list[Stage]:
    """The job's stages in order; `gate` gives the run's one verdict (evaluated when the report first needs it)."""
    layout = RunLayout(config.out)
    gate = gate or functools.cache(lambda: run_gate(layout.results, policy, histories=layout.histories))
    dataset = source.dataset
    user = config.model
    source_params = {} if user is None else {"model": user.to_dict()}
    methods = tuple(layout.pruned)

    def save_dense(network: Network, extra: dict[str, str]) -> None:
        save_checkpoint(layout.dense, network,
                        {"variant": "dense", **extra, **dataset_metadata(dataset), "seed": str(config.seed),
                         "val_r2": f"{evaluate(network.module, dataset).r2:.6f}"})

    def do_train() -> None:
        network = mlp_network(SPINN_REFERENCE)
        train(network.module, dataset, config.train, desc="train dense")
        save_dense(network, {})

    def do_prune(method: str) -> Callable[[], None]:
        def action() -> None:
            checkpoint = load_checkpoint(layout.dense)
            settings = config.prune(method)
            with measuring(settings.measured_on) as measurer:
                prune(checkpoint.network, dataset, settings, layout.pruned[method],
                      metadata=dataset_metadata(dataset), measurer=measurer)
        return action

    def do_export() -> None:
        skipped = unavailable_formats()  # a precision this machine cannot produce says why, here and in the report
        export_checkpoints([layout.dense, *(layout.checkpoint(m) for m in methods)], layout.artifacts,
                           parse_formats(config.formats), data=None if user is None else dataset,
                           max_r2_drop=config.max_r2_drop, unavailable=skipped)  # a user's data calibrates
        for name, reason in skipped.items():
            print(f"  skipped {name}: {reason}", flush=True)

    def do_bench() -> None:
        # the suite's long tables go to OUT/bench.log (not a stage parameter: where the log goes changes no result)
        command = [sys.executable, "-m", "spinn_export", "bench", str(layout.artifacts), "--json",
                   str(layout.results), "--log", str(layout.bench_log), *config.bench_args]  # may end with -- ARGS
        print("  spinn-export " + " ".join(command[3:]), flush=True)
        completed = subprocess.run(command, env={**os.environ, "PYTHONWARNINGS": "ignore"}, check=False)
        if completed.returncode != 0:
            raise UserError(f"the benchmark stage failed (spinn-export bench exit {completed.returncode}); "
                            f"see its message above and {layout.bench_log}")

    def do_report() -> None:
        build_report([layout.results], layout.manifest, list(layout.pruned.values()), layout.report,
                     command=config.command, gate=gate())  # the verdict belongs in the report's summary

    if user is None or source.imported is None:
        first = Stage("train", (), dataclasses.asdict(config.train), (layout.dense,), do_train)
    else:
        imported = source.imported
        architecture = imported.architecture

        def do_import() -> None:
            print(f"  imported {architecture.describe()} from {user.model} ({SOURCES[architecture.source]})",
                  flush=True)
            for reason in architecture.frozen_reasons():
                print(f"  frozen {reason}", flush=True)
            save_dense(imported, {"source": str(user.model)})

        first = Stage("import", (user.model, *source.code), user.to_dict(), (layout.dense,), do_import)
    prunes = [Stage(f"prune-{method}", (layout.dense, *source.files),
                    {**config.prune(method).to_dict(), **source_params},
                    (layout.checkpoint(method), layout.history(method)), do_prune(method)) for method in methods]
    return [
        first,
        *prunes,
        Stage("export", (layout.dense, *(layout.checkpoint(m) for m in methods)),
              {"formats": config.formats, "max_r2_drop": config.max_r2_drop}, (layout.manifest,), do_export),
        Stage("bench", (layout.manifest,), {"args": config.bench_args}, (layout.results,), do_bench),
        Stage("report", (layout.results, layout.manifest, *(layout.history(m) for m in methods)),
              {"policy": dataclasses.asdict(policy)}, (layout.html,), do_report),
    ]


def run(config: RunConfig) -> RunOutcome:
    policy = resolve_policy(config)  # an unreadable policy file fails now, not after the benchmark
    layout = RunLayout(config.out)
    gate = functools.cache(lambda: run_gate(layout.results, policy, histories=layout.histories))
    all_stages = stages(config, prepare(config), policy, gate)
    total = len(all_stages) + 1
    reused = tuple(s.name for i, s in enumerate(all_stages, 1) if not run_stage(s, config.out, i, total))
    print(f"[{total}/{total}] gate", flush=True)
    summary = summary_table([layout.results], layout.manifest, list(layout.pruned.values()))
    return RunOutcome(html=layout.html, results=layout.results, gate=gate(), summary=summary, reused=reused,
                      histories=tuple(layout.histories))


def format_summary(outcome: RunOutcome) -> str:
    """What the job prints last: the answer in a sentence (speed and accuracy), where pruning cost more accuracy than
    the budget and how far it could have gone within it, the fastest verified deployment (or why it was not measured),
    the summary, the fastest deployment per batch and the gate as clean tables."""
    gate = "passed" if outcome.gate.passed else "FAILED"
    fastest, per_batch = fastest_summary([outcome.results])
    budget = budget_sentence([load_history(h) for h in outcome.histories], outcome.gate.max_r2_drop)
    noise = noise_sentences(load_results([outcome.results])).strip()  # unstable figures and the machine's load
    return "\n".join([
        headline(outcome.summary),
        *([budget] if budget else []),
        fastest,
        *([noise] if noise else []),
        "",
        terminal_table(outcome.summary),
        "",
        *([terminal_table(per_batch), ""] if not per_batch.empty else []),
        format_rows(outcome.gate.rows),
        *outcome.gate.notes,
        f"gate {gate}",
        f"report: {outcome.html.resolve()}",
    ])
