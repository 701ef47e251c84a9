"""Two checks of the fastest deployment's figures, as report sections: its distance to a like-for-like limit
(`spinn.fastest[].same_kernel`, `bench.bound`) and the outside timer's verdict (`bench/outside_timer.py`'s JSON,
given with `--outside-timer`). Read only; every value comes from those files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from spinn_export.bench.record import OUTSIDE_SCHEMA
from spinn_export.errors import UserError
from spinn_export.records import read_json
from spinn_export.report.render import Section
from spinn_export.report.results import Results

BOUND_TITLE = "Distance to the limit, like for like"
OUTSIDE_TITLE = "Outside timer"
PARTS = ("floor_s", "quantise_s", "gemm_s", "activation_s", "other_s")  # as `bench.bound.PARTS`


def bound_section(results: Results) -> Section | None:
    """Per batch, the fastest deployment's share of the square-GEMM ceiling and of its same-kernel, same-shape bound,
    and how its time splits; None where no entry carries the bound (results written before it)."""
    frame = results.fastest
    if frame.empty or "same_kernel" not in frame or not frame["same_kernel"].map(lambda e: isinstance(e, dict)).any():
        return None
    rows = []
    for _, row in frame.iterrows():
        entry = row["same_kernel"] if isinstance(row["same_kernel"], dict) else {"reason": "not recorded"}
        out: dict[str, Any] = {"machine": row["machine"], "batch": row["batch"], "variant": row["variant"],
                               "backend": row["backend"], "% of the square-GEMM ceiling":
                               pd.to_numeric(row.get("bound_fraction"), errors="coerce") * 100}
        if "reason" in entry:
            rows.append({**out, "not measured": entry["reason"]})
            continue
        total = entry["split"]["latency_s"]
        out |= {"bound holds": _holds(entry["ci_low"]),
                "% of the same-kernel bound": entry["share"] * 100, "low % (95 %)": entry["ci_low"] * 100,
                "high % (95 %)": entry["ci_high"] * 100, "same-kernel bound ms": entry["bound_s"] * 1e3,
                **{f"{part.removesuffix('_s')} %": entry["split"][part] / total * 100 for part in PARTS},
                "% floor + compute": entry["floor_compute_share"] * 100,
                "floor µs by backend": ", ".join(f"{b} {s * 1e6:.1f}" for b, s in entry.get("floors", {}).items()),
                "layers": "; ".join(layer["shape"] for layer in entry["layers"])}
        rows.append(out)
    return Section("limits", BOUND_TITLE,
                   "The fastest deployment against the square-GEMM ceiling (the best library's 1024³ GEMM), and "
                   "against its own kernels at its own shapes: one-layer models cut from the deployed file (int8: "
                   "with the quantisation of their input), compiled by the same backend with the same settings and "
                   "timed in rounds interleaved with it. The same-kernel bound is one call's floor (an empty model's "
                   "call), each layer's GEMM (its GEMM-only model less its quantiser) and the quantisers no kernel "
                   "before them can run (the graph input's, and every dynamic one; a static quantiser of a layer's "
                   "output may run fused in the GEMM before it); the split (floor, quantise, gemm, activation, other "
                   "= the rest, negative where the deployment fuses what the layers run apart) sums to its latency.",
                   pd.DataFrame(rows))


def _holds(share_ci_low: float) -> str:
    """Whether the same-kernel figure is a bound at all: a deployment measured faster than its own one-layer models
    (share above 100 % at the CI's low end) fuses what they run apart (OpenVINO's int8 requantisation), so their sum
    is not a limit it can approach; said here, so no one reads 160 % as 'beyond the hardware'."""
    if share_ci_low <= 1.0:
        return "yes"
    return "no: the deployment is faster than its one-layer models together (it fuses what they run apart)"


def load_outside_timer(path: str | Path) -> dict[str, Any]:
    """The outside timer's JSON; UserError if it is not one."""
    data = read_json(path, OUTSIDE_SCHEMA)
    if not isinstance(data, dict) or data.get("kind") != "outside-timer":
        raise UserError(f"{path} is not an outside-timer result: {OUTSIDE_SCHEMA.rewrite}")
    OUTSIDE_SCHEMA.version_of(data, path)  # both versions hold the same fields; a newer or unknown one is refused
    return data


def outside_section(data: dict[str, Any]) -> Section:
    """The outside timer's ratio per tool beside the suite's paired figure, and whether they agree."""
    suite = data["suite"]
    table = pd.DataFrame([{"tool": tool, "batch": data["batch"], "variant": data["variant"],
                           "backend": data["backend"], "ratio over dense fp32 (median of rounds)": entry["ratio"],
                           "rounds": ", ".join(f"{r:.2f}" for r in entry["ratios"]), "suite's paired": suite["speedup"],
                           "suite CI low": suite["ci_low"], "suite CI high": suite["ci_high"],
                           "difference %": entry["difference"] * 100, "verdict": entry["verdict"]}
                          for tool, entry in data["tools"].items()])
    verdict = (f"they agree within {data['tolerance']:.0%}" if data["agree"] else
               f"they do not agree within {data['tolerance']:.0%}")
    return Section("outside_timer", OUTSIDE_TITLE,
                   f"The fastest deployment and dense float32 timed outside the suite's harness, by the runtimes' own "
                   f"tools (OpenVINO's benchmark_app; a plain ONNX Runtime loop for dense float32 and ONNX Runtime "
                   f"deployments), {len(data['rounds'])} alternating rounds of {data['seconds']:g} s, "
                   f"{data['threads']} threads, on {data['machine']} ({data['date']}): {verdict} with the suite's "
                   "paired figure.", table)
