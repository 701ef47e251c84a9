"""Latency budgets (`--target-latency R`, `--round-to auto`): a measured table of layer shapes, the solver's view
of it, and end-to-end paired checks of what the solver chose.

Parameter, FLOP and width budgets are proxies for what users prune for: the same parameter count runs at different
speeds depending on how the widths fall on the kernels' tiles and thread splits. So a latency target is planned
against latencies measured on the backend and batch size it names, through lookup tables of layer shapes as in
NetAdapt and HALP.

The table. An entry is one layer shape (in K, out N): the latency of a probe network `K -> N -> out_features` (that
layer, the network's main activation and an output layer), timed against a fixed anchor probe in the same rounds,
as a ratio with its 95 % CI (ratios, because a machine's speed drifts between chunks and a ratio to an anchor timed
alongside does not, much). A width vector's estimate is the sum of its layers' entries, every layer of the graph
but the output layer. That sum misses whatever is not a layer (residual adds, gates, per-call overhead) and counts
an output layer per entry, so its ratio to dense's is biased; the end-to-end checks remove that bias.

The checks (`plan_latency`). The table's plan is verified end to end: the dense network and the candidate (the
dense network with its first units kept per group: the values do not change the latency, and a real network is a
valid one), paired on the backend. Each check gives a measured ratio per unit of table ratio; pooled over the
checks, that factor turns the target into the goal the table is solved for next, at most `CHECKS` times or until a
check lands within `TOLERANCE` of the target. All before any fine-tuning; the pruned model itself is measured
paired against dense once more at the end (`structured.prune`).

Cached: one JSON file per key (machine, backend and options, batch, library versions, the network's output width
and activation, the anchor) in `$SPINN_EXPORT_CACHE`, else `$XDG_CACHE_HOME/spinn-export`, else
`~/.cache/spinn-export`, written after every chunk, with the plans solved against it.

Layering: prune comes before bench. What measures is handed in as a `Measurer` (`bench.measurer.BackendMeasurer`
on a real backend; the tests give a synthetic one); this module never imports bench.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from spinn_export.defaults import PROBE_ANCHOR, PROBE_ROUNDS
from spinn_export.errors import UserError
from spinn_export.files import write_json
from spinn_export.model.architecture import Architecture
from spinn_export.model.network import Network
from spinn_export.prune.budget import PrunePlan, RoundTo, lowest_widths, plan_widths
from spinn_export.prune.shrink import shrink
from spinn_export.prune.target import Target

AUTO = "auto"
GRID = 8  # widths a latency plan considers: multiples of 8 (one AVX2 register of float32), as the table's grid
AUTO_MULTIPLES = (8, 16, 32)  # --round-to auto picks among these; 32, the usual fixed choice, where nothing finer pays
PROBE_ACTIVATION = "tanh"  # a probe's activation where the network has none of the usual ones
AUTO_AGREEMENT = 0.75  # the share of in-between widths that must be cheaper than the coarser multiple above them
WINDOW = 64  # --round-to auto reads each layer's costs this far either side of a first plan
CHUNK = 24  # probes open at once in the worker (each holds its weights and activation arena)
CHECKS = 3  # end-to-end checks per plan (each 10-20 s at the reference's size on 2 shared cores)
TOLERANCE = 0.05  # a checked ratio within 5 % of the target ends the checks
MAX_GOAL = 0.999  # the solver's goal stays a fraction strictly below 1
SCHEMA = 1
CACHE_ENV = "SPINN_EXPORT_CACHE"

Shape = tuple[int, int]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Cost:
    """One table entry: the probe's latency over the anchor's (median of its paired rounds, with the 95 % CI), and
    the probe's median seconds per call, for reading (the solver uses only the ratios)."""

    ratio: float
    ci_low: float
    ci_high: float
    seconds: float


@dataclass(frozen=True)
class Ratio:
    """A model's latency over dense's on one backend at one batch: 1 / its paired speedup, CI inverted likewise."""

    ratio: float
    ci_low: float
    ci_high: float
    method: str
    processes: int
    blocks_per_process: int

    @property
    def speedup(self) -> float:
        return 1.0 / self.ratio

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "speedup": self.speedup}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ratio:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def describe(self) -> str:
        return (f"{self.ratio:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] of dense ({self.speedup:.2f}x faster; "
                f"paired {self.method}, {self.processes} processes)")


