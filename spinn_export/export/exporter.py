"""The export stage: every checkpoint in every requested format, each artifact verified, then `manifest.json`.

Each artifact is written under a temporary name, loaded back in its own runtime and checked (parity,
weight shapes), and only then renamed into place; the manifest is written last. A failure or Ctrl-C
leaves no file under a final name that was not verified.

Low-precision artifacts are also measured on the validation split of the data the checkpoint was trained
on (the built-in task its metadata names, or the data given: `--data`) against the float32 model and an
R^2 budget; calibrated formats are written from that data's training inputs. Both are resolved and checked
for every checkpoint before anything is written.
"""
from __future__ import annotations

import keyword
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from spinn_export.errors import UserError
from spinn_export.export.formats import (
    DEFAULT_OPSET,
    Calibration,
    Format,
    calibration_inputs,
    control_rows,
    load_artifact,
    write_artifact,
)
from spinn_export.export.manifest import MANIFEST_NAME, ArtifactRecord, Manifest, read_manifest
from spinn_export.export.parity import DEFAULT_MAX_R2_DROP, accuracy, check_parity, task_dataset, tolerance_for
from spinn_export.files import atomic_path, sha256_of
from spinn_export.model.checkpoint import Checkpoint, load_checkpoint
from spinn_export.model.graph import Graph, Ref, build_module, fresh_name
from spinn_export.model.mlp import count_nonzero
from spinn_export.model.network import Network
from spinn_export.model.spec import ROLES
from spinn_export.runtimes import library_versions
from spinn_export.task.data import Dataset, builtin_dataset, check_model_fits, input_range
from spinn_export.task.metrics import Metrics, evaluate
from spinn_export.task.stokes import STOKES


@dataclass(frozen=True)
class CheckpointData:
    """What one checkpoint's low-precision artifacts are judged and calibrated on.

    `dataset`: the data it was trained on, when known (the built-in task its metadata names, or the data
    given), and `reference` the float32 model's metrics on its validation split. `calibration`: the checked
    training rows for calibrated formats (with held-out control rows where the data is known), and
    `calibration_record` where they came from.
    """

    dataset: Dataset | None = None
    reference: Metrics | None = None
    calibration: Calibration | None = None
    calibration_record: dict[str, Any] | None = None


def checkpoint_data(checkpoint: Checkpoint, name: str, formats: Sequence[Format], data: Dataset | None,
                    max_r2_drop: float = DEFAULT_MAX_R2_DROP) -> CheckpointData:
    """Resolve and check the data for `checkpoint`'s formats (called for every checkpoint before anything is written).

    Calibration uses the training inputs of the data given, else of the built-in task the checkpoint names;
    a checkpoint that names no dataset at all (the benchmark's built-in models: seeded weights, no training)
    but takes the built-in task's inputs is calibrated on the built-in task's, and the record says so
    (`source: default`). Accuracy is measured only on data the checkpoint is known to model.
    """
    architecture = checkpoint.network.architecture
    if data is not None:
        check_model_fits(data, checkpoint.network)  # widths, and the data's physics tried once
    low_precision = [f for f in formats if not f.float32]
    if not low_precision:
        return CheckpointData()
    known = data if data is not None else task_dataset(checkpoint.metadata)
    reference = None if known is None else evaluate(checkpoint.network.module, known)
    if not any(f.calibrated for f in low_precision):
        return CheckpointData(known, reference)
    if known is not None:
        source, calibrate_on = ("given" if data is not None else "checkpoint"), known
    elif "dataset" not in checkpoint.metadata and architecture.in_features == len(STOKES.input_names):
        source, calibrate_on = "default", builtin_dataset()
    else:
        named = checkpoint.metadata.get("dataset")
        trained_on = f"its data ({named!r})" if named else "its data (the checkpoint names none)"
        raise UserError(f"{name}: calibrated formats ({', '.join(f.name for f in low_precision if f.calibrated)}) need "
                        f"the training inputs of {trained_on}; pass --data FILE --inputs COLS --targets COLS")
    where = f"{calibrate_on.name}, training split"
    rows = calibration_inputs(calibrate_on.x_train.numpy(), architecture.in_features, where)
    control = None if known is None else control_rows(known.x_train.numpy(), known.y_train.numpy(), where)
    record = {"dataset": calibrate_on.name, "split": "train", "rows": len(rows), "source": source}
    return CheckpointData(known, reference, Calibration(rows, max_r2_drop, control), record)


