"""User physics (`--physics`): loaded from a file or a module, checked once up front, and used wherever the
built-in task's residual is: the fine-tuning loss, Taylor importance and the residual RMS of every stage."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spinn_export.cli import main
from spinn_export.model.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.importance import unit_scores
from spinn_export.task.data import builtin_dataset, load_user_dataset
from spinn_export.task.metrics import RESIDUAL_POINTS, evaluate
from spinn_export.task.physics import BUILTIN, load_physics
from spinn_export.task.stokes import STOKES
from spinn_export.task.train import TrainConfig, train

from .user_problem import INPUTS, PHYSICS, TARGETS, Exact, UserProblem, user_mlp, write_problem

SMALL = MLPSpec(len(INPUTS), (12, 10), len(TARGETS), "silu")


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory) -> UserProblem:
    return write_problem(tmp_path_factory.mktemp("problem"), rows=600, fit_steps=0)


def _dataset(problem: UserProblem, with_physics: bool = True):
    physics = load_physics(problem.physics) if with_physics else None
    return load_user_dataset(problem.data, list(INPUTS), list(TARGETS), 0, physics)


def test_the_builtin_residual_goes_through_the_same_interface():
    data = builtin_dataset(seed=0, n_train=64, n_val=32, n_test=32)
    assert data.physics is BUILTIN and BUILTIN.name == STOKES.name
    torch.manual_seed(0)
    model = mlp_network(MLPSpec(18, (8,), 2)).module
    torch.testing.assert_close(BUILTIN.residual(model, data.x_val).detach(), STOKES.residual(model, data.x_val))
    points = BUILTIN.points(data.x_train, 5, torch.Generator().manual_seed(1))
    torch.testing.assert_close(points, STOKES.sample_inputs(5, torch.Generator().manual_seed(1)))  # fresh, not rows


def test_a_physics_file_and_a_module_give_the_same_residual(problem, tmp_path, monkeypatch):
    (tmp_path / "my_pde_module.py").write_text(PHYSICS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from_file, from_module = load_physics(problem.physics), load_physics("my_pde_module:residual")
    assert from_file.source == problem.physics_file and from_module.source == tmp_path / "my_pde_module.py"
    x = _dataset(problem).x_val
    assert from_file.residual(Exact(), x).abs().max() < 1e-5  # the exact solution satisfies it
    torch.manual_seed(0)
    model = user_mlp()
    wrong = from_file.residual(model, x)
    assert wrong.abs().max() > 1e-2
    torch.testing.assert_close(from_module.residual(model, x), wrong)
    rows = from_file.points(x, 7, torch.Generator().manual_seed(0))  # no sampler: rows of the training inputs
    assert all(any(torch.equal(row, other) for other in x) for row in rows)


def test_user_physics_enters_the_loss_taylor_scores_and_the_residual_rms(problem):
    data, plain = _dataset(problem), _dataset(problem, with_physics=False)
    torch.manual_seed(0)
    network = mlp_network(SMALL)
    model = network.module
    metrics = evaluate(model, data)
    direct = data.physics.residual(model, data.x_val[:RESIDUAL_POINTS]).detach().pow(2).mean().sqrt()
    assert metrics.residual_rms == pytest.approx(float(direct)) and evaluate(model, plain).residual_rms is None

    with_physics = unit_scores(network, "taylor", dataset=data, batches=2, physics_weight=1.0)
    without = unit_scores(network, "taylor", dataset=data, batches=2, physics_weight=0.0)
    assert not torch.allclose(torch.cat(with_physics), torch.cat(without))

    config = TrainConfig(epochs=2, batch_size=64, physics_points=16)
    trained = {}
    for name, dataset in (("physics", data), ("plain", plain)):
        torch.manual_seed(0)
        trained[name] = mlp_network(SMALL).module
        result = train(trained[name], dataset, config, progress=False)
        assert (result.history[-1].physics_loss > 0) is (name == "physics")
    assert not all(torch.equal(a, b) for a, b in zip(trained["physics"].parameters(), trained["plain"].parameters()))


def test_train_and_prune_cli_record_the_physics_and_its_residual_per_stage(problem, tmp_path, capsys):
    dense = tmp_path / "dense.safetensors"
    assert main(["train", *problem.data_arguments, "--physics", problem.physics, "--widths", "12,10",
                 "--activation", "silu", "--epochs", "1", "--out", str(dense)]) == 0
    assert "residual RMS n/a" not in capsys.readouterr().out
    assert read_metadata(dense)["physics"] == problem.physics
    out = tmp_path / "pruned"
    assert main(["prune", str(dense), "--target", "0.5", "--rounds", "2", "--finetune-epochs", "1",
                 "--importance", "taylor", *problem.data_arguments, "--physics", problem.physics,
                 "--out", str(out)]) == 0
    stages = json.loads((out / "history.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == [0, 1, 2]
    assert all(s["val_residual_rms"] > 0 for s in stages)
    assert load_checkpoint(out / "structured.safetensors").metadata["physics"] == problem.physics


def test_physics_weight_without_physics_is_refused(problem, tmp_path, capsys):
    assert main(["train", *problem.data_arguments, "--physics-weight", "0.5",
                 "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "give --physics" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


BROKEN = {
    "syntax.py": "def residual(model, inputs)\n    return model(inputs)\n",
    "importerror.py": "import a_module_that_is_not_installed\n",
    "noname.py": "def other(model, inputs):\n    return model(inputs)\n",
    "notcallable.py": "residual = 3\n",
    "signature.py": "def residual(model):\n    return model\n",
    "raises.py": "def residual(model, inputs):\n    return model(inputs)[:, 99]\n",
    "number.py": "def residual(model, inputs):\n    return 0.0\n",
    "empty.py": "def residual(model, inputs):\n    return model(inputs)[:0]\n",
    "nan.py": "def residual(model, inputs):\n    return model(inputs) * float('nan')\n",
    "nograd.py": "def residual(model, inputs):\n    return inputs ** 2 - model(inputs).detach().sum()\n",
}


@pytest.mark.parametrize("name,needle", [
    ("syntax.py", "SyntaxError"), ("importerror.py", "ModuleNotFoundError"), ("noname.py", "defines no 'residual'"),
    ("notcallable.py", "not a function"), ("signature.py", "cannot be called as residual(model, inputs)"),
    ("raises.py", "IndexError"), ("number.py", "returned a float"), ("empty.py", "empty"),
    ("nan.py", "NaN"), ("nograd.py", "no gradient with respect to the model's parameters"),
])
def test_a_broken_physics_function_is_one_line_naming_file_and_function(problem, tmp_path, capsys, name, needle):
    path = tmp_path / name
    path.write_text(BROKEN[name])
    out = tmp_path / "m.safetensors"
    argument = f"{path}:residual"
    code = main(["train", *problem.data_arguments, "--physics", argument, "--widths", "8", "--epochs", "1",
                 "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert argument in lines[0] and needle in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("argument,needle", [
    ("physics.py", "names no function"),
    ("missing.py:residual", "no such physics file"),
    ("{dir}/:residual", "is not a file"),
    ("a_module_that_is_not_installed:residual", "importing module"),
])
def test_a_physics_argument_that_names_nothing_usable_is_one_line(problem, tmp_path, capsys, argument, needle):
    argument = argument.format(dir=tmp_path)
    out = tmp_path / "m.safetensors"
    assert main(["train", *problem.data_arguments, "--physics", argument, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    named = argument.partition(":")[0].rstrip("/")  # the file or module it names
    assert len(lines) == 1 and needle in lines[0] and named in lines[0], lines
    assert not out.exists()


def test_prune_checks_the_physics_on_the_checkpoint_before_writing(problem, tmp_path, capsys):
    broken = tmp_path / "nan.py"
    broken.write_text(BROKEN["nan.py"])
    checkpoint = tmp_path / "dense.safetensors"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, mlp_network(SMALL), {"variant": "dense"})
    out = tmp_path / "pruned"
    assert main(["prune", str(checkpoint), "--target", "0.5", *problem.data_arguments,
                 "--physics", f"{broken}:residual", "--out", str(out)]) == 2
    assert "NaN" in capsys.readouterr().err and not out.exists()


def test_physics_is_what_the_file_says_now(tmp_path: Path):
    """Loading twice in one process (a resumed run, or prune after train) reads the file as it is now."""
    path = tmp_path / "p.py"
    path.write_text("def residual(model, inputs):\n    return model(inputs) - 1.0\n")
    first = load_physics(f"{path}:residual")
    path.write_text("def residual(model, inputs):\n    return model(inputs) - 2.0\n")
    second = load_physics(f"{path}:residual")
    model = torch.nn.Linear(2, 1)
    x = torch.zeros(3, 2)
    torch.testing.assert_close(second.residual(model, x) - first.residual(model, x), torch.full((3, 1), -1.0))
