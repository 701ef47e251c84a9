"""What one main job is: its settings (`RunConfig`), the user's model when it is not the built-in SPINN
(`UserModel`), what each stage of it is configured with, and the `spinn-export run` command line that asks for it."""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinn_export.bench.backends import backends
from spinn_export.bench.variants import FP32, possible_variants
from spinn_export.defaults import (
    BATCHES,
    HEADLINE_BACKEND,
    MAIN_JOB_LEAVES_OUT,
    QUICK_BATCHES,
    REFERENCE_ROUND_TO,
    REFERENCE_TARGET,
)
from spinn_export.export.formats import formats, unavailable_formats
from spinn_export.export.parity import DEFAULT_MAX_R2_DROP
from spinn_export.prune.config import FINETUNE, PruneConfig
from spinn_export.prune.target import Target
from spinn_export.task.train import TrainConfig

# pytest-benchmark's time per case (default 1 s): the main job's matrix (every CPU backend x 4 batches x 5-6
# variants, each case paired with dense, structured's pairing repeated in a fresh process, peak memory, the fastest
# deployment) must stay near 6 minutes on 2 cores; the suite never times fewer than its minimum rounds, so the
# largest batches keep their CIs. The main job adds no ABBA measurement (--paired none): the fresh processes already
# sample what differs between processes, for every backend.
CASE_SECONDS = 0.35
MAIN_PROCESSES = 2  # the matrix's process and one fresh one for structured's speedups


def main_formats() -> tuple[str, ...]:
    """The default formats plus every low-precision one this machine can produce (bf16 only where the CPU has
    native BF16): the main job measures every precision it can verify, not only float32. Slow formats that
    add no precision (AOTInductor) stay opt-in."""
    skipped = unavailable_formats()
    return tuple(name for name, fmt in formats().items()
                 if fmt.default or (fmt.precision != FP32 and name not in skipped))


def main_backends() -> tuple[str, ...]:
    """Every backend that is not slow, less those that repeat another at the reference's sizes
    (`defaults.MAIN_JOB_LEAVES_OUT`); CUDA ones skip, with the reason, without a GPU."""
    return tuple(name for name, b in backends().items() if not b.slow and name not in MAIN_JOB_LEAVES_OUT)


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
    optionally its physics (`--physics`, see `task.physics`), pruned instead of a freshly trained built-in SPINN.
    `output`: which of several outputs it is pruned for (`--output N`)."""

    model: Path
    data: Path
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    physics: str | None = None
    activation: str | None = None
    trust_pickle: bool = False
    model_code: str | None = None
    output: int | None = None

    def to_dict(self) -> dict[str, Any]:
        found = {"model": str(self.model), "activation": self.activation, "trust_pickle": self.trust_pickle,
                 "model_code": self.model_code, "data": str(self.data), "inputs": list(self.inputs),
                 "targets": list(self.targets), "physics": self.physics}
        return found if self.output is None else {**found, "output": self.output}  # a run made before resumes

    @property
    def arguments(self) -> list[str]:
        """The `spinn-export run` flags that name it."""
        words = ["--model", str(self.model)]
        words += ["--model-code", self.model_code] if self.model_code else []
        words += ["--activation", self.activation] if self.activation else []
        words += ["--trust-pickle"] if self.trust_pickle else []
        words += ["--output", str(self.output)] if self.output is not None else []
        words += ["--data", str(self.data), "--inputs", ",".join(self.inputs), "--targets", ",".join(self.targets)]
        return words + (["--physics", self.physics] if self.physics else [])


def default_round_to(model: UserModel | None) -> int | None:
    """Widths in multiples of 32 for the built-in SPINN; a user's model of any widths is pruned neuron by neuron
    unless --round-to asks for blocks (a block of 32 can be a third of a small layer, or more than all of it)."""
    return REFERENCE_ROUND_TO if model is None else None


@dataclass(frozen=True)
class RunConfig:
    """The whole main job; `quick` trades accuracy and statistical power for a smoke run.

    `model` None: train the built-in SPINN on the built-in task. `bench_batches` narrows the benchmark
    (default: 1 and 8192 when quick, else 1, 64, 1024 and 8192). `round_to` may be "auto"; `backend` and `batch`
    say where it measures (as `PruneConfig`'s; a latency target names its own). `max_r2_drop`: the export's
    accuracy budget for low-precision files (and NNCF's accuracy-control target).

    With a latency target the magnitude baseline keeps the structured plan's non-zero count (`PruneConfig`): the
    plan is cached with the latency table, so both prune stages get the same widths.
    """

    out: Path = Path("runs/default")
    quick: bool = False
    seed: int = 0
    target: Target = Target.params(REFERENCE_TARGET)
    round_to: int | str | None = REFERENCE_ROUND_TO
    policy: Path | None = None
    model: UserModel | None = None
    bench_batches: tuple[int, ...] | None = None
    backend: str | None = None
    batch: int | None = None
    max_r2_drop: float = DEFAULT_MAX_R2_DROP

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
        """`spinn-export bench` options: `main_backends` at `main_variants`, or ort-cpu and eager-cpu when quick."""
        common = ["--batches", ",".join(map(str, self.batches)), "--paired", "none"]
        if self.quick:
            return [*common, "--quick", "--backends", f"eager-cpu,{HEADLINE_BACKEND}"]
        variants = main_variants(tuple(self.formats.split(",")))
        return [*common, "--backends", ",".join(main_backends()), "--variants", ",".join(variants),
                "--processes", str(MAIN_PROCESSES), "--",
                f"--benchmark-max-time={CASE_SECONDS}"]

    @property
    def batches(self) -> tuple[int, ...]:
        if self.bench_batches is not None:
            return self.bench_batches
        return QUICK_BATCHES if self.quick else BATCHES

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
        words += ["--max-r2-drop", f"{self.max_r2_drop:g}"] if self.max_r2_drop != DEFAULT_MAX_R2_DROP else []
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


