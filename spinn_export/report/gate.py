"""The CI gate: does the pruned model still run as much faster than dense as the policy demands?

Only speedups are judged, never absolute times: a ratio measured in one run on one machine
travels to other machines and runs, a time in seconds does not.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from spinn_export.errors import UserError
from spinn_export.report.render import terminal_table
from spinn_export.report.results import load_results, speedups

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

POLICY_TABLE = ("tool", "spinn_export", "gate")
ROW_COLUMNS = ["rule", "variant", "backend", "batch", "speedup", "ci_low", "source", "baseline_speedup",
               "judged", "threshold", "result"]


@dataclass(frozen=True)
class SpeedupRule:
    """The variant must be at least `min_speedup` times faster than dense on this backend and batch."""

    backend: str
    batch: int
    min_speedup: float

    def __post_init__(self) -> None:
        if not self.backend:
            raise UserError("a gate rule needs a backend name, e.g. ort-cpu:8192:1.5")
        if int(self.batch) < 1:
            raise UserError(f"a gate rule's batch must be a positive integer, got {self.batch}")
        if not (math.isfinite(self.min_speedup) and self.min_speedup > 0):
            raise UserError(f"a gate rule's min_speedup must be a positive number, got {self.min_speedup}")


@dataclass(frozen=True)
class GatePolicy:
    """Minimum speedups for one variant, and with a baseline the largest relative drop allowed."""

    variant: str = "structured"
    rules: tuple[SpeedupRule, ...] = ()
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is not None and not (0 <= self.max_drop < 1):
            raise UserError(f"max_drop is a fraction of the baseline's speedup in [0, 1), got {self.max_drop}")


@dataclass(frozen=True)
class GateOutcome:
    """`rows` is one line per rule checked; exit_code is 0 when all pass, 1 otherwise."""

    passed: bool
    rows: pd.DataFrame
    exit_code: int


def parse_min_speedup(text: str) -> SpeedupRule:
    """`BACKEND:BATCH:X`, as given to --min-speedup."""
    parts = text.rsplit(":", 2)
    try:
        backend, batch, minimum = parts
        return SpeedupRule(backend, int(batch), float(minimum))
    except ValueError:
        raise UserError(f"--min-speedup expects BACKEND:BATCH:X such as ort-cpu:8192:1.5, got {text!r}") from None


def policy_from_table(table: dict[str, Any], source: str) -> GatePolicy:
    """Build a policy from a `[tool.spinn_export.gate]` table (keys: variant, rules, max_drop)."""
    unknown = sorted(set(table) - {"variant", "rules", "max_drop"})
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {source}: use variant, rules and max_drop")
    try:
        rules = tuple(SpeedupRule(str(r["backend"]), int(r["batch"]), float(r["min_speedup"]))
                      for r in table.get("rules", []))
        max_drop = table.get("max_drop")
        return GatePolicy(str(table.get("variant", GatePolicy.variant)), rules,
                          None if max_drop is None else float(max_drop))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"bad gate rule in {source} ({exc!r}): each rule is "
                        "{backend = \"ort-cpu\", batch = 8192, min_speedup = 1.5}") from None


def load_policy(path: str | os.PathLike[str]) -> GatePolicy | None:
    """The policy table of a TOML file, or None when the file has no such table."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read the gate policy {path}: {exc}") from None
    table: Any = data
    for key in POLICY_TABLE:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    return policy_from_table(table, f"{path} [{'.'.join(POLICY_TABLE)}]")


def _require(frame: pd.DataFrame, backend: str, batch: int, variant: str, what: str) -> pd.Series:
    """The one speedup row for this backend and batch, or exit 2 naming what is missing."""
    if frame.empty:
        raise UserError(f"{what} holds no paired speedup over dense: benchmark dense and {variant} on the same "
                        "backends with the current suite (spinn-export bench)")
    if backend not in set(frame["backend"]):
        raise UserError(f"backend {backend} is not in {what} (it has {', '.join(sorted(set(frame['backend'])))}): "
                        "benchmark it or change the gate policy")
    on_backend = frame[frame["backend"] == backend]
    if batch not in set(on_backend["batch"]):
        raise UserError(f"batch {batch} on {backend} is not in {what} "
                        f"(it has {', '.join(map(str, sorted(set(on_backend['batch']))))}): "
                        "benchmark it or change the gate policy")
    rows = on_backend[(on_backend["batch"] == batch) & (on_backend["variant"] == variant)]
    if rows.empty:
        raise UserError(f"no paired {variant} speedup over dense on {backend} batch {batch} in {what}: "
                        f"benchmark both dense and {variant} there")
    return rows.iloc[0]


def evaluate(current: pd.DataFrame, policy: GatePolicy, baseline: pd.DataFrame | None = None,
             what: str = "the results") -> GateOutcome:
    """Judge speedup frames (as `results.speedups` builds them) against the policy.

    A minimum is judged on the paired CI's lower bound (every speedup is paired). A drop is the current
    point speedup's shortfall relative to the baseline's.
    """
    if not policy.rules and (policy.max_drop is None or baseline is None):
        raise UserError("the gate policy has nothing to check: give --min-speedup BACKEND:BATCH:X, or --max-drop "
                        "with --baseline, or a [tool.spinn_export.gate] table")
    rows = []
    for rule in policy.rules:
        row = _require(current, rule.backend, rule.batch, policy.variant, what)
        judged = row["ci_low"]
        rows.append({"rule": "min speedup", "variant": policy.variant, "backend": rule.backend, "batch": rule.batch,
                     "speedup": row["speedup"], "ci_low": row["ci_low"], "source": row["source"],
                     "baseline_speedup": math.nan, "judged": judged, "threshold": rule.min_speedup,
                     "result": "pass" if judged >= rule.min_speedup else "FAIL"})
    if policy.max_drop is not None and baseline is not None:
        reference = baseline[baseline["variant"] == policy.variant]
        if reference.empty:
            raise UserError(f"the baseline has no {policy.variant} speedup over dense: give a baseline benchmarked "
                            f"with dense and {policy.variant}")
        for _, ref in reference.iterrows():
            row = _require(current, ref["backend"], int(ref["batch"]), policy.variant, what)
            drop = 1.0 - row["speedup"] / ref["speedup"]
            rows.append({"rule": "max drop", "variant": policy.variant, "backend": ref["backend"],
                         "batch": int(ref["batch"]), "speedup": row["speedup"], "ci_low": row["ci_low"],
                         "source": row["source"], "baseline_speedup": ref["speedup"], "judged": drop,
                         "threshold": policy.max_drop, "result": "pass" if drop <= policy.max_drop else "FAIL"})
    table = pd.DataFrame(rows, columns=ROW_COLUMNS)
    passed = bool((table["result"] == "pass").all())
    return GateOutcome(passed, table, 0 if passed else 1)


def run_gate(results: str | os.PathLike[str], policy: GatePolicy,
             baseline: str | os.PathLike[str] | None = None) -> GateOutcome:
    """Gate one results file; unusable input (unreadable, missing backend/batch) raises UserError (exit 2)."""
    current = speedups(load_results([results]))
    reference = None if baseline is None else speedups(load_results([baseline]))
    return evaluate(current, policy, reference, what=str(results))


def format_rows(rows: pd.DataFrame) -> str:
    """The rows as a plain-text table for the terminal (columns empty throughout dropped, '-' for a gap)."""
    return terminal_table(rows.dropna(axis=1, how="all"))
