"""What the report opens with: the summary table, the headline sentence (speed and accuracy: a speedup bought with
the network's fit is no answer), where pruning cost more accuracy than the budget and how far it could have gone
within it, the fastest deployment, the gate's verdict and what was not run.

Prose says what kind of thing happened and its figures; the tables under it keep the per-case detail, so a list of
many cases reads as a few grouped clauses here.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import pandas as pd

from spinn_export.defaults import HEADLINE_BACKEND
from spinn_export.export.formats import rate_unit
from spinn_export.report.gate import GateOutcome
from spinn_export.report.lookup import file_bytes, history_stage, timed_artifact, validation
from spinn_export.report.noise import crosscheck_clause, fastest_clause, load_clause, stability_text, unstable_clause
from spinn_export.report.render import Section
from spinn_export.report.results import BASELINE_VARIANT, History, ManifestView, Results, speedups, variant_rank
from spinn_export.runtimes.profile import shares_text

MINUS = "\u2212"  # prose writes a negative change with a real minus sign
MAX_KINDS = 6  # grouped clauses in a sentence; the rest are counted together (the table lists every one)
_BATCH = re.compile(r"\bbatch (\d+)\b")
_DETAIL = re.compile(r"\s*\([^()]*\)$")  # a trailing parenthesis: the variant or install hint behind a reason


def summary_rows(results: Results, speedup: pd.DataFrame, manifest: ManifestView | None,
                 histories: Sequence[History]) -> pd.DataFrame:
    """Per machine and backend at its largest batch with a dense run: each variant's paired speedup with CI,
    its change in accuracy and residual against dense, and its file size and peak memory relative to dense's."""
    rows = []
    bench = results.benchmarks
    for (machine, backend), runs in bench.groupby(["machine", "backend"], sort=False):
        dense_runs = runs[runs["variant"] == BASELINE_VARIANT]
        if dense_runs.empty:
            continue
        batch = int(dense_runs["batch"].max())
        at = runs[runs["batch"] == batch]
        dense_at = at[at["variant"] == BASELINE_VARIANT]
        dense_stage = history_stage(histories, BASELINE_VARIANT)
        for variant in sorted(set(at["variant"]) - {BASELINE_VARIANT}, key=variant_rank):
            mine = at[at["variant"] == variant]
            sp = speedup[(speedup["machine"] == machine) & (speedup["backend"] == backend)
                         & (speedup["batch"] == batch) & (speedup["variant"] == variant)]
            stage = validation(histories, variant, timed_artifact(manifest, mine))
            accuracy = {}
            if stage is not None and dense_stage is not None:
                accuracy = {"val R²": stage["val_r2"], "ΔR² vs dense": stage["val_r2"] - dense_stage["val_r2"],
                            "residual RMS vs dense": ratio(stage["val_residual_rms"], dense_stage["val_residual_rms"])}
            rows.append({
                "machine": machine, "backend": backend, "batch": batch, "variant": variant,
                "speedup": sp["speedup"].iloc[0] if not sp.empty else math.nan,
                "CI low": sp["ci_low"].iloc[0] if not sp.empty else math.nan,
                "CI high": sp["ci_high"].iloc[0] if not sp.empty else math.nan,
                "stability": stability_text(sp["unstable"].iloc[0]) if not sp.empty else None,
                **accuracy,
                "file size vs dense": ratio(file_bytes(manifest, mine), file_bytes(manifest, dense_at)),
                "peak memory vs dense": ratio(mine["peak_memory_bytes"].iloc[0], dense_at["peak_memory_bytes"].iloc[0]),
            })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if table["machine"].nunique() == 1:
        table = table.drop(columns="machine")
    return table.dropna(axis=1, how="all")


def ratio(numerator: object, denominator: object) -> float:
    """A ratio, or NaN where either side is missing or zero: a gap stays a gap."""
    try:
        value = float(numerator) / float(denominator)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def signed(value: float, digits: int = 4) -> str:
    """A change as prose shows it: +0.0012, or −0.0015 with a real minus sign."""
    return f"{value:+.{digits}f}".replace("-", MINUS)


