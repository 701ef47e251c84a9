"""The PINN network families users really prune, written in plain torch (no framework dependency), and the ones the
tool must not prune wrongly. Each builder takes its widths and a seed and returns a module in eval mode.

Sources of the designs: jaxpi's ModifiedMlp and Fourier embeddings, PINA's ResidualFeedForward and PirateNet,
PhysicsNeMo's FullyConnected with weight norm / weight factorisation, NeuroMANCER's adaptive activations.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ResidualMLP(nn.Module):
    """h = W_in x; h = h + act(W_k h) for each block; y = W_out h. Every block's output is added to the stream, so
    the stream and every block's output are one width group."""

    def __init__(self, in_features: int = 3, width: int = 32, blocks: int = 3, out_features: int = 2,
                 activation: type[nn.Module] = nn.Tanh) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.act = activation()
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x))
        for block in self.blocks:
            h = h + self.act(block(h))
        return self.out(h)


class BottleneckResidualMLP(nn.Module):
    """h = h + W_b act(W_a h): the inner width of each block is its own group, the stream another."""

    def __init__(self, in_features: int = 3, width: int = 24, inner: int = 40, blocks: int = 2,
                 out_features: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, width)
        self.a = nn.ModuleList(nn.Linear(width, inner) for _ in range(blocks))
        self.b = nn.ModuleList(nn.Linear(inner, width) for _ in range(blocks))
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        for a, b in zip(self.a, self.b):
            h = h + b(torch.tanh(a(h)))
        return self.out(h)


