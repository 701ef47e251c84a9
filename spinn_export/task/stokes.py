"""The built-in physics task: parametric 2-D unsteady Stokes flow with a closed-form solution.

Inputs (18): x, y in [-1, 1]; t in [0, 1]; s in [-1, 1], the scaled viscosity nu = 0.1 + 0.05 s;
and 14 mode amplitudes a_k in [-1, 1].  Outputs (2): the velocity (u, v).

The stream function is a sum of decaying Fourier modes of the square [-1, 1]^2 (wavenumbers
k = (m pi/2, n pi/2), |k|^2 = pi^2 K / 4 with K = m^2 + n^2):

    psi = sum_k a_k K^(-3/2) exp(-nu |k|^2 t) sin(m pi (x+1)/2) sin(n pi (y+1)/2),

so the velocity of mode k scales as 1/K_k (a smooth, decaying spectrum), with u = d(psi)/dy and v = -d(psi)/dx.
Each mode is an eigenfunction of the Laplacian, so the velocity solves the unsteady Stokes equations with a uniform
pressure:

    u_t = nu (u_xx + u_yy),   v_t = nu (v_xx + v_yy),   u_x + v_y = 0.

Labels are exact, and those three residuals can be evaluated by autograd on any model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

MODES: tuple[tuple[int, int], ...] = (
    (1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (2, 3),
    (3, 2), (1, 4), (4, 1), (3, 3), (2, 4), (4, 2), (3, 4),
)
NU_CENTRE, NU_HALF_RANGE = 0.1, 0.05
INPUT_NAMES = ("x", "y", "t", "nu_scaled", *(f"a_{m}{n}" for m, n in MODES))
TARGET_NAMES = ("u", "v")
RESIDUAL_NAMES = ("momentum_x", "momentum_y", "continuity")


@dataclass(frozen=True)
class StokesTask:
    """Sampling, the exact solution and the PDE residual of the built-in task."""

    name: str = "stokes2d"
    input_names: tuple[str, ...] = INPUT_NAMES
    target_names: tuple[str, ...] = TARGET_NAMES

    def sample_inputs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        unit = torch.rand(n, len(INPUT_NAMES), generator=generator)
        scaled = unit * 2.0 - 1.0  # x, y, nu_scaled and the amplitudes live in [-1, 1]
        scaled[:, 2] = unit[:, 2]  # t lives in [0, 1]
        return scaled

    @staticmethod
    def viscosity(inputs: torch.Tensor) -> torch.Tensor:
        return NU_CENTRE + NU_HALF_RANGE * inputs[:, 3]

    def solution(self, inputs: torch.Tensor) -> torch.Tensor:
        """Exact (u, v), differentiable so that the residual of the solution itself can be checked."""
        x, y, t = inputs[:, 0:1], inputs[:, 1:2], inputs[:, 2:3]
        nu = self.viscosity(inputs)[:, None]
        m = torch.tensor([mode[0] for mode in MODES], dtype=inputs.dtype)
        n = torch.tensor([mode[1] for mode in MODES], dtype=inputs.dtype)
        kx, ky = m * math.pi / 2, n * math.pi / 2
        weight = inputs[:, 4:] * (m**2 + n**2) ** -1.5 * torch.exp(-nu * (kx**2 + ky**2) * t)
        u = (weight * ky * torch.sin(kx * (x + 1)) * torch.cos(ky * (y + 1))).sum(dim=1)
        v = -(weight * kx * torch.cos(kx * (x + 1)) * torch.sin(ky * (y + 1))).sum(dim=1)
        return torch.stack([u, v], dim=1)

    def residual(self, model: nn.Module, inputs: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """Momentum-x, momentum-y and continuity residuals, shape (N, 3), by autograd."""
        inputs = inputs.detach().requires_grad_(True)
        output = model(inputs)
        nu = self.viscosity(inputs)
        rows = []
        first_derivatives = []
        for component in range(2):
            grad = torch.autograd.grad(output[:, component].sum(), inputs, create_graph=True)[0]
            d_x, d_y, d_t = grad[:, 0], grad[:, 1], grad[:, 2]
            d_xx = torch.autograd.grad(d_x.sum(), inputs, create_graph=True)[0][:, 0]
            d_yy = torch.autograd.grad(d_y.sum(), inputs, create_graph=True)[0][:, 1]
            rows.append(d_t - nu * (d_xx + d_yy))
            first_derivatives.append((d_x, d_y))
        rows.append(first_derivatives[0][0] + first_derivatives[1][1])
        residual = torch.stack(rows, dim=1)
        return residual if create_graph else residual.detach()


STOKES = StokesTask()
