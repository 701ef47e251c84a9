"""The unstructured baseline: global L1 magnitude pruning, stored dense with zeros, runnable as CSR.

Only weights are pruned; biases are kept and counted.  They are 0.2 % of the reference's
parameters, and a sparse layer adds its bias densely anyway, so pruning them would save no
work.  The non-zero count therefore equals `nonzero` exactly: the weights kept are the
`nonzero - (non-zero biases)` largest |w| over all layers (ties broken by position, so the count
is exact even when magnitudes repeat).  The model still stores every parameter: its honest size
is its dense parameter count, of which `nonzero` are non-zero.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from spinn_export.errors import UserError
from spinn_export.model.mlp import ACTIVATION_MODULES, count_nonzero, linear_layers, spec_of
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.importance import require_plain_mlp


def magnitude_prune(model: nn.Module, spec: MLPSpec, nonzero: int) -> nn.Sequential:
    """Zero the smallest weights (globally, by |w|) in place until `nonzero` parameters remain."""
    model = require_plain_mlp(model, spec)
    layers = linear_layers(model)
    biases = sum(int(torch.count_nonzero(layer.bias)) for layer in layers)
    present = count_nonzero(model)
    if not biases < nonzero <= present:
        raise UserError(
            f"cannot magnitude-prune to {nonzero:,} non-zero parameters: the model has {present:,} "
            f"(of which {biases:,} are biases, which are kept); choose a count between those"
        )
    magnitudes = torch.cat([layer.weight.detach().abs().flatten() for layer in layers])
    keep = torch.zeros_like(magnitudes, dtype=torch.bool)
    keep[torch.topk(magnitudes, nonzero - biases, sorted=False).indices] = True
    with torch.no_grad():
        offset = 0
        for layer in layers:
            size = layer.weight.numel()
            layer.weight.mul_(keep[offset : offset + size].view_as(layer.weight))
            offset += size
    return model


@contextlib.contextmanager
def zeros_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, weights that are zero stay zero while training (torch.nn.utils.prune masks)."""
    layers = linear_layers(model)
    for layer in layers:
        torch_prune.custom_from_mask(layer, "weight", mask=layer.weight.detach() != 0)
    try:
        yield model
    finally:
        for layer in layers:
            torch_prune.remove(layer, "weight")


class SparseLinear(nn.Module):
    """y = x W^T + b with W held as a sparse CSR tensor (torch.addmm on CSR)."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.register_buffer("weight", layer.weight.detach().to_sparse_csr())
        self.register_buffer("bias", layer.bias.detach().clone()[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, self.weight, x.T).T

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.weight._nnz()}"


def to_sparse_csr(model: nn.Module, spec: MLPSpec | None = None) -> nn.Sequential:
    """The same MLP with every Linear replaced by a CSR `SparseLinear`, for benchmarking (inference only)."""
    spec = spec or spec_of(model)
    require_plain_mlp(model, spec)
    modules: list[nn.Module] = []
    for module in model:
        modules.append(SparseLinear(module) if isinstance(module, nn.Linear) else ACTIVATION_MODULES[spec.activation]())
    return nn.Sequential(*modules).eval()
