"""The rows every check runs a network on, and the one way two networks' outputs are compared.

A check is only as good as its inputs and its tolerance. Rows drawn from N(0, 1) never take a branch the user's data
takes only where x > 4, and never stay in the positive range where `log(x)` is defined; so where the user's data is
known, the rows are its own rows plus random rows spread over its range. And one tolerance for all outputs, scaled by
the largest, lets an output of size 1e5 hide an error of 1 in another: each output column is compared at its own
scale. Both the import check (`model.trace`) and the prune proof (`prune.shrink`) use these.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PROBE_ROWS = 256
PROBE_SEED = 20_251_206
RELATIVE = 1e-5  # of each column's own scale: float32 kernels summing in another order stay far below it
SCALE_FLOOR = 1e-2  # a column whose values are all near zero is judged at this scale, not at float noise


def probe_rows(in_features: int, data: torch.Tensor | None = None, rows: int = PROBE_ROWS,
               seed: int = PROBE_SEED) -> torch.Tensor:
    """Up to `rows` of the user's own rows and as many drawn uniformly over their range, per feature (float64);
    without data, standard-normal rows and uniform rows over [-3, 3]."""
    generator = np.random.default_rng(seed)
    if data is not None and len(data):
        own = data.detach().double().reshape(-1, in_features)[:rows].numpy()
        low, high = own.min(axis=0), own.max(axis=0)
        spread = generator.uniform(low, high, size=(rows, in_features))
        return torch.from_numpy(np.concatenate([own, spread]))
    normal = generator.standard_normal((rows, in_features))
    return torch.from_numpy(np.concatenate([normal, generator.uniform(-3.0, 3.0, size=(rows, in_features))]))


@dataclass(frozen=True)
class Disagreement:
    """The worst output column: its largest error, its own scale and the tolerance it was held to."""

    column: int
    error: float
    scale: float
    tolerance: float

    def describe(self) -> str:
        return (f"output column {self.column} is off by {self.error:.3g} (its values reach {self.scale:.3g}; "
                f"tolerance {self.tolerance:.3g})")


def disagreement(expected: torch.Tensor, got: torch.Tensor) -> Disagreement | None:
    """None when `got` matches `expected` in every column to RELATIVE of that column's own scale (NaN where the
    reference is NaN is a match: the network computes it too); else the worst column."""
    if got.shape != expected.shape:
        return Disagreement(-1, float("inf"), 0.0, 0.0)
    expected = expected.detach().double().reshape(len(expected), -1)
    got = got.detach().double().reshape(len(got), -1)
    both_nan = torch.isnan(expected) & torch.isnan(got)
    same_inf = torch.isinf(expected) & (expected == got)
    error = torch.where(both_nan | same_inf, torch.zeros((), dtype=torch.float64), (got - expected).abs())
    error = torch.nan_to_num(error, nan=float("inf"))
    finite = torch.where(torch.isfinite(expected), expected.abs(), torch.zeros((), dtype=torch.float64))
    scale = finite.amax(dim=0) if len(finite) else torch.zeros(expected.shape[1], dtype=torch.float64)
    tolerance = RELATIVE * torch.clamp(scale, min=SCALE_FLOOR)
    worst = error.amax(dim=0) / tolerance
    column = int(torch.argmax(worst))
    if float(worst[column]) <= 1.0:
        return None
    return Disagreement(column, float(error[:, column].max()), float(scale[column]), float(tolerance[column]))
