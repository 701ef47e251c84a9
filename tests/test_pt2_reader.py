"""The safe .pt2 reader on what the PINN frameworks' real networks put in an archive: non-persistent buffers and
lifted constants, torch.export's assertion nodes, integer index buffers, list and dict outputs, names that are not
Python identifiers, `.item()`, dropout and random numbers in forward, and a weight-free input embedding at export.

Every case is a real module exported with torch.export and read back as a user's file is read."""
from __future__ import annotations

import copy
import json
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from spinn_export.cli import main
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_one
from spinn_export.export.formats import get_format
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.graph import Graph, fresh_name, shapes
from spinn_export.model.importer import import_model, open_model
from spinn_export.model.pt2 import read_pt2

IN = 3


def exported(module: nn.Module, path: Path, width: int = IN) -> Path:
    """The README's one line: torch.export with a dynamic batch axis, saved."""
    program = torch.export.export(module, (torch.randn(4, width),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    return path


def same_as(module: nn.Module, model: nn.Module, width: int = IN) -> bool:
    x = torch.randn(17, width, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return torch.allclose(model(x), module(x), atol=1e-6)


def rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """The archive with its program's JSON changed by `change` (what a damaged or foreign file could hold)."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in entries if "/models/" in n and n.endswith(".json"))
    program = json.loads(entries[name])
    change(program["graph_module"]["graph"])
    entries[name] = json.dumps(program).encode()
    target = path.with_name(f"changed-{path.name}")
    with zipfile.ZipFile(target, "w") as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)
    return target


def refused(path: Path, *needles: str, **options: Any) -> str:
    with pytest.raises(UserError) as caught:
        import_model(path, **options)
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ------------------------------------------------------------------------------ 1. buffers kept out of the state_dict


class _NonPersistent(nn.Module):
    """PhysicsNeMo's pattern: a device marker and an integer index, both registered with persistent=False."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 4)
        self.register_buffer("device_buffer", torch.empty(0), persistent=False)
        self.register_buffer("xyzt_slice_index", torch.tensor([2, 0, 1]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.index_select(x, 1, self.xyzt_slice_index))


class _LiftedConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x * torch.tensor([1.0, 2.0, 3.0]))


def test_non_persistent_buffers_are_read_from_the_constants(tmp_path: Path) -> None:
    module = _NonPersistent().eval()
    network = import_model(exported(module, tmp_path / "m.pt2"))
    assert same_as(module, network.module)
    info = network.architecture.graph.tensor_info["xyzt_slice_index"]
    assert (info.dtype, info.trainable) == ("int64", False)
    assert torch.equal(network.module.state_dict()["xyzt_slice_index"], torch.tensor([2, 0, 1]))


def test_a_tensor_made_in_forward_is_a_lifted_constant(tmp_path: Path) -> None:
    module = _LiftedConstant().eval()
    model = import_model(exported(module, tmp_path / "m.pt2")).module
    assert same_as(module, model)


# ------------------------------------------------------------------------------ 2. operations that return nothing


class _Casts(nn.Module):
    """TorchPhysics' FCN and NeuroMANCER's blocks cast in forward: torch.export adds _assert_tensor_metadata."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float()).to(torch.float32)


def _assertions(graph: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in graph["nodes"] if n["target"].endswith("_assert_tensor_metadata.default")]


def test_metadata_assertions_are_checked_and_dropped(tmp_path: Path) -> None:
    module = _Casts().eval()
    path = exported(module, tmp_path / "m.pt2")
    with zipfile.ZipFile(path) as archive:
        assert b"_assert_tensor_metadata" in archive.read(next(n for n in archive.namelist() if "/models/" in n))
    network = import_model(path)
    assert same_as(module, network.module)
    assert not any("assert" in node.op for node in network.architecture.graph.nodes)


def test_an_assertion_that_contradicts_the_graph_is_refused(tmp_path: Path) -> None:
    def float64(graph: dict[str, Any]) -> None:
        for item in _assertions(graph)[0]["inputs"]:
            if item["name"] == "dtype":
                item["arg"] = {"as_scalar_type": 8}

    path = rewrite(exported(_Casts(), tmp_path / "m.pt2"), float64)
    refused(path, "asserts that 'x' is float64 but records it as float32", "damaged")


def test_an_unknown_operation_without_outputs_is_refused_by_name(tmp_path: Path) -> None:
    def unknown(graph: dict[str, Any]) -> None:
        _assertions(graph)[0]["target"] = "torch.ops.aten.record_stream.default"

    path = rewrite(exported(_Casts(), tmp_path / "m.pt2"), unknown)
    refused(path, "operation aten.record_stream.default returns nothing")


# ------------------------------------------------------------------------------ 3. integer tensors keep their dtype


def test_integer_buffers_keep_their_dtype_through_shapes_and_checkpoints(tmp_path: Path) -> None:
    module = _NonPersistent().eval()
    network = import_model(exported(module, tmp_path / "m.pt2"))
    assert shapes(network.architecture.graph)[network.architecture.graph.output] == (3, 4)
    save_checkpoint(tmp_path / "m.safetensors", network)
    checkpoint = load_checkpoint(tmp_path / "m.safetensors")
    assert checkpoint.network.architecture.graph.tensor_info["xyzt_slice_index"].dtype == "int64"
    assert same_as(module, checkpoint.network.module)


class _Selects(nn.Module):
    """Columns chosen by a stored index: by integers (any index of zeros has the same shape), or by a boolean mask
    (whose output's width is the mask's count of True, which shapes inferred on zeros cannot follow)."""

    def __init__(self, mask: bool) -> None:
        super().__init__()
        index = torch.tensor([True, False, True]) if mask else torch.tensor([2, 0])
        self.register_buffer("columns", index)
        self.layer = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x[:, self.columns])


def test_columns_by_an_integer_index_are_read_and_by_a_mask_refused(tmp_path: Path) -> None:
    module = _Selects(mask=False).eval()
    network = import_model(exported(module, tmp_path / "index.pt2"))
    assert same_as(module, network.module) and network.architecture.graph.tensor_info["columns"].dtype == "int64"
    refused(exported(_Selects(mask=True), tmp_path / "mask.pt2"), "depends on the values", "integer index")


def test_a_graph_written_before_dtypes_reads_as_float32(tmp_path: Path) -> None:
    architecture = import_model(exported(_NonPersistent().eval(), tmp_path / "m.pt2")).architecture
    data = architecture.graph.to_dict()
    assert [t.get("dtype") for t in data["tensors"]].count("int64") == 1
    assert all("dtype" not in t for t in data["tensors"] if t["name"] != "xyzt_slice_index")  # float32 unwritten
    old = {**data, "tensors": [{k: v for k, v in t.items() if k != "dtype"} for t in data["tensors"]]}
    assert {t.dtype for t in Graph.from_dict(old).tensors} == {"float32"}
    damaged = {**data, "tensors": [{**t, "dtype": "float99"} for t in data["tensors"]]}
    with pytest.raises(UserError, match="unknown dtype 'float99'"):
        Graph.from_dict(damaged)


# ------------------------------------------------------------------------------ 4. list and dict outputs


class _OneChunk(nn.Module):
    """PhysicsNeMo-Sym's single-output networks end in a split into one chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.split(self.layer(x), 2, dim=1)[0]


class _Halves(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.layer(x), 2, dim=1)
        return a * b


class _Several(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 2)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor) -> Any:
        y = self.layer(x)
        return {"u": y, "p": torch.tanh(y), "q": y * 2} if self.as_dict else (y, torch.tanh(y), y * 2)


def test_a_one_chunk_split_is_the_tensor_itself(tmp_path: Path) -> None:
    module = _OneChunk().eval()
    network = import_model(exported(module, tmp_path / "m.pt2"))
    assert same_as(module, network.module)
    assert not any("split" in node.op for node in network.architecture.graph.nodes)


def test_a_split_into_several_chunks_runs(tmp_path: Path) -> None:
    module = _Halves().eval()
    network = import_model(exported(module, tmp_path / "m.pt2"))
    assert same_as(module, network.module)
    assert shapes(network.architecture.graph)[network.architecture.graph.output] == (3, 2)


@pytest.mark.parametrize("as_dict", [False, True])
def test_several_outputs_need_a_choice(tmp_path: Path, as_dict: bool) -> None:
    module = _Several(as_dict).eval()
    path = exported(module, tmp_path / "m.pt2")
    message = refused(path, "the model returns 3 outputs", "choose one with --output N (0-2), or wrap the model")
    assert ("(0: u, 1: p, 2: q)" in message) == as_dict
    model = import_model(path, output=1).module
    x = torch.randn(5, IN)
    with torch.no_grad():
        expected = module(x)["p"] if as_dict else module(x)[1]
        assert torch.allclose(model(x), expected)
    refused(path, "--output 3 is out of range: the model returns 3 outputs (0-2)", output=3)


def test_output_is_threaded_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = exported(_Several(False).eval(), tmp_path / "m.pt2")
    out = tmp_path / "m.safetensors"
    assert main(["import", str(path), "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--output N" in err[0] and not out.exists()
    assert main(["import", str(path), "--output", "2", "--out", str(out)]) == 0
    assert load_checkpoint(out).network.architecture.out_features == 2
    with pytest.raises(UserError, match="drop --output 0"):
        open_model(out, output=0)


def test_output_chooses_among_a_modules_outputs(tmp_path: Path) -> None:
    code = tmp_path / "net.py"
    code.write_text("from tests.test_pt2_reader import _Several\n\ndef build():\n    return _Several(True)\n")
    module = _Several(True)
    torch.save(module.state_dict(), tmp_path / "state.pt")
    label = f"{code}:build"
    refused(tmp_path / "state.pt", "(0: u, 1: p, 2: q)", model_code=label, in_features=IN)
    model = import_model(tmp_path / "state.pt", model_code=label, in_features=IN, output=2).module
    assert set(model.state_dict()) == {"layer.weight", "layer.bias"}
    with torch.no_grad():
        x = torch.randn(5, IN)
        assert torch.allclose(model(x), module(x)["q"])
    refused(tmp_path / "state.pt", "--output 4 is out of range", model_code=label, in_features=IN, output=4)


# ------------------------------------------------------------------------------ 5. names


class _MatmulWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.matmul_weight = nn.Parameter(torch.randn(IN, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(x @ self.matmul_weight))


class _Keywords(nn.Module):
    """nn.ModuleDict keys that are Python keywords or no identifier at all."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({"in": nn.Linear(IN, 8), "class": nn.Linear(8, 8), "def": nn.Linear(8, 8),
                                     "lambda": nn.Linear(8, 8), "out-put": nn.Linear(8, 2)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("in", "class", "def", "lambda"):
            x = torch.tanh(self.layers[name](x))
        return self.layers["out-put"](x)


def _top_level_keywords() -> nn.Module:
    return nn.Sequential(OrderedDict([("in", nn.Linear(IN, 8)), ("act", nn.Tanh()), ("return", nn.Linear(8, 2))]))


def test_fresh_names_avoid_every_name_taken() -> None:
    assert fresh_name("matmul", {"x"}) == "matmul"
    assert fresh_name("matmul_weight", {"matmul_weight", "matmul_weight_1"}) == "matmul_weight_2"
    assert fresh_name("layer", {"layer.weight"}) == "layer_1"  # a tensor `layer` could not sit beside `layer.weight`
    assert fresh_name("layer.weight.a", {"layer.weight", "layer_weight_a"}) == "layer_weight_a_1"


def test_a_parameter_called_matmul_weight(tmp_path: Path) -> None:
    module = _MatmulWeight().eval()
    model = import_model(exported(module, tmp_path / "m.pt2")).module
    assert same_as(module, model)
    assert "matmul_weight" in model.state_dict()


@pytest.mark.parametrize("build", [_Keywords, _top_level_keywords], ids=["module-dict", "top-level"])
def test_names_that_are_keywords_keep_their_state_dict_keys(tmp_path: Path, build: Callable[[], nn.Module]) -> None:
    module = build().eval()
    network = import_model(exported(module, tmp_path / "m.pt2"))
    assert set(network.module.state_dict()) == set(module.state_dict())
    assert same_as(module, network.module) and same_as(module, copy.deepcopy(network.module))
    save_checkpoint(tmp_path / "m.safetensors", network)
    assert same_as(module, load_checkpoint(tmp_path / "m.safetensors").network.module)


@pytest.mark.parametrize("fmt", ["exported-program", pytest.param("onnx", marks=pytest.mark.slow)])
def test_names_that_are_keywords_export(tmp_path: Path, fmt: str) -> None:
    """torch.export's own code generation cannot write `self.layers.in`: the artifacts name it `layers.in_`."""
    network = import_model(exported(_Keywords().eval(), tmp_path / "m.pt2"))
    checkpoint_file = save_checkpoint(tmp_path / "m.safetensors", network)
    record = export_one(load_checkpoint(checkpoint_file), "m", get_format(fmt), tmp_path, 17, checkpoint_file)
    assert record.parity["passed"] and "layers.in" in record.groups


# ------------------------------------------------------------------------------ 6, 9. what a network to prune cannot do


class _Item(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 2)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * self.scale.item()


class _Dropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 8)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.tanh(self.layer(x))))


class _Noise(nn.Module):
    def __init__(self, like: bool) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 2)
        self.like = like

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        return y + (torch.rand_like(y) if self.like else torch.randn(x.shape[0], 2))


class _Norm(nn.Module):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 4)
        self.norm = nn.BatchNorm1d(4, **options)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.layer(x)))


