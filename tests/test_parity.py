"""Parity checks: they pass on a faithful export, and fail (one line) on a wrong one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.export.formats import get_format, load_artifact
from spinn_export.export.formats.onnx import write_onnx
from spinn_export.export.parity import (
    FLOAT32,
    ParityError,
    accuracy,
    check_parity,
    check_weight_shapes,
    parity_inputs,
    task_dataset,
    tolerance_for,
)
from spinn_export.model.mlp import mlp_network
from spinn_export.model.network import Network
from spinn_export.model.spec import MLPSpec
from spinn_export.task.data import builtin_dataset
from spinn_export.task.metrics import evaluate

from .conftest import linear_layers

SPEC = MLPSpec(18, (16, 8), 2)


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory) -> tuple[Network, Path]:
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    network.module.eval()
    path = tmp_path_factory.mktemp("parity") / "m.onnx"
    write_onnx(network, path, 18)
    return network, path


def test_faithful_onnx_passes_with_recorded_errors(onnx_pair):
    network, path = onnx_pair
    result = check_parity(network, load_artifact(path), "m [onnx]", FLOAT32,
                          weight_shapes=get_format("onnx").weight_shapes(path))
    assert result.passed and result.criterion == "float32" and result.batches == (1, 7, 4096)
    assert 0 <= result.max_abs_error < FLOAT32.atol and result.weight_shapes == ((16, 18), (8, 16), (2, 8))


def test_a_drifted_model_fails_float32_parity_in_one_line(onnx_pair):
    network, path = onnx_pair
    drifted = mlp_network(SPEC)
    drifted.module.load_state_dict(network.module.state_dict())
    with torch.no_grad():
        linear_layers(drifted.module)[-1].bias.add_(5e-4)
    with pytest.raises(ParityError, match=r"^m \[onnx\]: parity failed: max abs error 0.0005, .*rejected$") as info:
        check_parity(drifted, load_artifact(path), "m [onnx]", tolerance_for("fp32"))
    assert "\n" not in str(info.value)
    recorded = check_parity(drifted, load_artifact(path), "m [int8]", tolerance_for("int8"))
    assert (recorded.passed and recorded.criterion == "recorded"
            and recorded.max_abs_error == pytest.approx(5e-4, rel=1e-2))
    # a later run of a quantised model is held to twice the error recorded at export, on the same inputs
    bound = tolerance_for("int8", recorded.max_abs_error)
    assert bound.atol == pytest.approx(1e-3, rel=1e-2) and bound.rtol == 0.0
    assert check_parity(drifted, load_artifact(path), "m [int8]", bound).passed
    with pytest.raises(ParityError, match="int8 within 2x its recorded error"):
        check_parity(drifted, load_artifact(path), "m [int8]", tolerance_for("int8", 1e-4))


def test_weight_shapes_must_match_the_checkpoint_spec():
    check_weight_shapes([(16, 18), (8, 16), (2, 8)], SPEC, "m")
    with pytest.raises(UserError, match=r"m: the artifact's weight shapes \[\[16, 18\], \[12, 16\]"):
        check_weight_shapes([(16, 18), (12, 16), (2, 12)], SPEC, "m")


def test_parity_inputs_are_fresh_but_reproducible():
    a, b = parity_inputs(18, 7), parity_inputs(18, 7)
    assert a.shape == (7, 18) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(parity_inputs(18, 7, seed=1), a)
    example = torch.randn(2, 18, generator=torch.Generator().manual_seed(0)).numpy()
    assert not np.allclose(parity_inputs(18, 2), example)  # not the traced example


def test_accuracy_uses_the_builtin_validation_split(onnx_pair):
    network, path = onnx_pair
    model = network.module
    assert task_dataset({"dataset": "mydata"}) is None and task_dataset({}) is None
    dataset = task_dataset({"dataset": "stokes2d", "seed": "3"})
    assert torch.equal(dataset.x_val, builtin_dataset(3).x_val)
    measured = accuracy(model, load_artifact(path), dataset, max_r2_drop=0.01)
    assert measured.val_r2_reference == pytest.approx(evaluate(model, dataset).r2, abs=1e-9)
    assert abs(measured.val_r2_delta) < 1e-4 and measured.within_budget  # float32 ONNX: the same model, to rounding
    with pytest.raises(UserError, match="seed"):
        task_dataset({"dataset": "stokes2d", "seed": "x"})
