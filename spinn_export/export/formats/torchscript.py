"""TorchScript: traced and frozen (every torch.jit API is deprecated, but deployments still load it)."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from spinn_export.export.formats import Calibration, Format, Shape, example_input, quiet, read_artifact, torch_predict
from spinn_export.model.network import Network


def write_torchscript(network: Network, path: Path, opset: int, calibration: Calibration | None = None) -> None:
    """Traced and frozen; saved through a buffer so the archive's inner name does not depend on the file name."""
    with quiet(), torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(network.module.eval(), example_input(network)))
        buffer = io.BytesIO()
        torch.jit.save(frozen, buffer)
    path.write_bytes(buffer.getvalue())


def load_torchscript(path: str | Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """The archive with every tensor placed on `device` as it is read. TorchScript archives hold code by design:
    load only your own exports.

    The module is frozen, which turns its weights into constants of the graph: it has no parameters or
    buffers, so `.to(device)` would move nothing and leave every weight on the CPU. Only `map_location`
    places them.
    """
    return read_artifact(path, "TorchScript", lambda file: torch.jit.load(file, map_location=device)).eval()


def torchscript_weight_shapes(path: Path) -> list[Shape]:
    module = load_torchscript(path)
    shapes: list[Shape] = []
    for node in module.graph.nodes():
        if node.kind() == "aten::linear":
            weight = node.inputsAt(1).toIValue()
            if isinstance(weight, torch.Tensor) and weight.dim() == 2:
                shapes.append((int(weight.shape[0]), int(weight.shape[1])))
    return shapes


TORCHSCRIPT = Format("torchscript", ".torchscript.pt", write_torchscript, lambda p: torch_predict(load_torchscript(p)),
                     torchscript_weight_shapes, "traced and frozen TorchScript (every torch.jit API is deprecated)")
