"""Parity: every artifact, loaded back in its own runtime, against eager PyTorch; and its weight shapes against the spec.

A benchmark of a wrong or un-pruned export is worse than none, so nothing is timed or listed in a
manifest before it passes here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from spinn_export.task.data import Dataset, builtin_dataset
from spinn_export.errors import UserError
from spinn_export.export.formats import Artifact, Shape
from spinn_export.task.metrics import r2_scores, relative_l2
from spinn_export.model.spec import MLPSpec
from spinn_export.task.stokes import STOKES

BATCHES: tuple[int, ...] = (1, 7, 4096)
ATOL, RTOL = 1e-5, 1e-4  # float32 through a few hundred-term dot products; allclose semantics
PARITY_SEED = 20_240_531  # inputs differ from the export's trace example (seed 0) and are reproducible


@dataclass(frozen=True)
class ParityResult:
    """max_rel_error is max |a - r| / (|r| + atol), finite even where the reference is zero.

    `criterion` is "float32" (passed means within atol + rtol * |r| everywhere) or "recorded"
    (int8: the error is recorded, passed means finite outputs and the expected weight shapes).
    """

    passed: bool
    batches: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float
    atol: float | None
    rtol: float | None
    weight_shapes: tuple[Shape, ...]
    criterion: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "batches": list(self.batches),
            "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
            "atol": self.atol, "rtol": self.rtol,
            "weight_shapes": [list(s) for s in self.weight_shapes],
            "criterion": self.criterion, "seed": self.seed,
        }


def parity_inputs(in_features: int, batch: int, seed: int = PARITY_SEED) -> np.ndarray:
    """Standard-normal rows: wider than the task's [-1, 1] box, so saturated activations are covered too."""
    return np.random.default_rng((seed, batch)).standard_normal((batch, in_features), dtype=np.float32)


def eager(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


def check_weight_shapes(shapes: list[Shape], spec: MLPSpec, label: str) -> None:
    """The artifact's own weight matrices must have exactly the checkpoint's (pruned) shapes."""
    expected = [tuple(s) for s in spec.layer_shapes]
    if [tuple(s) for s in shapes] != expected:
        raise UserError(
            f"{label}: the artifact's weight shapes {[list(s) for s in shapes]} differ from the checkpoint's "
            f"{[list(s) for s in expected]}; the export is not the model it claims to be"
        )


def check_parity(
    model: nn.Module, artifact: Artifact, weight_shapes: list[Shape], spec: MLPSpec, label: str,
    float32: bool = True, batches: tuple[int, ...] = BATCHES, seed: int = PARITY_SEED,
) -> ParityResult:
    """Compare on fresh inputs at every batch size; raise UserError (one line) if a float32 artifact is off."""
    check_weight_shapes(weight_shapes, spec, label)
    max_abs = max_rel = 0.0
    within = True
    for batch in batches:
        x = parity_inputs(spec.in_features, batch, seed)
        reference = eager(model, x)
        output = artifact(x)
        if output.shape != reference.shape:
            raise UserError(f"{label}: output shape {output.shape} at batch {batch}, expected {reference.shape}")
        if not np.isfinite(output).all():
            raise UserError(f"{label}: non-finite outputs at batch {batch}; the export is broken")
        error = np.abs(output.astype(np.float64) - reference.astype(np.float64))
        max_abs = max(max_abs, float(error.max()))
        max_rel = max(max_rel, float((error / (np.abs(reference) + ATOL)).max()))
        within = within and bool((error <= ATOL + RTOL * np.abs(reference)).all())
    result = ParityResult(
        passed=within or not float32, batches=tuple(batches), max_abs_error=max_abs, max_rel_error=max_rel,
        atol=ATOL if float32 else None, rtol=RTOL if float32 else None,
        weight_shapes=tuple(tuple(s) for s in weight_shapes),  # type: ignore[misc]
        criterion="float32" if float32 else "recorded", seed=seed,
    )
    if not result.passed:
        raise UserError(
            f"{label}: parity failed: max abs error {max_abs:.3g}, max rel error {max_rel:.3g} exceed float32 "
            f"tolerance (atol {ATOL:g}, rtol {RTOL:g}); the artifact is rejected"
        )
    return result


def task_dataset(metadata: dict[str, str]) -> Dataset | None:
    """The built-in task's splits when the checkpoint was trained on it, else None (no labels known)."""
    if metadata.get("dataset") != STOKES.name:
        return None
    try:
        seed = int(metadata.get("seed", "0"))
    except ValueError:
        raise UserError(f"checkpoint metadata seed {metadata.get('seed')!r} is not an integer") from None
    return builtin_dataset(seed)


def accuracy_delta(model: nn.Module, artifact: Artifact, dataset: Dataset, split: str = "val") -> dict[str, Any]:
    """R^2 and relative L2 of the artifact and of eager PyTorch on the task's split, and the R^2 change."""
    x = getattr(dataset, f"x_{split}").numpy()
    y = getattr(dataset, f"y_{split}")
    reference = torch.from_numpy(eager(model, x))
    output = torch.from_numpy(artifact(x))
    r2_reference = float(np.mean(r2_scores(reference, y)))
    r2_artifact = float(np.mean(r2_scores(output, y)))
    return {
        "dataset": dataset.name, "split": split,
        "r2_reference": r2_reference, "r2": r2_artifact, "delta_r2": r2_artifact - r2_reference,
        "rel_l2_reference": relative_l2(reference, y), "rel_l2": relative_l2(output, y),
    }
