"""A model as one value: its architecture and the module that computes it, never a loose pair.

Every stage takes and gives a `Network`, so the graph that a prune, a cost or an export reads and the weights it
acts on cannot drift apart, or be handed over in the wrong order.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from spinn_export.model.architecture import Architecture
from spinn_export.model.graph import build_module, tensors_of


@dataclass(frozen=True)
class Network:
    """`module` computes `architecture.graph` with its own tensors (a GraphModule built from the graph, or, for a
    derived form such as sparse CSR layers, a module of the same graph)."""

    architecture: Architecture
    module: nn.Module

    @classmethod
    def built(cls, architecture: Architecture, tensors: Mapping[str, torch.Tensor]) -> Network:
        """The graph's module holding `tensors`, in eval mode (what every stage after training expects)."""
        return cls(architecture, build_module(architecture.graph, tensors).eval())

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The graph's tensors as the module holds them now (trained values), by name."""
        return tensors_of(self.architecture.graph, self.module)

    def with_module(self, module: nn.Module) -> Network:
        """The same architecture computed by another module (new weights of the same shapes, or another form)."""
        return dataclasses.replace(self, module=module)