def headline(summary: pd.DataFrame) -> str:
    """The answer in one sentence: the variants on the headline backend (else the first backend measured), each one's
    paired speedup and its validation R² against dense's (where a pruning history or the export recorded it)."""
    if summary.empty or summary["speedup"].isna().all():
        return "No variant has a paired speedup over dense in these results."
    measured = summary[summary["speedup"].notna()]
    backend = HEADLINE_BACKEND if HEADLINE_BACKEND in set(measured["backend"]) else measured["backend"].iloc[0]
    on = measured[measured["backend"] == backend]
    parts = []
    for row in on.to_dict("records"):
        unstable = " (UNSTABLE)" if row.get("stability") == "UNSTABLE" else ""
        part = (f"{row['variant']} runs {row['speedup']:.2f}× as fast as dense "
                f"[{row['CI low']:.2f}, {row['CI high']:.2f}]{unstable}")
        r2, delta = row.get("val R²"), row.get("ΔR² vs dense")
        if r2 is not None and delta is not None and not (pd.isna(r2) or pd.isna(delta)):
            part += f", validation R² {r2:.4f} against dense {r2 - delta:.4f} ({signed(delta)})"
        parts.append(part)
    known = "val R²" in on.columns and on["val R²"].notna().any()
    unknown = "" if known else "; validation R² not known (no pruning history was given)"
    return f"On {backend} at batch {int(on['batch'].iloc[0])} (paired, 95 % CI): " + "; ".join(parts) + f"{unknown}."


def budget_sentence(histories: Sequence[History], budget: float | None) -> str:
    """Where pruning lost more validation R² than `budget` (the gate's max R² drop): how much, and the largest reduction
    among its rounds that stayed within it ('' when every history is within it, or there is no budget). The rounds
    are the history's stages, each with its reduction and validation R² (rolled-back rounds left out)."""
    if budget is None:
        return ""
    parts = []
    for history in histories:
        stages = history.kept
        counted = "nonzero_params" if "nonzero_params" in stages.columns else "params"
        dense, final = stages.iloc[0], stages.iloc[-1]
        drop = dense["val_r2"] - final["val_r2"]
        if len(stages) < 2 or not drop > budget:
            continue
        what = "parameters" if history.method == "structured" else "non-zero parameters"
        rounds = stages.iloc[1:].assign(reduction=1.0 - stages[counted].iloc[1:] / dense[counted],
                                        drop=dense["val_r2"] - stages["val_r2"].iloc[1:])
        within = rounds[rounds["drop"] <= budget]
        if within.empty:
            first = rounds.iloc[0]
            clause = (f"no round stayed within it (round {int(first['stage'])}, {first['reduction']:.0%} of the "
                      f"{what}, already lost {first['drop']:.4f})")
        else:
            best = within.loc[within["reduction"].idxmax()]
            clause = (f"the largest reduction within the budget was {best['reduction']:.0%} of the {what} "
                      f"(round {int(best['stage'])}, R² {best['val_r2']:.4f})")
        parts.append(f"{history.method} lost {drop:.4f} R² (budget {budget:g}); {clause}.")
    return " ".join(parts)


def _batches(batches: Iterable[object]) -> str:
    """'batch 1' or 'batches 1, 256' ('' for none known): the batches one reason held for, named once."""
    numbers = sorted({int(b) for b in batches if b is not None and not pd.isna(b)})
    return f"batch{'es' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}" if numbers else ""


