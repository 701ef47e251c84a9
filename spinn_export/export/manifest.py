"""The export stage's output: verified artifacts in DIR and `DIR/manifest.json` listing them.

Each artifact is written under a temporary name, loaded back and checked (parity, weight shapes), and
only then renamed into place; the manifest is written last.  A failure or Ctrl-C leaves no file under
a final name that was not verified.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinn_export.atomic import atomic_path, write_json
from spinn_export.model.checkpoint import Checkpoint, load_checkpoint
from spinn_export.errors import UserError
from spinn_export.export.formats import DEFAULT_OPSET, Format, load_artifact, write_artifact
from spinn_export.model.mlp import count_nonzero
from spinn_export.export.parity import accuracy_delta, check_parity, task_dataset

SCHEMA = 1
MANIFEST_NAME = "manifest.json"
VARIANTS = ("dense", "structured", "magnitude")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


@dataclass(frozen=True)
class ArtifactRecord:
    """One manifest entry (docs/ARCHITECTURE.md); `parity` and `accuracy_delta` are plain dicts."""

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
    activation: str
    opset: int | None
    parity: dict[str, Any]
    accuracy_delta: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArtifactRecord":
        return cls(**{**data, "widths": tuple(data["widths"])})


@dataclass(frozen=True)
class Manifest:
    versions: dict[str, str]
    artifacts: tuple[ArtifactRecord, ...]
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "versions": self.versions, "artifacts": [a.to_dict() for a in self.artifacts]}

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
            raise UserError(f"{path}: manifest schema {data.get('schema')!r} is not {SCHEMA}; re-run `spinn-export export`")
        manifest = Manifest(versions=dict(data["versions"]),
                            artifacts=tuple(ArtifactRecord.from_dict(a) for a in data["artifacts"]))
    except UserError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a valid manifest ({type(exc).__name__}: {exc}); re-run `spinn-export export`") from None
    if verify:
        for record in manifest.artifacts:
            file = directory / record.file
            if not file.is_file() or sha256_of(file) != record.sha256:
                raise UserError(f"{file}: missing or changed since export (sha256 mismatch); re-run `spinn-export export`")
    return manifest


def _copy_checkpoint(source: Path, out_dir: Path) -> Path:
    target = out_dir / source.name
    if target.resolve() != source.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return target


def export_one(checkpoint: Checkpoint, name: str, fmt: Format, out_dir: Path, opset: int,
               checkpoint_file: Path) -> ArtifactRecord:
    """Write, reload, verify, then rename into place: a failing artifact never appears under its final name."""
    label = f"{name} [{fmt.name}]"
    spec, model = checkpoint.spec, checkpoint.model
    final = out_dir / fmt.filename(name)
    with atomic_path(final) as tmp:
        write_artifact(fmt, model, spec, tmp, opset, name)
        artifact = load_artifact(tmp, fmt)
        parity = check_parity(model, artifact, fmt.weight_shapes(tmp), spec, label, float32=fmt.float32)
        dataset = None if fmt.float32 else task_dataset(checkpoint.metadata)
        delta = accuracy_delta(model, artifact, dataset) if dataset is not None else None
        size, digest = tmp.stat().st_size, sha256_of(tmp)
    return ArtifactRecord(
        model=name, variant=checkpoint.variant, format=fmt.name, file=final.name, bytes=size, sha256=digest,
        checkpoint=checkpoint_file.name, checkpoint_sha256=sha256_of(checkpoint_file),
        params=spec.params, nonzero_params=count_nonzero(model), flops_per_sample=spec.flops_per_sample,
        widths=spec.widths, in_features=spec.in_features, out_features=spec.out_features,
        activation=spec.activation, opset=opset if fmt.uses_opset else None,
        parity=parity.to_dict(), accuracy_delta=delta,
    )


def _previous(out_dir: Path) -> tuple[ArtifactRecord, ...]:
    """Entries of an existing manifest in DIR, kept unless this run replaces them (same model and format)."""
    if not (out_dir / MANIFEST_NAME).exists():
        return ()
    return read_manifest(out_dir, verify=False).artifacts


def export_checkpoints(
    paths: Sequence[str | Path], out_dir: str | Path, formats: Sequence[Format], opset: int = DEFAULT_OPSET,
    on_artifact: Callable[[ArtifactRecord], None] = lambda record: None,
) -> Manifest:
    """Export every checkpoint in every format, verifying each artifact, then write DIR/manifest.json."""
    out_dir = Path(out_dir)
    sources = [Path(p) for p in paths]
    names = [p.name.removesuffix(".safetensors") if p.name.endswith(".safetensors") else p.stem for p in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"two checkpoints are both named {duplicates[0]!r}; artifacts are named by file stem: rename one")
    checkpoints = [load_checkpoint(p) for p in sources]  # every input is validated before anything is written
    for path, checkpoint in zip(sources, checkpoints):
        if checkpoint.variant not in VARIANTS:
            raise UserError(f"{path}: unknown variant {checkpoint.variant!r} in metadata; expected one of {', '.join(VARIANTS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous(out_dir)
    records: list[ArtifactRecord] = []
    for source, name, checkpoint in zip(sources, names, checkpoints):
        copied = _copy_checkpoint(source, out_dir)
        for fmt in formats:
            record = export_one(checkpoint, name, fmt, out_dir, opset, copied)
            records.append(record)
            on_artifact(record)
    replaced = {(r.model, r.format) for r in records}
    kept = [r for r in previous if (r.model, r.format) not in replaced]
    manifest = Manifest(versions=versions(), artifacts=tuple(kept + records))
    write_json(out_dir / MANIFEST_NAME, manifest.to_dict())
    return manifest
