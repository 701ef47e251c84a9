"""One-layer models cut out of a deployed ONNX file, for the same-kernel, same-shape bound (`bench.bound`).

A square 1024³ GEMM is not like for like with a deployment: the deployment runs its runtime's fused kernel at its
own shapes (8192 x 18 x 288 for a first layer). So each GEMM of the deployed file is cut out of that very file, with
its own weights, quantisers and attributes, as up to three models that take the layer's float input at any batch:

* `quantise`: the nodes that turn the layer's input into the GEMM's (QuantizeLinear/DequantizeLinear, ONNX Runtime's
  DynamicQuantizeLinear); int8 files only: an int8 GEMM cannot run without them;
* `gemm`: those, the GEMM and its epilogue (bias, dequantisation scales, output Q/DQ), up to the activation;
* `activation`: the same with the activation that follows (Tanh, Sigmoid, ...), where there is one.

They are written in the deployment's format (ONNX, its opset, IR version and metadata: the precision it declares)
and a backend compiles them as it compiles the deployment, with the same settings. A layer whose nodes reach another
graph input than its own (a skip connection, a second input) is left out with the reason. Beside them it writes the
empty model (`Cut.floor`): the deployment's input returned as it is, each runtime's per-call cost with nothing to
compute.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinn_export.runtimes.profile import is_gemm

PROLOGUE = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})  # input -> the GEMM's input
EPILOGUE = frozenset({"Add", "Mul", "Cast", "QuantizeLinear", "DequantizeLinear"})  # GEMM -> before the activation
ACTIVATIONS = frozenset({"Tanh", "Sigmoid", "Relu", "LeakyRelu", "Elu", "Selu", "Gelu", "Softplus", "HardSigmoid",
                         "HardSwish", "Mish", "Sin", "Cos"})
KINDS = ("quantise", "gemm", "activation")


@dataclass(frozen=True)
class Layer:
    """One GEMM of the deployment: its operator, shape (K inputs, N outputs; N None where not inferred), the
    activation after it, its one-layer model files by kind (`KINDS`; `quantise` only where it has a prologue), and
    `foldable`: its quantiser is static (constant scales, no DynamicQuantizeLinear) and quantises what an earlier node
    computed, so a runtime may run it as the epilogue of the kernel before it (`bench.bound` does not count it)."""

    index: int
    operator: str
    in_features: int
    out_features: int | None
    activation: str | None
    files: dict[str, Path] = field(default_factory=dict)
    foldable: bool = False

    def shape(self, batch: int) -> str:
        return f"{batch}x{self.in_features}x{self.out_features if self.out_features is not None else '?'}"


@dataclass(frozen=True)
class Cut:
    """What `layer_models` cut: the layers in graph order, the GEMMs it could not cut alone (with the reason), and
    the empty model of the deployment's input (`in_features` wide)."""

    layers: tuple[Layer, ...]
    left_out: tuple[str, ...]
    floor: Path
    in_features: int


class _Graph:
    """The deployed graph's tensors: who makes each, who reads it, which are constants, and their shapes."""

    def __init__(self, model: Any) -> None:
        # start-up: onnx only where the bound's models are built (the suite's plug-in imports this module)
        import onnx

        inferred = onnx.shape_inference.infer_shapes(model)
        graph = model.graph
        self.model, self.nodes = model, list(graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {init.name for init in graph.initializer}
        self.inputs = {value.name for value in graph.input} - self.constants
        self.outputs = {value.name for value in graph.output}
        self.types = {v.name: v.type for v in (*inferred.graph.input, *inferred.graph.value_info,
                                               *inferred.graph.output)}

    def dims(self, name: str) -> list[int | str | None]:
        value = self.types.get(name)
        if value is None or not value.tensor_type.HasField("shape"):
            return []
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.tensor_type.shape.dim]

    def only_consumer(self, name: str) -> Any | None:
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None

    def closure(self, outputs: Iterable[str], start: str) -> list[Any] | None:
        """The nodes that compute `outputs` from `start` and constants, in graph order; None if they need another
        graph input (the layer is not self-contained)."""
        needed: set[int] = set()
        stack = list(outputs)
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or name == start or name in self.constants or not name:
                continue
            seen.add(name)
            node = self.producer.get(name)
            if node is None:  # a graph input other than the layer's own
                return None
            needed.add(id(node))
            stack.extend(node.input)
        return [node for node in self.nodes if id(node) in needed]


def _prologue_start(graph: _Graph, gemm: Any) -> str:
    """The float tensor the layer starts from: the GEMM's data input, back through the quantisers before it."""
    name = gemm.input[0]
    while (node := graph.producer.get(name)) is not None and node.op_type in PROLOGUE:
        name = node.input[0]
    return name


def _foldable(graph: _Graph, gemm: Any, start: str) -> bool:
    """Whether the quantiser between `start` and the GEMM is static and `start` is computed inside the graph."""
    prologue = graph.closure([gemm.input[0]], start) or []
    return (start not in graph.inputs and bool(prologue)
            and all(node.op_type != "DynamicQuantizeLinear" for node in prologue))


