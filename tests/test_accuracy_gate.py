"""The gate's accuracy rule and the summary's accuracy sentences, on the tiny pipeline's real files.

A run whose pruned variant lost more validation R² than its budget fails (exit 1, with a "max R² drop" row that
carries both R² figures); a results file with no R² beside it is unusable input when the rule was asked for, and a
stated skip when the budget only came with the default policy file. The headline states R² beside the speedup.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spinn_export.errors import UserError
from spinn_export.pipeline.config import RunConfig
from spinn_export.pipeline.job import default_policy, resolve_policy
from spinn_export.report.gate import R2_RULE, GatePolicy, SpeedupRule, load_policy, run_gate
from spinn_export.report.results import load_history, load_results, speedups
from spinn_export.report.summary import budget_sentence, headline
from spinn_export.report.writer import build_report, summary_table

from .conftest import REPO, Pipeline, assert_clean_error, run_cli


def _run_folder(pipeline: Pipeline, tmp_path: Path, final_r2_drop: float | None = None) -> Path:
    """The main job's layout (bench.json beside prune-structured/history.json) from the pipeline's files; with
    `final_r2_drop`, the history's rounds lose R² evenly until the final one is that far below dense."""
    shutil.copy(pipeline.ort_json, tmp_path / "bench.json")
    history = json.loads((pipeline.structured_dir / "history.json").read_text())
    if final_r2_drop is not None:
        dense = history["stages"][0]["val_r2"]
        rounds = len(history["stages"]) - 1
        for stage in history["stages"][1:]:
            stage["val_r2"] = dense - final_r2_drop * stage["stage"] / rounds
    (tmp_path / "prune-structured").mkdir()
    (tmp_path / "prune-structured" / "history.json").write_text(json.dumps(history))
    return tmp_path / "bench.json"


def _speed_rule(pipeline: Pipeline) -> SpeedupRule:
    """A speed rule that holds (half the measured CI low), so only accuracy decides."""
    low = speedups(load_results([pipeline.ort_json])).set_index(["variant", "batch"]).loc[("structured", 256), "ci_low"]
    return SpeedupRule("ort-cpu", 256, low / 2)


def test_the_gate_fails_a_variant_that_lost_more_r2_than_its_budget(pipeline: Pipeline, tmp_path: Path) -> None:
    results = _run_folder(pipeline, tmp_path, final_r2_drop=0.05)
    dense = load_history(tmp_path / "prune-structured").stages["val_r2"].iloc[0]
    policy = GatePolicy(rules=(_speed_rule(pipeline),), max_r2_drop=0.01)
    failed = run_gate(results, policy)  # the histories beside the results, as the main job lays them out
    assert not failed.passed and failed.exit_code == 1
    row = failed.rows.set_index("rule").loc[R2_RULE]
    assert row["variant"] == "structured" and row["dense_r2"] == pytest.approx(dense)
    assert row["variant_r2"] == pytest.approx(dense - 0.05) and row["judged"] == pytest.approx(0.05)
    assert row["threshold"] == 0.01 and row["result"] == "FAIL"
    assert failed.rows.set_index("rule").loc["min speedup", "result"] == "pass"  # accuracy alone failed it
    assert run_gate(results, GatePolicy(rules=policy.rules, max_r2_drop=0.06)).exit_code == 0


