"""The PINN frameworks' own networks, read exactly: every fixture in tests/data/frameworks (PhysicsNeMo,
PhysicsNeMo-Sym, TorchPhysics, NeuroMANCER, DeepXDE, PINA; built by tests/frameworks/build_fixtures.py, trained
briefly on a heat equation and saved with the README's torch.export line) is imported with no framework installed,
and then either pruned to half its parameters with the proof on its own data and exported with parity, or refused
in one line naming the operation that freezes it. None ends in a traceback.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.model.importer import import_model
from spinn_export.model.mlp import count_nonzero
from spinn_export.prune.budget import plan_widths
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.importance import weight_values
from spinn_export.prune.magnitude import magnitude_prune
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.data import load_user_dataset
from spinn_export.task.train import TrainConfig

ROOT = Path(__file__).parent / "data" / "frameworks"
INDEX = [entry for entry in json.loads((ROOT / "index.json").read_text()) if entry["exported"]]
# Networks whose every width is tied to an op that is not channel by channel: refused with that op named.
REFUSED = {"neuromancer-kanblock.pt2": "view", "neuromancer-basislinear.pt2": "index"}
# TorchScript traces at one batch size, and PINA's DeepONet reshapes by its batch: that one is checked as ONNX.
# DeepRitzNet's cubic activations: ONNX parity holds on its own domain (the checkpoints record its inputs' range).
EXPORT = {"pina-deeponet.pt2": "onnx", "torchphysics-deepritznet.pt2": "torchscript,onnx"}
LARGE = {"physicsnemo-fullyconnected-skip-6x256.pt2"}  # the performance fixture: analysed here, timed in bench/


def _data(entry: dict):
    if entry["in_features"] == 6:
        return load_user_dataset(ROOT / "heat-deeponet.csv", ["b0", "b1", "b2", "b3", "x", "t"], ["u"], 0, None)
    return load_user_dataset(ROOT / "heat.csv", ["x", "t"], ["u"], 0, None)


SLOW = {"pina-deeponet.pt2", "torchphysics-deepritznet.pt2"}  # seconds each; the other networks stay in the fast lane


@pytest.mark.parametrize("entry", [pytest.param(e, marks=pytest.mark.slow) if e["file"] in SLOW else e for e in INDEX],
                         ids=[e["file"] for e in INDEX])
def test_a_framework_network_is_read_exactly_and_prunes_or_is_refused_in_one_line(entry, tmp_path):
    dataset = _data(entry)
    network = import_model(ROOT / entry["file"], data=dataset.x_train)  # checked on its own rows
    architecture = network.architecture
    assert (architecture.in_features, architecture.out_features) == (entry["in_features"], entry["out_features"])
    if entry["file"] in REFUSED:
        with pytest.raises(UserError, match=REFUSED[entry["file"]]) as refused:
            architecture.require_prunable(entry["file"])
        assert "\n" not in str(refused.value)
        return
    trainable = sum(math.prod(t.shape) for t in architecture.graph.tensors if t.trainable)
    assert trainable == entry["params"]  # counted as the framework's module has them, factors and all
    assert architecture.prunable, architecture.frozen_reasons()
    if entry["file"] in LARGE:
        return
    config = PruneConfig(Target.params(0.5), rounds=1, finetune=TrainConfig(epochs=0))
    result = prune(network, dataset, config, tmp_path, progress=False)
    assert result.final.params < architecture.params
    manifest = export_checkpoints([tmp_path / "stage_0.safetensors", tmp_path / "structured.safetensors"],
                                  tmp_path / "artifacts", parse_formats(EXPORT.get(entry["file"], "torchscript")))
    assert all(record.parity["passed"] for record in manifest.artifacts)


def test_a_schedule_of_rounds_never_ends_below_one_cut_to_the_same_widths(tmp_path):
    """TorchPhysics' Harmonic FCN loses more in two rounds than in one cut to the same widths: the last round then
    goes on from the one cut (chosen on held-out training rows), so the schedule cannot end below it."""
    entry = next(e for e in INDEX if e["file"] == "torchphysics-harmonic-fcn.pt2")
    dataset, network = _data(entry), import_model(ROOT / entry["file"])
    untuned = TrainConfig(epochs=0)
    once = prune(network, dataset, PruneConfig(Target.params(0.5), rounds=1, finetune=untuned), tmp_path / "once",
                 progress=False)
    rounds = prune(network, dataset, PruneConfig(Target.params(0.5), rounds=2, finetune=untuned),
                   tmp_path / "rounds", progress=False)
    assert rounds.final.widths == once.final.widths
    assert rounds.final.one_shot and rounds.final.val_r2 == pytest.approx(once.final.val_r2)


@pytest.mark.parametrize("name", ["physicsnemo-fullyconnected-weight-norm.pt2",
                                  "physicsnemo-fullyconnected-weight-fact.pt2", "physicsnemo-sym-dgmarch.pt2"])
def test_magnitude_pruning_zeroes_the_matrices_a_computed_weight_is_made_of(name):
    """Weight norm and weight factorisation compute each layer's weight from stored matrices (v, or V): the
    magnitude baseline zeroes those, so it reaches the structured count and the computed weights carry the zeros."""
    network = import_model(ROOT / name)
    target = plan_widths(network.architecture, Target.params(0.5)).params
    magnitude_prune(network, target)
    assert count_nonzero(network.module) == target
    values = weight_values(network)
    computed = [layer.weight for layer in network.architecture.layers if layer.weight not in network.tensors]
    assert computed and any(bool((values[weight] == 0).any()) for weight in computed)
    rows = torch.rand(64, network.architecture.in_features)
    assert torch.isfinite(network.module(rows)).all()  # no row of a normalised matrix was zeroed whole