class _Updates(nn.Module):
    def __init__(self, own: bool) -> None:
        super().__init__()
        self.layer = nn.Linear(IN, 1)
        self.register_buffer("calls", torch.zeros(()))
        self.own = own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1) if self.own else x.mul_(2)
        return self.layer(x)


def test_item_in_forward_is_refused(tmp_path: Path) -> None:
    refused(exported(_Item(), tmp_path / "m.pt2"), ".item()", "use the tensor, not .item(), in forward")


def test_dropout_in_training_mode_is_refused(tmp_path: Path) -> None:
    refused(exported(_Dropout().train(), tmp_path / "m.pt2"), "dropout in training mode", "model.eval()")


def test_dropout_in_eval_mode_is_dropped(tmp_path: Path) -> None:
    module = _Dropout().eval()
    network = import_model(exported(module, tmp_path / "m.pt2"))
    assert same_as(module, network.module)
    assert not any("dropout" in node.op for node in network.architecture.graph.nodes)


@pytest.mark.parametrize("module", [_Norm().train(), _Norm(track_running_stats=False).eval()],
                         ids=["training-mode", "no-running-stats"])
def test_batch_statistics_are_refused(tmp_path: Path, module: nn.Module) -> None:
    refused(exported(module, tmp_path / "m.pt2"), "each batch's statistics", "model.eval()")


