import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.importer import import_model
from spinn_export.model.mlp import architecture_of, mlp_network
from spinn_export.model.spec import MLPSpec

from .conftest import assert_clean_error, run_cli


def test_round_trip_preserves_spec_weights_and_outputs(tmp_path, small_spec):
    torch.manual_seed(1)
    network = mlp_network(small_spec)
    path = save_checkpoint(tmp_path / "m.safetensors", network, {"variant": "structured"})
    loaded = load_checkpoint(path)
    assert loaded.network.architecture == architecture_of(small_spec) and loaded.variant == "structured"
    x = torch.randn(5, 18)
    torch.testing.assert_close(loaded.network.module(x), network.module(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_checkpoint_is_not_a_pickle(small_checkpoint):
    with pytest.raises((pickle.UnpicklingError, ValueError)):
        pickle.loads(small_checkpoint.read_bytes())
    assert small_checkpoint.read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then JSON


class SeedStyleMLP(nn.Module):
    """Like the design notes' models: a custom class saved whole with torch.save(model)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(18, 16), nn.Linear(16, 8), nn.Linear(8, 2)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.hidden, self.out = nn.Linear(18, 16), nn.Linear(16, 16), nn.Linear(16, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = h + torch.tanh(self.hidden(h))
        return self.out(h)


@pytest.mark.slow
def test_import_state_dict_infers_widths(tmp_path):
    torch.manual_seed(2)
    source = nn.Sequential(nn.Linear(18, 12), nn.ReLU(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2))
    torch.save(source.state_dict(), tmp_path / "sd.pt")
    result = run_cli("import", str(tmp_path / "sd.pt"), "--activation", "relu",
                     "--out", str(tmp_path / "m.safetensors"))
    assert result.returncode == 0, result.stderr
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.network.architecture == architecture_of(MLPSpec(18, (12, 6), 2, "relu"), "state_dict")
    assert "skip connections and gates cannot be seen" in result.stdout
    x = torch.randn(4, 18)
    torch.testing.assert_close(loaded.network.module(x), source(x))


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pickled_module_needs_trust_flag(tmp_path):
    torch.manual_seed(3)
    source = SeedStyleMLP()
    torch.save(source, tmp_path / "whole.pth")
    out = tmp_path / "m.safetensors"
    assert_clean_error(run_cli("import", str(tmp_path / "whole.pth"), "--out", str(out), cwd=REPO), "--trust-pickle")
    assert not out.exists()
    trusted = run_cli("import", str(tmp_path / "whole.pth"), "--trust-pickle", "--in-features", "18", "--out",
                      str(out), cwd=REPO)
    assert trusted.returncode == 0, trusted.stderr
    loaded = load_checkpoint(out)
    architecture = loaded.network.architecture
    assert architecture.is_chain and architecture.widths == (16, 8) and architecture.activation == "tanh"
    assert architecture.source == "pickle"
    x = torch.randn(3, 18)
    torch.testing.assert_close(loaded.network.module(x), source(x))


@pytest.mark.slow
def test_trusted_pickle_whose_class_is_not_importable(tmp_path):
    torch.save(SeedStyleMLP(), tmp_path / "whole.pth")
    result = run_cli("import", str(tmp_path / "whole.pth"), "--trust-pickle", "--in-features", "18", "--out",
                     str(tmp_path / "m.safetensors"), cwd=tmp_path)
    assert_clean_error(result, "importable")
    assert not (tmp_path / "m.safetensors").exists()


def test_a_traced_module_keeps_its_skip_and_freezes_what_it_cannot_prove(tmp_path):
    from spinn_export.model.importer import open_model

    torch.save(ResidualMLP(), tmp_path / "residual.pth")
    residual = open_model(tmp_path / "residual.pth", trust_pickle=True, in_features=18).network.architecture
    assert residual.widths == (16,) and not residual.is_chain  # the skip couples both hidden layers
    torch.save(nn.Sequential(nn.Linear(18, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 2)).eval(),
               tmp_path / "normed.pth")
    normed = open_model(tmp_path / "normed.pth", trust_pickle=True, in_features=18).network.architecture
    assert normed.widths == () and any("layer_norm" in reason for reason in normed.frozen_reasons())
    torch.save(nn.Sequential(nn.Linear(18, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2)).eval(),
               tmp_path / "batch-normed.pth")
    batch_normed = open_model(tmp_path / "batch-normed.pth", trust_pickle=True, in_features=18).network.architecture
    assert batch_normed.widths == (8,)  # eval-mode batch norm works channel by channel
    torch.save(nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(64, 2)), tmp_path / "conv.pth")
    with pytest.raises(UserError, match=r"conv\.pth"):
        open_model(tmp_path / "conv.pth", trust_pickle=True, in_features=18)


@pytest.mark.slow
@pytest.mark.parametrize("state,needle", [
    ({"conv.weight": torch.zeros(4, 1, 3), "conv.bias": torch.zeros(4)}, "'conv'"),
    ({"a.weight": torch.zeros(8, 18), "bn.running_mean": torch.zeros(8)}, "'bn'"),
    ({"a.weight": torch.zeros(8, 18), "a.bias": torch.zeros(8),
      "b.weight": torch.zeros(2, 9), "b.bias": torch.zeros(2)}, "chain"),
])
def test_bad_state_dicts_are_refused_by_the_cli(tmp_path, state, needle):
    torch.save(state, tmp_path / "bad.pt")
    out = tmp_path / "m.safetensors"
    assert_clean_error(run_cli("import", str(tmp_path / "bad.pt"), "--out", str(out)), needle)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("content,needle", [
    (b"", "readable"),
    (b"\x00garbage" * 10, "readable"),
])
def test_corrupt_checkpoints_get_clear_errors(tmp_path, content, needle):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    assert_clean_error(run_cli("info", str(path)), needle)


@pytest.mark.slow
def test_truncated_checkpoint(small_checkpoint):
    data = small_checkpoint.read_bytes()
    small_checkpoint.write_bytes(data[: len(data) // 2])
    assert_clean_error(run_cli("info", str(small_checkpoint)), str(small_checkpoint.name))


@pytest.mark.slow
def test_safetensors_without_spec(tmp_path):
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "raw.safetensors"))
    assert_clean_error(run_cli("info", str(tmp_path / "raw.safetensors")), "spinn-export import")


@pytest.mark.slow
def test_missing_paths(tmp_path):
    assert_clean_error(run_cli("info", str(tmp_path / "nope.safetensors")), "no such file")
    assert_clean_error(run_cli("import", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.safetensors")),
                       "no such file")


def test_checkpoint_files_get_normal_permissions(small_checkpoint):
    import os
    import stat

    mode = stat.S_IMODE(small_checkpoint.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_importing_a_spinn_export_checkpoint_keeps_its_activation(tmp_path):
    """A checkpoint from `spinn-export train` (e.g. given to `run --model`) carries its spec: a SiLU model is not
    re-read as tanh, and contradicting it is an error rather than a silently different network."""
    spec = MLPSpec(3, (8, 5), 2, "silu")
    torch.manual_seed(0)
    network = mlp_network(spec)
    save_checkpoint(tmp_path / "m.safetensors", network, {"variant": "dense"})
    imported = import_model(tmp_path / "m.safetensors")
    x = torch.randn(4, 3)
    assert imported.architecture == architecture_of(spec)
    torch.testing.assert_close(imported.module(x), network.module(x))
    with pytest.raises(UserError, match="silu"):
        import_model(tmp_path / "m.safetensors", activation="tanh")
