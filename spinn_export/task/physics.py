"""The physics a model is held to: a PDE residual `residual(model, inputs) -> Tensor`, built in or the user's.

Training's physics loss, Taylor importance and the residual RMS recorded per pruning stage all go
through `Physics`, so the built-in Stokes residual and a user's own (`--physics PATH.py:FUNCTION` or
`module:FUNCTION`) take one code path.  The function receives a float32 batch of inputs, in the data's
input-column order, that requires grad (so it can take derivatives with `torch.autograd.grad`, with
`create_graph=True` so the loss can train through them); it returns residuals of any shape, and the
tool uses their mean square.

A user's function runs the user's own code, once per training step: its mistakes (an import error, a
wrong signature, NaN, a residual that does not depend on the model's parameters) are caught once, up
front, on a small batch (`check_physics`), and reported as one line naming the file and the function.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spinn_export.errors import UserError, first_line
from spinn_export.task.stokes import STOKES
from spinn_export.usercode import load_named

CHECK_ROWS = 16  # rows of the data the function is tried on before any work
FORM = "give --physics PATH.py:FUNCTION or module:FUNCTION, a function residual(model, inputs) -> Tensor"
ResidualFunction = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Physics:
    """A residual function and where its collocation points come from.

    `name` is how the run records it (checkpoint metadata, stage parameters): the built-in task's name or
    the `--physics` text. `source` is the file defining the function, whose digest the main job's stage
    records keep so that a resumed run notices an edit. `sampler` draws fresh points where the task can (the
    built-in task knows its input domain); without one, points are random rows of the training inputs.
    """

    name: str
    function: ResidualFunction
    source: Path | None = None
    sampler: Callable[[int, torch.Generator], torch.Tensor] | None = None

    def residual(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The residuals at `inputs`, given as a fresh leaf that requires grad so the function may differentiate."""
        return self.function(model, inputs.detach().requires_grad_(True))

    def mean_square(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The physics loss: the mean square of every residual, differentiable in the model's parameters."""
        return self.residual(model, inputs).pow(2).mean()

    def points(self, inputs: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` collocation points: fresh samples of the task's domain, else random rows of `inputs`."""
        if self.sampler is not None:
            return self.sampler(n, generator)
        return inputs[torch.randint(len(inputs), (n,), generator=generator)]


BUILTIN = Physics(STOKES.name, functools.partial(STOKES.residual, create_graph=True), sampler=STOKES.sample_inputs)


def load_physics(text: str) -> Physics:
    """`PATH.py:FUNCTION` (imported from that file) or `module:FUNCTION` (an importable module)."""
    function, path = load_named(text, "--physics", FORM)
    name = text.rpartition(":")[2]
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        raise UserError(f"--physics {text}: {name}{inspect.signature(function)} cannot be called as "
                        f"{name}(model, inputs); {FORM}") from None
    except ValueError:  # no signature to inspect (a builtin): the call on a batch will tell
        pass
    return Physics(text, function, path)


def check_physics(physics: Physics, model: nn.Module, inputs: torch.Tensor) -> None:
    """Call the function once on a few input rows: its mistakes surface here as one line, not deep inside pruning.

    A residual must be a finite tensor whose mean square has a gradient with respect to the model's
    parameters; without one the physics term would silently train nothing.
    """
    label = f"--physics {physics.name}"
    batch = inputs[:CHECK_ROWS]
    try:
        residual = physics.residual(model, batch)
    except Exception as exc:  # the user's code may fail in any way
        raise UserError(f"{label}: calling it on {len(batch)} rows of the data failed "
                        f"({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(residual, torch.Tensor):
        raise UserError(f"{label} returned a {type(residual).__name__}; it must return a torch.Tensor of residuals")
    if residual.numel() == 0:
        raise UserError(f"{label} returned an empty tensor; it must return at least one residual")
    if not torch.isfinite(residual).all():
        raise UserError(f"{label} returned NaN or infinite residuals on {len(batch)} rows of the data; "
                        "check the formula")
    parameters = [p for p in model.parameters() if p.requires_grad]
    gradients = torch.autograd.grad(residual.pow(2).mean(), parameters, allow_unused=True) \
        if residual.requires_grad else ()
    if all(g is None for g in gradients):
        raise UserError(f"{label}: the residual has no gradient with respect to the model's parameters; compute it "
                        "from model(inputs), with create_graph=True in torch.autograd.grad")
