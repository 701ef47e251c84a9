import json

import pytest

from spinn_export.errors import UserError
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import SPINN_REFERENCE, MLPSpec

from .conftest import assert_clean_error, run_cli


def test_reference_counts_match_the_built_model():
    model = mlp_network(SPINN_REFERENCE).module
    assert SPINN_REFERENCE.params == sum(p.numel() for p in model.parameters()) == 666_882
    assert SPINN_REFERENCE.macs_per_sample == 18 * 512 + 512 * 512 * 2 + 512 * 256 + 256 * 2
    assert SPINN_REFERENCE.flops_per_sample == 2 * SPINN_REFERENCE.macs_per_sample + (512 * 3 + 256 + 2)
    assert SPINN_REFERENCE.weight_bytes == 4 * 666_882


def test_design_note_widths_count_is_computed_not_claimed():
    spec = SPINN_REFERENCE.with_widths((384, 384, 384, 192))
    assert spec.params == 377_282 != 210_364


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "silu", "sigmoid"])
def test_every_activation_builds(activation):
    spec = MLPSpec(3, (4,), 1, activation)
    assert sum(p.numel() for p in mlp_network(spec).module.parameters()) == spec.params


@pytest.mark.parametrize("kwargs", [{"activation": "swish"}, {"widths": (0, 4)}, {"widths": ()},
                                    {"in_features": 0}])
def test_invalid_specs_are_user_errors(kwargs):
    base = {"in_features": 3, "widths": (4,), "out_features": 1, "activation": "tanh"}
    with pytest.raises(UserError):
        MLPSpec(**{**base, **kwargs})


@pytest.mark.slow
def test_info_json_for_widths():
    result = run_cli("info", "--widths", "384,384,384,192", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == 377_282
    assert data["widths"] == [384, 384, 384, 192]
    assert {"in_features", "out_features", "activation", "macs_per_sample", "flops_per_sample"} <= set(data)


@pytest.mark.slow
def test_info_of_checkpoint(small_checkpoint, small_spec):
    result = run_cli("info", str(small_checkpoint), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == small_spec.params and data["widths"] == list(small_spec.widths)


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (["info", "--widths", "384,abc"], "--widths"),
    (["info", "--widths", "0,4"], "positive"),
    (["info"], "either"),
])
def test_info_bad_input(args, needle):
    assert_clean_error(run_cli(*args), needle)
