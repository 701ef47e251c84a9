"""From a user's module or torch.export archive to a normalised graph: the weights as plain matrices, every product
with a weight as `aten.linear`, nothing computed twice per call that depends only on weights.

Normalising is what lets one analysis read every family: weight norm (`_weight_norm(v, g)`), weight factorisation
(`exp(s)[:, None] * V`), parametrisations and scaled Fourier matrices (`2 pi B`) are sub-graphs of weights only, so
they are computed once and stored as the plain tensor they produce (trainable if any of their sources was), and
`x @ B`, `mm` and `addmm` with a weight become `linear` with the weight transposed. A module is traced by
torch.export and read back through the same safe reader as a user's `.pt2`, so there is one path from any model to
a graph. Every normalised graph is checked against what it was made from on random inputs before it is used.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spinn_export.errors import UserError, first_line
from spinn_export.model.graph import LINEAR, Graph, Node, Ref, TensorInfo, call, run
from spinn_export.model.pt2 import read_pt2
from spinn_export.progress import quiet

TRANSPOSE = "aten.t.default"
CHECK_ROWS = 64
CHECK_SEED = 20_251_205
ATOL, RTOL = 1e-5, 1e-4  # float32 through reassociated sums (the folded weights are the same arithmetic, once)


def graph_of_module(module: nn.Module, in_features: int, label: str) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Trace `module` with torch.export (batch axis dynamic) and read it back as a normalised graph, checked
    against the module itself."""
    module = module.eval()
    example = torch.randn(2, in_features, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad(), quiet():
            program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                          strict=False)
        buffer = io.BytesIO()
        with quiet():
            torch.export.save(program, buffer)
    except Exception as exc:  # torch.export fails in many ways (data-dependent control flow, unsupported ops, ...)
        raise UserError(f"{label}: torch.export cannot trace the model ({type(exc).__name__}: {first_line(exc)}); "
                        "spinn-export reads a network only through its traced graph") from None
    buffer.seek(0)
    graph, tensors = read_pt2(buffer, trust_pickle=True, label=label)  # our own bytes, written a moment ago
    normal, values = normalize(graph, tensors, label)
    _check(label, module, normal, values, "the module")
    return normal, values


def graph_of_pt2(path: str | Path, trust_pickle: bool = False) -> tuple[Graph, dict[str, torch.Tensor]]:
    """A user's `.pt2`, read safely (`model.pt2`) and normalised, checked against the graph as stored."""
    graph, tensors = read_pt2(path, trust_pickle)
    normal, values = normalize(graph, tensors, str(path))
    floated = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    _check(str(path), lambda x: run(graph, floated, x)[0], normal, values, "the graph as stored")
    return normal, values


def normalize(graph: Graph, tensors: Mapping[str, torch.Tensor], label: str) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Products with weights as `linear`, weight-only sub-graphs folded, dead nodes and unused tensors dropped,
    floating tensors as float32."""
    values = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in tensors.items()}
    graph = _as_linear(graph)
    graph, values = _fold(graph, values)
    return _prune_dead(graph, values, label)


def _as_linear(graph: Graph) -> Graph:
    """`matmul(x, W)` / `mm(x, W)` with a 2-D weight, and `addmm(b, x, W)`, as `linear(x, t(W)[, b])`."""
    info = graph.tensor_info
    nodes: list[Node] = []
    for node in graph.nodes:
        product = node.op in ("aten.matmul.default", "aten.mm.default") and len(node.args) == 2
        with_bias = node.op == "aten.addmm.default" and len(node.args) == 3 and not node.kwargs
        weight = node.args[-1] if product or with_bias else None
        if isinstance(weight, Ref) and weight.name in info and len(info[weight.name].shape) == 2:
            transposed = Node(f"{node.name}_weight", TRANSPOSE, (weight,))
            bias = node.args[0] if with_bias else None
            nodes += [transposed, Node(node.name, LINEAR, (node.args[-2], Ref(transposed.name), bias),
                                       outputs=node.outputs)]
        else:
            nodes.append(node)
    return Graph(graph.input, graph.in_features, tuple(nodes), graph.output, graph.tensors)


def _fold(graph: Graph, values: dict[str, torch.Tensor]) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Compute every node that reads only tensors (weights, constants), once; keep what the rest of the graph reads
    as a new tensor, trainable if any weight went into it."""
    info = graph.tensor_info
    constant: dict[str, Any] = dict(values)
    trainable = {name: t.trainable for name, t in info.items()}
    sources = {name: [name] for name in info}
    kept: list[Node] = []
    for node in graph.nodes:
        refs = node.refs()
        if all(name in constant for name in refs) and node.op.startswith("aten."):
            try:
                with torch.no_grad():
                    out = call(node, constant)
            except Exception:  # leave it in the graph; shapes and the check will tell if it is wrong
                kept.append(node)
                continue
            for name in node.outputs:
                constant[name] = out[name]
                trainable[name] = any(trainable[r] for r in refs) and out[name].is_floating_point()
                sources[name] = [s for r in refs for s in sources[r]]
            continue
        kept.append(node)
    read = {name for node in kept for name in node.refs()} | {graph.output}
    frontier = [name for name in constant if name in read and name not in info]
    used_names = {t.name for t in graph.tensors} | {n for node in kept for n in node.outputs}
    renames: dict[str, str] = {}
    new_infos = [t for t in graph.tensors if t.name in read]
    for name in frontier:
        fresh = _fold_name(name, sources[name], kept, used_names | set(renames.values()))
        renames[name] = fresh
        value = constant[name].detach().contiguous()
        values[fresh] = value
        new_infos.append(TensorInfo(fresh, tuple(value.shape), trainable[name]))
    nodes = tuple(_renamed(node, renames) for node in kept)
    output = renames.get(graph.output, graph.output)
    return Graph(graph.input, graph.in_features, nodes, output, tuple(new_infos)), values


