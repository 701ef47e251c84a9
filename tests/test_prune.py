import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.graph import run, tensors_of
from spinn_export.model.mlp import architecture_of, count_nonzero, mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.budget import plan_widths
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.shrink import select_keep, shrink
from spinn_export.prune.structured import prune, structured_prune_once
from spinn_export.prune.target import Target
from spinn_export.task.data import Dataset, builtin_dataset
from spinn_export.task.metrics import evaluate
from spinn_export.task.train import TrainConfig, train

from .conftest import assert_clean_error, linear_layers, run_cli, seeded_network

SPEC = MLPSpec(18, (12, 10, 8), 2)
ARCH = architecture_of(SPEC)
KEEP = (torch.tensor([0, 2, 3, 5, 7, 8, 11]), torch.tensor([1, 4, 6, 9]), torch.tensor([0, 1, 2, 3, 7]))
STAGE_KEYS = {"stage", "widths", "params", "nonzero_params", "flops_per_sample", "val_r2", "val_rel_l2",
              "val_residual_rms", "checkpoint"}


def _network(seed=0):
    return seeded_network(SPEC, seed)


def _activations():
    return [n.name for n in ARCH.graph.nodes if n.op != "aten.linear.default"]


def _masked(model, replacements, x):
    """The original model, with chosen hidden neurons' outputs overwritten by constants (masking)."""
    chosen = dict(zip(_activations(), replacements))

    def after(name, value):
        if name in chosen:
            index, values = chosen[name]
            value = value.clone()
            value[:, index] = values
        return value

    with torch.no_grad():
        return run(ARCH.graph, tensors_of(ARCH.graph, model), x, after=after)[0]


def _removed(keep, width):
    mask = torch.ones(width, dtype=torch.bool)
    mask[keep] = False
    return torch.nonzero(mask).flatten()


def test_shrunk_model_equals_the_masked_model():
    network, x = _network(), torch.randn(64, 18)
    model = network.module
    small = shrink(network, KEEP, fold="none")
    assert small.architecture.widths == (7, 4, 5)
    assert [tuple(layer.weight.shape) for layer in linear_layers(small.module)] == small.architecture.layer_shapes
    masked = _masked(model, [(_removed(k, w), 0.0) for k, w in zip(KEEP, SPEC.widths)], x)
    torch.testing.assert_close(small.module(x), masked, rtol=0, atol=1e-6)
    assert not torch.allclose(model(x), masked)


def test_pruning_neurons_with_zero_incoming_weights_changes_output_only_by_rounding():
    network, x = _network(1), torch.randn(256, 18)
    model = network.module
    with torch.no_grad():
        for layer, keep, width in zip(linear_layers(model), KEEP, SPEC.widths):
            layer.weight[_removed(keep, width)] = 0.0
    small = shrink(network, KEEP, fold="bias").module
    torch.testing.assert_close(small(x), model(x), rtol=0, atol=1e-6)
    small = shrink(network, KEEP, fold="mean", calibration=torch.randn(512, 18)).module
    torch.testing.assert_close(small(x), model(x), rtol=0, atol=1e-6)


def test_mean_fold_replaces_removed_neurons_by_their_calibration_mean():
    network, calibration = _network(2), torch.randn(1024, 18)
    model = network.module
    keep = (torch.arange(12), torch.arange(10), torch.tensor([1, 4, 6]))
    small = shrink(network, keep, fold="mean", calibration=calibration).module
    with torch.no_grad():
        hidden = run(ARCH.graph, tensors_of(ARCH.graph, model), calibration, keep=_activations())[1]["tanh2"]
    removed = _removed(keep[2], 8)
    expected = _masked(model, [(torch.tensor([], dtype=torch.long), 0.0)] * 2
                       + [(removed, hidden[:, removed].mean(dim=0))], calibration)
    torch.testing.assert_close(small(calibration), expected, rtol=0, atol=1e-6)
    # so the mean output over the calibration data is preserved exactly, unlike masking
    torch.testing.assert_close(small(calibration).mean(0), model(calibration).mean(0), rtol=0, atol=1e-5)
    masked = shrink(network, keep, fold="none").module
    assert not torch.allclose(masked(calibration).mean(0), model(calibration).mean(0), atol=1e-4)


