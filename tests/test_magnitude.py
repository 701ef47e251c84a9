import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.mlp import architecture_of, build_model, count_nonzero
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.magnitude import magnitude_prune, to_sparse_csr, zeros_frozen

from .conftest import linear_layers, seeded_model

SPEC = MLPSpec(18, (24, 20, 12), 2)
ARCH = architecture_of(SPEC)


def _model(seed=0):
    return seeded_model(SPEC, seed)


def test_global_l1_keeps_exactly_the_largest_weights_and_every_bias():
    model = _model()
    biases = [layer.bias.detach().clone() for layer in linear_layers(model)]
    before = torch.cat([layer.weight.detach().abs().flatten() for layer in linear_layers(model)])
    nonzero = SPEC.params // 3
    magnitude_prune(model, ARCH, nonzero)
    assert count_nonzero(model) == nonzero
    assert [tuple(layer.weight.shape) for layer in linear_layers(model)] == SPEC.layer_shapes
    assert all(torch.equal(b, layer.bias) for b, layer in zip(biases, linear_layers(model)))
    after = torch.cat([layer.weight.detach().abs().flatten() for layer in linear_layers(model)])
    kept, dropped = before[after != 0], before[after == 0]
    assert kept.min() >= dropped.max()  # global, not per layer
    per_layer = [float((layer.weight == 0).float().mean()) for layer in linear_layers(model)]
    assert max(per_layer) - min(per_layer) > 0.05


def test_count_is_exact_even_when_magnitudes_tie():
    model = _model()
    with torch.no_grad():
        for layer in linear_layers(model):
            layer.weight.fill_(0.5)
    magnitude_prune(model, ARCH, 1001)
    assert count_nonzero(model) == 1001


def test_impossible_counts_are_user_errors():
    with pytest.raises(UserError, match="biases"):
        magnitude_prune(_model(), ARCH, 10)
    with pytest.raises(UserError, match="non-zero"):
        magnitude_prune(_model(), ARCH, SPEC.params + 1)


def test_sparse_csr_model_equals_the_masked_dense_model(tmp_path):
    model = magnitude_prune(_model(1), ARCH, 900)
    save_checkpoint(tmp_path / "m.safetensors", model, SPEC, {"variant": "magnitude"})
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    sparse = to_sparse_csr(loaded.model, loaded.architecture)
    weights = [b for name, b in sparse.named_buffers() if name.endswith("weight")]
    assert len(weights) == 4 and all(w.layout == torch.sparse_csr for w in weights)
    assert sum(w._nnz() for w in weights) + sum(w.shape[0] for w in weights) == 900
    for batch in (1, 7, 256):
        x = torch.randn(batch, 18)
        with torch.no_grad():
            torch.testing.assert_close(sparse(x), loaded.model(x), rtol=1e-5, atol=1e-6)


def test_zeros_stay_zero_while_fine_tuning():
    model = magnitude_prune(_model(2), ARCH, 700)
    zero = [layer.weight == 0 for layer in linear_layers(model)]
    before = [layer.weight.detach().clone() for layer in linear_layers(model)]
    with zeros_frozen(model, ARCH):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            loss = model(torch.randn(32, 18)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert {name for name, _ in model.named_parameters()} == set(build_model(SPEC).state_dict())
    for mask, old, layer in zip(zero, before, linear_layers(model)):
        assert torch.all(layer.weight[mask] == 0)
        assert not torch.equal(layer.weight[~mask], old[~mask])
