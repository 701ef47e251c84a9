"""Every network family users prune, end to end: the groups found, the proof of every prune, a prune to half the
parameters with fine-tuning, ONNX and TorchScript exports with parity, and a paired benchmark case.

The families are plain torch (tests/families.py); each is read the way a user gives it, as a torch.export
program (`.pt2`), so the safe reader is on the path of every one of them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from spinn_export.bench.paired import PairedConfig, paired_speedups
from spinn_export.bench.variants import refs_from_manifest
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.model.checkpoint import load_checkpoint
from spinn_export.model.importer import import_model
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.shrink import select_keep, shrink
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.data import Dataset
from spinn_export.task.train import TrainConfig

from . import families
from .families import seeded

IN = 3
# name -> (module, expected prunable groups with their widths, expected frozen reasons' operation names)
FAMILIES = {
    "residual": (lambda: seeded(families.ResidualMLP), {"inp": 32}),
    "bottleneck-residual": (lambda: seeded(families.BottleneckResidualMLP), {"inp": 24, "a.0": 40, "a.1": 40}),
    "modified-mlp": (lambda: seeded(families.ModifiedMLP), {"u": 32, "first": 32}),
    "fourier-fixed": (lambda: seeded(families.FourierMLP), {"B": 16, "hidden": 32, "hidden2": 32}),
    "fourier-trained": (lambda: seeded(families.FourierMLP, trainable=True),
                        {"B": 16, "hidden": 32, "hidden2": 32}),
    "weight-norm-and-factorised": (lambda: seeded(families.NormalizedMLP),
                                   {"first": 32, "second": 32, "third": 32}),
    "adaptive-activation": (lambda: seeded(families.AdaptiveMLP), {"first": 32, "second": 32}),
    "piratenet": (lambda: seeded(families.PirateNet), {"B": 16, "u": 32}),
}


def save_pt2(module: torch.nn.Module, path: Path) -> Path:
    """What the README tells users to do: one line of torch.export."""
    program = torch.export.export(module, (torch.randn(4, IN),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    return path


def teacher_data(module: torch.nn.Module, rows: int = 1536) -> Dataset:
    """Inputs and the module's own outputs: a fitted network has R² 1 on it, so pruning's loss shows."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(rows, IN, generator=generator) * 2 - 1
    with torch.no_grad():
        y = module(x)
    n = rows // 4
    return Dataset("teacher", ("a", "b", "c"), ("u", "v"), x[2 * n:], y[2 * n:], x[:n], y[:n], x[n:2 * n], y[n:2 * n])


