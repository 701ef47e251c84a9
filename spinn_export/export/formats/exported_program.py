"""torch.export: the program with a dynamic batch axis (`.pt2`), loaded without unpickling anything."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

from spinn_export.errors import UserError
from spinn_export.export.formats import (
    Calibration,
    Format,
    Predict,
    Shape,
    dynamic_batch,
    example_input,
    quiet,
    read_artifact,
    torch_predict,
    unreadable,
)
from spinn_export.model.network import Network


def exported(network: Network) -> torch.export.ExportedProgram:
    with quiet():
        return torch.export.export(network.module.eval(), (example_input(network),), dynamic_shapes=(dynamic_batch(),))


def write_exported_program(network: Network, path: Path, opset: int, calibration: Calibration | None = None) -> None:
    program = exported(network)
    buffer = io.BytesIO()
    with quiet():
        torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())


def _refuse_pickles(path: Path) -> None:
    """torch.export.load unpickles payloads flagged `use_pickle` and custom objects, and falls back to
    unrestricted unpickling for sample inputs; our own exports need none of that, so refuse it up front."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(("weights_config.json", "constants_config.json")):
                    config = json.loads(archive.read(name)).get("config", {})
                    for key, payload in config.items():
                        if payload.get("use_pickle") or not str(payload.get("path_name", "")).startswith(
                            ("weight_", "tensor_")
                        ):
                            raise UserError(
                                f"{path}: entry {key!r} would be unpickled (running code from the file); "
                                "only spinn-export's own .pt2 exports are loaded"
                            )
                elif "/sample_inputs/" in name:
                    payload = archive.read(name)
                    if payload:
                        torch.load(io.BytesIO(payload), weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # BadZipFile, JSON errors, UnpicklingError from weights_only
        raise unreadable(path, "torch.export (.pt2)", exc) from None


def load_exported_program(path: str | Path) -> torch.export.ExportedProgram:
    """A torch.export program, refusing archives that would unpickle anything."""

    def load(file: str) -> torch.export.ExportedProgram:
        _refuse_pickles(Path(file))
        return torch.export.load(file)

    return read_artifact(path, "torch.export (.pt2)", load)


def _exported_predict(path: Path) -> Predict:
    return torch_predict(load_exported_program(path).module())


def exported_weight_shapes(path: Path) -> list[Shape]:
    program = load_exported_program(path)
    signature = program.graph_signature
    stored = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
              **signature.inputs_to_lifted_tensor_constants}
    values = {**program.state_dict, **program.constants}
    shapes: list[Shape] = []
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.linear.default:
            name = stored.get(node.args[1].name)
            if name is not None and isinstance(values.get(name), torch.Tensor) and values[name].dim() == 2:
                shapes.append((int(values[name].shape[0]), int(values[name].shape[1])))
    return shapes


EXPORTED_PROGRAM = Format("exported-program", ".pt2", write_exported_program, _exported_predict, exported_weight_shapes,
                          "torch.export program, dynamic batch axis")
