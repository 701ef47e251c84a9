"""No silent wrong prune, and no wrong refusal: the faults a hostile review found, each on a real module exported
with the README's torch.export line.

Each network here is either pruned (and the prune proven on its own rows) or frozen with the op named; the proof
itself must catch an error hidden by another output's scale or by a branch only the user's range takes; and the
user's tensors stay the user's (a low-rank layer counts its factors, a tied weight stays one tensor).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spinn_export.model.importer import import_model
from spinn_export.model.network import Network
from spinn_export.prune.importance import unit_scores
from spinn_export.prune.shrink import ProofError, prove, removal_of, select_keep, shrink

IN = 3


class Broadcast(nn.Module):
    """P is a layer's weight (its rows are that layer's outputs) and is also broadcast against h, with a mean over
    its rows: removing a row would change the mean."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out, self.side = nn.Linear(IN, 8), nn.Linear(8, 2), nn.Linear(8, 2)
        self.P = nn.Parameter(torch.randn(8, 8) / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        return self.out(torch.tanh(F.linear(h, self.P))) + self.side((h.unsqueeze(1) * self.P).mean(1))


class LowRank(nn.Module):
    """A layer whose weight is U @ V (rank 2): 16 x 2 + 2 x 16 parameters, not 16 x 16."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(IN, 16), nn.Linear(16, 2)
        self.U, self.V = nn.Parameter(torch.randn(16, 2) / 2), nn.Parameter(torch.randn(2, 16) / 2)
        self.b = nn.Parameter(torch.zeros(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(F.linear(torch.tanh(self.inp(x)), self.U @ self.V, self.b)))


class Tied(nn.Module):
    """An encoder and a decoder sharing one weight, the decoder's as its transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(IN, 16), nn.Linear(16, 2)
        self.W = nn.Parameter(torch.randn(12, 16) / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        return self.out(torch.tanh(F.linear(torch.tanh(F.linear(h, self.W)), self.W.t())))


class HandWritten(nn.Module):
    """`x @ W.t() + b`, an einsum layer, and a PReLU and a batch norm per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.W1, self.b1 = nn.Parameter(torch.randn(16, IN) / 2), nn.Parameter(torch.zeros(16))
        self.W2 = nn.Parameter(torch.randn(16, 16) / 4)
        self.act, self.norm = nn.PReLU(16), nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 2)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.1, 0.1)
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ self.W1.t() + self.b1)
        h = self.norm(self.act(torch.einsum("bi,ij->bj", h, self.W2)))
        return self.out(h)


class Gated(nn.Module):
    """A GLU-style layer: one linear's output split in two halves, one gating the other."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(IN, 16), nn.Linear(16, 2 * 12), nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.mid(torch.tanh(self.inp(x))).chunk(2, dim=-1)
        return self.out(a * torch.sigmoid(gate))


class DeepONet(nn.Module):
    """Branch (4 features) and trunk (2) nets meeting in a dot product over their shared latent dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 10))
        self.trunk = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 10), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.branch(x[:, :4]) * self.trunk(x[:, 4:])).sum(dim=-1, keepdim=True)


def _read(module: nn.Module, tmp_path, name: str, inputs: int = IN, decompose: bool = False):
    torch.manual_seed(0)
    module = module.eval()
    program = torch.export.export(module, (torch.randn(4, inputs),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    if decompose:
        program = program.run_decompositions()
    path = tmp_path / f"{name}.pt2"
    torch.export.save(program, path)
    return import_model(path)


def _halved(network: Network, data=None) -> Network:
    scores = unit_scores(network, "l1")
    widths = [max(1, w // 2) for w in network.architecture.widths]
    return shrink(network, select_keep(scores, widths), fold="mean",
                  calibration=data if data is not None else torch.randn(256, network.architecture.in_features))


def test_a_weight_broadcast_against_a_layer_and_averaged_over_its_rows_is_frozen(tmp_path):
    torch.manual_seed(0)
    architecture = _read(Broadcast(), tmp_path, "broadcast").architecture
    frozen = {g.name: g.frozen for g in architecture.groups if g.frozen}
    assert any("mean" in reason for reason in frozen.values()), frozen
    rows_of_p = [g for g in architecture.groups if any(axis == ("P", 0) for axis, _ in g.multiplicity)]
    assert rows_of_p and all(g.frozen for g in rows_of_p)


def test_a_low_rank_layer_counts_and_keeps_its_factors(tmp_path):
    torch.manual_seed(0)
    module = LowRank()
    network = _read(module, tmp_path, "low-rank")
    architecture = network.architecture
    assert architecture.params == sum(p.numel() for p in module.parameters())
    pruned = _halved(network)
    names = {name for name, _ in pruned.module.named_parameters()}
    assert {"U", "V"} <= names
    assert pruned.architecture.params < architecture.params
    assert pruned.architecture.params == sum(p.numel() for p in pruned.module.parameters())


def test_a_weight_tied_as_its_own_transpose_stays_one_tensor(tmp_path):
    torch.manual_seed(0)
    module = Tied()
    network = _read(module, tmp_path, "tied")
    architecture = network.architecture
    assert architecture.params == sum(p.numel() for p in module.parameters())
    assert [t.name for t in architecture.graph.tensors].count("W") == 1
    assert architecture.prunable, architecture.frozen_reasons()
    pruned = _halved(network)
    stored = [t.name for t in pruned.architecture.graph.tensors if len(t.shape) == 2]
    assert stored.count("W") == 1 and not any("W" in name and name != "W" for name in stored)
    assert pruned.architecture.params == sum(p.numel() for p in pruned.module.parameters())


@pytest.mark.parametrize("decompose", [False, True], ids=["as-written", "run_decompositions"])
def test_hand_written_and_einsum_layers_prelu_and_batch_norm_prune(tmp_path, decompose):
    network = _read(HandWritten(), tmp_path, "hand-written", decompose=decompose)
    architecture = network.architecture
    assert architecture.widths == (16, 16), architecture.frozen_reasons()
    assert len(architecture.layers) == (2 if decompose else 3)  # decomposed, the einsum is a bmm between views

    def flops(width: int) -> int:  # x W1^T + b1, the einsum, the output layer: the bmm costs what the einsum did
        return 2 * IN * width + width + 2 * width * width + 2 * width * 2 + 2

    assert architecture.flops_per_sample == flops(16) and architecture.flops_at((8, 8)) == flops(8)
    assert _halved(network).architecture.widths == (8, 8)


def test_glu_halves_are_one_group_and_prune_together(tmp_path):
    network = _read(Gated(), tmp_path, "glu")
    assert sorted(network.architecture.widths) == [12, 16], network.architecture.frozen_reasons()
    pruned = _halved(network)
    assert sorted(pruned.architecture.widths) == [6, 8]
    assert pruned.module(torch.randn(5, IN)).shape == (5, 2)


def test_deeponet_latent_dimension_is_one_group_of_both_nets(tmp_path):
    network = _read(DeepONet(), tmp_path, "deeponet", inputs=6)
    assert sorted(network.architecture.widths) == [10, 16, 16], network.architecture.frozen_reasons()
    assert sorted(_halved(network).architecture.widths) == [5, 8, 8]


def _removal(network: Network):
    keep = select_keep(unit_scores(network, "l1"), [w // 2 for w in network.architecture.widths])
    return removal_of(network, keep, "none", None), keep


class _Off(nn.Module):
    """A pruned network made wrong on purpose: `shift` added to one output column where `where` holds."""

    def __init__(self, inner: nn.Module, column: int, shift: float, where=lambda x: torch.ones(len(x), 1)) -> None:
        super().__init__()
        self.inner, self.column, self.shift, self.where = inner, column, shift, where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        delta = torch.zeros_like(out)
        delta[:, self.column] = self.shift
        return out + delta * self.where(x).to(out.dtype)


def test_an_error_in_one_output_is_not_hidden_by_the_scale_of_another(tmp_path):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(IN, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    with torch.no_grad():
        module[4].weight[0] *= 1e5
    network = _read(module, tmp_path, "scaled")
    architecture = network.architecture
    _halved(network)  # a true prune, folded, is proven at each column's scale
    tensors = {k: v.detach() for k, v in network.tensors.items()}
    removal, keep = _removal(network)
    pruned = shrink(network, keep, fold="none")
    prove(architecture, tensors, removal, pruned)  # the true prune passes
    with pytest.raises(ProofError, match="output column 1"):
        prove(architecture, tensors, removal, pruned.with_module(_Off(pruned.module, 1, 0.05)))


def test_the_proof_uses_the_users_range_so_a_branch_only_it_takes_is_checked(tmp_path):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(IN, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    network = _read(module, tmp_path, "ranged")
    data = torch.rand(512, IN) * 10  # the user's domain: [0, 10]
    tensors = {k: v.detach() for k, v in network.tensors.items()}
    removal, keep = _removal(network)
    pruned = shrink(network, keep, fold="none", calibration=data)
    wrong_beyond_4 = _Off(pruned.module, 0, 0.2, where=lambda x: x[:, :1] > 4)
    with pytest.raises(ProofError):
        prove(network.architecture, tensors, removal, pruned.with_module(wrong_beyond_4), data)