def test_gate_cli_accuracy_rule_exit_codes_and_table(pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    results = _run_folder(pipeline, tmp_path / "run", final_r2_drop=0.05)
    rule = _speed_rule(pipeline)
    speed = f"{rule.backend}:{rule.batch}:{rule.min_speedup}"
    failed = run_cli("gate", str(results), "--min-speedup", speed, "--max-r2-drop", "0.01", cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    [row] = [line for line in failed.stdout.splitlines() if line.startswith(R2_RULE)]
    assert row.split()[-1] == "FAIL" and "0.05" in row and "0.01" in row and "structured" in row
    assert "FAILED" in failed.stdout.splitlines()[-1]
    passed = run_cli("gate", str(results), "--min-speedup", speed, "--max-r2-drop", "0.1", cwd=tmp_path)
    assert passed.returncode == 0 and [line.split()[-1] for line in passed.stdout.splitlines()[1:3]] == ["pass"] * 2


def test_no_r2_is_an_error_when_asked_for_and_a_stated_skip_for_the_default_policy(pipeline: Pipeline,
                                                                                   tmp_path: Path) -> None:
    alone = tmp_path / "bench.json"
    shutil.copy(pipeline.ort_json, alone)  # a bare benchmark run: no pruning history beside it
    rule = _speed_rule(pipeline)
    asked = run_cli("gate", str(alone), "--min-speedup", f"ort-cpu:256:{rule.min_speedup}", "--max-r2-drop", "0.01",
                    cwd=tmp_path)
    assert_clean_error(asked, "max R² drop 0.01", "no pruning history", "--history")
    assert asked.returncode == 2
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.spinn_export.gate]\nmax_r2_drop = 0.01\nrules = [{{backend = "ort-cpu", batch = 256, '
        f'min_speedup = {rule.min_speedup}}}]\n')
    default = run_cli("gate", str(alone), cwd=tmp_path)
    assert default.returncode == 0, default.stdout + default.stderr
    assert "max R² drop 0.01 not checked: no pruning history" in default.stdout
    explicit = run_cli("gate", str(alone), "--history", str(pipeline.structured_dir), cwd=tmp_path)
    assert explicit.returncode == 0 and R2_RULE in explicit.stdout  # --history: the rule is judged
    with pytest.raises(UserError, match="needs R²"):
        run_gate(alone, GatePolicy(rules=(rule,), max_r2_drop=0.01))


def test_runs_judge_accuracy_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_policy(RunConfig(quick=True)).max_r2_drop == RunConfig.max_r2_drop
    assert default_policy(RunConfig(max_r2_drop=0.2)).max_r2_drop == 0.2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.spinn_export.gate]\nrules = [{backend = "ort-cpu", batch = 8192, min_speedup = 2.0}]\n')
    assert resolve_policy(RunConfig(max_r2_drop=0.03)).max_r2_drop == 0.03  # a policy without one: the run's budget
    (tmp_path / "pyproject.toml").write_text(
        '[tool.spinn_export.gate]\nmax_r2_drop = 0.02\n'
        'rules = [{backend = "ort-cpu", batch = 8192, min_speedup = 2}]\n')
    assert resolve_policy(RunConfig()).max_r2_drop == 0.02  # the user's policy sets its own
    committed = load_policy(REPO / "pyproject.toml")
    assert committed is not None and committed.max_r2_drop is not None and 0 < committed.max_r2_drop <= 0.05


def test_the_headline_states_validation_r2_beside_the_speedup(pipeline: Pipeline) -> None:
    summary = summary_table([pipeline.ort_json], pipeline.manifest, [pipeline.structured_dir, pipeline.magnitude_dir])
    stages = load_history(pipeline.structured_dir).stages
    dense, final = stages["val_r2"].iloc[0], stages["val_r2"].iloc[-1]
    sentence = headline(summary)
    assert f"validation R² {final:.4f} against dense {dense:.4f}" in sentence
    assert f"{final - dense:+.4f}".replace("-", "\u2212") in sentence
    assert "validation R² not known" in headline(summary_table([pipeline.ort_json], None, []))


def test_the_summary_names_the_largest_reduction_within_the_budget(pipeline: Pipeline, tmp_path: Path) -> None:
    results = _run_folder(pipeline, tmp_path, final_r2_drop=0.2)  # round 1 loses 0.1, round 2 loses 0.2
    history = load_history(tmp_path / "prune-structured")
    stages = history.stages
    first = 1 - stages["nonzero_params"].iloc[1] / stages["nonzero_params"].iloc[0]
    sentence = budget_sentence([history], 0.15)
    assert sentence.startswith("structured lost 0.2000 R² (budget 0.15)")
    assert f"largest reduction within the budget was {first:.0%} of the parameters (round 1" in sentence
    assert "no round stayed within it" in budget_sentence([history], 0.05)
    assert budget_sentence([history], 0.25) == ""  # within the budget: nothing to say
    gate = run_gate(results, GatePolicy(rules=(_speed_rule(pipeline),), max_r2_drop=0.15))
    markdown = build_report([results], None, [tmp_path / "prune-structured"], tmp_path / "report",
                            gate=gate).markdown.read_text()
    assert sentence in markdown and "max R² drop: 0.2000 against 0.15" in markdown and "Gate FAILED" in markdown