def fastest_sentence(results: Results) -> str:
    """The fastest verified deployment at each machine's largest measured batch, or why there is none (each reason
    once, with the batches it held for)."""
    parts = []
    machines = results.runs["machine"].unique()
    for machine in machines:
        prefix = f"On {machine}, the" if len(machines) > 1 else "The"
        measured = results.fastest[results.fastest["machine"] == machine]
        if measured.empty:
            skipped = results.fastest_skipped[results.fastest_skipped["machine"] == machine]
            why = "; ".join(f"{reason} ({_batches(rows['batch'])})" if _batches(rows["batch"]) else str(reason)
                            for reason, rows in skipped.groupby("reason", sort=False, dropna=False))
            parts.append(f"{prefix} fastest verified deployment was not measured: {why or 'no batch was measured'}.")
            continue
        row = measured.loc[measured["batch"].astype(int).idxmax()]
        delta = row["val_r2_delta"]
        accuracy = "float32 parity" if delta is None or pd.isna(delta) else f"ΔR² {delta:+.4f}, within the budget"
        parts.append(f"{prefix} fastest verified deployment at batch {int(row['batch'])} is {row['variant']} on "
                     f"{row['backend']}: {row['latency_s'] * 1e3:.3g} ms, {row['speedup_vs_dense_fp32']:.2f}× dense "
                     f"float32 on {row['baseline_backend']} [{row['ci_low']:.2f}, {row['ci_high']:.2f}] "
                     f"(paired; {accuracy}){_bound_clause(row)}.")
    return " ".join(parts)


def _bound_clause(row: pd.Series) -> str:
    """How far the deployment is from the machine's limit: its FLOPs at its precision's measured GEMM ceiling."""
    fraction = pd.to_numeric(row.get("bound_fraction"), errors="coerce")
    clause = "" if pd.isna(fraction) else (
        f"; it reaches {fraction:.0%} of its compute bound, {row['compute_bound_s'] * 1e3:.3g} ms at the "
        f"{row['ceiling_precision']} GEMM ceiling of {row['ceiling_gflops']:,.0f} "
        f"{rate_unit(row['ceiling_precision'])}")
    profiled = row.get("time_by_operator")
    if isinstance(profiled, dict):
        clause += f"; by {profiled['profiler']}, {shares_text(profiled)}"
    return clause


def noise_sentences(results: Results) -> str:
    """Where the figures are noisy (`report.noise`): unstable speedups, an unstable fastest deployment, unverified
    cross-checks and the load the machine carried, each a sentence ending in a space ('' for none)."""
    parts = (unstable_clause(speedups(results)), fastest_clause(results.fastest), crosscheck_clause(results.checks),
             load_clause(results.benchmarks))
    return "".join(f"{part} " for part in parts if part)


def gate_verdict(gate: GateOutcome | None) -> str:
    """One sentence: the gate's verdict and what it judged (and what it could not), or that no gate judged these
    results."""
    if gate is None:
        return "Gate: not run on these results (spinn-export gate judges them)."
    checks = "; ".join(
        f"{r.variant} {r.rule}: {r.judged:.4f} against {r.threshold:g} (R² {r.variant_r2:.4f}, dense {r.dense_r2:.4f}; "
        f"{r.result})" if pd.isna(r.batch) else
        f"{r.variant} {r.rule} on {r.backend} at batch {r.batch}: {r.judged:.2f} against {r.threshold:.2f} ({r.result}"
        f"{', on an UNSTABLE measurement' if r.stability == 'UNSTABLE' else ''})"
        for r in gate.rows.itertuples())
    notes = "".join(f" {note[0].upper()}{note[1:]}." for note in gate.notes)
    return f"Gate {'passed' if gate.passed else 'FAILED'}: {checks}.{notes}"


def _kind(reason: str) -> tuple[str, str, str | None, int | None]:
    """A reason as (template, rest, label, batch): a one-word label before a colon (a backend) and a batch number
    become slots, and a trailing parenthesis (which variant, how to install) is dropped, so reasons that differ
    only there group together."""
    head, colon, rest = reason.partition(": ")
    if not colon:
        head, rest = "", reason
    label = head if head and not any(c.isspace() for c in head) else None
    batch = _BATCH.search(head)
    template = "{labels}" if label else _BATCH.sub("{batches}", head.replace("{", "{{").replace("}", "}}"))
    return template, _DETAIL.sub("", rest), label, int(batch.group(1)) if batch else None


