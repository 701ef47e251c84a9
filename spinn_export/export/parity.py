"""Parity: the one check that a model, wherever it runs, computes what eager PyTorch computes.

The exporter runs it on every artifact before the artifact gets its final name, and every benchmark
runner runs it again, on the same inputs, before anything is timed: a benchmark of a wrong or
un-pruned model is worse than none. One tolerance policy covers both (`tolerance_for`).

Low-precision artifacts also get their accuracy on the task's validation split (`accuracy`), against the
float32 model of the same checkpoint and an R^2 budget.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from spinn_export.errors import UserError, first_line
from spinn_export.export.formats import Shape
from spinn_export.hardware import FP32
from spinn_export.model.architecture import Architecture
from spinn_export.model.network import Network
from spinn_export.task.data import Dataset, builtin_dataset
from spinn_export.task.metrics import Metrics, evaluate, r2_scores, relative_l2
from spinn_export.task.stokes import STOKES

BATCHES: tuple[int, ...] = (1, 7, 4096)
PARITY_SEED = 20_240_531  # inputs differ from the export's trace example (seed 0) and are reproducible
QUANTISED_SLACK = 2.0  # a later run of a quantised model may differ from the recorded error by rounding, not more
DEFAULT_MAX_R2_DROP = 0.01  # the accuracy budget: a low-precision variant may lose at most this much validation R^2


class ParityError(UserError):
    """A model's outputs disagree with the eager PyTorch reference beyond the tolerance."""


@dataclass(frozen=True)
class Tolerance:
    """allclose semantics: |candidate - reference| <= atol + rtol * |reference| everywhere."""

    criterion: str
    atol: float
    rtol: float

    def allows(self, error: np.ndarray, reference: np.ndarray) -> bool:
        return bool((error <= self.atol + self.rtol * np.abs(reference)).all())


FLOAT32 = Tolerance("float32", atol=1e-5, rtol=1e-4)  # float32 through a few hundred-term dot products


def tolerance_for(precision: str, recorded_max_abs_error: float | None = None) -> Tolerance | None:
    """The tolerance policy, for the exporter and every runner alike.

    float32 artifacts are held to FLOAT32. A low-precision artifact (bf16, int8, int8-static) has no
    tolerance when it is exported, its first run at that precision (None: its error is measured and
    recorded); every later run of it must stay within twice that recorded error on the same inputs.
    """
    if precision == FP32:
        return FLOAT32
    if recorded_max_abs_error is None:
        return None
    return Tolerance(f"{precision} within {QUANTISED_SLACK:g}x its recorded error",
                     atol=max(QUANTISED_SLACK * float(recorded_max_abs_error), FLOAT32.atol), rtol=0.0)


@dataclass(frozen=True)
class ParityResult:
    """max_rel_error is max |a - r| / (|r| + FLOAT32.atol), finite even where the reference is zero.

    `criterion` names the tolerance, or is "recorded" (a quantised export: the error is recorded, and
    passed means finite outputs and, where checked, the expected weight shapes).
    """

    passed: bool
    batches: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float
    atol: float | None
    rtol: float | None
    weight_shapes: tuple[Shape, ...] | None
    criterion: str
    seed: int
    inputs: str = "standard normal"  # where the rows were drawn: `parity_inputs`

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "batches": list(self.batches),
            "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
            "atol": self.atol, "rtol": self.rtol,
            "weight_shapes": None if self.weight_shapes is None else [list(s) for s in self.weight_shapes],
            "criterion": self.criterion, "seed": self.seed, "inputs": self.inputs,
        }


