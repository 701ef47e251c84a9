import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.mlp import count_nonzero, mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.magnitude import magnitude_prune, to_sparse_csr, zeros_frozen

from .conftest import linear_layers, seeded_network

SPEC = MLPSpec(18, (24, 20, 12), 2)


def _network(seed=0):
    return seeded_network(SPEC, seed)


def test_global_l1_keeps_exactly_the_largest_weights_and_every_bias():
    network = _network()
    model = network.module
    biases = [layer.bias.detach().clone() for layer in linear_layers(model)]
    before = torch.cat([layer.weight.detach().abs().flatten() for layer in linear_layers(model)])
    nonzero = SPEC.params // 3
    magnitude_prune(network, nonzero)
    assert count_nonzero(model) == nonzero
    assert [tuple(layer.weight.shape) for layer in linear_layers(model)] == SPEC.layer_shapes
    assert all(torch.equal(b, layer.bias) for b, layer in zip(biases, linear_layers(model)))
    after = torch.cat([layer.weight.detach().abs().flatten() for layer in linear_layers(model)])
    kept, dropped = before[after != 0], before[after == 0]
    assert kept.min() >= dropped.max()  # global, not per layer
    per_layer = [float((layer.weight == 0).float().mean()) for layer in linear_layers(model)]
    assert max(per_layer) - min(per_layer) > 0.05


def test_count_is_exact_even_when_magnitudes_tie():
    network = _network()
    model = network.module
    with torch.no_grad():
        for layer in linear_layers(model):
            layer.weight.fill_(0.5)
    magnitude_prune(network, 1001)
    assert count_nonzero(model) == 1001


def test_impossible_counts_are_user_errors():
    with pytest.raises(UserError, match="biases"):
        magnitude_prune(_network(), 10)
    with pytest.raises(UserError, match="non-zero"):
        magnitude_prune(_network(), SPEC.params + 1)


def test_sparse_csr_model_equals_the_masked_dense_model(tmp_path):
    network = magnitude_prune(_network(1), 900)
    save_checkpoint(tmp_path / "m.safetensors", network, {"variant": "magnitude"})
    loaded = load_checkpoint(tmp_path / "m.safetensors").network
    sparse = to_sparse_csr(loaded).module
    weights = [b for name, b in sparse.named_buffers() if name.endswith("weight")]
    assert len(weights) == 4 and all(w.layout == torch.sparse_csr for w in weights)
    assert sum(w._nnz() for w in weights) + sum(w.shape[0] for w in weights) == 900
    for batch in (1, 7, 256):
        x = torch.randn(batch, 18)
        with torch.no_grad():
            torch.testing.assert_close(sparse(x), loaded.module(x), rtol=1e-5, atol=1e-6)


def test_zeros_stay_zero_while_fine_tuning():
    network = magnitude_prune(_network(2), 700)
    model = network.module
    zero = [layer.weight == 0 for layer in linear_layers(model)]
    before = [layer.weight.detach().clone() for layer in linear_layers(model)]
    with zeros_frozen(network):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            loss = model(torch.randn(32, 18)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert {name for name, _ in model.named_parameters()} == set(mlp_network(SPEC).module.state_dict())
    for mask, old, layer in zip(zero, before, linear_layers(model)):
        assert torch.all(layer.weight[mask] == 0)
        assert not torch.equal(layer.weight[~mask], old[~mask])