def not_run_kinds(skipped: pd.DataFrame) -> pd.DataFrame:
    """`results.skipped` grouped by backend and reason: one row per kind (`kind`, the clause; `cases`), largest first.

    The reasons name a backend and a variant or a batch each; a reader wants what kinds of case were not run."""
    groups: dict[tuple[str, str], dict] = {}
    for reason, cases in zip(skipped["reason"].astype(str), skipped["cases"]):
        template, rest, label, batch = _kind(reason)
        group = groups.setdefault((template, rest), {"labels": {}, "batches": [], "cases": 0})
        if label:
            group["labels"][label] = None  # an ordered set
        group["batches"].append(batch)
        group["cases"] += 0 if pd.isna(cases) else int(cases)
    rows = []
    for (template, rest), group in groups.items():
        head = template.format(labels=", ".join(group["labels"]), batches=_batches(group["batches"]))
        rows.append({"kind": f"{head}: {rest}" if head else rest, "cases": group["cases"]})
    return (pd.DataFrame(rows, columns=["kind", "cases"]).sort_values("cases", ascending=False, kind="stable")
            .reset_index(drop=True))


def not_run_clause(results: Results) -> str:
    """How many cases were not run and what kinds they were, in one sentence ('' when every case ran)."""
    if results.skipped.empty:
        return ""
    kinds = not_run_kinds(results.skipped)
    shown = [f"{row.kind} ({row.cases})" for row in kinds.head(MAX_KINDS).itertuples()]
    rest = kinds.iloc[MAX_KINDS:]
    if not rest.empty:
        shown.append(f"{len(rest)} other kind(s) ({int(rest['cases'].sum())})")
    return (f"{int(kinds['cases'].sum())} case(s) were not run here (each reason is under \"Not run\"), by kind: "
            f"{'; '.join(shown)}.")


def export_clause(manifest: ManifestView | None) -> str:
    """What the export could not give the benchmark, in one sentence each: formats this machine cannot produce (a
    missing NNCF or OpenVINO, no native bf16), and accuracy-controlled int8 files whose target was not met ('' when
    neither)."""
    if manifest is None:
        return ""
    parts = []
    if manifest.unavailable:
        absent = "; ".join(f"{name} ({reason})" for name, reason in manifest.unavailable.items())
        parts.append(f"Not exported on this machine: {absent}.")
    artifacts = manifest.artifacts
    if "control_met" in artifacts:
        unmet = artifacts[artifacts["control_met"].eq(False)]
        parts += [f"{row.file}: accuracy control could not meet an R² drop of {row.control_max_r2_drop:g} on held-out "
                  f"training rows; the best drop reached with int8 GEMMs is {row.control_r2_drop:.4f} "
                  f"({int(row.int8_gemms)} of {int(row.gemms)} GEMMs in int8), and the file is never chosen unless "
                  "its validation R² is within the budget." for row in unmet.itertuples()]
    return " ".join(parts)


def summary_section(results: Results, summary: pd.DataFrame, gate: GateOutcome | None,
                    manifest: ManifestView | None = None, histories: Sequence[History] = ()) -> Section:
    """The answer first: headline, what pruning cost beyond the gate's accuracy budget, fastest deployment, gate, what
    the table shows, what was not exported and what was not run."""
    skipped = " ".join(part for part in (export_clause(manifest), not_run_clause(results)) if part)
    budget = budget_sentence(histories, None if gate is None else gate.max_r2_drop)
    return Section("summary", "Summary",
                   f"{headline(summary)}{' ' + budget if budget else ''} {fastest_sentence(results)} "
                   f"{noise_sentences(results)}{gate_verdict(gate)} Per backend at its largest "
                   "batch: the paired speedup over dense with its 95 % CI, validation R² and PDE residual RMS against "
                   "dense's (pruning history; a quantised file's R² as its export measured it), and the timed file's "
                   f"size and peak memory relative to dense's.{' ' + skipped if skipped else ''} Details follow.",
                   summary if not summary.empty else None)