def _fold_name(name: str, sources: list[str], nodes: list[Node], taken: set[str]) -> str:
    """A readable name for a folded tensor: `<layer>.weight` / `.bias` for what a linear reads (the layer being the
    sources' common prefix, before any `parametrizations`), else `<source>_<node>`; the node's name if those clash."""
    parts = [s.split(".") for s in dict.fromkeys(sources)]
    common: list[str] = []
    for segments in zip(*parts):
        if len(set(segments)) != 1:
            break
        common.append(segments[0])
    if "parametrizations" in common:
        common = common[:common.index("parametrizations")]
    slot = next((("weight", "bias")[i - 1] for node in nodes if node.op == LINEAR
                 for i, a in enumerate(node.args) if isinstance(a, Ref) and a.name == name and i in (1, 2)), None)
    unique = list(dict.fromkeys(sources))
    if slot and common and not (len(unique) == 1 and common == unique[0].split(".")):
        candidate = f"{'.'.join(common)}.{slot}"
    elif common:
        candidate = f"{'.'.join(common)}_{slot or name}"
    else:
        candidate = name
    for option in (candidate, name):
        clash = any(option == t or option.startswith(f"{t}.") or t.startswith(f"{option}.") for t in taken)
        if not clash:
            return option
    index = 1
    while any(f"{name}_{index}" == t for t in taken):
        index += 1
    return f"{name}_{index}"


def _renamed(node: Node, renames: Mapping[str, str]) -> Node:
    def swap(value: Any) -> Any:
        if isinstance(value, Ref):
            return Ref(renames.get(value.name, value.name))
        if isinstance(value, tuple):
            return tuple(swap(v) for v in value)
        return value

    return replace(node, args=swap(node.args), kwargs=tuple((k, swap(v)) for k, v in node.kwargs))


def _prune_dead(graph: Graph, values: dict[str, torch.Tensor], label: str) -> tuple[Graph, dict[str, torch.Tensor]]:
    needed = {graph.output}
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        if any(name in needed for name in node.outputs):
            kept.append(node)
            needed.update(node.refs())
    tensors = tuple(t for t in graph.tensors if t.name in needed)
    if graph.input not in needed:
        raise UserError(f"{label}: the model's output does not depend on its input; nothing to prune")
    result = Graph(graph.input, graph.in_features, tuple(reversed(kept)), graph.output, tensors)
    return result, {t.name: values[t.name] for t in tensors}


def _check(label: str, reference: Any, graph: Graph, values: Mapping[str, torch.Tensor], what: str) -> None:
    """The normalised graph must compute what it was made from, on random rows, to float32 precision."""
    x = torch.from_numpy(np.random.default_rng(CHECK_SEED).standard_normal((CHECK_ROWS, graph.in_features),
                                                                           dtype=np.float32))
    try:
        with torch.no_grad():
            expected = reference(x)
            got, _ = run(graph, values, x)
    except UserError:
        raise
    except Exception as exc:  # the model cannot run on (batch, features) rows: it is not a network of that shape
        raise UserError(f"{label}: the model does not run on a ({CHECK_ROWS}, {graph.in_features}) batch "
                        f"({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape or expected.dim() != 2:
        shape = tuple(expected.shape) if isinstance(expected, torch.Tensor) else type(expected).__name__
        raise UserError(f"{label}: the model returns {shape} for a ({CHECK_ROWS}, {graph.in_features}) batch; "
                        "spinn-export needs one (batch, outputs) tensor")
    expected, got = expected.detach().float(), got.detach().float()
    if not torch.allclose(got, expected, atol=ATOL * max(1.0, float(expected.abs().max())), rtol=RTOL):
        error = float((got - expected).abs().max())
        raise UserError(f"{label}: the graph read from the model differs from {what} by {error:.3g} on random "
                        "inputs; please report this model to spinn-export")
