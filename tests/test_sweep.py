"""`spinn-export sweep` on a tiny model, end to end through the console: the real pareto.csv (one row per point, each
measured paired against dense on this machine), its front and plot, the report's Pareto section; every bad input is
one line and writes nothing."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest

from spinn_export.bench.backends import get_backend
from spinn_export.cli import main
from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint
from spinn_export.pipeline import executors as executors_module
from spinn_export.pipeline import sweep as sweep_module
from spinn_export.pipeline.points import DataSource, PointJob, PointOutput, SweepTarget, parse_targets
from spinn_export.pipeline.sweep import SweepConfig, plan_jobs, run_jobs, staged_directory
from spinn_export.prune.record import HistoryRecord, Stage
from spinn_export.report.pareto import COLUMNS, TITLE, load_sweep, pareto_optimal
from spinn_export.report.writer import build_report

from .conftest import Pipeline, run_cli
from .test_executors import COLUMNS as INPUTS
from .test_executors import SPEC, write_tiny

BATCH = 256
FAST = ["--rounds", "1", "--finetune-epochs", "1", "--batch", str(BATCH), "--paired-processes", "1",
        "--paired-cycles", "4"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    checkpoint, data = write_tiny(tmp_path_factory.mktemp("tiny"))
    return checkpoint, ["--data", str(data), "--inputs", ",".join(INPUTS), "--target-columns", "y"]


@pytest.fixture(scope="module")
def swept(tiny: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two targets, structured and magnitude at each, measured on ort-cpu: the real sweep, as a user runs it."""
    checkpoint, data = tiny
    out = tmp_path_factory.mktemp("sweeps") / "tiny"
    result = run_cli("sweep", str(checkpoint), "--targets", "0.3,0.6", *data, *FAST, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pareto front" in result.stdout and f"wrote {out}/pareto.csv" in result.stdout
    return out


@pytest.mark.slow
def test_pareto_csv_has_one_measured_row_per_point(swept: Path) -> None:
    frame = pd.read_csv(swept / "pareto.csv", dtype={"target": str, "widths": str})
    assert tuple(frame.columns) == COLUMNS
    assert sorted(zip(frame["target"], frame["method"])) == [("0.3", "magnitude"), ("0.3", "structured"),
                                                            ("0.6", "magnitude"), ("0.6", "structured")]
    dense = SPEC.flops_per_sample
    for _, row in frame.iterrows():
        history = json.loads((swept / "points" / f"{row['method']}-{row['target']}" / "history.json").read_text())
        final = history["stages"][-1]
        assert row["widths"] == " ".join(map(str, final["widths"])) and row["val_r2"] == pytest.approx(final["val_r2"])
        assert (row["params"], row["nonzero_params"]) == (final["params"], final["nonzero_params"])
        assert row["ci_low"] <= row["speedup"] <= row["ci_high"]
        assert (row["backend"], row["batch"]) == ("ort-cpu", BATCH)
        spec = SPEC.with_widths(tuple(map(int, row["widths"].split())))
        if row["method"] == "magnitude":  # same non-zeros as its structured twin, but full-size matrices
            assert spec == SPEC and row["flop_ratio"] == 1.0 and row["nonzero_params"] < row["params"]
        else:
            assert row["params"] == spec.params < SPEC.params
            assert row["flop_ratio"] == pytest.approx(dense / spec.flops_per_sample)
    host = socket.gethostname()
    assert set(frame["finetuned_on"]) == {host}
    assert frame["measured_on"].nunique() == 1 and frame["measured_on"].iloc[0].startswith(f"{host} (")


@pytest.mark.slow
def test_the_pareto_flags_mark_exactly_the_undominated_points_and_the_front_is_monotone(swept: Path) -> None:
    sweep = load_sweep(swept)
    assert sweep.dense is not None
    points = list(zip(sweep.points["speedup"], sweep.points["val_r2"]))
    rivals = [*points, (1.0, sweep.dense["val_r2"])]  # not pruning at all is a choice too
    for (speed, r2), optimal in zip(points, sweep.points["pareto_optimal"]):
        dominated = any(s >= speed and a >= r2 and (s, a) != (speed, r2) for s, a in rivals)
        assert optimal == (not dominated)
    front = sweep.front()
    assert front["speedup"].is_monotonic_increasing
    assert front["val_r2"].is_monotonic_decreasing  # faster along the front means less accurate, never more


def test_pareto_optimal_is_a_pure_function_of_speed_and_accuracy() -> None:
    assert pareto_optimal([1.0, 2.0, 1.5, 2.0, 0.9], [0.9, 0.8, 0.7, 0.8, 0.95]) == [True, True, False, True, True]
    assert pareto_optimal([0.95, 2.0], [0.9, 0.8], others=[(1.0, 0.92)]) == [False, True]  # dense beats the first
    assert pareto_optimal([], []) == []


@pytest.mark.slow
def test_the_sweep_directory_holds_the_plot_the_summary_and_what_prune_and_export_write(swept: Path) -> None:
    assert (swept / "pareto.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((swept / "sweep.json").read_text())
    assert summary["dense"]["params"] == SPEC.params and summary["backend"] == "ort-cpu"
    assert len(summary["points"]) == 4 and summary["paired"]["processes"] == 1
    manifest = json.loads((swept / "artifacts" / "manifest.json").read_text())
    assert sorted(a["model"] for a in manifest["artifacts"]) == ["dense", "magnitude-0.3", "magnitude-0.6",
                                                                   "structured-0.3", "structured-0.6"]
    for point in ("structured-0.3", "magnitude-0.6"):
        written = {p.name for p in (swept / "points" / point).iterdir()}
        assert {"history.json", "history.csv", "stage_1.safetensors"} <= written
    assert [p.name for p in swept.parent.iterdir() if p.name.startswith(".")] == []  # no temporary directory left


def test_the_report_gains_a_pareto_section_from_the_sweep(swept: Path, pipeline: Pipeline,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "report"
    paths = build_report([pipeline.ort_json], None, None, out, sweep=swept)
    table = pd.read_csv(out / "csv" / "pareto.csv")
    assert len(table) == 4 and set(table["Pareto-optimal"]) <= {"yes", "no"}
    assert (out / "pareto.png") in paths.pngs and TITLE in paths.markdown.read_text()
    assert f"--sweep {swept}" in paths.html.read_text()
    build_report([pipeline.ort_json], None, None, out)  # without the sweep: last time's Pareto files must go
    assert not (out / "pareto.png").exists() and not (out / "csv" / "pareto.csv").exists()


@pytest.mark.slow
def test_a_broken_sweep_directory_is_one_line(swept: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no pareto\.csv"):
        load_sweep(tmp_path)
    (tmp_path / "pareto.csv").write_text(pd.read_csv(swept / "pareto.csv").drop(columns="speedup").to_csv(index=False))
    with pytest.raises(UserError, match="lacks the columns speedup; rerun spinn-export sweep"):
        load_sweep(tmp_path)
    (tmp_path / "pareto.csv").write_bytes((swept / "pareto.csv").read_bytes())
    (tmp_path / "sweep.json").write_text("{half")
    with pytest.raises(UserError, match=r"sweep\.json is not a valid sweep summary"):
        load_sweep(tmp_path / "pareto.csv")


def test_targets_parse_as_parameter_fractions_and_latency_budgets() -> None:
    assert parse_targets(" 0.3, 0.685 ,lat:0.4") == (SweepTarget("params", 0.3), SweepTarget("params", 0.685),
                                                     SweepTarget("latency", 0.4))
    assert [t.text for t in parse_targets("0.5,lat:0.25")] == ["0.5", "lat:0.25"]


@pytest.mark.parametrize(("targets", "needle"), [
    ("0.3,1.2", "--targets: 1.2 is outside (0, 1)"),
    ("0", "--targets: 0 is outside (0, 1)"),
    ("lat:1.5", "--targets: lat:1.5 is outside (0, 1): a target is the fraction of dense's latency allowed"),
    ("nan", "outside (0, 1)"),
    ("0.3,,0.5", "has an empty entry"),
    ("0.3;0.5", "is neither a fraction nor a latency budget"),
    ("lat:", "is neither a fraction nor a latency budget"),
    (" , ", "--targets is empty"),
    ("0.5,0.50", "--targets names 0.5 twice"),
])
def test_malformed_targets_are_one_line(targets: str, needle: str) -> None:
    with pytest.raises(UserError) as error:
        parse_targets(targets)
    assert needle in str(error.value) and "\n" not in str(error.value)


def _unavailable_backend() -> str | None:
    return next((name for name in ("ort-cuda", "eager-cuda") if get_backend(name).unavailable_reason()), None)


@pytest.mark.parametrize(("flags", "needle"), [
    (["--targets", "0.3,1.2"], "outside (0, 1)"),
    (["--targets", "0.3,,0.5"], "empty entry"),
    (["--targets", "0.99"], "--targets 0.99: target 99.00% fewer params is impossible"),
    (["--method", "magnitude", "--targets", "lat:0.4"], "a latency budget needs --method structured"),
    (["--targets", "0.5", "--executor", "slurm"], "unknown executor 'slurm'"),
    (["--targets", "0.5", "--address", "tcp://127.0.0.1:8786"], "--address applies to a cluster executor"),
    (["--targets", "0.5", "--backend", "no-such-backend"], "unknown backend 'no-such-backend'"),
    (["--targets", "0.5", "--backend", "UNAVAILABLE"], "is unavailable:"),
    (["--targets", "0.5", "--paired-cycles", "1"], "paired measurement needs"),
    (["--targets", "0.5", "--executor", "MISSING"], "pip install 'spinn-export[ray]'"),
    (["--targets", "0.5", "--target-columns", ""], "--data needs both --inputs and --target-columns"),  # its name
])
def test_bad_input_is_one_line_and_writes_nothing(flags: list[str], needle: str, tiny: tuple[Path, list[str]],
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint, data = tiny
    if "UNAVAILABLE" in flags:
        backend = _unavailable_backend()
        if backend is None:
            pytest.skip("every CUDA backend is available here")
        flags = [backend if f == "UNAVAILABLE" else f for f in flags]
    if "MISSING" in flags:  # the engine is installed here: hide it, as on a machine without the extra
        monkeypatch.setattr(executors_module.importlib.util, "find_spec", lambda module: None)
        flags = ["ray" if f == "MISSING" else f for f in flags]
    out = tmp_path / "sweep"
    code = main(["sweep", str(checkpoint), *data, *FAST, *flags, "--out", str(out)])  # flags last: they win
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_directory_of_other_files_is_not_replaced(tiny: tuple[Path, list[str]], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint, data = tiny
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["sweep", str(checkpoint), "--targets", "0.5", *data, *FAST, "--out", str(tmp_path)])
    assert code == 2 and "holds files that are not a sweep's" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_staged_directory_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    final = tmp_path / "sweep"
    with pytest.raises(RuntimeError), staged_directory(final) as stage:
        (stage / "pareto.csv").write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    for content in ("first", "second"):  # a finished sweep replaces the previous one whole
        with staged_directory(final) as stage:
            (stage / "pareto.csv").write_text(content)
        assert (final / "pareto.csv").read_text() == content and [p.name for p in tmp_path.iterdir()] == ["sweep"]


def test_points_whose_pruning_times_latencies_are_fine_tuned_here_one_at_a_time(
        tiny: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint, data_flags = tiny
    data = DataSource.of(data_flags[1], data_flags[3], data_flags[5], None, 0)
    config = SweepConfig(parse_targets("lat:0.6,lat:0.4"), executor="ray", backend="ort-cpu", batch=BATCH)
    jobs = plan_jobs(config, load_checkpoint(checkpoint), checkpoint.read_bytes(), data, data.load())
    assert [job.name for job in jobs] == ["structured-lat0.6", "structured-lat0.4"]  # no magnitude twin: ~1.0x anyway
    assert {job.config.measured_on for job in jobs} == {("ort-cpu", BATCH)}
    assert [job.config.target.to_dict()["latency_ratio"] for job in jobs] == [0.6, 0.4]
    ran: list[tuple[str, int]] = []

    def fine_tune_here(job: PointJob) -> PointOutput:
        ran.append((job.name, os.getpid()))
        stage = Stage(1, (8, 8), 100, 100, 200, 0.5, 0.1, None, "stage_1.safetensors", 0.1)
        history = HistoryRecord("structured", {}, {}, None, None, 0.1, {}, (stage,)).to_dict()
        return PointOutput(job.name, (("history.json", json.dumps(history).encode()),), socket.gethostname(), 0.1)

    monkeypatch.setattr(sweep_module, "finetune_point", fine_tune_here)
    monkeypatch.setattr(executors_module.importlib.util, "find_spec", lambda module: None)  # no engine is started
    lines: list[str] = []
    outputs = run_jobs(jobs, config, lines.append)
    assert ran == [("structured-lat0.6", os.getpid()), ("structured-lat0.4", os.getpid())]
    assert [output.name for output in outputs] == ["structured-lat0.6", "structured-lat0.4"]
    assert lines[0] == "fine-tuning structured-lat0.6 here (its pruning times latencies: nothing else runs meanwhile)"


def test_a_worker_rebuilds_the_data_and_physics_from_absolute_paths(tiny: tuple[Path, list[str]], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pde.py").write_text(
        "import torch\n\n\ndef residual(model, inputs):\n"
        "    grad = torch.autograd.grad(model(inputs).sum(), inputs, create_graph=True)[0]\n"
        "    return grad[:, 0] - torch.cos(inputs[:, 0])\n")
    (tmp_path / "data.csv").write_bytes(Path(tiny[1][1]).read_bytes())
    monkeypatch.chdir(tmp_path)
    source = DataSource.of("data.csv", "a,b,c,d", "y", "pde.py:residual", 0)
    assert (source.data, source.physics) == (str(tmp_path / "data.csv"), f"{tmp_path / 'pde.py'}:residual")
    assert DataSource.of(None, None, None, "my_module:residual", 0).physics == "my_module:residual"  # importable
    # a path is made absolute whether or not the file exists, as load_physics decides (its error then names it)
    assert DataSource.of(None, None, None, "lib/pde.py:residual", 0).physics == f"{tmp_path / 'lib/pde.py'}:residual"
    monkeypatch.chdir(tmp_path.parent)  # a worker's directory is its own
    dataset = source.load()
    assert dataset.input_names == ("a", "b", "c", "d") and dataset.physics is not None
