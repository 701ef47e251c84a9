"""ONNX: one self-contained file from the dynamo exporter, with a dynamic batch axis, `onnx.checker`-clean.

Also home of what every ONNX-based format shares: the export itself (done once per model), the
self-containment check and the weight-shape reader; ONNX Runtime loads them (`runtimes.onnxruntime`).
"""
from __future__ import annotations

import hashlib
import tempfile
import weakref
from pathlib import Path

import torch
from torch import nn

from spinn_export.errors import require_file
from spinn_export.export.formats import (
    ARTIFACT_HINT,
    INPUT_NAME,
    OUTPUT_NAME,
    Calibration,
    Format,
    Predict,
    Shape,
    dynamic_batch,
    example_input,
    quiet,
    unreadable,
)
from spinn_export.model.architecture import Architecture
from spinn_export.model.network import Network
from spinn_export.runtimes import onnxruntime as ort_runtime

_ONNX_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, Architecture, str], bytes]] = (
    weakref.WeakKeyDictionary())


def _fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def onnx_bytes(network: Network, opset: int) -> bytes:
    """One self-contained ONNX model (dynamo exporter, inline weights, dynamic batch axis).

    The ONNX formats start from the same export, and the dynamo exporter takes seconds even for a
    tiny MLP, so the bytes are kept per model object, keyed by opset, architecture and a hash of the weights.
    """
    key = (opset, network.architecture, _fingerprint(network.module))
    cache = _ONNX_CACHE.setdefault(network.module, {})
    if key not in cache:
        cache.clear()
        cache[key] = _export_onnx(network, opset)
    return cache[key]


def _export_onnx(network: Network, opset: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with quiet():
            torch.onnx.export(
                network.module, (example_input(network),), str(path), dynamic_shapes=(dynamic_batch(),),
                external_data=False, opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                verbose=False,
            )
        leftovers = sorted(p.name for p in Path(tmp).iterdir() if p != path)
        if leftovers:
            raise RuntimeError(f"the ONNX exporter wrote side files {leftovers}; the model must be one file")
        return path.read_bytes()


def check_onnx(path: Path) -> None:
    """`onnx.checker` (full) and no external data: the artifact must be one self-contained file."""
    # start-up: onnx only where a file is written or read (listing the formats loads every format module)
    import onnx
    from onnx.external_data_helper import uses_external_data

    onnx.checker.check_model(str(path), full_check=True)
    initializers = onnx.load(str(path), load_external_data=False).graph.initializer
    external = [t.name for t in initializers if uses_external_data(t)]
    if external:
        raise RuntimeError(f"initializers {external[:3]} live in an external-data side file")


def write_onnx(network: Network, path: Path, opset: int, calibration: Calibration | None = None) -> None:
    path.write_bytes(onnx_bytes(network, opset))
    check_onnx(path)


def onnx_predict(path: Path) -> Predict:
    return ort_runtime.predict(path)


def onnx_weight_shapes(path: Path) -> list[Shape]:
    """(out, in) of each matrix multiply's weight initializer, in graph order (Gemm, MatMul, int8 MatMulInteger;
    in a static QDQ model the weight reaches the Gemm through a DequantizeLinear of the int8 initializer)."""
    # start-up: onnx only where a file is written or read (listing the formats loads every format module)
    import onnx

    require_file(path, "ONNX file", ARTIFACT_HINT)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf DecodeError and friends
        raise unreadable(path, "ONNX", exc) from None
    initializers = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            initializers[node.output[0]] = initializers[node.input[0]]
    shapes: list[Shape] = []
    for node in graph.node:
        if node.op_type not in ("Gemm", "FusedGemm", "MatMul", "MatMulInteger") or len(node.input) < 2:
            continue
        dims = initializers.get(node.input[1])
        if dims is None or len(dims) != 2:
            continue
        stored_out_in = node.op_type in ("Gemm", "FusedGemm") and any(
            a.name == "transB" and a.i == 1 for a in node.attribute
        )
        shapes.append((dims[0], dims[1]) if stored_out_in else (dims[1], dims[0]))
    return shapes


ONNX = Format("onnx", ".onnx", write_onnx, onnx_predict, onnx_weight_shapes,
              "ONNX (dynamo exporter), dynamic batch axis, one self-contained file", uses_opset=True)