def test_structured_prune_once_builds_exact_widths_keeping_the_strongest_neurons(tmp_path):
    network = _network(3)
    with torch.no_grad():
        linear_layers(network.module)[0].weight[5] *= 100.0  # neuron 5 of layer 0 dominates by L1
    plan = plan_widths(ARCH, Target.of_widths((4, 4, 4)))
    small = structured_prune_once(network, plan, importance="l1-in")
    assert small.architecture.widths == (4, 4, 4) and isinstance(small.module, nn.Module)
    assert any(torch.equal(row, linear_layers(network.module)[0].weight[5])
               for row in linear_layers(small.module)[0].weight)
    save_checkpoint(tmp_path / "s.safetensors", small, {"variant": "structured"})
    loaded = load_checkpoint(tmp_path / "s.safetensors").network
    x = torch.randn(16, 18)
    torch.testing.assert_close(loaded.module(x), small.module(x), rtol=0, atol=0)
    assert select_keep([torch.tensor([3.0, 1.0, 2.0])], [2])[0].tolist() == [0, 2]


@pytest.fixture(scope="module")
def trained():
    data = builtin_dataset(seed=0, n_train=512, n_val=256, n_test=64)
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    train(network.module, data, TrainConfig(epochs=4, batch_size=64, lr=1e-2, physics_points=8), progress=False)
    return network, data


