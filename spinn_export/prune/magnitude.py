"""The unstructured baseline: global L1 magnitude pruning of the layers' weights, stored dense with zeros, runnable
as CSR.

Only layer weights are pruned; every other tensor (biases, per-feature parameters, constants) is kept and counted.
They are a small share of a network's parameters, and a sparse layer adds its bias densely anyway, so pruning them
would save no work. The non-zero count therefore equals `nonzero` exactly: the weights kept are the
`nonzero - (non-zero other tensors)` largest |w| over all layers (ties broken by position, so the count is exact even
when magnitudes repeat). The model still stores every parameter: its honest size is its dense parameter count, of
which `nonzero` are non-zero.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.architecture import Architecture
from spinn_export.model.graph import build_module, tensors_of
from spinn_export.model.mlp import count_nonzero


def _layer_weights(architecture: Architecture, model: nn.Module) -> dict[str, torch.Tensor]:
    """The layers' stored, trainable weights: a fixed matrix (a Fourier embedding's B) is not the model's to prune,
    and a weight computed from others (factors, weight norm) has no entries of its own to zero."""
    tensors = tensors_of(architecture.graph, model)
    return {layer.weight: tensors[layer.weight] for layer in architecture.layers
            if layer.weight in tensors and tensors[layer.weight].requires_grad}


def magnitude_prune(model: nn.Module, architecture: Architecture, nonzero: int) -> nn.Module:
    """Zero the smallest layer weights (globally, by |w|) in place until `nonzero` parameters remain."""
    weights = list(_layer_weights(architecture, model).values())
    present = count_nonzero(model)
    others = present - sum(int(torch.count_nonzero(w)) for w in weights)
    if not others < nonzero <= present:
        raise UserError(
            f"cannot magnitude-prune to {nonzero:,} non-zero parameters: the model has {present:,} "
            f"(of which {others:,} are biases and other tensors, which are kept); choose a count between those"
        )
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    keep = torch.zeros_like(magnitudes, dtype=torch.bool)
    keep[torch.topk(magnitudes, nonzero - others, sorted=False).indices] = True
    with torch.no_grad():
        offset = 0
        for weight in weights:
            size = weight.numel()
            weight.mul_(keep[offset : offset + size].view_as(weight))
            offset += size
    return model


@contextlib.contextmanager
def zeros_frozen(model: nn.Module, architecture: Architecture) -> Iterator[nn.Module]:
    """Inside the block, layer weights that are zero stay zero while training: their gradients are masked, and
    Adam (what `task.train` uses, without weight decay) never moves a weight whose gradient is always zero."""
    handles = []
    for weight in _layer_weights(architecture, model).values():
        mask = (weight.detach() != 0).to(weight.dtype)
        handles.append(weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device)))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x W^T + b with W a sparse CSR tensor (torch.addmm on CSR); any leading dimensions of x."""
    rows = x.reshape(-1, x.shape[-1])
    out = (torch.mm(weight, rows.T) if bias is None else torch.addmm(bias[:, None], weight, rows.T)).T
    return out.reshape(*x.shape[:-1], weight.shape[0])


def to_sparse_csr(model: nn.Module, architecture: Architecture) -> nn.Module:
    """The same network with every layer's weight as CSR, multiplied by `sparse_linear` (inference only)."""
    tensors = {k: v.detach() for k, v in tensors_of(architecture.graph, model).items()}
    for name in _layer_weights(architecture, model):
        tensors[name] = tensors[name].to_sparse_csr()
    return build_module(architecture.graph, tensors, layer=sparse_linear).eval()
