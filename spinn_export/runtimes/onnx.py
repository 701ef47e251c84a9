"""ONNX graphs the runtimes read: one square GEMM by constant weights, in the three forms the ceilings time."""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

GEMM_FORMS = ("float", "integer", "qdq")


def gemm(form: str, size: int) -> tuple[bytes, np.ndarray]:
    """One size x size GEMM by constant weights as ONNX, and its input. `float`: MatMul; `integer`: MatMulInteger
    (uint8 x int8, ONNX Runtime's int8 kernel); `qdq`: float MatMul between QuantizeLinear/DequantizeLinear pairs
    (OpenVINO runs it as an int8 MatMul)."""
    # start-up: onnx only where a GEMM model is built (the runtimes import this module for its ceilings)
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (size, size), dtype=np.int8) if form != "float" else \
        rng.standard_normal((size, size), dtype=np.float32)
    inits = [numpy_helper.from_array(weights, "W")]
    if form == "qdq":
        inits += [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in
                  (("sa", 0.02, np.float32), ("za", 128, np.uint8), ("sw", 0.01, np.float32), ("zw", 0, np.int8))]
        nodes = [helper.make_node("QuantizeLinear", ["A", "sa", "za"], ["Aq"]),
                 helper.make_node("DequantizeLinear", ["Aq", "sa", "za"], ["Ad"]),
                 helper.make_node("DequantizeLinear", ["W", "sw", "zw"], ["Wd"]),
                 helper.make_node("MatMul", ["Ad", "Wd"], ["Y"])]
    else:
        nodes = [helper.make_node("MatMulInteger" if form == "integer" else "MatMul", ["A", "W"], ["Y"])]
    in_type, out_type = (TensorProto.UINT8, TensorProto.INT32) if form == "integer" else (TensorProto.FLOAT,) * 2
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("A", in_type, [size, size])],
                              [helper.make_tensor_value_info("Y", out_type, [size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what every supported ONNX Runtime reads
    x = rng.integers(0, 256, (size, size), dtype=np.uint8) if form == "integer" else \
        rng.standard_normal((size, size), dtype=np.float32)
    return model.SerializeToString(), x


@contextlib.contextmanager
def gemm_file(form: str, size: int) -> Iterator[tuple[Path, np.ndarray]]:
    """`gemm` as a temporary file (the runtimes open files, as the backends do) and its input."""
    model, x = gemm(form, size)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gemm.onnx"
        path.write_bytes(model)
        yield path, x
