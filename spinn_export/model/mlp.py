"""Plain MLPs as graphs: the built-in SPINN from its spec, and a bare state_dict read as a chain.

A plain MLP is the simplest graph (`linear`, activation, ..., `linear`), not a second code path: everything after
this module sees a `Network` (an `Architecture` and a GraphModule) whatever the model was read from. `MLPSpec` is
only how a plain MLP is named; nothing past this module sees one.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.architecture import Architecture
from spinn_export.model.graph import LINEAR, Graph, Node, Ref, TensorInfo, build_module
from spinn_export.model.network import Network
from spinn_export.model.spec import MLPSpec

ACTIVATION_OPS = {"tanh": "aten.tanh.default", "relu": "aten.relu.default", "gelu": "aten.gelu.default",
                  "silu": "aten.silu.default", "sigmoid": "aten.sigmoid.default"}


def chain_graph(spec: MLPSpec) -> Graph:
    """`linear0`, activation, `linear1`, ...: tensors `linear{i}.weight` / `.bias`."""
    nodes: list[Node] = []
    tensors: list[TensorInfo] = []
    previous = "x"
    for index, (fan_out, fan_in) in enumerate(spec.layer_shapes):
        weight, bias = f"linear{index}.weight", f"linear{index}.bias"
        tensors += [TensorInfo(weight, (fan_out, fan_in)), TensorInfo(bias, (fan_out,))]
        nodes.append(Node(f"linear{index}", LINEAR, (Ref(previous), Ref(weight), Ref(bias))))
        previous = f"linear{index}"
        if index < len(spec.layer_shapes) - 1:
            nodes.append(Node(f"{spec.activation}{index}", ACTIVATION_OPS[spec.activation], (Ref(previous),)))
            previous = nodes[-1].name
    return Graph("x", spec.in_features, tuple(nodes), previous, tuple(tensors))


def architecture_of(spec: MLPSpec, source: str = "spec") -> Architecture:
    return Architecture(chain_graph(spec), source)


def mlp_network(spec: MLPSpec) -> Network:
    """The plain MLP of `spec`, initialised exactly as `nn.Linear` layers are (the same random draws, in order), in
    train mode as a fresh module is."""
    tensors = {}
    for index, (fan_out, fan_in) in enumerate(spec.layer_shapes):
        layer = nn.Linear(fan_in, fan_out)
        tensors[f"linear{index}.weight"], tensors[f"linear{index}.bias"] = layer.weight, layer.bias
    return Network(architecture_of(spec), build_module(chain_graph(spec), tensors))


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


def count_nonzero(model: nn.Module) -> int:
    """Non-zero elements of every stored tensor (parameters and constants), as `Architecture.params` counts them."""
    return int(sum(int(torch.count_nonzero(t)) for t in [*model.parameters(), *model.buffers()]))


def mlp_from_state_dict(state: Mapping[str, torch.Tensor], activation: str = "tanh") -> Network:
    """A bare state_dict read as a plain chain: widths from weight shapes, in the state_dict's own order.

    A state_dict cannot show skip connections or gates, so this is only right for a plain MLP; the importer says so
    every time it reads one."""
    weights: list[tuple[str, torch.Tensor]] = []
    biases: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"state_dict entry {key!r} is not a tensor; expected an MLP's weights and biases")
        prefix, _, leaf = key.rpartition(".")
        if leaf in ("running_mean", "running_var", "num_batches_tracked"):
            raise UserError(f"layer {prefix!r} is a normalisation layer ({leaf}); a bare state_dict is read only as a "
                            "plain chain of Linear layers: give the architecture (a .pt2, or --model-code)")
        if leaf == "weight":
            if tensor.dim() != 2:
                raise UserError(f"layer {prefix!r} has a {tensor.dim()}-D weight {tuple(tensor.shape)}; a bare "
                                "state_dict is read only as a plain chain of Linear layers")
            weights.append((prefix, tensor))
        elif leaf == "bias":
            biases[prefix] = tensor
        else:
            raise UserError(f"state_dict entry {key!r} is not a Linear weight or bias: a bare state_dict is read only "
                            "as a plain MLP; give the architecture as a .pt2 (torch.export) or with --model-code")
    if len(weights) < 2:
        raise UserError(f"found {len(weights)} Linear layer(s); a prunable MLP needs at least two")
    for (prev_name, prev), (name, weight) in itertools.pairwise(weights):
        if weight.shape[1] != prev.shape[0]:
            raise UserError(
                f"layer {name!r} takes {weight.shape[1]} inputs but the previous layer {prev_name!r} gives "
                f"{prev.shape[0]}: the shapes do not chain; give the architecture as a .pt2 (torch.export) or with "
                "--model-code"
            )
    for name, weight in weights:
        bias = biases.get(name)
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise UserError(f"layer {name!r} has bias shape {tuple(bias.shape)} for {weight.shape[0]} outputs")
    spec = MLPSpec(in_features=int(weights[0][1].shape[1]), widths=tuple(int(w.shape[0]) for _, w in weights[:-1]),
                   out_features=int(weights[-1][1].shape[0]), activation=activation)
    tensors: dict[str, torch.Tensor] = {}
    for index, (name, weight) in enumerate(weights):
        bias = biases.get(name)
        tensors[f"linear{index}.weight"] = nn.Parameter(weight.detach().float().clone())
        tensors[f"linear{index}.bias"] = nn.Parameter(
            bias.detach().float().clone() if bias is not None else torch.zeros(weight.shape[0]))
    return Network(architecture_of(spec, "state_dict"), build_module(chain_graph(spec), tensors))
