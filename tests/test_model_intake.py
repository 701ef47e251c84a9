"""Reading the user's model exactly or refusing it: the safe .pt2 reader, --model-code, the bare state_dict's note,
fail-closed groups, and every bad input as one line that writes nothing."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from spinn_export.cli import main
from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint, read_metadata
from spinn_export.model.importer import import_model
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.train import TrainConfig

from . import families
from .families import seeded
from .test_graph_families import save_pt2, teacher_data


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, list[str]]:
    """`spinn-export ARGS` in this process: exit code, stdout, and the non-empty lines of stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def assert_one_line_error(capsys: pytest.CaptureFixture[str], *args: str, needles: tuple[str, ...],
                          unwritten: Path) -> str:
    code, _, err = cli(capsys, *args)
    assert code == 2 and len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert not unwritten.exists()
    return err[0]


class _RunsCode:
    """Unpickling this runs `open(MARKER, "w")`: what a malicious payload would do, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _with_pickled_payload(source: Path, target: Path, marker: Path) -> Path:
    """The .pt2 with its first weight replaced by a pickle that runs code, flagged `use_pickle` as torch.export.save
    flags tensor subclasses."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config_name = next(n for n in entries if n.endswith("model_weights_config.json"))
    config = json.loads(entries[config_name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    entries[config_name] = json.dumps(config).encode()
    entries[config_name.replace("model_weights_config.json", first["path_name"])] = pickle.dumps(_RunsCode(marker))
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return target


def test_a_pt2_carrying_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, capsys):
    clean = save_pt2(seeded(families.ResidualMLP), tmp_path / "clean.pt2")
    marker = tmp_path / "ran.txt"
    bad = _with_pickled_payload(clean, tmp_path / "bad.pt2", marker)
    message = assert_one_line_error(capsys, "import", str(bad), "--out", str(tmp_path / "m.safetensors"),
                                    needles=("pickle", "run code", "--trust-pickle"),
                                    unwritten=tmp_path / "m.safetensors")
    assert "weight" in message
    assert not marker.exists()  # nothing from the file ran
    with pytest.raises(RuntimeError, match="deserializing"):  # the check has teeth: torch's own loader runs it
        torch.export.load(bad)
    assert marker.read_text() == "ran"


def test_a_custom_object_is_refused_even_when_trusted(tmp_path):
    clean = save_pt2(seeded(families.ResidualMLP), tmp_path / "clean.pt2")
    with zipfile.ZipFile(clean) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in entries if n.endswith("model_constants_config.json"))
    entries[name] = json.dumps({"config": {"obj": {"path_name": "custom_obj_0", "is_param": False,
                                                   "use_pickle": True, "tensor_meta": None}}}).encode()
    bad = tmp_path / "custom.pt2"
    with zipfile.ZipFile(bad, "w") as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)
    with pytest.raises(UserError, match="custom object"):
        import_model(bad, trust_pickle=True)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * t


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.u, self.v = nn.Linear(3, 1), nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.u(x), self.v(x)


def test_pt2_inputs_and_outputs_it_cannot_handle_are_one_line(tmp_path, capsys):
    two_in = torch.export.export(_TwoInputs(), (torch.randn(4, 3), torch.randn(4, 1)))
    torch.export.save(two_in, tmp_path / "two_in.pt2")
    torch.export.save(torch.export.export(_TwoOutputs(), (torch.randn(4, 3),)), tmp_path / "two_out.pt2")
    out = tmp_path / "m.safetensors"
    assert_one_line_error(capsys, "import", str(tmp_path / "two_in.pt2"), "--out", str(out),
                          needles=("2 tensor inputs", "one tensor"), unwritten=out)
    assert_one_line_error(capsys, "import", str(tmp_path / "two_out.pt2"), "--out", str(out),
                          needles=("returns 2 outputs",), unwritten=out)
    (tmp_path / "junk.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    assert_one_line_error(capsys, "import", str(tmp_path / "junk.pt2"), "--out", str(out),
                          needles=("junk.pt2",), unwritten=out)


CODE = '''
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.block, self.out = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h + torch.tanh(self.block(h)))


class Branchy(Residual):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: no single graph
            return self.out(torch.tanh(self.inp(x)))
        return super().forward(x)


def build():
    return Residual()


def branchy():
    return Branchy()


def broken():
    raise RuntimeError("no GPU here")


def not_a_module():
    return 42
'''


@pytest.fixture
def model_code(tmp_path: Path) -> tuple[Path, Path]:
    """A residual network's code and a state_dict of it."""
    code = tmp_path / "net.py"
    code.write_text(CODE)
    namespace: dict = {}
    exec(compile(CODE, str(code), "exec"), namespace)
    torch.manual_seed(0)
    state = tmp_path / "state.pt"
    torch.save(namespace["build"]().state_dict(), state)
    return code, state