def test_iterative_schedule_writes_stages_and_history(tmp_path, trained):
    network, data = trained
    config = PruneConfig(Target.params(0.5), rounds=2, finetune=TrainConfig(epochs=1, batch_size=256, lr=1e-3),
                         importance="taylor",
                         mode="global", fold="mean", calibration_samples=256)
    result = prune(network, data, config, tmp_path, metadata={"variant": "dense"}, progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert {"method", "target", "achieved", "config", "stages"} <= set(history)
    assert history["method"] == "structured" and history["target"]["reduction"] == 0.5
    assert [s["stage"] for s in history["stages"]] == [0, 1, 2]
    assert all(set(s) >= STAGE_KEYS for s in history["stages"])
    first = history["stages"][0]
    assert first["widths"] == list(SPEC.widths) and first["params"] == SPEC.params
    params = [s["params"] for s in history["stages"]]
    assert params[0] > params[1] > params[2]
    assert abs(params[2] - 0.5 * SPEC.params) <= 12 + 8 + 1  # within one neuron's worth of the target
    assert history["achieved"]["params"] == params[2] == result.network.architecture.params
    assert all(s["val_residual_rms"] is not None for s in history["stages"])  # physics evaluated
    for stage in history["stages"]:
        loaded = load_checkpoint(tmp_path / stage["checkpoint"])
        assert list(loaded.network.architecture.widths) == stage["widths"]
    final = load_checkpoint(tmp_path / "structured.safetensors")
    assert final.variant == "structured" and final.network.architecture == result.network.architecture
    x = data.x_val[:32]
    torch.testing.assert_close(final.network.module(x), result.network.module(x), rtol=0, atol=0)
    frame = pd.read_csv(tmp_path / "history.csv")
    assert len(frame) == 3 and list(frame["params"]) == params
    assert count_nonzero(network.module) == SPEC.params  # the input model was not touched


@pytest.fixture(scope="module")
def fitted():
    """A tiny model that fits a smooth map well (no physics, so it trains in a moment)."""
    x = torch.rand(1024, 18, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.stack([x[:, :9].sum(1) / 3, torch.sin(x[:, 9:].sum(1) / 3)], dim=1)
    data = Dataset("smooth", tuple(f"x{i}" for i in range(18)), ("a", "b"), x[:768], y[:768], x[768:], y[768:],
                   x[768:], y[768:])
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    train(network.module, data, TrainConfig(epochs=20, batch_size=64, lr=1e-2), progress=False)
    return network, data


@pytest.mark.parametrize("on_drop", ["stop", "rollback"])
def test_accuracy_drop_beyond_tolerance_stops_or_rolls_back(tmp_path, fitted, on_drop):
    network, data = fitted
    assert evaluate(network.module, data).r2 > 0.9
    config = PruneConfig(Target.params(0.9), rounds=2, finetune=TrainConfig(epochs=0), tolerance=0.0, on_drop=on_drop)
    result = prune(network, data, config, tmp_path, progress=False)
    assert len(result.stages) == 2 and result.stopped and "tolerance" in result.stopped
    assert result.stages[1].val_r2 < result.stages[0].val_r2
    final = load_checkpoint(tmp_path / "structured.safetensors")
    if on_drop == "rollback":
        assert result.stages[1].rolled_back and result.final.stage == 0 and final.network.architecture == ARCH
    else:
        assert not result.stages[1].rolled_back and final.network.architecture.widths == result.stages[1].widths
    assert (tmp_path / "stage_1.safetensors").exists()


def test_magnitude_method_matches_the_structured_parameter_count(tmp_path, trained):
    network, data = trained
    config = PruneConfig(Target.params(0.6), method="magnitude", rounds=2,
                         finetune=TrainConfig(epochs=1, batch_size=256, lr=1e-3))
    result = prune(network, data, config, tmp_path, progress=False)
    structured = plan_widths(ARCH, 0.6)
    checkpoint = load_checkpoint(tmp_path / "magnitude.safetensors")
    assert checkpoint.variant == "magnitude" and checkpoint.network.architecture == ARCH
    assert count_nonzero(checkpoint.network.module) == structured.params == result.target_nonzero
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["achieved"]["params"] == SPEC.params
    assert history["achieved"]["nonzero_params"] == structured.params
    assert history["stages"][1]["nonzero_params"] > structured.params


def test_config_errors_are_user_errors():
    with pytest.raises(UserError, match="on_drop stop needs tolerance"):
        PruneConfig(Target.params(0.5), on_drop="stop")
    with pytest.raises(UserError, match="importance 'l3' is not supported"):
        PruneConfig(Target.params(0.5), importance="l3")
    with pytest.raises(UserError, match="fold"):
        shrink(_network(), KEEP, fold="mean")


@pytest.mark.slow
def test_prune_cli_on_user_data(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.uniform(-1, 1, 400) for i in range(3)})
    frame["y"] = np.sin(frame.x0) + frame.x1 * frame.x2
    frame.to_csv(tmp_path / "d.csv", index=False)
    spec = MLPSpec(3, (16, 16), 1)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.safetensors", mlp_network(spec), {"variant": "dense", "seed": "0"})
    out = tmp_path / "out"
    result = run_cli("prune", str(tmp_path / "m.safetensors"), "--target", "0.5", "--rounds", "2",
                     "--finetune-epochs", "1", "--round-to", "4", "--importance", "l2-out", "--data",
                     str(tmp_path / "d.csv"), "--inputs", "x0,x1,x2", "--targets", "y", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "target 50.00% fewer params" in result.stdout and "achieved" in result.stdout
    history = json.loads((out / "history.json").read_text())
    assert all(w % 4 == 0 for w in history["achieved"]["widths"])
    assert history["stages"][0]["val_residual_rms"] is None  # no PDE for user data
    assert {p.name for p in out.iterdir()} == {"structured.safetensors", "stage_0.safetensors", "stage_1.safetensors",
                                               "stage_2.safetensors", "history.json", "history.csv"}


@pytest.mark.slow
@pytest.mark.parametrize("args,needles", [
    (["--target", "1"], ["impossible"]),
    (["--target", "0.99", "--min-width", "10"], ["minimum width"]),
])
def test_prune_cli_errors(small_checkpoint, tmp_path, args, needles):
    assert_clean_error(run_cli("prune", str(small_checkpoint), *args, "--out", str(tmp_path / "o")), *needles)


@pytest.mark.slow
def test_prune_cli_refuses_unsupported_input(tmp_path):
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "conv.pt")
    assert_clean_error(run_cli("prune", str(tmp_path / "conv.pt"), "--target", "0.5", "--out", str(tmp_path / "o")),
                       "4-D weight", "plain chain")
