"""The model spec: the single source of truth for an MLP's shape and its cost figures."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from spinn_export.errors import UserError

ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "sigmoid")
FLOAT32_BYTES = 4
# Where a model's architecture was read from: the checkpoint, the manifest and the report record it.
SOURCES = {
    "spec": "built from a spec (a plain MLP)",
    "state_dict": "a bare state_dict, read as a plain chain of Linear layers (it cannot show skip connections or "
                  "gates)",
    "pt2": "a torch.export program (.pt2), read without unpickling",
    "model-code": "the user's model code (--model-code) with its state_dict, traced by torch.export",
    "pickle": "a pickled module (--trust-pickle), traced by torch.export",
}


@dataclass(frozen=True)
class MLPSpec:
    """A plain MLP: in_features -> widths... -> out_features, one activation between layers."""

    in_features: int
    widths: tuple[int, ...]
    out_features: int
    activation: str = "tanh"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.activation not in ACTIVATIONS:
            raise UserError(
                f"unknown activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}"
            )
        for name, value in (("in_features", self.in_features), ("out_features", self.out_features)):
            if int(value) < 1:
                raise UserError(f"{name} must be a positive integer, got {value}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise UserError(f"hidden widths must be positive integers, got {list(self.widths)}")

    @property
    def dims(self) -> tuple[int, ...]:
        """Every layer boundary, input and output included."""
        return (self.in_features, *self.widths, self.out_features)

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of each nn.Linear weight, in order."""
        d = self.dims
        return [(d[i + 1], d[i]) for i in range(len(d) - 1)]

    @property
    def params(self) -> int:
        return sum(o * i + o for o, i in self.layer_shapes)

    @property
    def macs_per_sample(self) -> int:
        return sum(o * i for o, i in self.layer_shapes)

    @property
    def flops_per_sample(self) -> int:
        """Two FLOPs per multiply-accumulate plus one per bias add (activations not counted)."""
        return sum(2 * o * i + o for o, i in self.layer_shapes)

    @property
    def weight_bytes(self) -> int:
        return self.params * FLOAT32_BYTES

    def describe(self) -> str:
        """`18 -> 512 -> 512 -> 512 -> 256 -> 2 (tanh, 666,882 parameters)`: a model named in one line."""
        return f"{' -> '.join(map(str, self.dims))} ({self.activation}, {self.params:,} parameters)"

    def with_widths(self, widths: tuple[int, ...] | list[int]) -> MLPSpec:
        return dataclasses.replace(self, widths=tuple(widths))

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "widths": list(self.widths),
            "out_features": self.out_features,
            "activation": self.activation,
        }

    def summary(self) -> dict[str, Any]:
        """The spec and every figure derived from it, as the CLI's `info --json` prints it."""
        return {
            **self.to_dict(),
            "params": self.params,
            "macs_per_sample": self.macs_per_sample,
            "flops_per_sample": self.flops_per_sample,
            "weight_bytes": self.weight_bytes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MLPSpec:
        try:
            return cls(
                in_features=int(data["in_features"]),
                widths=tuple(int(w) for w in data["widths"]),
                out_features=int(data["out_features"]),
                activation=str(data.get("activation", "tanh")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"malformed model spec {data!r}: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> MLPSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise UserError(f"malformed model spec JSON: {exc}") from None


SPINN_REFERENCE = MLPSpec(in_features=18, widths=(512, 512, 512, 256), out_features=2, activation="tanh")


def parse_widths(text: str) -> tuple[int, ...]:
    """Parse '384,384,384,192' with a clear error for anything else."""
    try:
        widths = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise UserError(f"--widths must be comma-separated integers like 384,384,384,192, got {text!r}") from None
    if not widths:
        raise UserError("--widths is empty: give comma-separated integers like 384,384,384,192")
    return widths

# What a checkpoint's model is to the comparison (its metadata "variant"): the unpruned original, neurons
# removed (smaller dense layers), or weights zeroed (same shapes).
ROLES = ("dense", "magnitude", "structured")