def _epilogue_end(graph: _Graph, gemm: Any, start: str) -> str:
    """The last tensor of the GEMM's epilogue: forward through bias, scales, casts and output Q/DQ while each step is
    the only reader and needs nothing from outside the layer."""
    name = gemm.output[0]
    while (node := graph.only_consumer(name)) is not None and node.op_type in EPILOGUE \
            and graph.closure(node.output[:1], start) is not None:
        name = node.output[0]
    return name


def _write(graph: _Graph, nodes: list[Any], start: str, end: str, batch_dim: int | str | None, in_features: int,
           path: Path, end_type: Any = None) -> Path:
    """The nodes as a model of their own: the deployment's opset, IR version and metadata; input `start` as float
    [batch, K], output `end` with its inferred type."""
    # start-up: onnx only where the bound's models are built (the suite's plug-in imports this module)
    from onnx import TensorProto, helper

    used = {name for node in nodes for name in node.input}
    initializers = [init for init in graph.model.graph.initializer if init.name in used]
    inputs = [helper.make_tensor_value_info(start, TensorProto.FLOAT, [batch_dim or "batch", in_features])]
    output = end_type or graph.types.get(end)
    outputs = [helper.make_value_info(end, output) if output is not None
               else helper.make_tensor_value_info(end, TensorProto.FLOAT, None)]
    model = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs, initializers),
                              opset_imports=list(graph.model.opset_import))
    model.ir_version = graph.model.ir_version
    for prop in graph.model.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    path.write_bytes(model.SerializeToString())  # a scratch file in the caller's temporary folder
    return path


def layer_models(source: Path, directory: Path) -> Cut:
    """Every GEMM of the ONNX file `source` as one-layer models written into `directory` (see the module's
    docstring)."""
    # start-up: onnx only where the bound's models are built (the suite's plug-in imports this module)
    import onnx

    graph = _Graph(onnx.load(str(source)))
    layers, left_out = [], []
    for gemm in (node for node in graph.nodes if is_gemm(node.op_type)):
        start = _prologue_start(graph, gemm)
        dims, index = graph.dims(start), len(layers)
        if not dims or not isinstance(dims[-1], int):
            left_out.append(f"{gemm.op_type} {gemm.name or gemm.output[0]}: its input's width is not known")
            continue
        end = _epilogue_end(graph, gemm, start)
        after = graph.only_consumer(end)
        ends = {"quantise": gemm.input[0] if gemm.input[0] != start else None, "gemm": end,
                "activation": after.output[0] if after is not None and after.op_type in ACTIVATIONS else None}
        files: dict[str, Path] = {}
        for kind, tensor in ends.items():
            nodes = graph.closure([tensor], start) if tensor is not None else None
            if tensor is not None and nodes is None:
                left_out.append(f"{gemm.op_type} {gemm.name or gemm.output[0]}: it reads another input than its "
                                "layer's (a skip connection or a second input)")
                files = {}
                break
            if nodes:
                files[kind] = _write(graph, nodes, start, tensor, dims[0], dims[-1],  # type: ignore[arg-type]
                                     directory / f"{source.stem}.layer{index}.{kind}.onnx")
        if "gemm" in files:
            out = graph.dims(end)
            layers.append(Layer(index, gemm.op_type, int(dims[-1]),  # type: ignore[arg-type]
                                out[-1] if out and isinstance(out[-1], int) else None,
                                after.op_type if "activation" in files else None, files,
                                "quantise" in files and _foldable(graph, gemm, start)))
    return Cut(tuple(layers), tuple(left_out), *_floor_model(graph, directory / f"{source.stem}.floor.onnx"))


def _floor_model(graph: _Graph, path: Path) -> tuple[Path, int]:
    """The empty model of the graph's first input: its first column (one Slice: nothing computed, one column
    written, so the input's size does not turn the floor into a copy), with the deployment's opset, IR version and
    metadata, so each runtime compiles it with the deployment's settings; and the input's width."""
    # start-up: onnx only where the bound's models are built (the suite's plug-in imports this module)
    from onnx import TensorProto, helper, numpy_helper

    start = sorted(graph.inputs)[0]
    dims = graph.dims(start)
    width = int(dims[-1])  # type: ignore[arg-type]
    bounds = {name: numpy_helper.from_array(np.array([value], dtype=np.int64), name)
              for name, value in (("floor_start", 0), ("floor_end", 1), ("floor_axis", 1))}
    graph.model.graph.initializer.extend(bounds.values())
    node = helper.make_node("Slice", [start, *bounds], ["floor"])
    column = helper.make_tensor_type_proto(TensorProto.FLOAT, [dims[0] or "batch", 1])
    return _write(graph, [node], start, "floor", dims[0], width, path, column), width
