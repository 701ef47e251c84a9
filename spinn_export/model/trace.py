"""From a user's module or torch.export archive to a normalised graph: every product with a weight as `aten.linear`,
the user's tensors exactly as the user has them.

Normalising is what lets one analysis read every family: `x @ B`, `mm`, `addmm`, `einsum('bi,ij->bj')` and a
hand-written `x @ W.t() + b` with a weight become `linear` (with the weight transposed where needed, a transpose of a
transpose cancelled, and a following bias add taken in). Sub-graphs of weights alone (weight norm, weight
factorisation `exp(s)[:, None] * V`, a low-rank `U @ V`, a tied `W.t()`, a scaled Fourier matrix `2 pi B`) stay as
the user wrote them: computed from the user's own tensors, which keep their count, their tying and whether they
train. A module is traced by torch.export and read back through the same safe reader as a user's `.pt2`, so there
is one path from any model to a graph. Every normalised graph is checked against what it was made from, on the
user's rows and their range where known (`model.probe`), before it is used.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spinn_export.errors import UserError, first_line
from spinn_export.model.graph import LINEAR, Graph, Node, Ref, fresh_name, run, shapes
from spinn_export.model.groups import weight_only
from spinn_export.model.probe import disagreement, probe_rows
from spinn_export.model.pt2 import read_pt2
from spinn_export.progress import quiet

TRANSPOSE = "aten.t.default"
TRANSPOSES = ("aten.t.default", "aten.numpy_T.default")
PRODUCTS = ("aten.matmul.default", "aten.mm.default")


def graph_of_module(module: nn.Module, in_features: int, label: str,
                    data: torch.Tensor | None = None) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Trace `module` with torch.export (batch axis dynamic) and read it back as a normalised graph, checked
    against the module itself (on `data`'s rows and range where given)."""
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
    _check(label, module, normal, values, "the module", data)
    return normal, values


def graph_of_pt2(path: str | Path, trust_pickle: bool = False, data: torch.Tensor | None = None,
                 output: int | None = None) -> tuple[Graph, dict[str, torch.Tensor]]:
    """A user's `.pt2`, read safely (`model.pt2`) for the `output` chosen and normalised, checked against the graph
    as stored (on `data`'s rows and range where given)."""
    graph, tensors = read_pt2(path, trust_pickle, output=output)
    normal, values = normalize(graph, tensors, str(path))
    floated = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    _check(str(path), lambda x: run(graph, floated, x)[0], normal, values, "the graph as stored", data)
    return normal, values


