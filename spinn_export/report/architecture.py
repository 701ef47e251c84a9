"""The report's view of the network: its width groups, before and after pruning, and why any is frozen.

Read from the structured pruning history (`architecture` in history.json), so the report shows the network the tool
read, not a guess from weight shapes.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from spinn_export.model.spec import SOURCES
from spinn_export.report.results import History

TITLE = "Architecture"


def recorded(histories: Sequence[History]) -> dict | None:
    """The architecture the structured history recorded (else any history's)."""
    found = [h.architecture for h in sorted(histories, key=lambda h: h.method != "structured") if h.architecture]
    return found[0] if found else None


def groups_table(architecture: dict) -> pd.DataFrame:
    """One row per width group: its name, dense and pruned widths, and whether it was pruned, frozen (why) or
    folded; the input's and output's own groups are omitted (never pruned, by definition)."""
    rows = []
    for group in architecture.get("groups", []):
        frozen = group.get("frozen")
        if frozen and frozen.startswith(("the model's input", "the model's output")):
            continue
        status = f"frozen: {frozen}" if frozen else ("pruned, constants folded" if group.get("folded") else "pruned")
        rows.append({"group": group["name"], "dense width": group["dense_width"], "width": group["width"],
                     "status": status, "tensors": ", ".join(group.get("members", []))})
    return pd.DataFrame(rows, columns=["group", "dense width", "width", "status", "tensors"])


def note(architecture: dict) -> str:
    source = SOURCES.get(architecture.get("source", ""), architecture.get("source", "unknown"))
    return (f"{architecture.get('in_features')} inputs, {architecture.get('out_features')} outputs; architecture "
            f"source: {source}. A group is a set of features that must be removed together (coupled through residual "
            "adds, gates, concatenations); a frozen group touches an operation that cannot be proven to work feature "
            "by feature, so it is never pruned.")
