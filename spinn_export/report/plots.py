"""The report's figures, drawn with matplotlib's Agg backend (no display needed) and saved as PNG."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spinn_export.files import atomic_path
from spinn_export.report.results import History, parse_variant

# A colour per model role (the same in every plot), lighter when quantised; CSR execution stands apart.
ROLE_COLORS = {"dense": "#444444", "magnitude": "#d9822b", "structured": "#2b6cb0"}
QUANTISED_COLORS = {"dense": "#999999", "magnitude": "#f0b27a", "structured": "#4dabf7"}
SPARSE_COLOR = "#a61e4d"
OTHER_COLORS = ("#2f9e44", "#9c36b5", "#c92a2a", "#0c8599")
LINESTYLES = ("-", "--", ":", "-.")
DPI = 110


def _color(name: str, names: Sequence[str]) -> str:
    """By role for a variant or a pruning method; names from elsewhere get the other colours in turn."""
    if name in ROLE_COLORS:
        return ROLE_COLORS[name]
    variant = parse_variant(name)
    if variant is not None:
        return (SPARSE_COLOR if variant.sparse
                else (QUANTISED_COLORS if variant.quantised else ROLE_COLORS)[variant.role])
    extra = [n for n in names if n not in ROLE_COLORS and parse_variant(n) is None]
    return OTHER_COLORS[extra.index(name) % len(OTHER_COLORS)]


def _panels(count: int) -> tuple[Figure, list[plt.Axes]]:
    cols = min(count, 2)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols + 2.2, 3.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _legend(fig: Figure, axes: Sequence[plt.Axes]) -> None:
    """One legend for all panels, outside them on the right, so no curve is hidden behind it."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=8, frameon=False)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return path


def _label(variant: str, machine: str, machines: Sequence[str]) -> str:
    return variant if len(machines) == 1 else f"{variant} ({machine})"


@dataclass(frozen=True)
class Series:
    """One machine × variant line on one backend's panel, with its colour, line style and label."""

    ax: Axes
    group: pd.DataFrame
    style: dict[str, Any]


def _backend_panels(frame: pd.DataFrame) -> tuple[Figure, list[Axes], list[str], list[Series]]:
    """One panel per backend; a series per machine × variant (colour = variant, line style = machine)."""
    backends, machines = sorted(frame["backend"].unique()), list(frame["machine"].unique())
    variants = list(frame["variant"].unique())
    fig, axes = _panels(len(backends))
    series = [
        Series(ax, group.sort_values("batch"), {"color": _color(variant, variants),
                                                "ls": LINESTYLES[machines.index(machine) % len(LINESTYLES)],
                                                "label": _label(variant, machine, machines)})
        for ax, backend in zip(axes, backends)
        for (machine, variant), group in frame[frame["backend"] == backend].groupby(["machine", "variant"], sort=False)
    ]
    return fig, axes, backends, series


def plot_latency(benchmarks: pd.DataFrame, path: Path) -> Path:
    """Median latency against batch size, log-log, one panel per backend; bars span the IQR."""
    fig, axes, backends, series = _backend_panels(benchmarks)
    for line in series:
        median = line.group["median_s"] * 1e3
        low = (median - line.group["q1_s"] * 1e3).clip(lower=0)
        high = (line.group["q3_s"] * 1e3 - median).clip(lower=0)
        line.ax.errorbar(line.group["batch"], median, yerr=[low, high], marker="o", ms=4, capsize=2, **line.style)
    for ax, backend in zip(axes, backends):
        ax.set(xscale="log", yscale="log", title=backend, xlabel="batch size", ylabel="median latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig, axes)
    return _save(fig, path)


def plot_memory(benchmarks: pd.DataFrame, path: Path) -> Path:
    """Peak memory against batch size, log-log, one panel per backend (cases with a measurement only)."""
    measured = benchmarks[benchmarks["peak_memory_bytes"].notna()]
    fig, axes, backends, series = _backend_panels(measured)
    for line in series:
        line.ax.plot(line.group["batch"], line.group["peak_memory_bytes"] / 2**20, marker="o", ms=4, **line.style)
    for ax, backend in zip(axes, backends):
        ax.set(xscale="log", yscale="log", title=backend, xlabel="batch size", ylabel="peak memory (MiB)")
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig, axes)
    return _save(fig, path)


def plot_speedup(speedups: pd.DataFrame, path: Path) -> Path:
    """Speedup over dense against batch size per backend: measured (with paired CI) and the FLOP ideal."""
    fig, axes, backends, series = _backend_panels(speedups)
    for line in series:
        group = line.group
        low = (group["speedup"] - group["ci_low"]).fillna(0).clip(lower=0)
        high = (group["ci_high"] - group["speedup"]).fillna(0).clip(lower=0)
        line.ax.errorbar(group["batch"], group["speedup"], yerr=[low, high], marker="o", ms=4, capsize=3, **line.style)
        line.ax.plot(group["batch"], group["flop_ratio"], color=line.style["color"], ls=(0, (2, 2)), lw=1.2, alpha=0.7,
                     label=f"{line.style['label']} FLOP ideal")
    for ax, backend in zip(axes, backends):
        ax.axhline(1.0, color="#888888", lw=0.8)
        ax.set(xscale="log", title=backend, xlabel="batch size", ylabel="speedup over dense (×)")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig, axes)
    return _save(fig, path)


def plot_pruning(histories: Sequence[History], path: Path) -> Path:
    """Validation R² and PDE residual RMS after each pruning stage (stage 0 = dense)."""
    fig, (r2_ax, res_ax) = plt.subplots(1, 2, figsize=(12.6, 3.6), layout="constrained")
    variants = [h.method for h in histories]
    for history in histories:
        stages, color = history.stages, _color(history.method, variants)
        r2_ax.plot(stages["stage"], stages["val_r2"], marker="o", color=color, label=history.method)
        residual = stages.dropna(subset=["val_residual_rms"])
        if not residual.empty:
            res_ax.plot(residual["stage"], residual["val_residual_rms"], marker="o", color=color, label=history.method)
    r2_ax.set(title="accuracy", xlabel="pruning stage (0 = dense)", ylabel="validation R²")
    res_ax.set(title="physics", xlabel="pruning stage (0 = dense)", ylabel="PDE residual RMS", yscale="log")
    if not res_ax.lines:
        res_ax.text(0.5, 0.5, "no PDE residual:\nthe data has no physics task", ha="center", va="center",
                    transform=res_ax.transAxes, color="#666666")
    for ax in (r2_ax, res_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
    _legend(fig, (r2_ax, res_ax))
    return _save(fig, path)
