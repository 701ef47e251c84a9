"""What a pruning run aims at (`Target`): a fractional reduction of parameters or FLOPs, explicit widths per group
(by position or by name), or a fraction of dense's measured latency on one backend at one batch."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spinn_export.errors import SettingError, UserError
from spinn_export.model.spec import parse_widths

if TYPE_CHECKING:
    from spinn_export.model.architecture import Architecture

KINDS = ("params", "flops", "widths", "latency")


@dataclass(frozen=True)
class Target:
    """What to reach: a fractional reduction of parameters or FLOPs, explicit hidden widths, or a fraction of
    dense's latency (`latency_ratio`: 0.4 keeps 40 %, 2.5x faster) on one backend at one batch size."""

    kind: str
    reduction: float | None = None
    widths: tuple[int, ...] | None = None
    latency_ratio: float | None = None
    backend: str | None = None
    batch: int | None = None
    groups: tuple[str, ...] | None = None  # with widths: the groups they are for (None: every prunable group)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown target kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.kind == "latency":
            r = self.latency_ratio
            if r is None or not math.isfinite(r) or not 0.0 < r < 1.0:
                raise SettingError("{latency_ratio} {value} is impossible: give the fraction of dense latency to "
                                   "keep, strictly between 0 and 1 (0.4 = 2.5x faster)", value=r)
            if not self.backend:
                raise SettingError("a latency target needs the backend it is measured on, e.g. {backend} ort-cpu")
            if self.batch is None or int(self.batch) < 1:
                raise SettingError("{batch} must be a positive integer, got {value}", value=self.batch)
            object.__setattr__(self, "batch", int(self.batch))
            return
        if self.kind == "widths":
            if not self.widths:
                raise SettingError("an explicit-width target needs widths, e.g. {widths} 256,256,256,128")
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
            if self.groups is not None and len(self.groups) != len(self.widths):
                raise ValueError("one group name per width")
            return
        r = self.reduction
        if r is None or not math.isfinite(r) or not 0.0 < r < 1.0:
            setting = "{target}" if self.kind == "params" else "{target_flops}"
            raise SettingError(setting + " {value} is impossible: give the fraction to remove, strictly between 0 and "
                               "1 (e.g. 0.685)", value=r)

    @classmethod
    def params(cls, reduction: float) -> Target:
        return cls("params", reduction=float(reduction))

    @classmethod
    def flops(cls, reduction: float) -> Target:
        return cls("flops", reduction=float(reduction))

    @classmethod
    def of_widths(cls, widths: Sequence[int], groups: Sequence[str] | None = None) -> Target:
        """Explicit widths: one per prunable group in order, or for the named `groups` (the rest keep theirs)."""
        return cls("widths", widths=tuple(widths), groups=None if groups is None else tuple(groups))

    def resolve(self, architecture: Architecture) -> Target:
        """Named widths as one width per prunable group of `architecture`; a frozen or unknown name is one line."""
        if self.kind != "widths" or self.groups is None:
            return self
        every = {g.name: g for g in architecture.groups}
        chosen = dict(zip(self.groups, self.widths or ()))
        for name in chosen:
            group = every.get(name)
            if group is None:
                raise SettingError("{widths} names group {name!r}, which the model does not have; its prunable "
                                   "groups are {groups}", name=name,
                                   groups=", ".join(architecture.group_names) or "none")
            if not group.prunable:
                raise SettingError("{widths} names group {name!r}, which is frozen ({frozen}) and cannot be pruned; "
                                   "prunable groups: {groups}", name=name, frozen=group.frozen,
                                   groups=", ".join(architecture.group_names) or "none")
        return Target.of_widths([chosen.get(g.name, g.width) for g in architecture.prunable])

    @classmethod
    def latency(cls, ratio: float, backend: str, batch: int) -> Target:
        """Keep `ratio` of dense's latency on `backend` at `batch` rows per call (0.4 = 2.5x faster)."""
        return cls("latency", latency_ratio=float(ratio), backend=backend, batch=batch)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "widths":
            named = {} if self.groups is None else {"groups": list(self.groups)}
            return {"kind": "widths", "widths": list(self.widths or ()), **named}
        if self.kind == "latency":
            return {"kind": "latency", "latency_ratio": self.latency_ratio, "backend": self.backend,
                    "batch": self.batch}
        return {"kind": self.kind, "reduction": self.reduction}

    def describe(self) -> str:
        if self.kind == "widths" and self.groups is not None:
            return "widths " + ", ".join(f"{g}={w}" for g, w in zip(self.groups, self.widths or ()))
        if self.kind == "widths":
            return f"widths {list(self.widths or ())}"
        if self.kind == "latency":
            ratio = float(self.latency_ratio or 0)
            return f"{ratio:.2%} of dense latency on {self.backend} at batch {self.batch} ({1 / ratio:.2f}x faster)"
        return f"{self.reduction:.2%} fewer {self.kind}"


def widths_target(text: str) -> Target:
    """--widths: `256,256,256,128` (one per prunable group) or `NAME=W,...` (named groups; the rest keep theirs)."""
    if "=" not in text:
        return Target.of_widths(parse_widths(text))
    names, widths = [], []
    for part in filter(None, text.replace(" ", "").split(",")):
        name, _, value = part.rpartition("=")
        if not name or not value.isdigit():
            raise UserError(f"--widths {text!r}: give NAME=WIDTH pairs like blocks.0=128,u=96, or one width per "
                            "prunable group like 256,256,256,128")
        names.append(name)
        widths.append(int(value))
    if len(set(names)) != len(names):
        raise UserError(f"--widths {text!r} names a group twice")
    return Target.of_widths(widths, names)
