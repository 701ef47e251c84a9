"""Noise flagged where it is read: the unstable verdict on synthetic samples, the gate's wording on an unstable case,
the timing cross-check's re-measure-then-flag decision with a fake measurer, the machine's load recorded per case, and
results written before any of it still loading. Nothing here depends on how busy the machine is."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinn_export.bench.crosscheck import AGREES, AGREES_REMEASURED, DISTORTS, UNVERIFIED, cross_check
from spinn_export.bench.load import Counters, LoadSample, between, combined, load_text, read_counters
from spinn_export.bench.paired import PairedResult, summarize
from spinn_export.bench.stability import process_medians, stability
from spinn_export.defaults import TIMEIT_FAULT_BOUND, TIMEIT_REMEASURES, TIMEIT_TOLERANCE, UNSTABLE_SPREAD
from spinn_export.pipeline.job import RunOutcome, format_summary
from spinn_export.report.gate import GatePolicy, SpeedupRule, evaluate, run_gate
from spinn_export.report.results import load_results, speedups
from spinn_export.report.summary import gate_verdict
from spinn_export.report.writer import build_report, summary_table

from .conftest import Pipeline

RNG = np.random.default_rng(0)


def _processes(*medians: float, cycles: int = 16, noise: float = 0.01) -> list[list[float]]:
    """Synthetic cycle ratios: one process per median, each cycle within `noise` of it."""
    return [list(m * (1 + noise * RNG.standard_normal(cycles))) for m in medians]


def _verdict(ratios: list[list[float]]):  # type: ignore[no-untyped-def]
    median, low, high = summarize(ratios)
    return stability(median, low, high, process_medians(ratios))


def test_agreeing_processes_with_a_tight_ci_are_stable() -> None:
    verdict = _verdict(_processes(2.0, 2.0, 2.0, 2.0))
    assert not verdict.unstable and verdict.reasons == () and verdict.to_dict()["unstable_reason"] is None
    assert verdict.ci_half_width < 0.02 and verdict.threshold == UNSTABLE_SPREAD


def test_a_ci_wider_than_the_threshold_is_unstable_with_its_width() -> None:
    verdict = _verdict(_processes(2.0, 2.0, 2.0, 2.0, noise=0.4))  # a busy machine: +-40 % per cycle
    assert verdict.unstable and verdict.ci_half_width > UNSTABLE_SPREAD
    assert "95 % CI spans ±" in verdict.reasons[0] and "threshold ±10 %" in verdict.reasons[0]
    # the figure: 10.35x [7.13, 12.91] is ±27.9 %
    assert stability(10.35, 7.13, 12.91).to_dict()["unstable_reason"].startswith("its 95 % CI spans ±27.9 %")
    assert stability(10.0, 9.5, 10.5).unstable is False  # +-5 %
    assert stability(float("nan"), float("nan"), float("nan")).unstable  # no figure is not a stable one


def test_one_disagreeing_process_is_flagged_though_the_pooled_ci_stays_narrow() -> None:
    """Seven processes at 2.0x, one at 2.5x: the pooled median and its CI barely move (the odd process is rarely
    drawn often enough to shift a median), but the processes disagree by +-12 %: unstable, for that reason only."""
    verdict = _verdict(_processes(*[2.0] * 7, 2.5))
    assert verdict.ci_half_width < UNSTABLE_SPREAD < verdict.process_spread
    assert verdict.unstable and len(verdict.reasons) == 1 and "processes' own medians spread" in verdict.reasons[0]
    assert _verdict(_processes(2.0)).process_spread is None  # one process: nothing to disagree


def test_a_paired_result_records_its_verdict_and_load_in_its_dict() -> None:
    load = LoadSample(2.0, 3.5, 2, 0.4, 0.0).to_dict()
    result = PairedResult("ort-cpu", 8192, "structured", "dense", 2.0, 1.5, 2.5, 4, 64, 3.1,
                          process_medians=(1.9, 2.0, 2.1, 2.0), load=load)
    entry = result.to_dict()
    assert entry["unstable"] is True and "±25.0 %" in entry["unstable_reason"] and entry["load"] == load
    assert entry["process_medians"] == (1.9, 2.0, 2.1, 2.0) and entry["process_spread"] == pytest.approx(0.05)


def _rows(unstable: object, reason: str | None = None) -> pd.DataFrame:
    return pd.DataFrame([{"machine": "m", "backend": "ort-cpu", "batch": 8192, "variant": "structured",
                          "speedup": 2.0, "ci_low": 1.6, "source": "abba", "unstable": unstable,
                          "unstable_reason": reason}])


@pytest.mark.parametrize("minimum, word", [(1.5, "passed"), (1.8, "FAILED")])
def test_the_gate_judges_the_ci_low_and_says_it_judged_an_unstable_case(minimum: float, word: str) -> None:
    reason = "its 95 % CI spans ±20 % of the median (threshold ±10 %)"
    outcome = evaluate(_rows(True, reason), GatePolicy("structured", (SpeedupRule("ort-cpu", 8192, minimum),)))
    row = outcome.rows.iloc[0]
    assert row["judged"] == 1.6 and row["stability"] == "UNSTABLE"  # still the CI's low end, as ever
    assert outcome.passed is (word == "passed")
    assert outcome.notes == (f"structured min speedup on ort-cpu at batch 8192 {word} on an UNSTABLE measurement "
                             f"({reason}): rerun it on a quieter machine to confirm",)
    verdict = gate_verdict(outcome)
    assert "on an UNSTABLE measurement" in verdict and reason in verdict


def test_the_gate_is_silent_on_a_stable_case_and_says_not_recorded_for_old_results() -> None:
    policy = GatePolicy("structured", (SpeedupRule("ort-cpu", 8192, 1.5),))
    stable = evaluate(_rows(False), policy)
    assert stable.notes == () and stable.rows.iloc[0]["stability"] == "stable"
    old = evaluate(_rows(None).drop(columns=["unstable", "unstable_reason"]), policy)
    assert old.notes == () and old.rows.iloc[0]["stability"] == "not recorded" and old.passed


def test_a_drop_names_which_of_the_two_figures_is_unstable() -> None:
    baseline = _rows(True, "wide")
    outcome = evaluate(_rows(False), GatePolicy(max_drop=0.1), baseline)
    assert outcome.rows.iloc[0]["stability"] == "UNSTABLE" and "(baseline: wide)" in outcome.notes[0]


class FakeMeasurer:
    """Hands out prepared (suite, reference) medians and counts the re-measurements asked for."""

    def __init__(self, *ratios: float) -> None:
        self.medians = [(r * 1e-3, 1e-3) for r in ratios]
        self.calls = 0

    def __call__(self) -> tuple[float, float]:
        self.calls += 1
        return self.medians.pop(0)


def test_an_agreeing_cross_check_is_not_measured_again() -> None:
    fake = FakeMeasurer()
    check = cross_check((1.05e-3, 1e-3), fake)
    assert check.verdict == AGREES and fake.calls == 0 and not check.failed and not check.flagged


def test_a_disagreement_that_vanishes_on_re_measurement_agrees() -> None:
    fake = FakeMeasurer(1.25, 1.03, 1.4)
    check = cross_check((1.236e-3, 1e-3), fake)  # the issue's +23.6 %
    assert check.verdict == AGREES_REMEASURED and fake.calls == 2 and not check.failed
    assert check.ratios == pytest.approx((1.236, 1.25, 1.03))


@pytest.mark.parametrize("again", [(1.15, 0.85, 1.3), (1.3, 1.3, 1.15), (0.7, 1.3, 1.4)])
def test_noise_that_no_re_measurement_settles_is_flagged_not_failed(again: tuple[float, ...]) -> None:
    """Alternating signs, or a disagreement that does not stay beyond the fault bound: a busy machine."""
    fake = FakeMeasurer(*again)
    check = cross_check((1.236e-3, 1e-3), fake)
    assert check.verdict == UNVERIFIED and check.flagged and not check.failed and fake.calls == TIMEIT_REMEASURES
    entry = check.to_dict()
    assert entry["ratio"] == pytest.approx(1.236) and entry["flagged"] and len(entry["remeasured"]) == len(again)
    assert "us against timeit's" in check.describe("ort-cpu dense batch 8192") and "unverified" in check.describe("x")


@pytest.mark.parametrize("sign", [1, -1])
def test_a_distortion_every_re_measurement_confirms_on_one_side_is_a_harness_fault(sign: int) -> None:
    off = 1 + sign * (TIMEIT_FAULT_BOUND + 0.05)
    check = cross_check((off * 1e-3, 1e-3), FakeMeasurer(off, off, off))
    assert check.verdict == DISTORTS and check.failed and not check.flagged
    assert check.describe("ort-cpu dense batch 256").endswith("the harness distorts the timing")
    assert TIMEIT_TOLERANCE < TIMEIT_FAULT_BOUND  # a fault must be beyond what merely disagrees


def test_load_shares_come_from_the_counters_and_combine_by_duration() -> None:
    start, end = Counters(0.0, 1000, 400, 0, 100), Counters(1.0, 1200, 420, 20, 160)
    sample = between(start, end, 1.0, 3.0, 2)  # 200 ticks: 20 idle, 20 stolen, 60 ours, so 100 others'
    assert sample.others == pytest.approx(0.5) and sample.steal == pytest.approx(0.1)
    assert between(None, end, 1.0, None, 2) == LoadSample(1.0, None, 2, None, None)
    merged = combined([sample, LoadSample(3.0, 1.0, 2, 0.1, 0.0)])
    assert merged.others == pytest.approx((0.5 + 3 * 0.1) / 4) and merged.loadavg == 3.0 and merged.seconds == 4.0
    assert load_text(sample.to_dict()) == ("load average 3.0 on 2 CPUs; 50% of the CPU time to other processes; "
                                           "10% stolen by the hypervisor")


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the load shares are read from Linux's /proc")
def test_this_process_trees_own_work_is_counted_as_ours() -> None:
    before = read_counters()
    spent = time.process_time()
    while time.process_time() - spent < 0.1:  # CPU time, however long the machine makes it take
        pass
    after = read_counters()
    assert before is not None and after is not None
    assert after.ours - before.ours >= 0.05 * os.sysconf("SC_CLK_TCK")


def test_the_tiny_pipeline_records_load_verdicts_and_cross_checks(pipeline: Pipeline, tmp_path: Path) -> None:
    data = json.loads(pipeline.ort_json.read_text())
    keys = {"seconds", "loadavg", "cpus", "others", "steal"}
    for bench in data["benchmarks"]:
        assert set(bench["extra_info"]["load"]) == keys, bench["name"]
        if bench["extra_info"].get("check") == "timeit":
            assert bench["extra_info"]["verdict"] and bench["extra_info"]["ratios"]
    for entry in data["spinn"]["paired"] + data["spinn"]["fastest"]:
        assert isinstance(entry["unstable"], bool) and set(entry["load"]) == keys
        assert (entry["unstable_reason"] is not None) == entry["unstable"]
    frame = speedups(load_results([pipeline.ort_json]))
    assert frame["unstable"].isin([True, False]).all() and frame["others_cpu"].notna().all()
    paths = build_report([pipeline.ort_json], None, None, tmp_path)
    speedup = pd.read_csv(paths.csv_dir / "speedup.csv")
    assert set(speedup["stability"].str.split(":").str[0]) <= {"stable", "UNSTABLE"} and "others' CPU" in speedup
    assert {"load avg", "others' CPU"} <= set(pd.read_csv(paths.csv_dir / "latency.csv").columns)
    assert "verdict" in pd.read_csv(paths.csv_dir / "crosscheck.csv").columns
    summary = paths.markdown.read_text().split("## ")[1]
    assert "Machine load while measuring" in summary and ("UNSTABLE" in summary or "is stable" in summary)
    gate = run_gate(pipeline.ort_json, GatePolicy(rules=(SpeedupRule("ort-cpu", 256, 0.1),)))
    printed = format_summary(RunOutcome(tmp_path / "report.html", pipeline.ort_json, gate,
                                        summary_table([pipeline.ort_json], None, [])))
    assert "Machine load while measuring" in printed and "stability" in printed  # the main job's console


def _strip(value: object, fields: set[str]) -> object:
    if isinstance(value, dict):
        return {k: _strip(v, fields) for k, v in value.items() if k not in fields}
    return [_strip(v, fields) for v in value] if isinstance(value, list) else value


def test_results_written_before_the_verdict_and_the_load_still_load(pipeline: Pipeline, tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    fields = {"load", "unstable", "unstable_reason", "process_spread", "unstable_threshold", "process_medians",
              "verdict", "ratios", "remeasured", "flagged", "tolerance", "fault_bound", "speedup_unstable",
              "speedup_unstable_reason", "speedup_process_spread", "speedup_unstable_threshold"}
    old.write_text(json.dumps(_strip(json.loads(pipeline.ort_json.read_text()), fields)))
    assert "unstable" not in old.read_text() and '"load"' not in old.read_text()
    frame = speedups(load_results([old]))
    assert frame["unstable"].isna().all() and frame["others_cpu"].isna().all()
    paths = build_report([old], None, None, tmp_path / "report")
    assert set(pd.read_csv(paths.csv_dir / "speedup.csv")["stability"]) == {"not recorded"}
    assert "load avg" not in pd.read_csv(paths.csv_dir / "latency.csv").columns
    summary = paths.markdown.read_text().split("## ")[1]
    assert "Stability: not recorded (these results predate the unstable flag" in summary
    assert "Machine load" not in summary
    batch = int(frame[frame["variant"] == "structured"]["batch"].max())
    outcome = run_gate(old, GatePolicy("structured", (SpeedupRule("ort-cpu", batch, 0.01),)))
    assert outcome.rows.iloc[0]["stability"] == "not recorded" and outcome.notes == ()