class ModifiedMLP(nn.Module):
    """U = act(x W_u), V = act(x W_v), H = act(x W_1); Z = act(H W_k); H = (1 - Z) * U + Z * V; y = H W_out
    (Wang, Teng & Perdikaris 2021; jaxpi's ModifiedMlp): U, V, H and every Z gate are one width group."""

    def __init__(self, in_features: int = 3, width: int = 32, layers: int = 3, out_features: int = 2) -> None:
        super().__init__()
        self.u = nn.Linear(in_features, width)
        self.v = nn.Linear(in_features, width)
        self.first = nn.Linear(in_features, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = torch.tanh(self.u(x)), torch.tanh(self.v(x))
        h = torch.tanh(self.first(x))
        for layer in self.hidden:
            z = torch.tanh(layer(h))
            h = (1 - z) * u + z * v
        return self.out(h)


class FourierMLP(nn.Module):
    """An MLP on random Fourier features [cos(2 pi x B), sin(2 pi x B)] (Tancik et al.; jaxpi's FourierEmbs): B is
    a fixed buffer or a trained parameter, and each frequency's cos and sin are one unit of its group."""

    def __init__(self, in_features: int = 3, frequencies: int = 16, width: int = 32, out_features: int = 2,
                 trainable: bool = False, scale: float = 1.0) -> None:
        super().__init__()
        b = torch.randn(in_features, frequencies) * scale
        if trainable:
            self.B = nn.Parameter(b)
        else:
            self.register_buffer("B", b)
        self.hidden = nn.Linear(2 * frequencies, width)
        self.hidden2 = nn.Linear(width, width)
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = 2 * math.pi * x @ self.B
        features = torch.cat([torch.cos(projected), torch.sin(projected)], dim=-1)
        h = torch.tanh(self.hidden(features))
        return self.out(torch.tanh(self.hidden2(h)))


class FactorizedLinear(nn.Module):
    """Weight factorisation (Wang et al. 2022; PhysicsNeMo's `weight_fact`): W = diag(exp(s)) V."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(out_features, in_features) / math.sqrt(in_features))
        self.s = nn.Parameter(0.1 * torch.randn(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, torch.exp(self.s)[:, None] * self.v, self.bias)


class NormalizedMLP(nn.Module):
    """Weight-normalised layers (torch.nn.utils.parametrizations.weight_norm, stored as original0/original1; the
    legacy hook form stores weight_g/weight_v) beside weight-factorised ones."""

    def __init__(self, in_features: int = 3, width: int = 32, out_features: int = 2, legacy: bool = False) -> None:
        super().__init__()
        norm = nn.utils.weight_norm if legacy else nn.utils.parametrizations.weight_norm
        self.first = norm(nn.Linear(in_features, width))
        self.second = FactorizedLinear(width, width)
        self.third = norm(nn.Linear(width, width))
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x))
        h = torch.tanh(self.second(h))
        h = torch.tanh(self.third(h))
        return self.out(h)


class AdaptiveTanh(nn.Module):
    """tanh(n a x) with a trainable slope per neuron (Jagtap et al.; NeuroMANCER) or one for the layer."""

    def __init__(self, width: int, per_neuron: bool, n: float = 10.0) -> None:
        super().__init__()
        self.n = n
        self.a = nn.Parameter(torch.full((width,) if per_neuron else (1,), 0.1 + 0.01 * width % 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.n * self.a * x)


class AdaptiveMLP(nn.Module):
    def __init__(self, in_features: int = 3, width: int = 32, out_features: int = 2) -> None:
        super().__init__()
        self.first = nn.Linear(in_features, width)
        self.act1 = AdaptiveTanh(width, per_neuron=True)
        self.second = nn.Linear(width, width)
        self.act2 = AdaptiveTanh(width, per_neuron=False)
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.second(self.act1(self.first(x)))))


class PirateNet(nn.Module):
    """PirateNet (Wang et al. 2024; PINA's PirateNet): Fourier embedding Phi, gates U and V from it, and blocks
    f = act(x W1), z1 = f U + (1 - f) V, g = act(z1 W2), z2 = g U + (1 - g) V, h = act(z2 W3),
    x <- alpha h + (1 - alpha) x, with a trainable scalar alpha per block."""

    def __init__(self, in_features: int = 3, frequencies: int = 16, blocks: int = 2, out_features: int = 2) -> None:
        super().__init__()
        width = 2 * frequencies
        self.register_buffer("B", torch.randn(in_features, frequencies))
        self.u = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.w1 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.w2 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.w3 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.alpha = nn.ParameterList(nn.Parameter(torch.tensor(0.3)) for _ in range(blocks))
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = x @ self.B
        h = torch.cat([torch.cos(projected), torch.sin(projected)], dim=-1)
        u, v = torch.tanh(self.u(h)), torch.tanh(self.v(h))
        for w1, w2, w3, alpha in zip(self.w1, self.w2, self.w3, self.alpha):
            f = torch.tanh(w1(h))
            z1 = f * u + (1 - f) * v
            g = torch.tanh(w2(z1))
            z2 = g * u + (1 - g) * v
            h = alpha * torch.tanh(w3(z2)) + (1 - alpha) * h
        return self.out(h)


# ------------------------------------------------------------------------------------ what must never be pruned wrongly


class LayerNormMLP(nn.Module):
    """LayerNorm on the hidden width: its mean and variance run over every neuron, so that width is frozen."""

    def __init__(self, in_features: int = 3, width: int = 32, out_features: int = 2) -> None:
        super().__init__()
        self.first = nn.Linear(in_features, width)
        self.norm = nn.LayerNorm(width)
        self.second = nn.Linear(width, 24)
        self.out = nn.Linear(24, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.norm(self.first(x)))
        return self.out(torch.tanh(self.second(h)))


class ReshapeMLP(nn.Module):
    """A reshape of the hidden width (into 4 x 8 and a sum over the 8): that width is frozen."""

    def __init__(self, in_features: int = 3, out_features: int = 2) -> None:
        super().__init__()
        self.first = nn.Linear(in_features, 32)
        self.second = nn.Linear(4, 20)
        self.out = nn.Linear(20, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x)).reshape(-1, 4, 8).sum(dim=-1)
        return self.out(torch.tanh(self.second(h)))


class AttentionMLP(nn.Module):
    """Self-attention over 4 tokens of 8 features made from the hidden width, then an MLP head."""

    def __init__(self, in_features: int = 3, out_features: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, 32)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(32, 24)
        self.out = nn.Linear(24, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.tanh(self.embed(x)).reshape(-1, 4, 8)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.out(torch.tanh(self.head(attended.reshape(-1, 32))))


def seeded(factory, seed: int = 0, **kwargs) -> nn.Module:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return factory(**kwargs).eval()
