"""Checkpoints as safetensors with the spec in the metadata: loading one never runs code."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from spinn_export.errors import UserError, first_line, require_file
from spinn_export.files import atomic_path
from spinn_export.model.mlp import build_model, linear_layers
from spinn_export.model.spec import MLPSpec

SPEC_KEY = "spinn_export.spec"
FORMAT_KEY = "spinn_export.format"
FORMAT_VERSION = "1"
CHECKPOINT_HINT = "check the path of the .safetensors checkpoint"
DTYPES = (torch.float32, torch.bfloat16)  # what a checkpoint's tensors may be stored in (bf16: `torch-bf16`)


@dataclass(frozen=True)
class Checkpoint:
    spec: MLPSpec
    model: nn.Sequential
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        return self.metadata.get("variant", "dense")


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, spec: MLPSpec, metadata: dict[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write atomically; tensors are named linear{i}.weight/bias, independent of module nesting, and stored in
    `dtype` (one of DTYPES)."""
    tensors: dict[str, torch.Tensor] = {}
    for index, layer in enumerate(linear_layers(model)):
        tensors[f"linear{index}.weight"] = layer.weight.detach().cpu().to(dtype).contiguous()
        tensors[f"linear{index}.bias"] = layer.bias.detach().cpu().to(dtype).contiguous()
    shapes = [tuple(t.shape) for k, t in tensors.items() if k.endswith("weight")]
    if shapes != spec.layer_shapes:
        raise ValueError(f"model layer shapes {shapes} do not match spec {spec.layer_shapes}")
    meta = {**(metadata or {}), SPEC_KEY: spec.to_json(), FORMAT_KEY: FORMAT_VERSION}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    from safetensors import safe_open

    require_file(path, "file", CHECKPOINT_HINT)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """The model in the dtype its tensors are stored in: float32, or bfloat16 for a `torch-bf16` artifact (never
    silently widened: a bf16 file loaded as float32 would be timed and checked as another model)."""
    require_file(path, "file", CHECKPOINT_HINT)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None
    metadata = read_metadata(path)
    if SPEC_KEY not in metadata:
        raise UserError(
            f"{path} is a safetensors file without a spinn-export model spec; "
            "convert raw weights with `spinn-export import FILE --out MODEL.safetensors`"
        )
    spec = MLPSpec.from_json(metadata[SPEC_KEY])
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1 or not dtypes <= set(DTYPES):
        raise UserError(f"{path} stores {', '.join(sorted(map(str, dtypes)))} tensors, not all float32 or all "
                        "bfloat16; the file is damaged or not a spinn-export checkpoint")
    model = build_model(spec).to(dtypes.pop())
    try:
        with torch.no_grad():
            for index, layer in enumerate(linear_layers(model)):
                layer.weight.copy_(tensors[f"linear{index}.weight"])
                layer.bias.copy_(tensors[f"linear{index}.bias"])
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"{path} does not match its own spec {spec.to_dict()}: {exc}; the file is damaged") from None
    model.eval()
    return Checkpoint(spec=spec, model=model, metadata=metadata)


def _corrupt(path: str | os.PathLike[str], exc: Exception) -> UserError:
    return UserError(
        f"{path} is not a readable safetensors checkpoint ({first_line(exc)}); it may be truncated or another format "
        "(for a PyTorch .pt/.pth file use `spinn-export import`)"
    )
