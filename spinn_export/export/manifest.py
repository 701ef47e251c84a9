"""`DIR/manifest.json`: the export stage's list of verified artifacts, and reading it back.

Reading and verifying a manifest needs no torch and no runtime: the report and the benchmark CLI's
input checks read it in a plain Python process, and sha256 says whether each file is still the one
that was verified.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinn_export.errors import UserError
from spinn_export.files import sha256_of, write_json
from spinn_export.records import Schema, read_json

MANIFEST_NAME = "manifest.json"
REEXPORT = "re-run `spinn-export export`"
# Version 1: the previous release's `{"schema": 1, ...}`; version 2 adds the schema name and this version.
SCHEMA = Schema("spinn-export.manifest", 2, "manifest", REEXPORT, unstamped=(1,))


@dataclass(frozen=True)
class ArtifactRecord:
    """One manifest entry (docs/ARCHITECTURE.md); `variant` is the model's role (dense, structured,
    magnitude) and `precision` the format's; `parity`, `accuracy` and `calibration` are plain dicts.

    `accuracy` (`export.parity.Accuracy.to_dict`: val_r2, val_r2_delta against the float32 model, residual_rms,
    ...) is measured for low-precision artifacts where the checkpoint's data is known, else None.
    `within_budget`: True for float32 artifacts (held to float32 parity), the budget's verdict on a measured
    low-precision one, None where nothing was measured. `calibration` says which rows calibrated a
    calibrated format (dataset, split, rows, source).
    """

    model: str
    variant: str
    format: str
    file: str
    bytes: int
    sha256: str
    checkpoint: str
    checkpoint_sha256: str
    params: int
    nonzero_params: int
    flops_per_sample: int
    widths: tuple[int, ...]
    in_features: int
    out_features: int
    activation: str | None
    opset: int | None
    parity: dict[str, Any]
    precision: str = "fp32"  # absent from manifests written before it was recorded: those held only fp32 and int8 ONNX
    accuracy: dict[str, Any] | None = None
    within_budget: bool | None = None
    calibration: dict[str, Any] | None = None
    architecture_source: str = "spec"  # where the architecture was read from (`model.architecture.SOURCES`)
    groups: tuple[str, ...] = ()  # the prunable groups `widths` are the widths of (older manifests: hidden layers)
    csr_flops_per_sample: int | None = None  # what the layers' non-zero weights cost as CSR (magnitude-csr)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "widths": list(self.widths), "groups": list(self.groups)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRecord:
        """An entry as this release writes it: every field present."""
        return cls(**{**data, "widths": tuple(data["widths"]), "groups": tuple(data["groups"])})


def _artifact_from_release_1(data: dict[str, Any]) -> dict[str, Any]:
    """An entry of a schema-1 manifest as version 2 writes it. Schema 1 grew over its releases: `precision`, `groups`
    and the quantiser's fields came late (the defaults are what those exporters meant), and the first ones recorded
    `accuracy_delta` (its R^2 figures; no residual, no budget) where later ones record `accuracy`."""
    data = dict(data)
    older = data.pop("accuracy_delta", None)
    if older is not None and "accuracy" not in data:
        data["accuracy"] = {"dataset": older["dataset"], "split": older["split"], "val_r2": older["r2"],
                            "val_r2_reference": older["r2_reference"], "val_r2_delta": older["delta_r2"],
                            "residual_rms": None, "residual_note": "not recorded by the exporter that wrote this"}
    defaults = {"precision": "int8" if data.get("format") == "onnx-int8" else "fp32", "accuracy": None,
                "within_budget": None, "calibration": None, "architecture_source": "spec", "groups": [],
                "csr_flops_per_sample": None}
    return {**defaults, **data}


@dataclass(frozen=True)
class Manifest:
    """`unavailable`: formats the export was asked for by kind (`--formats all`, the main job) that this machine
    cannot produce, with the reason (a missing library, no native bf16), so a report can say what is absent and why."""

    versions: dict[str, str]
    artifacts: tuple[ArtifactRecord, ...]
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**SCHEMA.stamp(), "versions": self.versions, "artifacts": [a.to_dict() for a in self.artifacts],
                "unavailable": self.unavailable}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | os.PathLike[str]) -> Manifest:
        """A manifest of this release or the previous one (`from_release_1`); any other is refused in one line."""
        return SCHEMA.parse(data, path, from_release_1, lambda fields: cls(
            versions=dict(fields["versions"]), unavailable=dict(fields["unavailable"]),
            artifacts=tuple(ArtifactRecord.from_dict(a) for a in fields["artifacts"])))

    def write(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        return cls.from_dict(read_json(path, SCHEMA), path)

    def find(self, model: str, fmt: str) -> ArtifactRecord | None:
        return next((a for a in self.artifacts if a.model == model and a.format == fmt), None)


def read_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """DIR/manifest.json as written by `spinn-export export`; with `verify`, every file's sha256 is checked."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path}: no manifest; run `spinn-export export CHECKPOINT... --out {directory}` first")
    manifest = Manifest.read(path)
    if verify:
        expected = {r.file: r.sha256 for r in manifest.artifacts} | {r.checkpoint: r.checkpoint_sha256
                                                                      for r in manifest.artifacts}
        for name, digest in sorted(expected.items()):
            file = directory / name
            if not file.is_file() or sha256_of(file) != digest:
                raise UserError(f"{file}: missing or changed since export (sha256 mismatch); {REEXPORT}")
    return manifest


def from_release_1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 manifest (the previous release) as version 2: its entries completed, `unavailable` ({} where it
    predates the record)."""
    return {**data, "artifacts": [_artifact_from_release_1(a) for a in data["artifacts"]],
            "unavailable": data.get("unavailable") or {}}
