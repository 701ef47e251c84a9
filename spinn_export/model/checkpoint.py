"""Checkpoints as safetensors with the architecture's graph in the metadata: loading one never runs code.

The metadata carries a schema name (`spinn_export.schema`) and its version (`spinn_export.format`). Version 3 is
version 2 with the schema name; both store the graph (`model.graph`) as JSON and every tensor under its graph name.
Files of earlier releases (no schema name) are read through `from_release_2`: version 2's graph, or version 1's
plain MLP spec as the chain it describes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from spinn_export.errors import UserError, first_line, require_file
from spinn_export.files import atomic_path
from spinn_export.model.architecture import SOURCES, Architecture
from spinn_export.model.graph import Graph
from spinn_export.model.mlp import architecture_of
from spinn_export.model.network import Network
from spinn_export.model.spec import MLPSpec
from spinn_export.records import Schema

GRAPH_KEY = "spinn_export.graph"
SPEC_KEY = "spinn_export.spec"  # format 1: a plain MLP's spec
SOURCE_KEY = "architecture_source"
FORMAT_KEY = "spinn_export.format"
CHECKPOINT_HINT = "check the path of the .safetensors checkpoint"
SCHEMA = Schema("spinn-export.checkpoint", 3, "checkpoint", "save it again with this spinn-export", previous=2,
                schema_key="spinn_export.schema", version_key=FORMAT_KEY)
DTYPES = (torch.float32, torch.bfloat16)  # what a checkpoint's tensors may be stored in (bf16: `torch-bf16`)


@dataclass(frozen=True)
class Checkpoint:
    """A network as it was saved, with the metadata saved beside it (its role, where it came from, its data)."""

    network: Network
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        return self.metadata.get("variant", "dense")


def save_checkpoint(
    path: str | os.PathLike[str], network: Network, metadata: dict[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write atomically: every tensor of the graph under its name, floating ones stored in `dtype` (one of DTYPES)."""
    architecture = network.architecture
    graph = architecture.graph
    tensors = {name: (t.detach().cpu().to(dtype) if t.is_floating_point() else t.detach().cpu()).contiguous()
               for name, t in network.tensors.items()}
    wrong = [(t.name, tuple(tensors[t.name].shape), t.shape) for t in graph.tensors
             if tuple(tensors[t.name].shape) != t.shape]
    if wrong:
        raise ValueError(f"model tensor {wrong[0][0]} has shape {wrong[0][1]}, its graph says {wrong[0][2]}")
    meta = {**(metadata or {}), GRAPH_KEY: graph.to_json(), SOURCE_KEY: architecture.source, **SCHEMA.stamp()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    require_file(path, "file", CHECKPOINT_HINT)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None


def is_checkpoint(metadata: dict[str, str]) -> bool:
    """Whether a safetensors file's metadata says spinn-export wrote it (every release recorded its format)."""
    return SCHEMA.schema_key in metadata or FORMAT_KEY in metadata


def architecture_in(metadata: dict[str, str], path: str | os.PathLike[str]) -> Architecture:
    """The architecture a checkpoint's metadata records, by its schema and version; refused in one line if neither."""
    if not is_checkpoint(metadata):
        raise UserError(f"{path} is a safetensors file without a spinn-export model; "
                        "convert raw weights with `spinn-export import FILE --out MODEL.safetensors`")
    source = metadata.get(SOURCE_KEY, "spec")
    if source not in SOURCES:
        raise UserError(f"{path} records an unknown architecture source {source!r}; the file is damaged")
    if SCHEMA.version_of(metadata, path) == SCHEMA.previous:
        return from_release_2(metadata, source, path)
    return Architecture(Graph.from_json(_recorded(metadata, GRAPH_KEY, path)), source)


def _recorded(metadata: dict[str, str], key: str, path: str | os.PathLike[str]) -> str:
    """The metadata's `key`, or one line saying the file is damaged (its format names a key it lacks)."""
    if key not in metadata:
        raise UserError(f"{path}: its metadata has no {key} though its format records one; the file is damaged: "
                        f"{SCHEMA.rewrite}")
    return metadata[key]


def from_release_2(metadata: dict[str, str], source: str, path: str | os.PathLike[str]) -> Architecture:
    """A checkpoint of the releases before the schema name: its format says which ("2": the graph; "1": a plain MLP's
    spec, read as the chain it describes)."""
    version = metadata[FORMAT_KEY]
    if version == "2":
        return Architecture(Graph.from_json(_recorded(metadata, GRAPH_KEY, path)), source)
    if version == "1":
        return architecture_of(MLPSpec.from_json(_recorded(metadata, SPEC_KEY, path)), source)
    raise UserError(f"{path}: checkpoint format {version!r} without a schema name is not one spinn-export wrote; "
                    f"{SCHEMA.rewrite}")


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """The model in the dtype its tensors are stored in: float32, or bfloat16 for a `torch-bf16` artifact (never
    silently widened: a bf16 file loaded as float32 would be timed and checked as another model)."""
    require_file(path, "file", CHECKPOINT_HINT)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None
    metadata = read_metadata(path)
    architecture = architecture_in(metadata, path)
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) != 1 or not dtypes <= set(DTYPES):
        raise UserError(f"{path} stores {', '.join(sorted(map(str, dtypes)))} tensors, not all float32 or all "
                        "bfloat16; the file is damaged or not a spinn-export checkpoint")
    expected = {t.name: t.shape for t in architecture.graph.tensors}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if found != expected:
        odd = sorted(set(found.items()) ^ set(expected.items()))[0]
        raise UserError(f"{path} does not match its own graph (tensor {odd[0]!r}); the file is damaged")
    return Checkpoint(Network.built(architecture.validated(), tensors), metadata)


def _corrupt(path: str | os.PathLike[str], exc: Exception) -> UserError:
    return UserError(
        f"{path} is not a readable safetensors checkpoint ({first_line(exc)}); it may be truncated or another format "
        "(for a PyTorch .pt/.pth or .pt2 file use `spinn-export import`)"
    )
