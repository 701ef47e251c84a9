import numpy as np
import pandas as pd
import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.task.data import builtin_dataset, load_user_dataset
from spinn_export.task.metrics import evaluate
from spinn_export.task.stokes import STOKES, TARGET_NAMES

from .conftest import assert_clean_error, run_cli


def test_exact_solution_has_near_zero_residual():
    x = STOKES.sample_inputs(512, torch.Generator().manual_seed(0)).double()
    residual = STOKES.residual(STOKES.solution, x)
    assert residual.abs().max() < 1e-12


def test_wrong_solution_has_large_residual():
    x = STOKES.sample_inputs(512, torch.Generator().manual_seed(0)).double()

    def frozen_in_time(inputs):  # drops the viscous decay: violates momentum, keeps continuity
        return STOKES.solution(torch.cat([inputs[:, :2], torch.zeros_like(inputs[:, 2:3]), inputs[:, 3:]], dim=1))

    residual = STOKES.residual(frozen_in_time, x)
    assert residual[:, :2].pow(2).mean().sqrt() > 1e-2 * STOKES.solution(x).std()
    assert residual[:, 2].abs().max() < 1e-12


def test_builtin_dataset_is_deterministic_and_split():
    a, b = (builtin_dataset(seed=3, n_train=100, n_val=20, n_test=20),
            builtin_dataset(seed=3, n_train=100, n_val=20, n_test=20))
    c = builtin_dataset(seed=4, n_train=100, n_val=20, n_test=20)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (100, 20, 20)
    assert a.in_features == 18 and a.target_names == TARGET_NAMES
    torch.testing.assert_close(a.y_val, STOKES.solution(a.x_val.double()).float())


def test_metrics_are_perfect_for_the_exact_solution_and_poor_for_an_untrained_model():
    data = builtin_dataset(seed=0, n_train=64, n_val=256, n_test=64)

    class Exact(torch.nn.Module):
        def forward(self, x):
            return STOKES.solution(x)

    exact = evaluate(Exact(), data)
    assert exact.r2 > 1 - 1e-6 and exact.rel_l2 < 1e-5 and exact.residual_rms < 1e-4
    torch.manual_seed(0)
    untrained = evaluate(mlp_network(MLPSpec(18, (16,), 2)).module, data)
    assert untrained.r2 < 0.2 and untrained.rel_l2 > 0.5


def _frame(n=50):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": rng.normal(size=n), "label": ["x"] * n})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_user_data_formats(tmp_path, suffix):
    frame = _frame().drop(columns="label")
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        np.savez(path, **{c: frame[c].to_numpy() for c in frame})
    data = load_user_dataset(path, ["a", "b"], ["y"])
    assert data.in_features == 2 and data.out_features == 1 and data.physics is None
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 50


@pytest.mark.parametrize("inputs,targets,needle", [
    (["a", "missing"], ["y"], "'missing'"),
    (["a", "label"], ["y"], "'label'"),
])
def test_user_data_bad_columns(tmp_path, inputs, targets, needle):
    _frame().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(UserError, match=needle):
        load_user_dataset(tmp_path / "d.csv", inputs, targets)


@pytest.mark.slow
def test_nan_in_user_data_is_named_by_the_cli(tmp_path):
    frame = _frame()
    frame.loc[7, "b"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "m.safetensors"
    result = run_cli("train", "--data", str(tmp_path / "d.csv"), "--inputs", "a,b", "--targets", "y", "--epochs", "1",
                     "--out", str(out))
    assert_clean_error(result, "'b'", "NaN")
    assert not out.exists()


@pytest.mark.slow
def test_train_cli_bad_options(tmp_path):
    assert_clean_error(run_cli("train", "--epochs", "0", "--out", str(tmp_path / "m.safetensors")), "--epochs")
    assert_clean_error(run_cli("train", "--data", str(tmp_path / "none.csv"), "--inputs", "a", "--targets", "y",
                               "--out", str(tmp_path / "m.safetensors")), "no such data file")