def normalize(graph: Graph, tensors: Mapping[str, torch.Tensor], label: str) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Products with weights as `linear`, dead nodes and unused tensors dropped, floating tensors as float32."""
    values = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in tensors.items()}
    rank = _ranks(graph)  # a weight keeps its rank through normalising; one run of the graph serves both passes
    graph = _with_bias(_as_linear(graph, rank), rank)
    return _prune_dead(graph, values, label)


def _as_linear(graph: Graph, rank: Mapping[str, int]) -> Graph:
    """Products of an activation with a 2-D weight (or a value of weights alone) as `linear(x, W[, b])`:
    `matmul`/`mm(x, W)` and `addmm(b, x, W)` (what `.run_decompositions()` writes) as `linear(x, t(W)[, b])`, where
    W = t(V) (or `permute(V, [1, 0])`, `transpose(V, 0, 1)`) simply `linear(x, V[, b])`; and a two-operand
    `einsum` that is a layer (`'bi,ij->bj'`, `'...i,ji->...j'`)."""
    weights = weight_only(graph)
    producers = graph.producers()
    taken = {graph.input, *(t.name for t in graph.tensors), *(o for n in graph.nodes for o in n.outputs)}
    nodes: list[Node] = []
    for node in graph.nodes:
        found = _layer_operands(node, weights, rank)
        if found is None:
            nodes.append(node)
            continue
        x, weight, bias, rows_first = found
        source = _untransposed(producers.get(weight.name), rank)
        if not rows_first and source is not None:
            weight, rows_first = source, True
        if not rows_first:
            transposed = Node(fresh_name(f"{node.name}_weight", taken), TRANSPOSE, (weight,))
            taken.add(transposed.name)
            nodes.append(transposed)
            weight = Ref(transposed.name)
        nodes.append(Node(node.name, LINEAR, (x, weight, bias), outputs=node.outputs))
    return Graph(graph.input, graph.in_features, tuple(nodes), graph.output, graph.tensors)


def _ranks(graph: Graph) -> dict[str, int]:
    """The rank of every tensor the graph stores or computes, from its shapes at a few rows."""
    try:
        return {name: len(shape) for name, shape in shapes(graph).items()}
    except UserError:
        return {t.name: len(t.shape) for t in graph.tensors}


def _layer_operands(node: Node, weights: set[str], rank: Mapping[str, int]) -> tuple[Ref, Ref, Any, bool] | None:
    """(x, W, bias, whether W is stored (out, in)) when the node multiplies an activation by a 2-D weight."""
    def weight(value: Any) -> bool:
        return isinstance(value, Ref) and value.name in weights and rank.get(value.name) == 2

    def activation(value: Any) -> bool:
        return isinstance(value, Ref) and value.name not in weights

    if node.op in PRODUCTS and len(node.args) == 2 and not node.kwargs:
        x, w = node.args
        return (x, w, None, False) if activation(x) and weight(w) else None
    if node.op == "aten.addmm.default" and len(node.args) == 3 and not node.kwargs:
        bias, x, w = node.args
        if activation(x) and weight(w) and isinstance(bias, Ref) and bias.name in weights and rank.get(bias.name) == 1:
            return x, w, bias, False
        return None
    if node.op == "aten.einsum.default" and isinstance(node.arg(1), tuple) and len(node.arg(1)) == 2:
        return _einsum_layer(str(node.args[0]), node.args[1], weight, activation)
    return None


def _einsum_layer(equation: str, operands: tuple[Any, ...], weight: Any, activation: Any) -> tuple[Ref, Ref, Any,
                                                                                                   bool] | None:
    inputs, arrow, output = equation.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if not arrow or len(terms) != 2:
        return None
    for x_index in (0, 1):
        x, w = operands[x_index], operands[1 - x_index]
        x_term, w_term = terms[x_index], terms[1 - x_index]
        if not (activation(x) and weight(w)) or len(w_term) != 2 or not x_term:
            continue
        contracted = x_term[-1]
        if contracted not in w_term or w_term[0] == w_term[1]:
            continue
        produced = w_term.replace(contracted, "")
        if output == x_term[:-1] + produced and produced not in x_term:
            return x, w, None, w_term[0] == produced
    return None


def _untransposed(producer: Node | None, rank: Mapping[str, int]) -> Ref | None:
    """V when a weight is `t(V)` / `permute(V, [1, 0])` / `transpose(V, 0, 1)` of a 2-D V."""
    if producer is None or not isinstance(producer.arg(0), Ref) or rank.get(producer.args[0].name) != 2:
        return None
    swap = (producer.op in TRANSPOSES or (producer.op == "aten.permute.default" and tuple(producer.arg(1)) == (1, 0))
            or (producer.op == "aten.transpose.int" and {producer.arg(1) % 2, producer.arg(2) % 2} == {0, 1}))
    return producer.args[0] if swap else None


def _with_bias(graph: Graph, rank: Mapping[str, int]) -> Graph:
    """`linear(x, W) + b` (a hand-written layer) as `linear(x, W, b)`, where b is a 1-D weight of the layer's width
    and the sum is all the layer's output is used for."""
    weights = weight_only(graph)
    consumers = graph.consumers()
    fused: dict[str, Node] = {}
    dropped: set[str] = set()
    by_output = {node.outputs[0]: node for node in graph.nodes if node.op == LINEAR and node.arg(2) is None}
    for node in graph.nodes:
        if node.op != "aten.add.Tensor" or len(node.args) != 2 or node.kwargs:
            continue
        for layer_ref, bias in (node.args, node.args[::-1]):
            layer = by_output.get(layer_ref.name) if isinstance(layer_ref, Ref) else None
            if (layer is not None and isinstance(bias, Ref) and bias.name in weights and rank.get(bias.name) == 1
                    and len(consumers.get(layer_ref.name, [])) == 1 and layer.name not in dropped):
                fused[node.name] = Node(node.name, LINEAR, (*layer.args[:2], bias), outputs=node.outputs)
                dropped.add(layer.name)
                break
    if not fused:
        return graph
    nodes = tuple(fused.get(n.name, n) for n in graph.nodes if n.name not in dropped)
    return Graph(graph.input, graph.in_features, nodes, graph.output, graph.tensors)


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


def _check(label: str, reference: Any, graph: Graph, values: Mapping[str, torch.Tensor], what: str,
           data: torch.Tensor | None = None) -> None:
    """The normalised graph must compute what it was made from, column by column, on the user's rows and their range
    (standard-normal rows where no data is known)."""
    x = probe_rows(graph.in_features, data).float()
    try:
        with torch.no_grad():
            expected = reference(x)
            got, _ = run(graph, values, x)
    except UserError:
        raise
    except Exception as exc:  # the model cannot run on (batch, features) rows: it is not a network of that shape
        raise UserError(f"{label}: the model does not run on a ({len(x)}, {graph.in_features}) batch "
                        f"({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape or expected.dim() != 2:
        shape = tuple(expected.shape) if isinstance(expected, torch.Tensor) else type(expected).__name__
        raise UserError(f"{label}: the model returns {shape} for a ({len(x)}, {graph.in_features}) batch; "
                        "spinn-export needs one (batch, outputs) tensor")
    worst = disagreement(expected, got)
    if worst is not None:
        raise UserError(f"{label}: the graph read from the model differs from {what} ({worst.describe()}); "
                        "please report this model to spinn-export")
