"""A user's own problem, as the files a user brings: a CSV with 7 inputs and 3 targets, a physics file whose
residual vanishes on the exact solution, and a 7 -> 100 -> 60 -> 3 SiLU network fitted to the data and saved
as a plain state_dict (torch.save(model.state_dict()), loadable without --trust-pickle).

The exact solution: u0 = sin(x0) + x1 x2, u1 = cos(x0), u2 = x3 + x4^2 (x5 and x6 are distractors), so
d(u0)/d(x0) = u1 and d(u2)/d(x3) = 1: the two residuals of PHYSICS.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

INPUTS = tuple(f"x{i}" for i in range(7))
TARGETS = ("u0", "u1", "u2")
WIDTHS = (100, 60)
PHYSICS = '''import torch


def residual(model, inputs):
    """d(u0)/d(x0) = u1 and d(u2)/d(x3) = 1."""
    out = model(inputs)
    du0 = torch.autograd.grad(out[:, 0].sum(), inputs, create_graph=True)[0]
    du2 = torch.autograd.grad(out[:, 2].sum(), inputs, create_graph=True)[0]
    return torch.stack([du0[:, 0] - out[:, 1], du2[:, 3] - 1.0], dim=1)
'''


def exact(x: torch.Tensor) -> torch.Tensor:
    """The solution the data is sampled from (differentiable, so the physics can be checked on it)."""
    return torch.stack([torch.sin(x[:, 0]) + x[:, 1] * x[:, 2], torch.cos(x[:, 0]), x[:, 3] + x[:, 4] ** 2], dim=1)


class Exact(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return exact(x)


def user_mlp(widths: tuple[int, ...] = WIDTHS) -> nn.Sequential:
    """The user's own network class: a SiLU MLP (not the SPINN: other widths, inputs, outputs and activation)."""
    dims = (len(INPUTS), *widths, len(TARGETS))
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(dims):
        layers += [nn.Linear(fan_in, fan_out), nn.SiLU()]
    return nn.Sequential(*layers[:-1])


@dataclass(frozen=True)
class UserProblem:
    data: Path
    physics_file: Path
    model: Path

    @property
    def physics(self) -> str:
        """The --physics argument naming the residual function in its file."""
        return f"{self.physics_file}:residual"

    @property
    def data_arguments(self) -> list[str]:
        return ["--data", str(self.data), "--inputs", ",".join(INPUTS), "--targets", ",".join(TARGETS)]


def write_problem(directory: Path, rows: int = 4000, fit_steps: int = 300, seed: int = 0) -> UserProblem:
    """Write the data, the physics file and a state_dict fitted for `fit_steps` full-batch Adam steps."""
    directory.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (rows, len(INPUTS))).astype(np.float32))
    y = exact(x)
    frame = pd.DataFrame(x.numpy(), columns=list(INPUTS))
    for index, name in enumerate(TARGETS):
        frame[name] = y[:, index].numpy()
    frame.to_csv(directory / "data.csv", index=False)
    (directory / "physics.py").write_text(PHYSICS)
    torch.manual_seed(seed)
    model = user_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(fit_steps):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), directory / "model.pt")
    return UserProblem(directory / "data.csv", directory / "physics.py", directory / "model.pt")
