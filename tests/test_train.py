import numpy as np
import pandas as pd
import pytest
import torch

from spinn_export.model.checkpoint import load_checkpoint
from spinn_export.model.mlp import architecture_of, mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.task.data import builtin_dataset
from spinn_export.task.train import TrainConfig, train

from .conftest import run_cli


def _train_once(seed):
    data = builtin_dataset(seed=0, n_train=512, n_val=128, n_test=64)
    torch.manual_seed(seed)
    model = mlp_network(MLPSpec(18, (16, 16), 2)).module
    result = train(model, data, TrainConfig(epochs=2, batch_size=64, physics_points=8, seed=seed), progress=False)
    return model, result


def test_training_is_deterministic_for_a_seed_and_records_history():
    (a, ra), (b, _), (c, _) = _train_once(0), _train_once(0), _train_once(1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    assert [r.epoch for r in ra.history] == [1, 2]
    assert ra.history[-1].physics_loss > 0 and ra.final.residual_rms is not None


@pytest.mark.slow
def test_train_cli_on_user_data_learns_a_linear_map(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.uniform(-1, 1, 2000), "b": rng.uniform(-1, 1, 2000)})
    frame["y"] = frame.a + 2 * frame.b
    frame.to_parquet(tmp_path / "d.parquet")
    out = tmp_path / "m.safetensors"
    result = run_cli("train", "--data", str(tmp_path / "d.parquet"), "--inputs", "a,b", "--targets", "y",
                     "--widths", "16,16", "--epochs", "30", "--batch-size", "32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    checkpoint = load_checkpoint(out)
    assert checkpoint.network.architecture == architecture_of(MLPSpec(2, (16, 16), 1, "tanh"))
    assert float(checkpoint.metadata["val_r2"]) > 0.95
    assert "residual RMS n/a" in result.stdout
