"""The gate: rule logic on frames built here, the CLI's exit codes on real benchmark JSON."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from spinn_export.errors import UserError
from spinn_export.report.gate import GatePolicy, SpeedupRule, evaluate, load_policy, parse_min_speedup, run_gate
from spinn_export.report.results import load_results, speedups

from .conftest import REPO, Pipeline, assert_clean_error, run_cli


def _speedups(*rows: tuple[str, int, float, float]) -> pd.DataFrame:
    """Speedup frames as results.speedups builds them: (backend, batch, paired speedup, its CI low)."""
    return pd.DataFrame([{
        "machine": "m", "backend": backend, "batch": batch, "variant": "structured", "speedup": speedup,
        "ci_low": low, "source": "interleaved",
    } for backend, batch, speedup, low in rows])


def test_minimum_is_judged_on_the_paired_ci_low() -> None:
    current = _speedups(("ort-cpu", 8192, 2.0, 1.4), ("eager-cpu", 8192, 1.7, 1.6))
    policy = GatePolicy("structured", (SpeedupRule("ort-cpu", 8192, 1.5), SpeedupRule("eager-cpu", 8192, 1.5)))
    outcome = evaluate(current, policy)
    rows = outcome.rows.set_index("backend")
    assert rows.loc["ort-cpu", "judged"] == 1.4 and rows.loc["ort-cpu", "result"] == "FAIL"  # median 2.0 is not enough
    assert rows.loc["eager-cpu", "judged"] == 1.6 and rows.loc["eager-cpu", "result"] == "pass"
    assert not outcome.passed and outcome.exit_code == 1
    relaxed = evaluate(current, GatePolicy("structured", (SpeedupRule("ort-cpu", 8192, 1.4),)))
    assert relaxed.passed and relaxed.exit_code == 0 and list(relaxed.rows["result"]) == ["pass"]


def test_drop_is_relative_to_the_baseline_speedup_for_every_baseline_point() -> None:
    baseline = _speedups(("ort-cpu", 1, 1.2, 1.1), ("ort-cpu", 8192, 2.5, 2.3))
    current = _speedups(("ort-cpu", 1, 1.2, 1.1), ("ort-cpu", 8192, 2.0, 1.9))
    failing = evaluate(current, GatePolicy(max_drop=0.1), baseline)
    rows = failing.rows.set_index("batch")
    assert rows.loc[8192, "judged"] == pytest.approx(0.2) and rows.loc[8192, "result"] == "FAIL"
    assert rows.loc[1, "judged"] == 0.0 and rows.loc[1, "result"] == "pass"
    assert failing.exit_code == 1
    assert evaluate(current, GatePolicy(max_drop=0.25), baseline).exit_code == 0


@pytest.mark.parametrize("rule, needle", [
    (SpeedupRule("ort-cuda", 8192, 1.0), "backend ort-cuda is not in"),
    (SpeedupRule("ort-cpu", 4096, 1.0), "batch 4096 on ort-cpu is not in"),
])
def test_a_rule_on_a_backend_or_batch_that_was_not_measured_is_unusable_input(rule: SpeedupRule, needle: str) -> None:
    with pytest.raises(UserError, match=needle) as error:
        evaluate(_speedups(("ort-cpu", 8192, 2.0, 1.9)), GatePolicy(rules=(rule,)))
    assert error.value.exit_code == 2
    with pytest.raises(UserError, match="batch 1 on ort-cpu"):  # a baseline point missing from the results
        evaluate(_speedups(("ort-cpu", 8192, 2.0, 1.9)), GatePolicy(max_drop=0.1), _speedups(("ort-cpu", 1, 1.0, 0.9)))


def test_policy_parsing_and_validation(tmp_path: Path) -> None:
    assert parse_min_speedup("ort-cpu:8192:1.5") == SpeedupRule("ort-cpu", 8192, 1.5)
    for bad in ("ort-cpu:8192", "ort-cpu:big:1.5", "ort-cpu:8192:-1", ":8192:1.5"):
        with pytest.raises(UserError):
            parse_min_speedup(bad)
    with pytest.raises(UserError, match="max_drop"):
        GatePolicy(max_drop=1.5)
    with pytest.raises(UserError, match="nothing to check"):
        evaluate(_speedups(("ort-cpu", 8192, 2.0, 1.9)), GatePolicy(max_drop=0.1))  # a drop needs a baseline
    policy_file = tmp_path / "gate.toml"
    policy_file.write_text('[tool.spinn_export.gate]\nvariant = "magnitude"\nmax_drop = 0.2\n'
                           'rules = [{backend = "ort-cpu", batch = 64, min_speedup = 1.1}]\n')
    assert load_policy(policy_file) == GatePolicy("magnitude", (SpeedupRule("ort-cpu", 64, 1.1),), 0.2)
    policy_file.write_text('[tool.spinn_export.gate]\nrules = [{backend = "ort-cpu", batch = 64}]\n')
    with pytest.raises(UserError, match="bad gate rule"):
        load_policy(policy_file)
    policy_file.write_text("[tool.spinn_export.gate\n")
    with pytest.raises(UserError, match="cannot read the gate policy"):
        load_policy(policy_file)


def test_the_committed_policy_is_valid_and_names_a_benchmarked_backend() -> None:
    policy = load_policy(REPO / "pyproject.toml")
    assert policy is not None and policy.rules and policy.max_drop is not None
    assert all(rule.min_speedup >= 1.0 for rule in policy.rules)  # a gate that demands a real speedup


def test_run_gate_on_real_results_uses_the_paired_measurement(pipeline: Pipeline) -> None:
    measured = speedups(load_results([pipeline.ort_json])).set_index(["variant", "batch"])
    low = measured.loc[("structured", 256), "ci_low"]
    just_below = GatePolicy("structured", (SpeedupRule("ort-cpu", 256, low * 0.999),))
    just_above = GatePolicy("structured", (SpeedupRule("ort-cpu", 256, low * 1.001),))
    assert run_gate(pipeline.ort_json, just_below).exit_code == 0
    assert run_gate(pipeline.ort_json, just_above).exit_code == 1
    same = run_gate(pipeline.ort_json, GatePolicy(max_drop=0.0), baseline=pipeline.ort_json)
    assert same.passed and (same.rows["judged"] == 0.0).all() and len(same.rows) == 2


def test_gate_cli_exit_codes(pipeline: Pipeline, tmp_path: Path) -> None:
    results = str(pipeline.ort_json)
    low = speedups(load_results([pipeline.ort_json])).set_index(["variant", "batch"]).loc[("structured", 256), "ci_low"]
    (tmp_path / "pyproject.toml").write_text(  # the default policy file: pyproject.toml in the current directory
        f'[tool.spinn_export.gate]\nrules = [{{backend = "ort-cpu", batch = 256, min_speedup = {low * 1.01}}}]\n')
    failed = run_cli("gate", results, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    [row] = [line.split() for line in failed.stdout.splitlines() if line.endswith("FAIL")]  # the one failing rule
    assert {"ort-cpu", "256", f"{low:.4g}", f"{low * 1.01:.4g}"} <= set(row)  # its backend, batch, CI low, minimum
    verdict = failed.stdout.splitlines()[-1]
    assert "FAILED" in verdict and re.findall(r"\d+", verdict) == ["1"]  # the count of rules that fall short

    passed = run_cli("gate", results, "--min-speedup", f"ort-cpu:256:{low * 0.99}", "--baseline", results,
                     "--max-drop", "0.0", cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert [line.split()[-1] for line in passed.stdout.splitlines()[1:4]] == ["pass"] * 3
    verdict = passed.stdout.splitlines()[-1]
    assert "passed" in verdict and "FAIL" not in passed.stdout and "structured" in verdict  # the variant judged

    assert_clean_error(run_cli("gate", results, "--min-speedup", "ort-cpu:8192:1.5", cwd=tmp_path),
                       "batch 8192 on ort-cpu is not in")
