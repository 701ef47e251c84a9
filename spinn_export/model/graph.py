"""A network as a graph of ATen operations on named tensors: the one representation every stage reads.

Why a small graph of our own rather than keeping torch.fx or torch.export objects: it is plain data (JSON beside the
safetensors tensors), so a checkpoint carries the architecture without pickle and loading one runs no code; it keeps
the names of the user's state_dict; and pruning rewrites it by slicing tensors, never by editing Python. A plain MLP
is simply the shortest such graph.

Operations are ATen overloads named as torch.export names them (`aten.linear.default`), plus the few Python integer
operators torch.export uses for symbolic batch sizes. Nothing else can be named, so a graph read from any file can
only ever call ATen kernels. Values are referred to by name: the input, a tensor (weight or constant) or a node's
output. `run` interprets a graph (with hooks for the prune proof, importance gates and calibration); `build_module`
turns it into a `torch.fx.GraphModule`, the model every backend, exporter and trainer sees.
"""
from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spinn_export.errors import UserError, first_line
from spinn_export.model.fxcode import AttributeCodeGen, fx_writes

GRAPH_FORMAT = "spinn-export-graph"
GRAPH_VERSION = 1
SHAPE_BATCH = 3  # the batch shapes are inferred at
PYTHON_OPERATORS: dict[str, Callable[..., Any]] = {
    "_operator.add": operator.add, "_operator.sub": operator.sub, "_operator.mul": operator.mul,
    "_operator.floordiv": operator.floordiv, "_operator.truediv": operator.truediv, "_operator.neg": operator.neg,
}
CONSTANT_KINDS = ("dtype", "device", "layout", "memory_format")
FLOAT32 = "float32"
LINEAR = "aten.linear.default"


@dataclass(frozen=True)
class Ref:
    """A value by name: the graph's input, a tensor, or a node's output."""

    name: str


@dataclass(frozen=True)
class Constant:
    """A torch enum argument (a dtype, device, layout or memory format), by its torch name (`float32`, `cpu`)."""

    kind: str
    value: str

    def resolve(self) -> Any:
        if self.kind == "device":
            return torch.device(self.value)
        found = getattr(torch, self.value, None)
        expected = {"dtype": torch.dtype, "layout": torch.layout, "memory_format": torch.memory_format}[self.kind]
        if not isinstance(found, expected):
            raise UserError(f"the model's graph names an unknown {self.kind} {self.value!r}; the file is damaged")
        return found


@dataclass(frozen=True)
class Node:
    """One call of `op` (an ATen overload or Python int operator); `outputs` names what it returns."""

    name: str
    op: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()
    outputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.outputs:
            object.__setattr__(self, "outputs", (self.name,))

    def refs(self) -> list[str]:
        """Every value this node reads, in argument order."""
        return [ref.name for ref in _walk((self.args, tuple(v for _, v in self.kwargs))) if isinstance(ref, Ref)]

    def arg(self, index: int) -> Any:
        return self.args[index] if index < len(self.args) else None


