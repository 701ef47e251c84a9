"""Which exported file and which validation metrics belong to a benchmarked variant.

The comparison table and the summary both put a variant's file size and accuracy beside its timings; they must
name the same file and the same weights, so the matching lives here once.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from spinn_export.bench.variants import BASELINE_ROLE
from spinn_export.report.results import History, ManifestView, parse_variant


def history_stage(histories: Sequence[History], variant: str) -> pd.Series | None:
    """The history stage that holds this variant's weights (the last stage not rolled back; stage 0 of any history
    for dense).

    Quantised variants have other weights than any stage: none for them."""
    parsed = parse_variant(variant)
    if parsed is None or parsed.quantised:
        return None
    for history in histories:
        if parsed.role == BASELINE_ROLE:
            return history.stages.iloc[0]
        if history.method == parsed.role:
            return history.kept.iloc[-1]
    return None


def validation(histories: Sequence[History], variant: str, artifact: pd.Series | None) -> pd.Series | None:
    """Validation metrics (`val_r2`, `val_residual_rms`) of the weights this variant ran: its pruning history's stage
    (`history_stage`), or for a quantised variant the export's measurement of the file timed (`artifact`), on the
    same validation split; its residual is missing where the runtime gives no derivatives."""
    stage = history_stage(histories, variant)
    if stage is not None:
        return stage
    if artifact is None or pd.isna(artifact.get("val_r2")):
        return None
    return pd.Series({"val_r2": artifact["val_r2"], "val_residual_rms": artifact.get("val_residual_rms")}, dtype=float)


def timed_file(runs: pd.DataFrame) -> str | None:
    """The artifact file the suite timed for these runs (recorded since the suite ships in the package)."""
    files = runs["artifact"].dropna() if "artifact" in runs.columns else pd.Series(dtype=object)
    return str(files.iloc[0]) if not files.empty else None


def artifact_named(manifest: ManifestView | None, file: str | None) -> pd.Series | None:
    """The manifest's row of this file, if it lists one."""
    if manifest is None or file is None or manifest.artifacts.empty or not (manifest.artifacts["file"] == file).any():
        return None
    return manifest.artifacts[manifest.artifacts["file"] == file].iloc[0]


def timed_artifact(manifest: ManifestView | None, runs: pd.DataFrame) -> pd.Series | None:
    """The manifest's row of the file these runs timed, if recorded."""
    return artifact_named(manifest, timed_file(runs))


def file_bytes(manifest: ManifestView | None, runs: pd.DataFrame) -> float:
    artifact = timed_artifact(manifest, runs)
    return math.nan if artifact is None else float(artifact["bytes"])


def artifact(manifest: ManifestView | None, timed: str | None, model: str, variant: str,
             headline_format: str | None) -> pd.Series | None:
    """The manifest's artifact of this benchmarked model: the file timed at the comparison's backend and batch;
    else the model's artifact at the variant's precision in the format timed for dense there (any format
    if none), so the `file` column names the artifact that backend runs."""
    if manifest is None or manifest.artifacts.empty:
        return None
    named = artifact_named(manifest, timed)
    if named is not None:
        return named
    arts = manifest.artifacts
    parsed = parse_variant(variant)
    if parsed is not None and parsed.sparse:
        return None  # torch sparse CSR is built in memory from the checkpoint: no exported file runs it
    same = arts[arts["model"] == model]
    if parsed is not None:
        same = same[same["precision"] == parsed.precision]
    if same.empty:
        return None
    preferred = same[same["format"] == headline_format]
    return (preferred if not preferred.empty else same).iloc[0]