def csr_flops(network: Network) -> int:
    """FLOPs per sample with the layers run as CSR: two per non-zero stored weight instead of two per weight; every
    other contraction (and a weight computed from others) stays dense."""
    architecture, tensors = network.architecture, network.tensors
    saved = sum(layer.rows_per_sample * 2 * (out * inp - int(torch.count_nonzero(tensors[layer.weight])))
                for layer, (out, inp) in zip(architecture.layers, architecture.layer_shapes) if layer.weight in tensors)
    return architecture.flops_per_sample - saved


def _copy_checkpoint(source: Path, out_dir: Path) -> Path:
    target = out_dir / source.name
    if target.resolve() != source.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return target


def _exportable(network: Network) -> Network:
    """The model as its artifacts hold it. torch.export's own code generation (`ExportedProgram.module()`,
    `run_decompositions`: the ONNX and .pt2 writers and loaders) writes a tensor `layers.in.weight` as
    `self.layers.in.weight`, a SyntaxError in torch 2.13, so artifacts name such a tensor with `_` after each
    keyword (`layers.in_.weight`); the checkpoint keeps the user's names."""
    graph = network.architecture.graph
    names = [t.name for t in graph.tensors]
    renames: dict[str, str] = {}
    for name in names:
        if any(keyword.iskeyword(part) for part in name.split(".")):
            plain = ".".join(f"{p}_" if keyword.iskeyword(p) else p for p in name.split("."))
            renames[name] = fresh_name(plain, {*names, *renames.values()} - {name})
    if not renames:
        return network

    def swap(value: object) -> object:
        if isinstance(value, Ref):
            return Ref(renames.get(value.name, value.name))
        return tuple(swap(v) for v in value) if isinstance(value, tuple) else value

    nodes = tuple(replace(n, args=swap(n.args), kwargs=tuple((k, swap(v)) for k, v in n.kwargs)) for n in graph.nodes)
    plain_graph = Graph(graph.input, graph.in_features, nodes, renames.get(graph.output, graph.output),
                        tuple(replace(t, name=renames.get(t.name, t.name)) for t in graph.tensors))
    tensors = {renames.get(k, k): v for k, v in network.tensors.items()}
    return Network(replace(network.architecture, graph=plain_graph),
                   build_module(plain_graph, tensors).train(network.module.training))


def export_one(checkpoint: Checkpoint, name: str, fmt: Format, out_dir: Path, opset: int,
               checkpoint_file: Path, data: CheckpointData = CheckpointData(),
               max_r2_drop: float = DEFAULT_MAX_R2_DROP) -> ArtifactRecord:
    """Write, reload, verify, then rename into place: a failing artifact never appears under its final name."""
    label = f"{name} [{fmt.name}]"
    network = checkpoint.network
    architecture, model = network.architecture, network.module
    final = out_dir / fmt.filename(name)
    with atomic_path(final) as tmp:
        quantiser = write_artifact(fmt, _exportable(network), tmp, opset, name, data.calibration)
        artifact = load_artifact(tmp, fmt, architecture.in_features)
        parity = check_parity(network, artifact, label, tolerance_for(fmt.precision),
                              domain=input_range(checkpoint.metadata),
                              weight_shapes=fmt.weight_shapes(tmp))
        measured = None if fmt.float32 or data.dataset is None else accuracy(
            model, artifact, data.dataset, max_r2_drop, data.reference)
        size, digest = tmp.stat().st_size, sha256_of(tmp)
    return ArtifactRecord(
        model=name, variant=checkpoint.variant, format=fmt.name, file=final.name, bytes=size, sha256=digest,
        checkpoint=checkpoint_file.name, checkpoint_sha256=sha256_of(checkpoint_file),
        params=architecture.params, nonzero_params=count_nonzero(model),
        flops_per_sample=architecture.flops_per_sample, widths=architecture.widths,
        in_features=architecture.in_features, out_features=architecture.out_features,
        activation=architecture.activation, opset=opset if fmt.uses_opset else None,
        architecture_source=architecture.source, groups=architecture.group_names,
        csr_flops_per_sample=csr_flops(network),
        parity=parity.to_dict(), precision=fmt.precision,
        accuracy=None if measured is None else measured.to_dict(),
        within_budget=True if fmt.float32 else None if measured is None else measured.within_budget,
        calibration={**(data.calibration_record or {}), **(quantiser or {})} if fmt.calibrated else None,
    )


