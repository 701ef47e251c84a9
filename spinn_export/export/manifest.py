"""`DIR/manifest.json`: the export stage's list of verified artifacts, and reading it back.

Reading and verifying a manifest needs no torch and no runtime: the report and the benchmark CLI's
input checks read it in a plain Python process, and sha256 says whether each file is still the one
that was verified.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinn_export.errors import UserError
from spinn_export.files import sha256_of

SCHEMA = 1
MANIFEST_NAME = "manifest.json"


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
        data = dict(data)
        precision = data.get("precision", "int8" if data.get("format") == "onnx-int8" else "fp32")
        older = data.pop("accuracy_delta", None)  # manifests before `accuracy`: its R^2 figures, no residual, no budget
        if older is not None and "accuracy" not in data:
            data["accuracy"] = {"dataset": older["dataset"], "split": older["split"], "val_r2": older["r2"],
                                "val_r2_reference": older["r2_reference"], "val_r2_delta": older["delta_r2"],
                                "residual_rms": None, "residual_note": "not recorded by the exporter that wrote this"}
        return cls(**{**data, "widths": tuple(data["widths"]), "precision": precision,
                      "groups": tuple(data.get("groups", ()))})


@dataclass(frozen=True)
class Manifest:
    """`unavailable`: formats the export was asked for by kind (`--formats all`, the main job) that this machine
    cannot produce, with the reason (a missing library, no native bf16), so a report can say what is absent and why."""

    versions: dict[str, str]
    artifacts: tuple[ArtifactRecord, ...]
    schema: int = SCHEMA
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "versions": self.versions, "artifacts": [a.to_dict() for a in self.artifacts],
                "unavailable": self.unavailable}

    def find(self, model: str, fmt: str) -> ArtifactRecord | None:
        return next((a for a in self.artifacts if a.model == model and a.format == fmt), None)


def read_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """DIR/manifest.json as written by `spinn-export export`; with `verify`, every file's sha256 is checked."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path}: no manifest; run `spinn-export export CHECKPOINT... --out {directory}` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != SCHEMA:
            raise UserError(f"{path}: manifest schema {data.get('schema')!r} is not {SCHEMA}; "
                            "re-run `spinn-export export`")
        manifest = Manifest(versions=dict(data["versions"]),
                            artifacts=tuple(ArtifactRecord.from_dict(a) for a in data["artifacts"]),
                            unavailable=dict(data.get("unavailable") or {}))
    except UserError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a valid manifest ({type(exc).__name__}: {exc}); "
                        "re-run `spinn-export export`") from None
    if verify:
        expected = {r.file: r.sha256 for r in manifest.artifacts} | {r.checkpoint: r.checkpoint_sha256
                                                                      for r in manifest.artifacts}
        for name, digest in sorted(expected.items()):
            file = directory / name
            if not file.is_file() or sha256_of(file) != digest:
                raise UserError(f"{file}: missing or changed since export (sha256 mismatch); "
                                "re-run `spinn-export export`")
    return manifest
