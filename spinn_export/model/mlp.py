"""Build plain MLPs from a spec, and recover a spec from a module or a state_dict (refusing non-MLPs)."""
from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping

import torch
from torch import nn

from spinn_export.errors import UserError, first_line
from spinn_export.model.spec import MLPSpec

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}
ACTIVATION_FUNCTIONS = {
    torch.tanh: "tanh",
    torch.relu: "relu",
    torch.sigmoid: "sigmoid",
    nn.functional.relu: "relu",
    nn.functional.gelu: "gelu",
    nn.functional.silu: "silu",
    nn.functional.tanh: "tanh",
    nn.functional.sigmoid: "sigmoid",
}


def build_model(spec: MLPSpec) -> nn.Sequential:
    """Linear, activation, ..., Linear: the only architecture the pruning core and exporters need."""
    layers: list[nn.Module] = []
    for index, (fan_out, fan_in) in enumerate(spec.layer_shapes):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(spec.layer_shapes) - 1:
            layers.append(ACTIVATION_MODULES[spec.activation]())
    return nn.Sequential(*layers)


class Float32IO(nn.Module):
    """A module computing in a lower precision behind a float32 interface: float32 rows in, float32 outputs out,
    as every other artifact takes and gives them (the casts are part of what is timed: a deployment does them)."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.dtype)).float()


def float32_io(model: nn.Module) -> nn.Module:
    """`model` itself if it computes in float32, else wrapped in `Float32IO` at its parameters' dtype."""
    dtype = next(model.parameters()).dtype
    return model if dtype == torch.float32 else Float32IO(model, dtype).eval()


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def spec_of(model: nn.Module, activation: str | None = None) -> MLPSpec:
    """The spec of a model built by `build_model` (or any chain of Linear layers)."""
    layers = linear_layers(model)
    if activation is None:
        found = {name for name, cls in ACTIVATION_MODULES.items() for m in model.modules() if type(m) is cls}
        activation = found.pop() if len(found) == 1 else "tanh"
    return MLPSpec(
        in_features=layers[0].in_features,
        widths=tuple(layer.out_features for layer in layers[:-1]),
        out_features=layers[-1].out_features,
        activation=activation,
    )


def count_nonzero(model: nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


def _activation_of_node(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        module = modules[str(node.target)]
        for name, cls in ACTIVATION_MODULES.items():
            if type(module) is cls:
                return name
    if node.op in ("call_function", "call_method"):
        if node.target in ACTIVATION_FUNCTIONS:
            return ACTIVATION_FUNCTIONS[node.target]
        if node.op == "call_method" and node.target in ACTIVATION_MODULES:
            return str(node.target)
    return None


def _describe(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"layer {node.target!r} ({type(modules[str(node.target)]).__name__})"
    name = getattr(node.target, "__name__", str(node.target))
    if node.target in (operator.add, torch.add, operator.iadd) or name in ("add", "iadd"):
        return f"operation {node.name!r} (a residual/skip connection: addition of two tensors)"
    return f"operation {node.name!r} ({name})"


def mlp_from_module(module: nn.Module, activation: str | None = None) -> tuple[MLPSpec, nn.Sequential]:
    """Trace an arbitrary module and accept it only if it is a plain chain Linear, act, ..., Linear.

    Tracing (rather than listing submodules) is what catches residual connections and layers
    that are registered but used out of order.
    """
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as exc:  # tracing errors are many and varied; all mean "not a plain MLP"
        raise UserError(
            f"cannot trace the model as a plain MLP ({type(exc).__name__}: {first_line(exc)}); "
            "only a chain of nn.Linear layers and activations is supported"
        ) from None
    modules = dict(module.named_modules())
    linears: list[nn.Linear] = []
    activations: set[str] = set()
    previous: torch.fx.Node | None = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise UserError("the model takes more than one input; only a plain MLP with one input is supported")
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise UserError("the model's output is not the last layer's result; only a plain MLP is supported")
            break
        if node.op == "get_attr":
            raise UserError(f"{_describe(node, modules)} reads a raw parameter; only nn.Linear layers are supported")
        inputs = list(node.all_input_nodes)
        if inputs != [previous]:
            raise UserError(f"the model is not a plain MLP: {_describe(node, modules)} does not simply follow the "
                            "previous layer")
        if node.op == "call_module" and isinstance(modules[str(node.target)], nn.Linear):
            linears.append(modules[str(node.target)])
        elif (act := _activation_of_node(node, modules)) is not None:
            activations.add(act)
        elif node.op == "call_module" and isinstance(modules[str(node.target)], (nn.Dropout, nn.Identity, nn.Flatten)):
            pass
        else:
            raise UserError(f"the model is not a plain MLP: unsupported {_describe(node, modules)}")
        previous = node
    if not linears:
        raise UserError("the model has no nn.Linear layer; only plain MLPs are supported")
    if len(activations) > 1:
        raise UserError(f"the model mixes activations {sorted(activations)}; only one activation is supported")
    if len(linears) < 2:
        raise UserError("the model has a single nn.Linear layer and no hidden layer to prune")
    act = activation or (activations.pop() if activations else "tanh")
    state = {}
    for index, layer in enumerate(linears):
        state[f"{index}.weight"] = layer.weight
        state[f"{index}.bias"] = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
    return mlp_from_state_dict(state, act)


def mlp_from_state_dict(state: Mapping[str, torch.Tensor], activation: str = "tanh") -> tuple[MLPSpec, nn.Sequential]:
    """Infer widths from weight shapes, in the state_dict's own (registration) order."""
    weights: list[tuple[str, torch.Tensor]] = []
    biases: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"state_dict entry {key!r} is not a tensor; expected an MLP's weights and biases")
        prefix, _, leaf = key.rpartition(".")
        if leaf in ("running_mean", "running_var", "num_batches_tracked"):
            raise UserError(f"layer {prefix!r} is a normalisation layer ({leaf}); only nn.Linear layers are supported")
        if leaf == "weight":
            if tensor.dim() != 2:
                raise UserError(
                    f"layer {prefix!r} has a {tensor.dim()}-D weight {tuple(tensor.shape)} "
                    "(convolution or embedding?); "
                    "only nn.Linear layers are supported"
                )
            weights.append((prefix, tensor))
        elif leaf == "bias":
            biases[prefix] = tensor
        else:
            raise UserError(f"state_dict entry {key!r} is not a Linear weight or bias; only plain MLPs are supported")
    if len(weights) < 2:
        raise UserError(f"found {len(weights)} Linear layer(s); a prunable MLP needs at least two")
    for (prev_name, prev), (name, weight) in itertools.pairwise(weights):
        if weight.shape[1] != prev.shape[0]:
            raise UserError(
                f"layer {name!r} takes {weight.shape[1]} inputs but the previous layer {prev_name!r} "
                f"gives {prev.shape[0]}: the shapes do not chain"
            )
    for name, weight in weights:
        bias = biases.get(name)
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise UserError(f"layer {name!r} has bias shape {tuple(bias.shape)} for {weight.shape[0]} outputs")
    spec = MLPSpec(
        in_features=int(weights[0][1].shape[1]),
        widths=tuple(int(w.shape[0]) for _, w in weights[:-1]),
        out_features=int(weights[-1][1].shape[0]),
        activation=activation,
    )
    model = build_model(spec)
    with torch.no_grad():
        for layer, (name, weight) in zip(linear_layers(model), weights):
            layer.weight.copy_(weight.detach().float())
            bias = biases.get(name)
            layer.bias.copy_(bias.detach().float() if bias is not None else torch.zeros(layer.out_features))
    return spec, model
