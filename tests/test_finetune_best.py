"""Fine-tuning that never ends worse than it began, and a learning rate chosen for the network (task.train).

Real training on tiny models and data: a too-large rate throws a fitted network off, and keep_best must end where it
scored best on held-out training rows; the range test must pick a finite rate in its range, the same one every time.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from spinn_export.model.mlp import mlp_network
from spinn_export.model.network import Network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.data import Dataset
from spinn_export.task.train import (
    LR_TEST_CEILING,
    LR_TEST_HIGH,
    LR_TEST_LOW,
    TrainConfig,
    holdout_rows,
    lr_range_test,
    objective,
    train,
)

SPEC = MLPSpec(6, (24, 24), 2)
HUGE_LR = TrainConfig(epochs=3, batch_size=32, lr=0.5, keep_best=True)


def _smooth(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 6, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return x, torch.stack([x[:, :3].sum(1) / 2, torch.sin(x[:, 3:].sum(1))], dim=1)


@pytest.fixture(scope="module")
def fitted() -> tuple[Network, Dataset]:
    """A tiny network fitted to a smooth map (no physics: it trains in a moment)."""
    x, y = _smooth(600, 0)
    xv, yv = _smooth(200, 1)
    data = Dataset("smooth", tuple(f"x{i}" for i in range(6)), ("a", "b"), x, y, xv, yv, xv, yv)
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    train(network.module, data, TrainConfig(epochs=20, batch_size=64, lr=1e-2), progress=False)
    return network, data


def _held_out(model: nn.Module, data: Dataset) -> float:
    """The objective on the last 10 % of the training rows, scored here independently of the run."""
    k = holdout_rows(len(data.x_train))
    return objective(model, data, data.x_train[-k:], data.y_train[-k:], None, 0.0)


def test_a_too_large_rate_ends_no_worse_on_held_out_rows_than_it_began(fitted: tuple[Network, Dataset]) -> None:
    network, data = fitted
    model = network.module
    before = _held_out(model, data)
    thrown = copy.deepcopy(model)
    train(thrown, data, dataclasses.replace(HUGE_LR, keep_best=False), progress=False)
    assert _held_out(thrown, data) > 2 * before  # the rate really is too large: without keep_best it does harm

    tuned = copy.deepcopy(model)
    result = train(tuned, data, HUGE_LR, progress=False)
    assert _held_out(tuned, data) <= before
    assert result.start_holdout_loss == pytest.approx(before)
    assert result.kept_epoch == 0  # the starting state was the best candidate, and the model is back in it
    for kept, original in zip(tuned.parameters(), model.parameters()):
        assert torch.equal(kept, original)


def test_keep_best_keeps_an_improving_epoch_and_never_looks_at_the_validation_split(
        fitted: tuple[Network, Dataset]) -> None:
    network, data = fitted
    model = network.module
    gentle = TrainConfig(epochs=3, batch_size=32, lr=1e-3, keep_best=True)
    first = copy.deepcopy(model)
    result = train(first, data, gentle, progress=False)
    assert result.kept_epoch is not None and result.kept_holdout_loss is not None
    assert result.kept_holdout_loss == min([result.start_holdout_loss, *(r.holdout_loss for r in result.history)])
    assert _held_out(first, data) == pytest.approx(result.kept_holdout_loss)
    scrambled = dataclasses.replace(data, y_val=-data.y_val * 10)  # the choice must not depend on it
    second = copy.deepcopy(model)
    assert train(second, scrambled, gentle, progress=False).kept_epoch == result.kept_epoch
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_a_diverging_fine_tune_keeps_its_best_state_instead_of_failing(fitted: tuple[Network, Dataset]) -> None:
    network, data = fitted
    model = network.module
    tuned = copy.deepcopy(model)
    result = train(tuned, data, dataclasses.replace(HUGE_LR, lr=1e6), progress=False)
    assert all(bool(torch.isfinite(p.detach()).all()) for p in tuned.parameters())
    assert _held_out(tuned, data) <= _held_out(model, data)
    assert result.kept_epoch == 0


def test_the_range_test_picks_a_finite_rate_in_range_deterministically(fitted: tuple[Network, Dataset]) -> None:
    network, data = fitted
    model = network.module
    untouched = copy.deepcopy(model)
    config = TrainConfig(batch_size=32, keep_best=True, seed=3)
    first, second = lr_range_test(model, data, config), lr_range_test(model, data, config)
    assert math.isfinite(first.lr) and LR_TEST_LOW <= first.lr <= LR_TEST_HIGH
    assert first == second  # same seed, same rates tried, same losses, same choice
    assert len(first.rates) == len(first.losses) >= 2
    assert first.lowest == first.rates[first.losses.index(min(first.losses))]
    edge = first.diverged if first.diverged is not None else LR_TEST_HIGH
    assert min(first.lowest, LR_TEST_CEILING) <= first.lr <= edge  # between the lowest point and the blow-up
    for a, b in zip(model.parameters(), untouched.parameters()):  # a copy was tested, not the model
        assert torch.equal(a, b)


def test_pruning_records_each_rounds_rate_and_an_explicit_rate_overrides_the_test(
        fitted: tuple[Network, Dataset], tmp_path) -> None:
    network, data = fitted
    finetune = TrainConfig(epochs=1, batch_size=64, lr=0.25)
    tested = prune(network, data, PruneConfig(Target.params(0.5), rounds=2, finetune=finetune),
                   tmp_path / "tested", progress=False)
    stages = json.loads((tmp_path / "tested" / "history.json").read_text())["stages"]
    assert stages[0]["finetune_lr"] is None  # the input model was not fine-tuned
    for stage, kept in zip(stages[1:], tested.stages[1:]):
        assert LR_TEST_LOW <= stage["finetune_lr"] <= LR_TEST_HIGH and stage["finetune_lr"] == kept.finetune_lr
        assert stage["finetune_kept_epoch"] in (0, 1)
    given = prune(network, data, PruneConfig(Target.params(0.5), rounds=2, finetune=finetune, lr_test=False),
                  tmp_path / "given", progress=False)
    assert [s.finetune_lr for s in given.stages[1:]] == [0.25, 0.25]