def test_model_code_reads_the_real_architecture_where_a_bare_state_dict_cannot(model_code, tmp_path, capsys):
    code, state = model_code
    out = tmp_path / "m.safetensors"
    status, stdout, err = cli(capsys, "import", str(state), "--model-code", f"{code}:build", "--in-features", "3",
                              "--out", str(out))
    assert status == 0 and not err
    checkpoint = load_checkpoint(out)
    architecture = checkpoint.network.architecture
    assert architecture.widths == (8,) and not architecture.is_chain  # the skip is seen
    assert read_metadata(out)["architecture_source"] == "model-code"
    assert "note:" not in stdout

    chain = tmp_path / "chain.safetensors"
    status, stdout, err = cli(capsys, "import", str(state), "--out", str(chain))
    assert status == 0 and not err
    notes = [line for line in stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "skip connections and gates cannot be seen" in notes[0] and ".pt2" in notes[0]
    assert read_metadata(chain)["architecture_source"] == "state_dict"
    assert load_checkpoint(chain).network.architecture.is_chain


@pytest.mark.parametrize("change,needle", [
    (lambda s: s.pop("block.bias"), "missing key 'block.bias'"),
    (lambda s: s.update(extra=torch.zeros(2)), "unexpected key 'extra'"),
    (lambda s: s.update({"block.weight": torch.zeros(8, 9)}), "key 'block.weight' has shape (8, 9)"),
])
def test_a_state_dict_that_does_not_fit_the_code_names_the_key(model_code, tmp_path, capsys, change, needle):
    code, state = model_code
    loaded = torch.load(state)
    change(loaded)
    torch.save(loaded, state)
    out = tmp_path / "m.safetensors"
    assert_one_line_error(capsys, "import", str(state), "--model-code", f"{code}:build", "--in-features", "3",
                          "--out", str(out), needles=(needle, "does not fit"), unwritten=out)


@pytest.mark.parametrize("factory,needles", [
    ("broken", ("calling it failed", "RuntimeError: no GPU here")),
    ("not_a_module", ("returned a int", "not a torch.nn.Module")),
    ("branchy", ("torch.export cannot trace",)),
    ("missing", ("defines no 'missing'",)),
])
def test_factories_that_fail_are_one_line(model_code, tmp_path, capsys, factory, needles):
    code, state = model_code
    out = tmp_path / "m.safetensors"
    assert_one_line_error(capsys, "import", str(state), "--model-code", f"{code}:{factory}", "--in-features", "3",
                          "--out", str(out), needles=needles, unwritten=out)


def test_a_module_needs_its_input_width(model_code, tmp_path, capsys):
    code, state = model_code
    out = tmp_path / "m.safetensors"
    assert_one_line_error(capsys, "import", str(state), "--model-code", f"{code}:build", "--out", str(out),
                          needles=("--in-features",), unwritten=out)


@pytest.mark.parametrize("family,frozen_op,prunable", [
    (families.LayerNormMLP, "layer_norm", ("second",)),
    (families.ReshapeMLP, "reshape", ("second",)),
    (families.AttentionMLP, "reshape", ("head",)),
])
def test_what_cannot_be_proven_is_frozen_with_the_op_named(tmp_path, capsys, family, frozen_op, prunable):
    path = save_pt2(seeded(family), tmp_path / "model.pt2")
    network = import_model(path)
    architecture = network.architecture
    assert architecture.group_names == prunable
    assert any(frozen_op in reason for reason in architecture.frozen_reasons())
    out = tmp_path / "out.safetensors"
    status, stdout, err = cli(capsys, "import", str(path), "--out", str(out))
    assert status == 0 and not err
    assert any(line.strip().startswith("frozen") and frozen_op in line for line in stdout.splitlines())
    config = PruneConfig(Target.params(0.2), rounds=1, finetune=TrainConfig(epochs=0))
    result = prune(network, teacher_data(seeded(family)), config, tmp_path / "pruned", progress=False)
    after = {g.name: g.width for g in result.network.architecture.groups}
    assert all(after[g.name] == g.width for g in architecture.groups if g.frozen)  # frozen: untouched
    assert all(after[name] < width for name, width in zip(architecture.group_names, architecture.widths))
    frozen_name = next(g.name for g in architecture.groups if g.frozen and frozen_op in g.frozen)
    assert_one_line_error(capsys, "prune", str(path), "--widths", f"{frozen_name}=8", "--out", str(tmp_path / "p"),
                          needles=(f"names group {frozen_name!r}", "frozen", frozen_op), unwritten=tmp_path / "p")


class _OnlyNormalised(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.norm, self.out = nn.Linear(3, 16), nn.LayerNorm(16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.norm(self.first(x))))


def test_a_network_with_nothing_provable_is_one_line_naming_the_op(tmp_path, capsys):
    path = save_pt2(seeded(_OnlyNormalised), tmp_path / "model.pt2")
    assert_one_line_error(capsys, "prune", str(path), "--target", "0.5", "--out", str(tmp_path / "p"),
                          needles=("no width of this network can be pruned soundly", "layer_norm"),
                          unwritten=tmp_path / "p")