def test_batch_norm_in_eval_mode_is_read(tmp_path: Path) -> None:
    module = _Norm().eval()
    model = import_model(exported(module, tmp_path / "m.pt2")).module
    assert same_as(module, model)


@pytest.mark.parametrize(("own", "what"), [(True, "'calls'"), (False, "its input")])
def test_updates_in_place_are_refused(tmp_path: Path, own: bool, what: str) -> None:
    refused(exported(_Updates(own), tmp_path / "m.pt2"), f"forward changes {what} in place", "compute on a copy")


@pytest.mark.parametrize(("like", "op"), [(False, "aten.randn"), (True, "aten.rand_like")])
def test_random_numbers_in_forward_are_refused(tmp_path: Path, like: bool, op: str) -> None:
    refused(exported(_Noise(like), tmp_path / "m.pt2"), f"forward draws random numbers ({op})", "deterministic")


# ------------------------------------------------------------------------------ 7. the input width at export


class _Harmonic(nn.Module):
    """TorchPhysics' Harmonic_FCN: a weight-free embedding wider than the input before the first layer."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4 * IN, 16)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.cat([x, 2 * x], 1)
        return self.head(torch.tanh(self.hidden(torch.cat([torch.sin(k), torch.cos(k)], 1))))


def test_export_takes_the_input_width_from_the_graph(tmp_path: Path) -> None:
    module = _Harmonic().eval()
    network = import_model(exported(module, tmp_path / "m.pt2"))
    checkpoint_file = save_checkpoint(tmp_path / "m.safetensors", network)
    record = export_one(load_checkpoint(checkpoint_file), "m", get_format("torchscript"), tmp_path, 17,
                        checkpoint_file)
    assert record.in_features == IN and record.parity["passed"]


# ------------------------------------------------------------------------------ the archive as the reader sees it


def test_read_pt2_names_every_stored_tensor(tmp_path: Path) -> None:
    graph, tensors = read_pt2(exported(_NonPersistent(), tmp_path / "m.pt2"))
    assert set(tensors) == {"layer.weight", "layer.bias", "device_buffer", "xyzt_slice_index"}
    assert tensors["xyzt_slice_index"].dtype == torch.int64 and graph.in_features == IN
