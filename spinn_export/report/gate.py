"""The CI gate: does the pruned model still run as much faster than dense as the policy demands, without losing more
validation R² than its budget?

A speedup judged on an unstable measurement (`report.noise`: a CI or process medians wider than ±10 %) is judged all
the same, on its CI's low end, and the outcome says so: a pass on a noisy figure may not repeat, and a fail may be the
machine's load rather than the change; the note asks for a rerun on a quieter machine instead of hiding either.

Only speedups are judged, never absolute times: a ratio measured in one run on one machine
travels to other machines and runs, a time in seconds does not. A speedup bought by a network that no longer fits its
data is no answer, so the policy's `max_r2_drop` fails a variant whose validation R² fell more than that below dense's
(read from the pruning histories, `results.load_history`: the same figures the report's summary shows).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from spinn_export.errors import UserError
from spinn_export.report.lookup import history_stage
from spinn_export.report.noise import stability_text
from spinn_export.report.render import terminal_table
from spinn_export.report.results import BASELINE_VARIANT, History, load_history, load_results, speedups

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

POLICY_TABLE = ("tool", "spinn_export", "gate")
ROW_COLUMNS = ["rule", "variant", "backend", "batch", "speedup", "ci_low", "source", "baseline_speedup",
               "dense_r2", "variant_r2", "judged", "threshold", "stability", "result"]  # result last: read first
POLICY_KEYS = ("variant", "rules", "max_drop", "max_r2_drop")
R2_RULE = "max R² drop"
HISTORY_GLOB = "prune-*/history.json"  # the main job's layout: OUT/bench.json beside OUT/prune-<method>/history.json


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
    """Minimum speedups for one variant, with a baseline the largest relative drop allowed, and the most validation R²
    the variant may lose against dense (`max_r2_drop`, None: not judged)."""

    variant: str = "structured"
    rules: tuple[SpeedupRule, ...] = ()
    max_drop: float | None = None
    max_r2_drop: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is not None and not (0 <= self.max_drop < 1):
            raise UserError(f"max_drop is a fraction of the baseline's speedup in [0, 1), got {self.max_drop}")
        if self.max_r2_drop is not None and not (math.isfinite(self.max_r2_drop) and self.max_r2_drop >= 0):
            raise UserError(f"max_r2_drop is the most validation R² the variant may lose, e.g. 0.01; got "
                            f"{self.max_r2_drop}")


@dataclass(frozen=True)
class GateOutcome:
    """`rows` is one line per rule checked; exit_code is 0 when all pass, 1 otherwise. `notes`: rules the policy holds
    that could not be checked, each with why (an accuracy budget from a default policy, no R² recorded);
    `max_r2_drop`: the accuracy budget the policy holds, checked or not."""

    passed: bool
    rows: pd.DataFrame
    exit_code: int
    notes: tuple[str, ...] = ()
    max_r2_drop: float | None = None


@dataclass(frozen=True)
class Accuracy:
    """A variant's validation R² beside dense's (both on the validation split the pruning history evaluated)."""

    variant: str
    dense_r2: float
    variant_r2: float

    @property
    def drop(self) -> float:
        return self.dense_r2 - self.variant_r2


def parse_min_speedup(text: str) -> SpeedupRule:
    """`BACKEND:BATCH:X`, as given to --min-speedup."""
    parts = text.rsplit(":", 2)
    try:
        backend, batch, minimum = parts
        return SpeedupRule(backend, int(batch), float(minimum))
    except ValueError:
        raise UserError(f"--min-speedup expects BACKEND:BATCH:X such as ort-cpu:8192:1.5, got {text!r}") from None


def policy_from_table(table: dict[str, Any], source: str) -> GatePolicy:
    """Build a policy from a `[tool.spinn_export.gate]` table (keys: variant, rules, max_drop, max_r2_drop)."""
    unknown = sorted(set(table) - set(POLICY_KEYS))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {source}: use {', '.join(POLICY_KEYS)}")
    try:
        rules = tuple(SpeedupRule(str(r["backend"]), int(r["batch"]), float(r["min_speedup"]))
                      for r in table.get("rules", []))
        max_drop, max_r2_drop = table.get("max_drop"), table.get("max_r2_drop")
        return GatePolicy(str(table.get("variant", GatePolicy.variant)), rules,
                          None if max_drop is None else float(max_drop),
                          None if max_r2_drop is None else float(max_r2_drop))
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


def accuracy_of(histories: Sequence[History], variant: str) -> Accuracy | None:
    """The variant's validation R² and dense's, read as the summary reads them (`lookup.history_stage`: the final stage
    of the history whose method is the variant; stage 0 for dense), less rounds that were rolled back (the model saved
    is the one before them); None where no history holds the variant (a quantised variant is in none)."""
    kept = [dataclasses.replace(h, stages=h.kept) for h in histories]
    stage, dense = history_stage(kept, variant), history_stage(kept, BASELINE_VARIANT)
    if stage is None or dense is None:
        return None
    return Accuracy(variant, float(dense["val_r2"]), float(stage["val_r2"]))


def evaluate(current: pd.DataFrame, policy: GatePolicy, baseline: pd.DataFrame | None = None,
             what: str = "the results", accuracy: Accuracy | None = None) -> GateOutcome:
    """Judge speedup frames (as `results.speedups` builds them), and the variant's `accuracy`, against the policy.

    A minimum is judged on the paired CI's lower bound (every speedup is paired). A drop is the current
    point speedup's shortfall relative to the baseline's. The R² drop is dense's validation R² less the variant's,
    judged against `max_r2_drop` when the policy holds one and `accuracy` is given.
    """
    judge_r2 = policy.max_r2_drop is not None and accuracy is not None
    if not policy.rules and (policy.max_drop is None or baseline is None) and not judge_r2:
        raise UserError("the gate policy has nothing to check: give --min-speedup BACKEND:BATCH:X, or --max-drop "
                        "with --baseline, or --max-r2-drop, or a [tool.spinn_export.gate] table")
    rows = []
    for rule in policy.rules:
        row = _require(current, rule.backend, rule.batch, policy.variant, what)
        judged = row["ci_low"]
        rows.append({"rule": "min speedup", "variant": policy.variant, "backend": rule.backend, "batch": rule.batch,
                     "speedup": row["speedup"], "ci_low": row["ci_low"], "source": row["source"],
                     "baseline_speedup": math.nan, "judged": judged, "threshold": rule.min_speedup,
                     "result": "pass" if judged >= rule.min_speedup else "FAIL", **_stability(row)})
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
                         "threshold": policy.max_drop, "result": "pass" if drop <= policy.max_drop else "FAIL",
                         **_stability(row, ref)})
    if policy.max_r2_drop is not None and accuracy is not None:
        budget = policy.max_r2_drop
        rows.append({"rule": R2_RULE, "variant": accuracy.variant, "dense_r2": accuracy.dense_r2,
                     "variant_r2": accuracy.variant_r2, "judged": accuracy.drop, "threshold": budget,
                     "result": "pass" if accuracy.drop <= budget else "FAIL"})
    table = pd.DataFrame([{k: v for k, v in row.items() if k != "reason"} for row in rows], columns=ROW_COLUMNS)
    table["batch"] = pd.Series([None if pd.isna(b) else int(b) for b in table["batch"]], dtype=object)  # R²: none
    passed = bool((table["result"] == "pass").all())
    notes = tuple(f"{row['variant']} {row['rule']} on {row['backend']} at batch {row['batch']} "
                  f"{'passed' if row['result'] == 'pass' else 'FAILED'} on an UNSTABLE measurement ({row['reason']}): "
                  "rerun it on a quieter machine to confirm" for row in rows if row.get("reason"))
    return GateOutcome(passed, table, 0 if passed else 1, notes, max_r2_drop=policy.max_r2_drop)


def _stability(*judged: pd.Series) -> dict[str, str | None]:
    """The stability of the speedup(s) a rule judged (as the tables show it: a frame without the verdict, from results
    that predate it, is 'not recorded') and, where one is unstable, why, for the outcome's note. A drop judges two:
    the current figure and the baseline's."""
    labels = ("current", "baseline") if len(judged) > 1 else ("",)
    words = [stability_text(row.get("unstable")) for row in judged]
    reasons = [f"{label + ': ' if label else ''}{row.get('unstable_reason')}"
               for label, row, word in zip(labels, judged, words) if word == "UNSTABLE"]
    return {"stability": "UNSTABLE" if reasons else words[0], "reason": "; ".join(reasons) or None}