@dataclass(frozen=True)
class TensorInfo:
    """A weight (`trainable`) or constant of the graph, with its shape and dtype (floating tensors are float32 in
    every graph; an integer index or a boolean mask keeps its own, which shape inference needs); values live beside
    the graph."""

    name: str
    shape: tuple[int, ...]
    trainable: bool = True
    dtype: str = FLOAT32

    @classmethod
    def of(cls, name: str, value: torch.Tensor, trainable: bool) -> TensorInfo:
        """The record of `value`: trainable only where it is floating (an integer tensor has no gradient)."""
        dtype = FLOAT32 if value.is_floating_point() else str(value.dtype).removeprefix("torch.")
        return cls(name, tuple(value.shape), trainable and value.is_floating_point(), dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return Constant("dtype", self.dtype).resolve()


@dataclass(frozen=True)
class Graph:
    """One input `(batch, in_features)`, nodes in execution order, one output `(batch, out_features)`."""

    input: str
    in_features: int
    nodes: tuple[Node, ...]
    output: str
    tensors: tuple[TensorInfo, ...]

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def tensor_info(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    def producers(self) -> dict[str, Node]:
        return {name: node for node in self.nodes for name in node.outputs}

    def consumers(self) -> dict[str, list[tuple[Node, int]]]:
        """value name -> (node, position among the node's refs) for every read of it."""
        found: dict[str, list[tuple[Node, int]]] = {}
        for node in self.nodes:
            for position, name in enumerate(node.refs()):
                found.setdefault(name, []).append((node, position))
        return found

    def with_tensors(self, tensors: Iterable[TensorInfo]) -> Graph:
        return Graph(self.input, self.in_features, self.nodes, self.output, tuple(tensors))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": GRAPH_FORMAT, "version": GRAPH_VERSION, "input": self.input, "in_features": self.in_features,
            "output": self.output,
            "tensors": [{"name": t.name, "shape": list(t.shape), "trainable": t.trainable,
                         **({} if t.dtype == FLOAT32 else {"dtype": t.dtype})} for t in self.tensors],
            "nodes": [{"name": n.name, "op": n.op, "args": [_encode(a) for a in n.args],
                       "kwargs": {k: _encode(v) for k, v in n.kwargs}, "outputs": list(n.outputs)}
                      for n in self.nodes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Graph:
        try:
            if data.get("format") != GRAPH_FORMAT or int(data["version"]) > GRAPH_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
            tensors = tuple(TensorInfo(str(t["name"]), tuple(int(d) for d in t["shape"]), bool(t["trainable"]),
                                       str(t.get("dtype", FLOAT32))) for t in data["tensors"])  # before: float32
            nodes = tuple(Node(str(n["name"]), str(n["op"]), tuple(_decode(a) for a in n["args"]),
                               tuple((str(k), _decode(v)) for k, v in n["kwargs"].items()),
                               tuple(str(o) for o in n["outputs"])) for n in data["nodes"])
            return cls(str(data["input"]), int(data["in_features"]), nodes, str(data["output"]), tensors)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"malformed model graph ({type(exc).__name__}: {exc}); the file is damaged") from None

    @classmethod
    def from_json(cls, text: str) -> Graph:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise UserError(f"malformed model graph JSON ({exc}); the file is damaged") from None


def _walk(value: Any) -> Iterable[Any]:
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def _encode(value: Any) -> Any:
    if isinstance(value, Ref):
        return {"ref": value.name}
    if isinstance(value, Constant):
        return {value.kind: value.value}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return {"float": "nan"}
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return {"float": "inf" if value > 0 else "-inf"}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(f"argument {value!r}")
        (kind, inner), = value.items()
        if kind == "ref":
            return Ref(str(inner))
        if kind == "float":
            return float(inner)
        if kind in CONSTANT_KINDS:
            return Constant(kind, str(inner))
        raise ValueError(f"argument kind {kind!r}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"argument {value!r}")


def resolve_op(name: str) -> Callable[..., Any]:
    """The callable of an op name: an ATen overload (`aten.linear.default`) or a Python int operator. Only these
    can be named, so a graph from any file calls nothing else."""
    if name in PYTHON_OPERATORS:
        return PYTHON_OPERATORS[name]
    namespace, _, rest = name.partition(".")
    packet, _, overload = rest.partition(".")
    if namespace == "aten" and packet and overload:
        found = getattr(getattr(torch.ops.aten, packet, None), overload, None)
        if isinstance(found, torch._ops.OpOverload):
            return found
    raise UserError(f"the model's graph calls {name!r}, which is not an ATen operation spinn-export can run")


def fresh_name(base: str, taken: Iterable[str]) -> str:
    """`base`, or `base_1`, `base_2`, ... : the first that is not in `taken` and is no dotted prefix of a name there
    (nor has one: tensors `a` and `a.b` cannot both be attributes of one module). What every pass that adds a node
    or tensor names it with, so a user's parameter called `matmul_weight` never meets a derived `matmul` + `_weight`."""
    taken = set(taken)

    def clash(name: str) -> bool:
        return name in taken or any(t.startswith(f"{name}.") or name.startswith(f"{t}.") for t in taken)

    if any(base.startswith(f"{t}.") for t in taken):  # inside a tensor: no suffix gets out, so no dots
        base = base.replace(".", "_")
    candidate, index = base, 0
    while clash(candidate):
        index += 1
        candidate = f"{base}_{index}"
    return candidate


@functools.cache
def returns_sequence(op: str) -> bool:
    """Whether `op` returns a tuple or list (one name per element in a node's outputs) rather than one value."""
    found = resolve_op(op)
    if not isinstance(found, torch._ops.OpOverload):
        return False
    returns = found._schema.returns
    return len(returns) != 1 or isinstance(returns[0].type, torch.ListType)


def _validate(graph: Graph) -> None:
    known = {graph.input, *(t.name for t in graph.tensors)}
    if len(known) != len(graph.tensors) + 1:
        raise UserError("the model's graph names two tensors (or a tensor and its input) alike; the file is damaged")
    for info in graph.tensors:
        Constant("dtype", info.dtype).resolve()  # an unknown dtype name: a damaged file, said here
    for node in graph.nodes:
        resolve_op(node.op)
        missing = [name for name in node.refs() if name not in known]
        if missing:
            raise UserError(f"node {node.name!r} reads {missing[0]!r} before it is computed; the graph is damaged")
        clash = [name for name in node.outputs if name in known]
        if clash:
            raise UserError(f"node {node.name!r} redefines {clash[0]!r}; the graph is damaged")
        known.update(node.outputs)
    if graph.output not in known:
        raise UserError(f"the graph's output {graph.output!r} is never computed; the graph is damaged")
    if graph.in_features < 1:
        raise UserError(f"the graph takes {graph.in_features} input features; the graph is damaged")


# ---------------------------------------------------------------------------------------------- running a graph

EdgeHook = Callable[[Node, int, Any], Any]  # (node, argument index, value) -> value the node receives
ValueHook = Callable[[str, Any], Any]  # (value name, value) -> value stored


def _resolve(value: Any, env: Mapping[str, Any]) -> Any:
    if isinstance(value, Ref):
        return env[value.name]
    if isinstance(value, Constant):
        return value.resolve()
    if isinstance(value, tuple):
        return [_resolve(v, env) for v in value]
    return value


def run(graph: Graph, tensors: Mapping[str, torch.Tensor], x: torch.Tensor, *, edge: EdgeHook | None = None,
        after: ValueHook | None = None, keep: Sequence[str] = ()) -> tuple[torch.Tensor, dict[str, Any]]:
    """Interpret the graph on `x`: the output, and the values named in `keep`.

    `edge` may replace what a node receives as its positional argument i (the prune proof replaces removed
    channels there; importance puts its gates there); `after` may replace a value as it is computed.
    """
    env: dict[str, Any] = {graph.input: x, **tensors}
    for node in graph.nodes:
        for name, value in call(node, env, edge).items():
            env[name] = after(name, value) if after is not None else value
    return env[graph.output], {name: env[name] for name in keep}


def call(node: Node, env: Mapping[str, Any], edge: EdgeHook | None = None) -> dict[str, Any]:
    """One node on the values in `env`: its outputs by name."""
    args = [_resolve(a, env) for a in node.args]
    if edge is not None:
        args = [edge(node, i, a) for i, a in enumerate(args)]
    result = resolve_op(node.op)(*args, **{k: _resolve(v, env) for k, v in node.kwargs})
    return dict(zip(node.outputs, result if returns_sequence(node.op) else (result,)))


def shapes(graph: Graph, batch: int = SHAPE_BATCH) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor value at `batch` rows, from one run on zeros (weights included: the values do not
    matter, and real kernels on a few rows cost less than loading PyTorch's meta-tensor machinery)."""
    zeros = {t.name: torch.zeros(t.shape, dtype=t.torch_dtype) for t in graph.tensors}  # an index of 0s is in range
    names = [name for node in graph.nodes for name in node.outputs]
    try:
        with torch.no_grad():
            _, values = run(graph, zeros, torch.zeros(batch, graph.in_features), keep=names)
    except UserError:
        raise
    except Exception as exc:  # a shape mismatch anywhere: the tensors do not fit the graph
        raise UserError(f"the model's tensors do not fit its graph ({type(exc).__name__}: {first_line(exc)}); "
                        "the file is damaged") from None
    found = {graph.input: (batch, graph.in_features), **{t.name: t.shape for t in graph.tensors}}
    found.update({name: tuple(value.shape) for name, value in values.items() if isinstance(value, torch.Tensor)})
    return found


# ---------------------------------------------------------------------------------------------- as a torch module


def build_module(graph: Graph, tensors: Mapping[str, torch.Tensor],
                 layer: Callable[..., Any] | None = None) -> torch.fx.GraphModule:
    """The graph as a GraphModule whose state_dict keys are the graph's tensor names (weights as parameters, the
    rest as buffers): what training, export and every backend run. Tensors are used as given (not copied).
    `layer` replaces `aten.linear` where it multiplies a stored weight (sparse weights: `prune.magnitude`).

    A name need not be a Python identifier (`nn.ModuleDict({"in": ...})` gives `layers.in.weight`): modules hold
    it as it is (`getattr` works), and the forward code reads such a part with `getattr` (`fxcode`)."""
    root = nn.Module()
    reserved = _module_attributes()
    for info in graph.tensors:
        top = info.name.split(".")[0]
        if top in reserved:
            raise UserError(f"the model's tensor {info.name!r} is named like an attribute of every torch.fx module "
                            f"({top!r}); rename it in your model and export it again")
        owner, _, leaf = info.name.rpartition(".")
        module = root
        for part in filter(None, owner.split(".")):
            if not isinstance(getattr(module, part, None), nn.Module):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        value = tensors[info.name]
        if info.trainable and value.layout == torch.strided:
            module.register_parameter(leaf, value if isinstance(value, nn.Parameter) else nn.Parameter(value))
        else:
            module.register_buffer(leaf, value.detach())
    fx = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {graph.input: fx.placeholder("x")}
    for info in graph.tensors:
        env[info.name] = fx.get_attr(info.name)

    def lookup(value: Any) -> Any:
        if isinstance(value, Ref):
            return env[value.name]
        if isinstance(value, Constant):
            return value.resolve()
        if isinstance(value, tuple):
            return [lookup(v) for v in value]
        return value

    stored = {t.name for t in graph.tensors}
    for node in graph.nodes:
        weight = node.arg(1)
        replaced = (layer is not None and node.op == LINEAR and isinstance(weight, Ref) and weight.name in stored)
        call = fx.call_function(layer if replaced else resolve_op(node.op), tuple(lookup(a) for a in node.args),
                                {k: lookup(v) for k, v in node.kwargs})
        if not returns_sequence(node.op):
            env[node.outputs[0]] = call
        else:
            for index, name in enumerate(node.outputs):
                env[name] = fx.call_function(operator.getitem, (call, index))
    fx.output(env[graph.output])
    fx.eliminate_dead_code()
    if any(not fx_writes(part) for info in graph.tensors for part in info.name.split(".")):
        fx.set_codegen(AttributeCodeGen())
    return torch.fx.GraphModule(root, fx, class_name="Network")


@functools.cache
def _module_attributes() -> frozenset[str]:
    """What a GraphModule holds itself (`graph`, `code`, `meta`, `forward`, ...): no tensor may be named so."""
    return frozenset(dir(torch.fx.GraphModule(nn.Module(), torch.fx.Graph())))


def tensors_of(graph: Graph, module: nn.Module) -> dict[str, torch.Tensor]:
    """The graph's tensors as `module` holds them now (trained values), by name."""
    state = dict(module.named_parameters()) | dict(module.named_buffers())
    missing = [t.name for t in graph.tensors if t.name not in state]
    if missing:
        raise ValueError(f"the module lacks the graph's tensors {missing[:3]}")
    return {t.name: state[t.name] for t in graph.tensors}
