"""The main job's resumability: a stage reruns exactly when its inputs, parameters or outputs changed."""
import dataclasses
from pathlib import Path

import pytest

from spinn_export.errors import UserError
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.pipeline.config import RunConfig, UserModel
from spinn_export.pipeline.job import Source, default_policy, resolve_policy, stages
from spinn_export.pipeline.stages import Stage, run_stage
from spinn_export.task.data import builtin_dataset


def _stage(tmp_path: Path, calls: list[str], params: dict | None = None) -> Stage:
    source, product = tmp_path / "in.txt", tmp_path / "out.txt"

    def action() -> None:
        calls.append("ran")
        product.write_text(source.read_text().upper())

    return Stage("shout", (source,), params or {"level": 1}, (product,), action)


def test_stage_runs_once_then_is_reused(tmp_path):
    (tmp_path / "in.txt").write_text("a")
    calls: list[str] = []
    assert run_stage(_stage(tmp_path, calls), tmp_path, 1, 1) is True
    assert run_stage(_stage(tmp_path, calls), tmp_path, 1, 1) is False
    assert calls == ["ran"] and (tmp_path / "out.txt").read_text() == "A"


@pytest.mark.parametrize("change", ["input", "params", "output-edited", "output-deleted", "record-corrupt"])
def test_stage_reruns_when_anything_it_depends_on_changed(tmp_path, change):
    (tmp_path / "in.txt").write_text("a")
    calls: list[str] = []
    run_stage(_stage(tmp_path, calls), tmp_path, 1, 1)
    params = None
    if change == "input":
        (tmp_path / "in.txt").write_text("b")
    elif change == "params":
        params = {"level": 2}
    elif change == "output-edited":
        (tmp_path / "out.txt").write_text("tampered")
    elif change == "output-deleted":
        (tmp_path / "out.txt").unlink()
    else:
        (tmp_path / "stages" / "shout.json").write_text("{not json")
    assert run_stage(_stage(tmp_path, calls, params), tmp_path, 1, 1) is True
    assert calls == ["ran", "ran"]


def test_stage_that_fails_leaves_no_record(tmp_path):
    (tmp_path / "in.txt").write_text("a")

    def broken() -> None:
        raise UserError("boom")

    with pytest.raises(UserError):
        run_stage(Stage("broken", (tmp_path / "in.txt",), {}, (tmp_path / "out.txt",), broken), tmp_path, 1, 1)
    assert not (tmp_path / "stages" / "broken.json").exists()


def test_gate_policy_falls_back_when_the_project_policy_names_unmeasured_batches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.spinn_export.gate]\nvariant = "structured"\n'
        'rules = [{backend = "ort-cpu", batch = 64, min_speedup = 2.0}]\n')
    quick = resolve_policy(RunConfig(quick=True))
    assert [(r.backend, r.batch) for r in quick.rules] == [("ort-cpu", 8192)]
    full = resolve_policy(RunConfig())
    assert [(r.backend, r.batch, r.min_speedup) for r in full.rules] == [("ort-cpu", 64, 2.0)]


def test_the_builtin_job_keeps_its_stages_and_records_and_a_user_model_adds_its_files(tmp_path):
    """Without --model nothing changes (so earlier runs still resume); with it, import replaces training and
    the pruning stages also depend on the data and physics files and the model's description."""
    builtin = RunConfig(quick=True, out=tmp_path)
    plan = stages(builtin, Source(builtin_dataset(0, n_train=64, n_val=16, n_test=16)), default_policy(builtin))
    assert [s.name for s in plan] == ["train", "prune-structured", "prune-magnitude", "export", "bench", "report"]
    assert plan[1].inputs == (tmp_path / "dense.safetensors",)
    assert plan[1].params == builtin.prune("structured").to_dict() and builtin.round_to == 32
    assert builtin.command == f"spinn-export run --quick --out {tmp_path}"
    assert plan[-1].params == {"policy": dataclasses.asdict(default_policy(builtin))}  # its verdict is in the report

    user = UserModel(tmp_path / "m.pt", tmp_path / "d.csv", ("a", "b"), ("y",), physics="pde.py:residual")
    mine = RunConfig(out=tmp_path, model=user, round_to=None)
    files = (tmp_path / "d.csv", tmp_path / "pde.py")
    spec = MLPSpec(2, (4,), 1)
    plan = stages(mine, Source(builtin_dataset(0, n_train=64, n_val=16, n_test=16), mlp_network(spec), files),
                  default_policy(mine))
    assert (plan[0].name, plan[0].inputs, plan[0].params) == ("import", (tmp_path / "m.pt",), user.to_dict())
    assert plan[1].inputs == (tmp_path / "dense.safetensors", *files)
    assert plan[1].params["model"] == user.to_dict() and plan[2].params["model"]["physics"] == "pde.py:residual"
    assert mine.command.startswith(f"spinn-export run --model {tmp_path / 'm.pt'} --data {tmp_path / 'd.csv'} "
                                   "--inputs a,b --targets y --physics pde.py:residual")


def test_main_job_exports_and_benchmarks_every_precision_this_machine_can_produce():
    """Low-precision formats that are available join the defaults; one that is not (bf16 without native BF16) is
    left out with its reason, and the benchmark asks for the structured model in each exported precision."""
    from spinn_export.export.formats import formats, unavailable_formats
    from spinn_export.pipeline.config import main_formats, main_variants

    chosen = main_formats()
    for name, fmt in formats().items():
        if fmt.default:
            assert name in chosen
        elif fmt.precision != "fp32":
            assert (name in chosen) == (name not in unavailable_formats())
    assert "aoti" not in chosen  # slow and float32: opt-in
    variants = main_variants(chosen)
    precisions = {formats()[name].precision for name in chosen} - {"fp32"}
    assert {f"structured-{p}" for p in precisions} <= set(variants)
    assert not any(v.startswith(("dense-", "magnitude-masked-")) for v in variants)
    assert RunConfig().bench_args[RunConfig().bench_args.index("--variants") + 1] == ",".join(variants)
    assert RunConfig(quick=True).formats == "onnx"
