"""Noise where the report is read: each paired figure's stability verdict and the load the machine carried, as the
suite recorded them (`bench.stability`, `bench.load`), turned into columns and clauses.

Results written before the suite recorded them still load: their figures have no verdict, shown as "not recorded"
(never as stable), and no load. A leaf of the report: it takes plain rows and frames.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from spinn_export.defaults import UNSTABLE_SPREAD

LOAD_COLUMNS = ("load_avg", "cpus", "others_cpu", "steal")
STABILITY_COLUMNS = ("unstable", "unstable_reason")
NOT_RECORDED = "not recorded"  # results that predate the verdict: unknown, not stable
STABLE = "stable"


def load_columns(load: dict[str, Any] | None) -> dict[str, Any]:
    """A recorded `LoadSample` (or None) as row columns."""
    load = load or {}
    return {"load_avg": load.get("loadavg"), "cpus": load.get("cpus"), "others_cpu": load.get("others"),
            "steal": load.get("steal")}


def stability_columns(entry: dict[str, Any]) -> dict[str, Any]:
    """The verdict of a paired entry: True/False where recorded, None where the results predate it."""
    recorded = entry.get("unstable")
    return {"unstable": None if recorded is None else bool(recorded), "unstable_reason": entry.get("unstable_reason")}


def stability_text(unstable: object, reason: object = None) -> str:
    """'stable', 'UNSTABLE: why' (or 'UNSTABLE' without a reason) or 'not recorded', as the tables show it."""
    if unstable is None or pd.isna(unstable):  # type: ignore[arg-type]
        return NOT_RECORDED
    if not unstable:
        return STABLE
    return f"UNSTABLE: {reason}" if reason else "UNSTABLE"


def fastest_clause(fastest: pd.DataFrame) -> str:
    """Which fastest deployments' speedups are unstable (their CI: one process of A B B A cycles), '' if none."""
    if fastest.empty or "unstable" not in fastest.columns:
        return ""
    flagged = fastest[fastest["unstable"].eq(True)]
    parts = [f"at batch {int(row['batch'])} ({row['unstable_reason']})" for _, row in flagged.iterrows()]
    return f"The fastest deployment's speedup is UNSTABLE {'; '.join(parts)}." if parts else ""


def crosscheck_clause(checks: pd.DataFrame) -> str:
    """Timing cross-checks the machine was too noisy to confirm, with both figures ('' if none)."""
    if checks.empty or "verdict" not in checks.columns:
        return ""
    flagged = checks[checks["verdict"].astype(str).str.startswith("unverified")]
    parts = [f"{case_text(row)}: the suite's {row['median_s'] * 1e6:.1f} us against timeit's "
             f"{row['reference_median_s'] * 1e6:.1f} us, ratios {', '.join(f'{r:.2f}' for r in row['ratios'])}"
             for _, row in flagged.iterrows()]
    return (f"Timing cross-check unverified (a noisy machine, not a harness fault; the run went on): "
            f"{'; '.join(parts)}." if parts else "")


def case_text(row: dict[str, Any] | pd.Series) -> str:
    return f"{row['variant']} on {row['backend']} at batch {int(row['batch'])}"


def unstable_clause(speedup: pd.DataFrame) -> str:
    """Which paired speedups are unstable and why (with the load while they were measured), or that none is, or that
    these results predate the verdict."""
    if speedup.empty:
        return ""
    if "unstable" not in speedup.columns or speedup["unstable"].isna().all():
        return ("Stability: not recorded (these results predate the unstable flag, so a noisy speedup is not flagged "
                "here: read each CI's width).")
    flagged = speedup[speedup["unstable"].eq(True)]
    if flagged.empty:
        return (f"Every paired speedup is stable: each CI and each case's process medians within "
                f"±{UNSTABLE_SPREAD * 100:.0f} % of its median.")
    cases = "; ".join(f"{case_text(row)} ({row['unstable_reason']})" for _, row in flagged.iterrows())
    return (f"UNSTABLE: {len(flagged)} of {len(speedup)} paired speedup(s) are too noisy to rank deployments by: "
            f"{cases}. Rerun them on a quieter machine before trusting a difference between them.")


def load_clause(benchmarks: pd.DataFrame) -> str:
    """The most load the machine carried while any case was measured, so a reader sees a busy machine ('' where the
    results recorded none)."""
    if "others_cpu" not in benchmarks.columns or benchmarks[list(LOAD_COLUMNS)].isna().all().all():
        return ""
    busiest = benchmarks.loc[pd.to_numeric(benchmarks["others_cpu"]).fillna(-1).idxmax()]
    loads = pd.to_numeric(benchmarks["load_avg"])
    load = "" if loads.isna().all() else (f"; the 1-minute load average reached {loads.max():.1f} on "
                                         f"{int(benchmarks['cpus'].max())} CPUs")
    others = pd.to_numeric(benchmarks["others_cpu"])
    share = "" if others.isna().all() else (f"other processes held up to {others.max():.0%} of the CPU time "
                                           f"(during {case_text(busiest)})")
    steal = pd.to_numeric(benchmarks["steal"]).max()
    stolen = f"; the hypervisor stole up to {steal:.0%}" if pd.notna(steal) and steal > 0 else ""
    return f"Machine load while measuring: {share or 'shares not readable'}{load}{stolen}."