@pytest.fixture(scope="module")
def pruned_families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each family read from its .pt2 and pruned to half its parameters, without and with fine-tuning."""
    found = {}
    root = tmp_path_factory.mktemp("families")
    for name, (build, _) in FAMILIES.items():
        module = build()
        network = import_model(save_pt2(module, root / f"{name}.pt2"))
        data = teacher_data(module)
        config = PruneConfig(Target.params(0.5), rounds=1, finetune=TrainConfig(epochs=0))
        unfitted = prune(network, data, config, root / f"{name}-unfitted", progress=False)
        config = dataclasses.replace(config, finetune=TrainConfig(epochs=3, batch_size=64, lr=3e-3))
        result = prune(network, data, config, root / name, progress=False)
        found[name] = (module, network.architecture, result, root / name, unfitted.final.val_r2)
    return found


@pytest.mark.parametrize("name", FAMILIES)
def test_the_groups_found_are_the_coupled_widths(name, tmp_path):
    build, expected = FAMILIES[name]
    architecture = import_model(save_pt2(build(), tmp_path / f"{name}.pt2")).architecture
    assert dict(zip(architecture.group_names, architecture.widths)) == expected
    assert architecture.source == "pt2"


@pytest.mark.parametrize("name", FAMILIES)
def test_a_prune_to_half_the_parameters_fine_tunes_and_keeps_the_function_close(name, pruned_families):
    _, architecture, result, out, unfitted_r2 = pruned_families[name]
    assert abs(result.final.params - 0.5 * architecture.params) <= 0.05 * architecture.params
    assert all(w < d for w, d in zip(result.network.architecture.widths, architecture.widths))
    assert result.final.val_r2 > unfitted_r2  # fine-tuning recovers some of the teacher's function
    reloaded = load_checkpoint(out / "structured.safetensors").network
    assert reloaded.architecture.widths == result.network.architecture.widths
    assert reloaded.architecture.source == "pt2"
    x = torch.randn(16, IN)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.module(x), result.network.module(x))


@pytest.mark.parametrize("name", ["residual", "modified-mlp", "fourier-trained", "piratenet"])
@pytest.mark.parametrize("fold", ["none", "bias", "mean"])
def test_every_prune_is_proven_and_a_wrong_slice_is_caught(name, fold, monkeypatch, tmp_path):
    network = import_model(save_pt2(FAMILIES[name][0](), tmp_path / f"{name}.pt2"))
    architecture = network.architecture
    scores = [torch.rand(w, generator=torch.Generator().manual_seed(3)) for w in architecture.widths]
    keep = select_keep(scores, [w // 2 for w in architecture.widths])
    calibration = torch.rand(256, IN) * 2 - 1
    pruned = shrink(network, keep, fold=fold, calibration=calibration)  # proven inside
    assert pruned.architecture.widths == tuple(w // 2 for w in architecture.widths)

    import spinn_export.prune.shrink as surgery

    original = surgery.removal_of

    def off_by_one(*args, **kwargs):  # keep one wrong channel of the first weight that has one removed
        removal = original(*args, **kwargs)
        axis, kept = next((a, k) for a, k in removal.keep.items()
                          if a[0] in architecture.graph.tensor_info and len(k) < architecture.analysis.lengths[a])
        removed = sorted(set(range(architecture.analysis.lengths[axis])) - set(kept.tolist()))
        removal.keep[axis] = torch.tensor(sorted([*kept.tolist()[1:], removed[0]]))
        return removal

    monkeypatch.setattr(surgery, "removal_of", off_by_one)
    with pytest.raises(surgery.ProofError, match="differs from the original"):
        shrink(network, keep, fold=fold, calibration=calibration)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_and_torchscript_exports_hold_parity(name, pruned_families):
    out = pruned_families[name][3]
    manifest = export_checkpoints([out / "stage_0.safetensors", out / "structured.safetensors"], out / "artifacts",
                                  parse_formats("onnx,torchscript"))
    assert {r.format for r in manifest.artifacts} == {"onnx", "torchscript"}
    for record in manifest.artifacts:
        assert record.parity["passed"] and record.parity["criterion"] == "float32"
        assert record.architecture_source == "pt2"


@pytest.mark.slow
def test_a_paired_benchmark_case_per_family(pruned_families):
    """One paired case per family (ABBA, one fresh process each), dense against its pruned model on ort-cpu."""
    for name, (_, architecture, result, out, _) in pruned_families.items():
        directory = out / "bench"
        dense = out / "dense.safetensors"
        structured = out / "structured.safetensors"
        dense.write_bytes((out / "stage_0.safetensors").read_bytes())
        export_checkpoints([dense, structured], directory, parse_formats("onnx"))
        refs = {ref.model: ref for ref in refs_from_manifest(directory)}
        [speed] = paired_speedups("ort-cpu", refs["dense"], [refs["structured"]], [1024], 1,
                                  PairedConfig(processes=1, cycles=4, block_seconds=0.005))
        assert speed.ci_low <= speed.speedup_median <= speed.ci_high, name
        pruned = result.network.architecture
        assert speed.flop_ratio == pytest.approx(architecture.flops_per_sample / pruned.flops_per_sample)


def test_a_latency_target_on_a_graph_is_planned_on_its_layers_and_checked_on_whole_networks(tmp_path, monkeypatch):
    from .test_latency_budget import FakeMeasurer

    monkeypatch.setenv("SPINN_EXPORT_CACHE", str(tmp_path / "cache"))
    module = seeded(families.BottleneckResidualMLP)
    network = import_model(save_pt2(module, tmp_path / "model.pt2"))
    architecture = network.architecture
    measurer = FakeMeasurer(tile=8, bias=1.1)
    config = PruneConfig(Target.latency(0.5, "fake", 64), rounds=1, finetune=TrainConfig(epochs=0),
                         calibration_samples=64)
    result = prune(network, teacher_data(module), config, tmp_path / "out", progress=False,
                   measurer=measurer)
    assert result.latency.checks and result.achieved_latency is not None
    checked = [widths for widths, final in measurer.ratios if not final]
    assert checked and all(len(widths) == len(architecture.widths) for widths in checked)  # whole networks
    assert measurer.model_cost(result.network.architecture) < 0.6 * measurer.model_cost(architecture)