def parity_inputs(in_features: int, batch: int, seed: int = PARITY_SEED,
                  domain: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Rows drawn uniformly over the model's domain (its training inputs' range) widened by half its width on
    each side, so saturated activations and a little extrapolation are covered; standard-normal rows where the
    domain is not known. Never far outside the domain: a cubic network (TorchPhysics' DeepRitzNet) reaches 1e31 on
    standard-normal rows of a [0, 1] problem, where float32 rounding alone breaks any tolerance."""
    generator = np.random.default_rng((seed, batch))
    if domain is None:
        return generator.standard_normal((batch, in_features), dtype=np.float32)
    low, high = domain
    margin = (high - low) / 2
    return generator.uniform(low - margin, high + margin, size=(batch, in_features)).astype(np.float32)


def inputs_described(domain: tuple[np.ndarray, np.ndarray] | None) -> str:
    return "standard normal" if domain is None else "uniform over the training inputs' range, widened by half"


def eager(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).float().numpy()


def check_weight_shapes(shapes: list[Shape], architecture: Architecture, label: str) -> None:
    """The artifact's own weight matrices must have exactly the checkpoint's (pruned) shapes: the same multiset
    (an exporter may order independent layers differently)."""
    expected = sorted(tuple(s) for s in architecture.layer_shapes)
    if sorted(tuple(s) for s in shapes) != expected:
        raise ParityError(
            f"{label}: the artifact's weight shapes {[list(s) for s in shapes]} differ from the checkpoint's "
            f"{[list(s) for s in expected]}; the export is not the model it claims to be"
        )


def check_parity(
    reference: Network, candidate: Callable[[np.ndarray], np.ndarray], label: str,
    tolerance: Tolerance | None, *, weight_shapes: list[Shape] | None = None,
    batches: tuple[int, ...] = BATCHES, seed: int = PARITY_SEED,
    domain: tuple[np.ndarray, np.ndarray] | None = None,
) -> ParityResult:
    """Compare `candidate` with eager `reference` on fresh inputs at every batch size, drawn over `domain` (the
    checkpoint's `task.data.input_range`) where it is known.

    Raises ParityError (one line) on wrong weight shapes, a wrong output shape, non-finite outputs,
    or an error outside `tolerance`; with `tolerance` None the error is only measured.
    """
    architecture = reference.architecture
    if weight_shapes is not None:
        check_weight_shapes(weight_shapes, architecture, label)
    max_abs = max_rel = 0.0
    within = True
    for batch in batches:
        x = parity_inputs(architecture.in_features, batch, seed, domain)
        expected = eager(reference.module, x)
        try:
            output = np.asarray(candidate(x))
        except UserError:
            raise
        except Exception as exc:  # a runtime's own failure on this batch: the artifact cannot run this network
            raise ParityError(f"{label}: the artifact fails at batch {batch} ({type(exc).__name__}: "
                              f"{first_line(exc)}); this format cannot run the network at every batch size") from None
        if output.shape != expected.shape:
            raise ParityError(f"{label}: output shape {output.shape} at batch {batch}, expected {expected.shape}")
        if not np.isfinite(output).all():
            raise ParityError(f"{label}: non-finite outputs at batch {batch}; the model is broken")
        error = np.abs(output.astype(np.float64) - expected.astype(np.float64))
        max_abs = max(max_abs, float(error.max()))
        max_rel = max(max_rel, float((error / (np.abs(expected) + FLOAT32.atol)).max()))
        within = within and (tolerance is None or tolerance.allows(error, expected))
    if not within:
        assert tolerance is not None
        raise ParityError(
            f"{label}: parity failed: max abs error {max_abs:.3g}, max rel error {max_rel:.3g} exceed the "
            f"{tolerance.criterion} tolerance (atol {tolerance.atol:g}, rtol {tolerance.rtol:g}) against eager "
            "PyTorch; the model is rejected"
        )
    return ParityResult(
        passed=True, batches=tuple(batches), max_abs_error=max_abs, max_rel_error=max_rel,
        atol=None if tolerance is None else tolerance.atol, rtol=None if tolerance is None else tolerance.rtol,
        weight_shapes=None if weight_shapes is None else tuple(tuple(s) for s in weight_shapes),  # type: ignore[misc]
        criterion="recorded" if tolerance is None else tolerance.criterion, seed=seed,
        inputs=inputs_described(domain),
    )


def task_dataset(metadata: dict[str, str]) -> Dataset | None:
    """The built-in task's splits when the checkpoint was trained on it, else None (no labels known)."""
    if metadata.get("dataset") != STOKES.name:
        return None
    try:
        seed = int(metadata.get("seed", "0"))
    except ValueError:
        raise UserError(f"checkpoint metadata seed {metadata.get('seed')!r} is not an integer") from None
    return builtin_dataset(seed)


@dataclass(frozen=True)
class Accuracy:
    """A low-precision artifact on the validation split, against the float32 PyTorch model of the same checkpoint.

    `val_r2_delta` is the artifact's R^2 minus the float32 model's; `within_budget` says whether the drop
    stays within `max_r2_drop` (variants over it are still benchmarked and shown, never chosen). The physics
    residual needs derivatives of the outputs with respect to the inputs, which only PyTorch gives here: it is
    measured on the float32 model (`residual_rms_reference`), and `residual_rms` is None with `residual_note`
    saying why, rather than a figure from finite differences of rounded outputs.
    """

    dataset: str
    split: str
    val_r2: float
    val_r2_reference: float
    rel_l2: float
    rel_l2_reference: float
    residual_rms: float | None
    residual_rms_reference: float | None
    residual_note: str
    max_r2_drop: float

    @property
    def val_r2_delta(self) -> float:
        return self.val_r2 - self.val_r2_reference

    @property
    def within_budget(self) -> bool:
        return -self.val_r2_delta <= self.max_r2_drop

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "val_r2_delta": self.val_r2_delta}


def accuracy(model: nn.Module, predict: Callable[[np.ndarray], np.ndarray], dataset: Dataset, max_r2_drop: float,
             reference: Metrics | None = None, split: str = "val") -> Accuracy:
    """`predict` (an artifact in its runtime) on the split, against eager float32 `model`; `reference` is
    `task.metrics.evaluate(model, dataset, split)` when the caller already has it (it costs a residual)."""
    reference = reference if reference is not None else evaluate(model, dataset, split)
    x = getattr(dataset, f"x_{split}").numpy()
    y = getattr(dataset, f"y_{split}")
    output = torch.from_numpy(np.asarray(predict(x), dtype=np.float32))
    note = ("no physics residual is known for this data" if dataset.physics is None else
            "not measured: the residual needs derivatives of the outputs, which this artifact's runtime does not "
            "give; residual_rms_reference is the float32 PyTorch model's")
    return Accuracy(
        dataset=dataset.name, split=split, val_r2=float(np.mean(r2_scores(output, y))), val_r2_reference=reference.r2,
        rel_l2=relative_l2(output, y), rel_l2_reference=reference.rel_l2, residual_rms=None,
        residual_rms_reference=reference.residual_rms, residual_note=note, max_r2_drop=max_r2_drop,
    )