def histories_beside(results: str | os.PathLike[str]) -> list[Path]:
    """The pruning histories the main job writes beside its results (OUT/prune-<method>/history.json)."""
    return sorted(Path(results).parent.glob(HISTORY_GLOB))


def run_gate(results: str | os.PathLike[str], policy: GatePolicy,
             baseline: str | os.PathLike[str] | None = None,
             histories: Sequence[str | os.PathLike[str]] | None = None, *, require_r2: bool = True) -> GateOutcome:
    """Gate one results file; unusable input (unreadable, missing backend/batch) raises UserError (exit 2).

    The accuracy rule reads the R² of `histories` (pruning directories or history.json; None: those beside the
    results, as the main job lays them out). Where none holds the variant, a required rule (`require_r2`: the budget
    was asked for) is unusable input; a budget that only came with a default policy is left out, with the reason in
    the outcome's notes.
    """
    current = speedups(load_results([results]))
    reference = None if baseline is None else speedups(load_results([baseline]))
    accuracy, notes = None, ()
    if policy.max_r2_drop is not None:
        paths = histories_beside(results) if histories is None else [Path(h) for h in histories]
        accuracy = accuracy_of([load_history(p) for p in paths], policy.variant)
        if accuracy is None:
            where = (f"in {', '.join(map(str, paths))}" if paths
                     else f"(no --history given, none beside {results})")
            why = f"no pruning history with {policy.variant}'s validation R² {where}"
            if require_r2:
                raise UserError(f"the accuracy rule (max R² drop {policy.max_r2_drop:g}) needs R²: {why}; give the "
                                f"prune --out DIR of {policy.variant} with --history DIR")
            notes = (f"{R2_RULE} {policy.max_r2_drop:g} not checked: {why}",)
    outcome = evaluate(current, policy, reference, what=str(results), accuracy=accuracy)
    return dataclasses.replace(outcome, notes=outcome.notes + notes)


def format_rows(rows: pd.DataFrame) -> str:
    """The rows as a plain-text table for the terminal (columns empty throughout dropped, '-' for a gap)."""
    return terminal_table(rows.dropna(axis=1, how="all"))
