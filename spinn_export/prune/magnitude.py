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
import math
from collections.abc import Iterator

import torch

from spinn_export.errors import UserError
from spinn_export.model.graph import build_module
from spinn_export.model.mlp import count_nonzero
from spinn_export.model.network import Network


def _layer_weights(network: Network) -> dict[str, torch.Tensor]:
    """The layers' stored, trainable weights (what runs as CSR): a fixed matrix (a Fourier embedding's B) is not the
    model's to prune, and a weight computed from others has no entries of its own."""
    tensors = network.tensors
    return {layer.weight: tensors[layer.weight] for layer in network.architecture.layers
            if layer.weight in tensors and tensors[layer.weight].requires_grad}


def _weight_matrices(network: Network) -> dict[str, torch.Tensor]:
    """What magnitude pruning zeroes: the layers' stored weights, and for a weight computed from others (weight
    norm's direction v, a factorised weight's matrix) the trainable matrices it is computed from, whose zeros are
    the weight's zeros. A per-row scale (weight norm's g, shape (out, 1)) is not a matrix: zeroing it would remove
    a whole unit, which is structured pruning's work."""
    producer = network.architecture.graph.producers()
    tensors = network.tensors
    found = _layer_weights(network)
    for layer in network.architecture.layers:
        stack = [] if layer.weight in tensors else [layer.weight]
        while stack:
            name = stack.pop()
            if name in producer:
                stack.extend(producer[name].refs())
            elif name in tensors and tensors[name].requires_grad and min(tensors[name].shape, default=1) > 1:
                found[name] = tensors[name]
    return found


def magnitude_prune(network: Network, nonzero: int) -> Network:
    """Zero the smallest layer weights (globally, by |w|) in place until `nonzero` parameters remain.

    Every row of a matrix a weight is computed from keeps its largest entry: weight norm divides a row by its norm,
    so a row of v zeroed whole would make the weight NaN (PhysicsNeMo's `weight_norm=True` did, at half its
    parameters)."""
    matrices = _weight_matrices(network)
    direct = _layer_weights(network)
    weights = list(matrices.values())
    present = count_nonzero(network.module)
    others = present - sum(int(torch.count_nonzero(w)) for w in weights)
    rows_kept = sum(w.shape[0] for name, w in matrices.items() if name not in direct)
    if not others + rows_kept < nonzero <= present:
        raise UserError(
            f"cannot magnitude-prune to {nonzero:,} non-zero parameters: the model has {present:,} "
            f"(of which {others:,} are biases and other tensors, which are kept, and {rows_kept:,} the largest entry "
            "of each row of a matrix a weight is computed from); choose a count between those"
        )
    magnitudes = torch.cat([_ranked(w, name not in direct) for name, w in matrices.items()])
    keep = torch.zeros_like(magnitudes, dtype=torch.bool)
    keep[torch.topk(magnitudes, nonzero - others, sorted=False).indices] = True
    with torch.no_grad():
        offset = 0
        for weight in weights:
            size = weight.numel()
            weight.mul_(keep[offset : offset + size].view_as(weight))
            offset += size
    return network


def _ranked(weight: torch.Tensor, keep_row_maxima: bool) -> torch.Tensor:
    """|w| flattened, each row's largest entry made infinite where rows must keep one (never pruned)."""
    magnitude = weight.detach().abs().reshape(weight.shape[0], -1).clone()
    if keep_row_maxima:
        magnitude[torch.arange(len(magnitude)), magnitude.argmax(dim=1)] = math.inf
    return magnitude.flatten()


@contextlib.contextmanager
def zeros_frozen(network: Network) -> Iterator[Network]:
    """Inside the block, layer weights that are zero stay zero while training: their gradients are masked, and
    Adam (what `task.train` uses, without weight decay) never moves a weight whose gradient is always zero."""
    handles = []
    for weight in _weight_matrices(network).values():
        mask = (weight.detach() != 0).to(weight.dtype)
        handles.append(weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device)))
    try:
        yield network
    finally:
        for handle in handles:
            handle.remove()


def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x W^T + b with W a sparse CSR tensor (torch.addmm on CSR); any leading dimensions of x."""
    rows = x.reshape(-1, x.shape[-1])
    out = (torch.mm(weight, rows.T) if bias is None else torch.addmm(bias[:, None], weight, rows.T)).T
    return out.reshape(*x.shape[:-1], weight.shape[0])


def to_sparse_csr(network: Network) -> Network:
    """The same network with every layer's weight as CSR, multiplied by `sparse_linear` (inference only)."""
    tensors = {k: v.detach() for k, v in network.tensors.items()}
    for name in _layer_weights(network):
        tensors[name] = tensors[name].to_sparse_csr()
    return network.with_module(build_module(network.architecture.graph, tensors, layer=sparse_linear).eval())
