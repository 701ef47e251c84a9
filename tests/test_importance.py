import pytest
import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.importer import import_model
from spinn_export.model.mlp import architecture_of, mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.importance import unit_scores
from spinn_export.task.data import Dataset, builtin_dataset

from .conftest import linear_layers, seeded_network

SPEC = MLPSpec(in_features=3, widths=(4, 5), out_features=2, activation="tanh")
ARCH = architecture_of(SPEC)


def _network(seed=0):
    return seeded_network(SPEC, seed)


def test_costs_are_fan_in_plus_fan_out_plus_one():
    assert ARCH.unit_costs() == (3 + 5 + 1, 4 + 2 + 1)


@pytest.mark.parametrize("criterion", ["l1", "l1-in", "l1-out", "l2", "l2-in", "l2-out"])
def test_norm_scores_match_a_hand_computation(criterion):
    network = _network()
    w0, w1, w2 = (layer.weight.detach() for layer in linear_layers(network.module))
    p = 1 if criterion.startswith("l1") else 2
    side = criterion.partition("-")[2]
    expected = []
    for cost, incoming, outgoing in ((9, w0, w1), (7, w1, w2)):
        rows = []
        for j in range(incoming.shape[0]):
            weights = []
            if side in ("", "in"):
                weights += incoming[j].tolist()
            if side in ("", "out"):
                weights += outgoing[:, j].tolist()
            rows.append(sum(abs(w) ** p for w in weights) ** (1 / p) / cost)
        expected.append(torch.tensor(rows))
    for got, want in zip(unit_scores(network, criterion), expected):
        torch.testing.assert_close(got, want)


def test_taylor_equals_the_loss_derivative_of_scaling_a_neuron():
    network = _network()
    model = network.module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(1, 3), torch.randn(1, 2)
    data = Dataset("one-row", ("a", "b", "c"), ("u", "v"), x, y, x, y, x, y)
    scores = unit_scores(network, "taylor", dataset=data, batches=3, physics_weight=0.0)
    costs = ARCH.unit_costs()
    eps = 1e-3
    for layer_index in range(2):
        for j in range(SPEC.widths[layer_index]):
            losses = []
            for factor in (1 + eps, 1 - eps):
                scaled = mlp_network(SPEC).module
                scaled.load_state_dict(model.state_dict())
                with torch.no_grad():  # scaling the outgoing column == scaling the neuron's output
                    linear_layers(scaled)[layer_index + 1].weight[:, j] *= factor
                losses.append(float(nn.functional.mse_loss(scaled(x), y).detach()))
            derivative = abs(losses[0] - losses[1]) / (2 * eps)
            assert float(scores[layer_index][j]) * costs[layer_index] == pytest.approx(derivative, rel=1e-2, abs=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # scoring left it alone


def test_taylor_includes_the_physics_term_and_ignores_disconnected_neurons():
    data = builtin_dataset(seed=0, n_train=256, n_val=32, n_test=32)
    spec = MLPSpec(18, (8, 6), 2)
    torch.manual_seed(0)
    network = mlp_network(spec)
    with torch.no_grad():
        linear_layers(network.module)[1].weight[:, 3] = 0.0  # neuron 3 of layer 0 feeds nothing
    with_physics = unit_scores(network, "taylor", dataset=data, batches=2, physics_weight=1.0)
    without = unit_scores(network, "taylor", dataset=data, batches=2, physics_weight=0.0)
    assert float(with_physics[0][3]) == 0.0
    assert (torch.cat(with_physics) > 0).sum() == spec.widths[0] + spec.widths[1] - 1
    assert not torch.allclose(torch.cat(with_physics), torch.cat(without))


def test_taylor_needs_data_and_random_is_seeded():
    with pytest.raises(UserError, match="taylor"):
        unit_scores(_network(), "taylor")
    a, b, c = (unit_scores(_network(), "random", seed=s) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, z) for x, z in zip(a, c))


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.c(h + torch.tanh(self.b(h)))


def test_a_groups_score_sums_every_member_of_the_group(tmp_path):
    torch.manual_seed(0)
    module = _Residual().eval()
    torch.save(module.state_dict(), tmp_path / "state.pt")
    (tmp_path / "code.py").write_text("import torch\nfrom torch import nn\n\n"
                                      + "\n".join(_residual_source()) + "\n")
    network = import_model(tmp_path / "state.pt", model_code=f"{tmp_path / 'code.py'}:_Residual", in_features=3)
    architecture = network.architecture
    assert architecture.widths == (4,)  # the skip couples a's and b's outputs: one group
    [scores] = unit_scores(network, "l1")
    a, b, c = module.a.weight.detach(), module.b.weight.detach(), module.c.weight.detach()
    expected = (a.abs().sum(1) + b.abs().sum(1) + b.abs().sum(0) + c.abs().sum(0)) / architecture.unit_costs()[0]
    torch.testing.assert_close(scores, expected)


def _residual_source() -> list[str]:
    import inspect

    return inspect.getsource(_Residual).splitlines()


def test_an_unknown_criterion_is_refused():
    with pytest.raises(UserError, match="unknown importance"):
        unit_scores(_network(), "l3")