def _previous(out_dir: Path) -> tuple[ArtifactRecord, ...]:
    """Entries of an existing manifest in DIR, kept unless this run replaces them (same model and format)."""
    if not (out_dir / MANIFEST_NAME).exists():
        return ()
    return read_manifest(out_dir, verify=False).artifacts


def export_checkpoints(
    paths: Sequence[str | Path], out_dir: str | Path, formats: Sequence[Format], opset: int = DEFAULT_OPSET,
    on_artifact: Callable[[ArtifactRecord], None] = lambda record: None, *, data: Dataset | None = None,
    max_r2_drop: float = DEFAULT_MAX_R2_DROP, unavailable: dict[str, str] | None = None,
) -> Manifest:
    """Export every checkpoint in every format, verifying each artifact, then write DIR/manifest.json.

    `data`: the data the checkpoints were trained on, when it is not the built-in task their metadata names
    (accuracy and calibration use it). `max_r2_drop`: the accuracy budget of low-precision artifacts.
    `unavailable`: formats asked for by kind that this machine cannot produce, and why (recorded in the manifest).
    """
    if not (max_r2_drop >= 0 and math.isfinite(max_r2_drop)):
        raise UserError(f"--max-r2-drop must be zero or a positive R^2 change such as 0.01, got {max_r2_drop}")
    out_dir = Path(out_dir)
    sources = [Path(p) for p in paths]
    names = [p.name.removesuffix(".safetensors") if p.name.endswith(".safetensors") else p.stem for p in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"two checkpoints are both named {duplicates[0]!r}; "
                        "artifacts are named by file stem: rename one")
    checkpoints = [load_checkpoint(p) for p in sources]  # every input is validated before anything is written
    for path, checkpoint in zip(sources, checkpoints):
        if checkpoint.variant not in ROLES:
            raise UserError(f"{path}: unknown variant {checkpoint.variant!r} in metadata; "
                            f"expected one of {', '.join(ROLES)}")
    prepared = [checkpoint_data(checkpoint, name, formats, data, max_r2_drop)
                for name, checkpoint in zip(names, checkpoints)]
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous(out_dir)
    records: list[ArtifactRecord] = []
    for source, name, checkpoint, checked in zip(sources, names, checkpoints, prepared):
        copied = _copy_checkpoint(source, out_dir)
        for fmt in formats:
            record = export_one(checkpoint, name, fmt, out_dir, opset, copied, checked, max_r2_drop)
            records.append(record)
            on_artifact(record)
    replaced = {(r.model, r.format) for r in records}
    kept = [r for r in previous if (r.model, r.format) not in replaced]
    installed = {library: version for library, version in library_versions().items() if version is not None}
    manifest = Manifest(versions=installed, artifacts=tuple(kept + records), unavailable=dict(unavailable or {}))
    manifest.write(out_dir / MANIFEST_NAME)
    return manifest
