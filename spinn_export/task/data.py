"""Datasets: the built-in task's deterministic splits, or the user's own table (CSV, Parquet, NPZ)."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spinn_export.errors import UserError, first_line, require_file
from spinn_export.model.network import Network
from spinn_export.task.physics import BUILTIN, Physics, check_physics
from spinn_export.task.stokes import STOKES

INPUT_RANGE_KEY = "input_range"

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
TARGETS_FLAG = "--targets"  # the CLI flag naming the target columns, except in the sweep


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test tensors; `physics` is set when a PDE residual is defined for the data."""

    name: str
    input_names: tuple[str, ...]
    target_names: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    physics: Physics | None = None

    @property
    def in_features(self) -> int:
        return len(self.input_names)

    @property
    def out_features(self) -> int:
        return len(self.target_names)


def builtin_dataset(seed: int = 0, n_train: int = 80_000, n_val: int = 8_192, n_test: int = 8_192) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = STOKES.sample_inputs(n_train + n_val + n_test, generator)
    targets = STOKES.solution(inputs.double()).float()
    a, b = n_train, n_train + n_val
    return Dataset(
        name=STOKES.name,
        input_names=STOKES.input_names,
        target_names=STOKES.target_names,
        x_train=inputs[:a], y_train=targets[:a],
        x_val=inputs[a:b], y_val=targets[a:b],
        x_test=inputs[b:], y_test=targets[b:],
        physics=BUILTIN,
    )


def _read_table(path: Path) -> dict[str, np.ndarray]:
    """Columns by name; pandas does the parsing for CSV and Parquet."""
    # start-up: pandas only to parse a CSV or Parquet table
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise UserError(f"{path}: unsupported data format {suffix!r}; use .csv, .parquet or .npz")
    except UserError:
        raise
    except Exception as exc:  # parsers raise many types; all mean the file is unreadable
        raise UserError(f"{path}: cannot read the data file ({first_line(exc)}); "
                        f"check that it is valid {suffix[1:]}") from None
    return {str(column): frame[column].to_numpy() for column in frame.columns}


def _column(table: dict[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    if name not in table:
        available = ", ".join(sorted(table)[:20])
        raise UserError(f"{path}: column {name!r} is missing; available columns: {available}")
    values = np.asarray(table[name])
    if values.dtype == object or not np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
        raise UserError(f"{path}: column {name!r} is not numeric (dtype {values.dtype}); convert it or drop it")
    if values.ndim != 1:
        raise UserError(f"{path}: column {name!r} must be one-dimensional, got shape {values.shape}")
    bad = ~np.isfinite(values.astype(np.float64))
    if bad.any():
        raise UserError(
            f"{path}: column {name!r} holds {int(bad.sum())} NaN or infinite value(s), "
            f"first at row {int(np.argmax(bad))}; "
            "clean or drop those rows"
        )
    return values.astype(np.float32)


def load_user_dataset(path: str | Path, inputs: list[str], targets: list[str], seed: int = 0,
                      physics: Physics | None = None, targets_flag: str = TARGETS_FLAG) -> Dataset:
    """A table with named input and target columns, shuffled by seed into 80/10/10 splits, held to `physics`.

    `targets_flag`: the flag that names the target columns, for messages (the sweep's is --target-columns)."""
    path = require_file(path, "data file", "check the --data path")
    if not inputs or not targets:
        raise UserError(f"--data needs both --inputs and {targets_flag}, as comma-separated column names")
    table = _read_table(path)
    x = np.stack([_column(table, name, path) for name in inputs], axis=1)
    y = np.stack([_column(table, name, path) for name in targets], axis=1)
    n = len(x)
    if n < 10:
        raise UserError(f"{path}: only {n} rows; at least 10 are needed for train/validation/test splits")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    x_all, y_all = torch.from_numpy(x[order]), torch.from_numpy(y[order])
    a = int(n * SPLIT_FRACTIONS[0])
    b = a + max(1, int(n * SPLIT_FRACTIONS[1]))
    return Dataset(
        name=path.stem,
        input_names=tuple(inputs),
        target_names=tuple(targets),
        x_train=x_all[:a], y_train=y_all[:a],
        x_val=x_all[a:b], y_val=y_all[a:b],
        x_test=x_all[b:], y_test=y_all[b:],
        physics=physics,
    )


def parse_columns(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def resolve_dataset(data: str | os.PathLike[str] | None, inputs: str | None, targets: str | None, seed: int,
                    physics: Physics | None = None, targets_flag: str = TARGETS_FLAG) -> Dataset:
    """The CLI's --data/--inputs/--targets triple, or the built-in task when --data is absent.

    `physics` (the user's --physics) replaces the built-in task's residual; user data without it has none.
    """
    if data is None:
        if inputs or targets:
            raise UserError(f"--inputs/{targets_flag} only apply with --data FILE")
        dataset = builtin_dataset(seed)
        return dataset if physics is None else dataclasses.replace(dataset, physics=physics)
    return load_user_dataset(data, parse_columns(inputs), parse_columns(targets), seed, physics, targets_flag)


def check_model_fits(dataset: Dataset, network: Network) -> None:
    """Before any work: the model maps the data's inputs to its targets, and the data's physics runs on it."""
    architecture = network.architecture
    if (architecture.in_features, architecture.out_features) != (dataset.in_features, dataset.out_features):
        raise UserError(
            f"the model maps {architecture.in_features} inputs to {architecture.out_features} outputs but the data has "
            f"{dataset.in_features} inputs and {dataset.out_features} targets; pass the data it was trained on"
        )
    if dataset.physics is not None:
        check_physics(dataset.physics, network.module, dataset.x_train)


def dataset_metadata(dataset: Dataset) -> dict[str, str]:
    """What a checkpoint records about the data (and physics) it was trained or pruned on, and the range of its
    training inputs per column: the model's domain, where every later check of the model draws its rows."""
    x = dataset.x_train.double()
    domain = [[float(low), float(high)] for low, high in zip(x.min(dim=0).values, x.max(dim=0).values)]
    metadata = {"dataset": dataset.name, "inputs": ",".join(dataset.input_names),
                "targets": ",".join(dataset.target_names), INPUT_RANGE_KEY: json.dumps(domain)}
    if dataset.physics is not None:
        metadata["physics"] = dataset.physics.name
    return metadata


def input_range(metadata: dict[str, str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The training inputs' range per column a checkpoint records (`dataset_metadata`), or None where it records
    none (a model saved without data)."""
    if INPUT_RANGE_KEY not in metadata:
        return None
    try:
        bounds = np.asarray(json.loads(metadata[INPUT_RANGE_KEY]), dtype=np.float64)
        if bounds.ndim != 2 or bounds.shape[1] != 2 or not np.isfinite(bounds).all():
            raise ValueError("not [[low, high], ...]")
    except (ValueError, TypeError) as exc:
        raise UserError(f"the checkpoint's {INPUT_RANGE_KEY} metadata is damaged ({first_line(exc)}); re-run the "
                        "stage that wrote it") from None
    return bounds[:, 0], bounds[:, 1]
