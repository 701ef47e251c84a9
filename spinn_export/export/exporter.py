"""The export stage: every checkpoint in every requested format, each artifact verified, then `manifest.json`.

Each artifact is written under a temporary name, loaded back in its own runtime and checked (parity,
weight shapes), and only then renamed into place; the manifest is written last. A failure or Ctrl-C
leaves no file under a final name that was not verified.
"""
from __future__ import annotations

import platform
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from spinn_export.errors import UserError
from spinn_export.export.formats import DEFAULT_OPSET, Format, load_artifact, write_artifact
from spinn_export.export.manifest import MANIFEST_NAME, ArtifactRecord, Manifest, read_manifest
from spinn_export.export.parity import accuracy_delta, check_parity, task_dataset, tolerance_for
from spinn_export.files import atomic_path, sha256_of, write_json
from spinn_export.model.checkpoint import Checkpoint, load_checkpoint
from spinn_export.model.mlp import count_nonzero
from spinn_export.model.spec import ROLES


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


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
        parity = check_parity(model, artifact, spec, label, tolerance_for(fmt.precision),
                              weight_shapes=fmt.weight_shapes(tmp))
        dataset = None if fmt.float32 else task_dataset(checkpoint.metadata)
        delta = accuracy_delta(model, artifact, dataset) if dataset is not None else None
        size, digest = tmp.stat().st_size, sha256_of(tmp)
    return ArtifactRecord(
        model=name, variant=checkpoint.variant, format=fmt.name, file=final.name, bytes=size, sha256=digest,
        checkpoint=checkpoint_file.name, checkpoint_sha256=sha256_of(checkpoint_file),
        params=spec.params, nonzero_params=count_nonzero(model), flops_per_sample=spec.flops_per_sample,
        widths=spec.widths, in_features=spec.in_features, out_features=spec.out_features,
        activation=spec.activation, opset=opset if fmt.uses_opset else None,
        parity=parity.to_dict(), accuracy_delta=delta, precision=fmt.precision,
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
        if checkpoint.variant not in ROLES:
            raise UserError(f"{path}: unknown variant {checkpoint.variant!r} in metadata; expected one of {', '.join(ROLES)}")
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