class Measurer(Protocol):
    """What measures: layer probes against the anchor, and whole models paired against dense. `key` names everything
    a latency depends on besides the shapes; it must hold `backend` and `batch`."""

    def key(self) -> dict[str, Any]:
        """JSON-ready values only (they are compared with the cache file's)."""

    def costs(self, shapes: Sequence[Shape], out_features: int, activation: str) -> dict[Shape, Cost]:
        """One entry per (in, out) shape, all timed in the same rounds."""

    def ratio(self, baseline: Network, candidate: Network, final: bool) -> Ratio:
        """candidate's latency over baseline's, paired; `final` asks for the full measurement rather than a check."""

    def release(self) -> None:
        """Let go of what is held between measurements (a worker process): called before fine-tuning."""


def cache_dir() -> Path:
    """$SPINN_EXPORT_CACHE, else $XDG_CACHE_HOME/spinn-export, else ~/.cache/spinn-export."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spinn-export"


def grid_steps(architecture: Architecture) -> tuple[int, ...]:
    """The table's grid per hidden layer: multiples of GRID, neuron by neuron for a layer narrower than that."""
    return tuple(GRID if width >= GRID else 1 for width in architecture.widths)


@dataclass(frozen=True)
class LatencyTable:
    """The measured entries under one key, and the plans solved against them (by `plan_key`)."""

    key: Mapping[str, Any]
    costs: Mapping[Shape, Cost]
    plans: Mapping[str, Mapping[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        entries = [{"in": k, "out": n, **dataclasses.asdict(cost)} for (k, n), cost in sorted(self.costs.items())]
        return {"schema": SCHEMA, "key": dict(self.key), "entries": entries, "plans": dict(self.plans)}

    @classmethod
    def load(cls, path: Path, key: Mapping[str, Any]) -> LatencyTable:
        """The cached table, or an empty one where there is none, it is unreadable or it holds another key."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["key"] != key:
                raise ValueError("another key")
            costs = {(int(e["in"]), int(e["out"])): Cost(*(float(e[f.name]) for f in dataclasses.fields(Cost)))
                     for e in data["entries"]}
            return cls(key, costs, dict(data["plans"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls(key, {}, {})


class LatencyLookup:
    """The solver's view of one table (a `walk.LatencyEstimator`): estimates of whole width vectors, measuring the
    shapes it lacks together and saving the table after every chunk, so an interrupted plan keeps what it measured.

    Mutable on purpose: it holds the table as it grows during one plan, and the measurer that grows it.
    """

    def __init__(self, measurer: Measurer, architecture: Architecture, directory: Path | None = None) -> None:
        self.measurer, self.architecture = measurer, architecture
        self.activation = architecture.activation or PROBE_ACTIVATION
        self.key = {"schema": SCHEMA, **measurer.key(), "out_features": architecture.out_features,
                    "activation": self.activation, "anchor": list(PROBE_ANCHOR),
                    "rounds": PROBE_ROUNDS}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = (directory or cache_dir()) / f"latency-{self.key['backend']}-batch{self.key['batch']}-{digest}.json"
        self.table = LatencyTable.load(self.path, self.key)
        self.measured, self.seconds = 0, 0.0  # shapes measured by this lookup, and the time that took

    def shapes(self, widths: Sequence[int]) -> list[Shape]:
        """(in, out) of every layer but the output layer at `widths`, once per row it multiplies per sample."""
        architecture = self.architecture
        return [(inp, out) for layer, (out, inp) in zip(architecture.layers, architecture.layer_shapes_at(widths))
                if layer.node != architecture.graph.output for _ in range(layer.rows_per_sample)]

    def latency(self, vectors: Sequence[Sequence[int]]) -> list[float]:
        wanted = dict.fromkeys(shape for vector in vectors for shape in self.shapes(vector))
        missing = [shape for shape in wanted if shape not in self.table.costs]
        for start in range(0, len(missing), CHUNK):
            started = time.perf_counter()
            found = self.measurer.costs(missing[start:start + CHUNK], self.architecture.out_features, self.activation)
            self.seconds += time.perf_counter() - started
            self._store(dataclasses.replace(self.table, costs={**self.table.costs, **found}))
            self.measured += len(found)
        return [sum(self.table.costs[shape].ratio for shape in self.shapes(vector)) for vector in vectors]

    def recall(self, key: str) -> Mapping[str, Any] | None:
        return self.table.plans.get(key)

    def remember(self, key: str, record: Mapping[str, Any]) -> None:
        self._store(dataclasses.replace(self.table, plans={**self.table.plans, key: dict(record)}))

    def _store(self, table: LatencyTable) -> None:
        self.table = table
        try:
            write_json(self.path, table.to_dict())
        except OSError as exc:
            raise UserError(f"cannot write the latency table {self.path} ({exc.strerror or exc}); set {CACHE_ENV} "
                            "to a writable directory") from None


@dataclass(frozen=True)
class Check:
    """One end-to-end check of a solved width vector: random weights, paired against dense. `goal` is the table ratio
    the solver was asked for, `estimate` the table's ratio for these widths."""

    goal: float
    widths: tuple[int, ...]
    estimate: float
    measured: Ratio

    def to_dict(self) -> dict[str, Any]:
        return {"goal": self.goal, "widths": list(self.widths), "estimate": self.estimate,
                "measured": self.measured.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        return cls(float(data["goal"]), tuple(data["widths"]), float(data["estimate"]),
                   Ratio.from_dict(data["measured"]))


@dataclass(frozen=True)
class LatencyPrediction:
    """What a latency target's plan is predicted to run at: the plan, the table's ratio for its widths (`estimate`),
    what the checks say measured ratios are per unit of table ratio (`factor`), so `predicted` = factor x estimate,
    and every check."""

    plan: PrunePlan
    estimate: float
    factor: float
    checks: tuple[Check, ...]
    table: Path
    reused: bool

    @property
    def predicted(self) -> float:
        return self.factor * self.estimate

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "factor": self.factor, "predicted": self.predicted,
                "checks": [check.to_dict() for check in self.checks], "table": str(self.table), "reused": self.reused}


def plan_key(architecture: Architecture, target: Target, mode: str, min_width: int, round_to: RoundTo,
             scores: Sequence[torch.Tensor] | None) -> str:
    """Everything a latency plan depends on besides the table's own key (scores only matter in global mode)."""
    digest = None
    if mode == "global" and scores is not None:
        digest = hashlib.sha256(b"".join(s.detach().float().numpy().tobytes() for s in scores)).hexdigest()
    graph = hashlib.sha256(architecture.graph.to_json().encode()).hexdigest()
    return json.dumps({"graph": graph, "latency_ratio": target.latency_ratio, "mode": mode,
                       "min_width": min_width, "round_to": list(round_to) if isinstance(round_to, tuple) else round_to,
                       "scores": digest, "checks": CHECKS, "tolerance": TOLERANCE}, sort_keys=True)


def kept_first(network: Network, widths: Sequence[int]) -> Network:
    """The network with the first `widths` units of each group kept (values do not change latency; a real network
    is a valid one), as an end-to-end latency check times it."""
    return shrink(network, [torch.arange(w) for w in widths], fold="none")


def plan_latency(lookup: LatencyLookup, dense: Network, target: Target, *, mode: str = "uniform",
                 scores: Sequence[torch.Tensor] | None = None, min_width: int = 1, round_to: RoundTo = None,
                 log: Log = print) -> LatencyPrediction:
    """Widths for `target` (a latency target) from the table, checked end to end on `dense` and corrected (module
    docstring).

    `round_to` None plans on the table's grid (`grid_steps`). Every check gives a measured ratio per unit of table
    ratio; their geometric mean (`factor`, pooled over the checks, as each check alone is noisy) turns the target
    into the next goal for the table, target / factor, kept within what the widths can reach (the solver's own floor
    check speaks for the target as given, before any check). The checks stop at CHECKS, at a check within TOLERANCE
    of the target, or where the next goal leads to widths already checked; the plan is the solver's for the last
    goal, which all the checks informed.
    """
    architecture = dense.architecture
    round_to = round_to or grid_steps(architecture)
    key = plan_key(architecture, target, mode, min_width, round_to, scores)
    stored = lookup.recall(key)
    if stored is not None:
        try:
            checks = tuple(Check.from_dict(c) for c in stored["checks"])
            plan = PrunePlan(architecture, target, mode, tuple(stored["widths"]), None, min_width, round_to)
            return LatencyPrediction(plan, float(stored["estimate"]), float(stored["factor"]), checks,
                                     lookup.path, reused=True)
        except (TypeError, KeyError, ValueError):
            pass  # a record this code did not write: plan afresh (and overwrite it)

    def solve(goal: float) -> PrunePlan:
        return plan_widths(architecture, dataclasses.replace(target, latency_ratio=goal), mode=mode, scores=scores,
                           min_width=min_width, round_to=round_to, latency=lookup)

    wanted = goal = float(target.latency_ratio or 0)
    factor = 1.0
    checks: list[Check] = []
    for _ in range(CHECKS):
        plan = solve(goal)
        if any(check.widths == plan.widths for check in checks):
            break
        full, planned = lookup.latency([architecture.widths, plan.widths])
        measured = lookup.measurer.ratio(dense, kept_first(dense, plan.widths), final=False)
        checks.append(Check(goal, plan.widths, planned / full, measured))
        log(f"  latency check {len(checks)}: widths {list(plan.widths)}, table estimate {planned / full:.3f}, "
            f"measured {measured.describe()}")
        factor = math.exp(sum(math.log(c.measured.ratio / c.estimate) for c in checks) / len(checks))
        floor = lookup.latency([lowest_widths(architecture, min_width, round_to)])[0] / full
        goal = min(max(wanted / factor, floor), MAX_GOAL)
        if abs(measured.ratio / wanted - 1.0) <= TOLERANCE:
            break
    plan = dataclasses.replace(solve(goal), target=target)
    full, planned = lookup.latency([architecture.widths, plan.widths])
    result = LatencyPrediction(plan, planned / full, factor, tuple(checks), lookup.path, reused=False)
    log(f"  latency plan: widths {list(plan.widths)}, table estimate {result.estimate:.3f} x {factor:.3f} "
        f"(measured per table ratio, {len(checks)} checks) = {result.predicted:.3f} of dense predicted")
    lookup.remember(key, {"widths": list(plan.widths), "estimate": result.estimate, "factor": factor,
                          "checks": [check.to_dict() for check in checks]})
    return result


def _fitting(width: int) -> list[int]:
    """The candidate multiples a layer of `width` neurons can take."""
    return [m for m in AUTO_MULTIPLES if m <= width] or [1]


def efficient_multiple(costs: Mapping[int, float], width: int) -> int:
    """The finest of AUTO_MULTIPLES (at most `width`, the layer's own) whose in-between widths pay: among `costs`
    (width -> estimate, on the grid), at least AUTO_AGREEMENT of the widths that are its multiples but not the next
    coarser candidate's cost less than that coarser multiple just above them.

    Where the coarser multiple is a kernel's tile (or a thread split), a width between costs what the tile costs or
    more, so the finer multiple is refused. Comparing neighbours, not the whole frontier, keeps one noisy entry from
    deciding; asking for most of them, not half, makes a table that cannot tell fall back to the coarser multiple
    (the usual fixed choice), never to a wasteful finer one.
    """
    fitting = _fitting(width)
    for multiple, coarser in itertools.pairwise(fitting):
        above = {n: -(-n // coarser) * coarser for n in costs if n % multiple == 0 and n % coarser}
        pairs = [(n, up) for n, up in above.items() if up in costs]
        if pairs and sum(costs[n] < costs[up] for n, up in pairs) >= AUTO_AGREEMENT * len(pairs):
            return multiple
    return fitting[-1]


def auto_round_to(lookup: LatencyLookup, architecture: Architecture, target: Target, *, mode: str = "uniform",
                  scores: Sequence[torch.Tensor] | None = None, min_width: int = 1) -> tuple[int, ...]:
    """`--round-to auto`: each hidden layer's width multiple, read from the table around a first plan on its grid
    (table only, no checks) for the same target: the layer's grid widths within WINDOW of that plan, the other
    layers held at it, all measured in one chunk.

    Against a parameter or FLOP budget the finer multiples also move where the plan lands (each plan is within half
    a block of the budget, on either side); where the table says that plan is slower than the coarsest multiples'
    plan, the coarsest are kept, so at an equal budget auto is never slower than them by the table. (A latency
    target is met either way; there finer multiples keep more neurons within it.)
    """
    def plan(round_to: RoundTo) -> PrunePlan:
        return plan_widths(architecture, target, mode=mode, scores=scores, min_width=min_width, round_to=round_to,
                           latency=lookup)

    steps = grid_steps(architecture)
    first = plan(steps)
    windows = []
    for index, (width, step) in enumerate(zip(first.widths, steps)):
        lowest = math.ceil(min_width / step) * step
        top = architecture.widths[index] // step * step
        windows.append(range(max(lowest, width - WINDOW), min(top, width + WINDOW) + 1, step))
    vectors = [[n if j == i else w for j, w in enumerate(first.widths)] for i, window in enumerate(windows)
               for n in window]
    values = iter(lookup.latency(vectors))
    multiples = tuple(efficient_multiple({n: next(values) for n in window}, width)
                      for window, width in zip(windows, architecture.widths))
    coarsest = tuple(_fitting(width)[-1] for width in architecture.widths)
    if target.kind == "latency" or multiples == coarsest:
        return multiples
    finer, coarse = lookup.latency([plan(multiples).widths, plan(coarsest).widths])
    return multiples if finer <= coarse else coarsest
