"""Accuracy against measured speed: a sweep's points (`DIR/pareto.csv`), their Pareto front and its plot.

`spinn-export sweep` prunes one checkpoint to several targets and measures each pruned model's paired speedup
over dense; this module owns what it writes (the csv's columns, the front, `pareto.png`) and what the report
reads back from it. A point is Pareto-optimal when no other point of the sweep is at least as fast and at least
as accurate and better in one of the two: the choices worth making. The front is computed on the measured
median speedup and validation R², over every point of the csv (magnitude points included), with dense as one more
choice that can dominate them: not pruning at all is 1.0x by definition, so a point slower than that and less
accurate than dense is worth nothing. Dense itself is not a row (it is not measured against itself).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from spinn_export.errors import UserError
from spinn_export.files import write_json, write_text
from spinn_export.records import Schema, read_json
from spinn_export.report.plots import ROLE_COLORS, _save, plt  # pyplot as report.plots set it up (Agg)

CSV_NAME, PNG_NAME, JSON_NAME = "pareto.csv", "pareto.png", "sweep.json"
TITLE = "Accuracy against measured speedup (sweep)"
CAPTION = ("Validation R² against the paired speedup over dense (bars: 95 % CI); the Pareto front is the line, "
           "magnitude points (masked, full-size matrices) stand alongside")
NOTE = ("One point per pruning target, each fine-tuned and then benchmarked paired against dense (ABBA blocks in "
        "fresh processes, one measurement at a time on the machine named). Pareto-optimal: neither another point "
        "nor dense (1.0×, by definition) is at least as fast and as accurate. Magnitude points keep full-size "
        "matrices, so they measure ~1.0×.")
MARKERS = {"structured": "o", "magnitude": "s"}
RERUN = "rerun spinn-export sweep"
# Version 1: the previous release's `{"schema": 1, ...}`; version 2 adds the schema name and this version.
SCHEMA = Schema("spinn-export.sweep", 2, "sweep summary", RERUN, unstamped=(1,))


@dataclass(frozen=True)
class SweepPoint:
    """One row of pareto.csv: a pruned model, its accuracy, and its speedup as measured (with where)."""

    target: str
    method: str
    widths: tuple[int, ...]
    params: int
    nonzero_params: int
    val_r2: float
    residual_rms: float | None
    speedup: float
    ci_low: float
    ci_high: float
    flop_ratio: float
    backend: str
    batch: int
    measured_on: str
    finetuned_on: str


COLUMNS = (*(f.name for f in dataclasses.fields(SweepPoint)), "pareto_optimal")


def pareto_optimal(speedup: Sequence[float], accuracy: Sequence[float],
                   others: Sequence[tuple[float, float]] = ()) -> list[bool]:
    """For each point, whether no other point (nor any (speedup, accuracy) of `others`, such as dense's) is at least
    as fast and as accurate, and strictly better in one."""
    if len(speedup) != len(accuracy):
        raise ValueError(f"{len(speedup)} speedups for {len(accuracy)} accuracies")
    pairs = list(zip(speedup, accuracy))
    rivals = [*pairs, *others]
    return [not any(s >= s0 and a >= a0 and (s > s0 or a > a0) for s, a in rivals) for s0, a0 in pairs]


def dense_choice(dense: dict[str, Any] | None) -> tuple[tuple[float, float], ...]:
    """Dense as a choice on the plane: 1.0x (itself, by definition) at its validation R², where that is known."""
    return ((1.0, float(dense["val_r2"])),) if dense is not None and _finite(dense.get("val_r2")) else ()


def points_frame(points: Sequence[SweepPoint], dense: dict[str, Any] | None) -> pd.DataFrame:
    """The csv's rows: widths as space-separated text (as history.csv), and each point's Pareto flag."""
    frame = pd.DataFrame([dataclasses.asdict(p) for p in points], columns=COLUMNS[:-1])
    frame["widths"] = frame["widths"].map(lambda w: " ".join(map(str, w)))
    frame["pareto_optimal"] = pareto_optimal(frame["speedup"].tolist(), frame["val_r2"].tolist(), dense_choice(dense))
    return frame


@dataclass(frozen=True)
class SweepRecord:
    """sweep.json: the run's summary (checkpoint, targets, backend, dense's figures, each point's fine-tuning, wall
    times; docs/ARCHITECTURE.md, "Sweep") and its points, pareto.csv's rows."""

    summary: dict[str, Any]
    points: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {**SCHEMA.stamp(), **self.summary, "points": list(self.points)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | os.PathLike[str]) -> SweepRecord:
        """A summary of this release or the previous one (whose fields are this one's: version 1 differs only in its
        stamp); any other is refused in one line, and so is a point that lacks a column."""
        return SCHEMA.parse(data, path, dict, cls._built)

    @classmethod
    def _built(cls, summary: dict[str, Any]) -> SweepRecord:
        points = tuple(summary.pop("points"))
        missing = sorted({c for point in points for c in COLUMNS if c not in point})
        if missing:
            raise KeyError(f"a point lacks {', '.join(missing)}")
        return cls(summary, points)

    def write(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SweepRecord:
        return cls.from_dict(read_json(path, SCHEMA), path)


@dataclass(frozen=True)
class Sweep:
    """A sweep directory read back: its points (pareto.csv) and dense's accuracy when sweep.json records it."""

    directory: Path
    points: pd.DataFrame
    dense: dict[str, Any] | None = None

    def front(self) -> pd.DataFrame:
        """The Pareto-optimal points in order of speedup (their accuracy then falls: the front is monotone)."""
        return self.points[self.points["pareto_optimal"]].sort_values(["speedup", "val_r2"], ascending=[True, False])


def write_sweep(directory: Path, points: Sequence[SweepPoint], summary: dict[str, Any]) -> Sweep:
    """pareto.csv, sweep.json (`summary` plus the rows) and pareto.png in `directory`, each written atomically."""
    frame = points_frame(points, summary.get("dense"))
    write_text(directory / CSV_NAME, frame.to_csv(index=False))
    SweepRecord(summary, tuple(json.loads(frame.to_json(orient="records")))).write(directory / JSON_NAME)
    sweep = Sweep(directory, frame, summary.get("dense"))
    plot_pareto(sweep, directory / PNG_NAME)
    return sweep


def load_sweep(directory: str | os.PathLike[str]) -> Sweep:
    """A sweep's --out DIR (or its pareto.csv), checked: a missing file or column is one line (UserError)."""
    path = Path(directory)
    directory = path.parent if path.name == CSV_NAME else path
    csv = directory / CSV_NAME
    if not csv.is_file():
        raise UserError(f"{directory}: no {CSV_NAME}; give the --out DIR of spinn-export sweep")
    try:
        frame = pd.read_csv(csv, dtype={"widths": str, "target": str})
    except (OSError, ValueError) as exc:
        raise UserError(f"{csv} is not readable as a sweep table ({type(exc).__name__}); rerun spinn-export "
                        "sweep") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing or frame.empty:
        what = f"lacks the columns {', '.join(missing)}" if missing else "has no points"
        raise UserError(f"{csv} {what}; rerun spinn-export sweep")
    frame["pareto_optimal"] = frame["pareto_optimal"].astype(str).str.lower() == "true"
    summary = directory / JSON_NAME
    dense = SweepRecord.read(summary).summary.get("dense") if summary.is_file() else None
    return Sweep(directory, frame, dense)


def plot_pareto(sweep: Sweep, path: Path) -> Path:
    """Validation R² against the measured speedup: each point with its CI, the front as a line (through dense where
    no point beats it), dense as a star."""
    fig, ax = plt.subplots(figsize=(7.8, 4.8), layout="constrained")
    points = sweep.points
    for method, group in points.groupby("method", sort=False):
        color = ROLE_COLORS.get(str(method), ROLE_COLORS["structured"])
        xerr = [(group["speedup"] - group["ci_low"]).clip(lower=0), (group["ci_high"] - group["speedup"]).clip(lower=0)]
        ax.errorbar(group["speedup"], group["val_r2"], xerr=xerr, fmt=MARKERS.get(str(method), "o"), ms=6, capsize=3,
                    color=color, label=str(method), zorder=3)
        for _, row in group.iterrows():
            ax.annotate(row["target"], (row["speedup"], row["val_r2"]), textcoords="offset points", xytext=(6, 5),
                        fontsize=8, color=color)
    front = sweep.front()
    dense = dense_choice(sweep.dense)
    undominated = [d for d in dense if pareto_optimal([d[0]], [d[1]], list(zip(front["speedup"], front["val_r2"])))[0]]
    line = sorted([*zip(front["speedup"], front["val_r2"]), *undominated], key=lambda p: (p[0], -p[1]))
    ax.plot([p[0] for p in line], [p[1] for p in line], color="#222222", lw=1.4, ls="--", label="Pareto front",
            zorder=2)
    ax.plot(front["speedup"], front["val_r2"], ls="none", marker="o", ms=11, mfc="none", color="#222222", zorder=2)
    for speed, r2 in dense:
        ax.plot([speed], [r2], marker="*", ms=13, color=ROLE_COLORS["dense"], ls="none",
                label="dense (1×, by definition)", zorder=4)
    ax.axvline(1.0, color="#888888", lw=0.8)
    first = points.iloc[0]
    ax.set(xlabel=f"paired speedup over dense (×), {first['backend']} batch {int(first['batch'])}",
           ylabel="validation R²", title=f"accuracy against measured speed ({first['measured_on']})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="best")
    return _save(fig, path)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def report_table(sweep: Sweep) -> pd.DataFrame:
    """The report's Pareto table: the csv's rows under the report's column names (its formats follow them)."""
    names = {"target": "target", "method": "method", "widths": "widths", "params": "parameters (stored)",
             "nonzero_params": "non-zero", "val_r2": "val R²", "residual_rms": "residual RMS", "speedup": "speedup",
             "ci_low": "CI low", "ci_high": "CI high", "flop_ratio": "FLOP-ratio ideal", "backend": "backend",
             "batch": "batch", "pareto_optimal": "Pareto-optimal", "measured_on": "measured on",
             "finetuned_on": "fine-tuned on"}
    table = sweep.points.reindex(columns=list(names)).rename(columns=names)
    table["Pareto-optimal"] = table["Pareto-optimal"].map({True: "yes", False: "no"})
    return table.sort_values(["method", "speedup"], ascending=[False, True]).reset_index(drop=True)
