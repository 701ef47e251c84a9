"""The user's model, read exactly or refused: four forms, each recorded as the architecture's `source`.

* a torch.export program (`.pt2`): the recommended form, graph and weights, read without unpickling;
* `--model-code PATH.py:FACTORY` (or `module:FACTORY`) with a state_dict: the user's code builds the module, the
  state_dict must load into it strictly, and torch.export traces it;
* a whole pickled module, only with `--trust-pickle` (unpickling runs code from the file), traced likewise;
* a bare state_dict (`.pt`, `.pth`, `.safetensors`): read as a plain chain of Linear layers, the only architecture
  a state_dict can describe, with a note every time that skip connections and gates cannot be seen in it.

A spinn-export checkpoint is read as it is. A module is traced at the width of the data it will be pruned on. A
network with several outputs (a tuple, a list, a dict) is read for the one `output` chooses (`--output N`, in
torch.export's flattened order), or refused in one line that says so.
"""
from __future__ import annotations

import functools
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from spinn_export.errors import UserError, first_line, require_file
from spinn_export.model.architecture import Architecture
from spinn_export.model.checkpoint import Checkpoint, is_checkpoint, load_checkpoint, read_metadata
from spinn_export.model.mlp import mlp_from_state_dict
from spinn_export.model.network import Network
from spinn_export.model.trace import graph_of_module, graph_of_pt2
from spinn_export.usercode import load_named

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
CODE_FORM = "give --model-code PATH.py:FACTORY or module:FACTORY, a function returning your torch.nn.Module"
SAFE_FORMS = ("a .pt2 from torch.export.save(torch.export.export(model, (x,)), 'model.pt2'), or "
              "--model-code PATH.py:FACTORY with the state_dict")


def state_dict_note(path: str | Path) -> str:
    """What is said every time a bare state_dict is read."""
    return (f"note: {path} is a bare state_dict, read as a plain chain of Linear layers: skip connections and gates "
            f"cannot be seen in a state_dict; for the real architecture give {SAFE_FORMS}")


def import_model(path: str | Path, *, activation: str | None = None, trust_pickle: bool = False,
                 model_code: str | None = None, in_features: int | None = None,
                 notify: Callable[[str], None] = print, output: int | None = None,
                 data: torch.Tensor | None = None) -> Network:
    """Safe by default: nothing from `path` is unpickled unless the user vouches for the file. `in_features` (the
    data's input width) is what a module is traced at; `data` (its input rows) is what the graph read is checked on;
    `notify` receives the bare-state_dict note; `output` chooses one of several outputs of a .pt2 or module."""
    path = require_file(path, "file", "check the path")
    if model_code is not None:
        if activation is not None:
            raise UserError("--activation applies only to a bare state_dict; with --model-code the activations are "
                            "read from the model's own graph")
        return _from_code(path, model_code, in_features, trust_pickle, output, data)
    if zipfile.is_zipfile(path) and _is_pt2(path):
        if activation is not None:
            raise UserError(f"--activation applies only to a bare state_dict; {path} is a torch.export program, "
                            "whose graph names its activations")
        graph, tensors = graph_of_pt2(path, trust_pickle, data, output)
        return Network.built(Architecture(graph, "pt2"), tensors)
    if path.suffix == ".safetensors" and is_checkpoint(read_metadata(path)):
        _no_output(output, path, "a spinn-export checkpoint")
        return _checkpoint(path, activation).network
    obj = _read(path, trust_pickle)
    if isinstance(obj, nn.Module):
        if activation is not None:
            raise UserError("--activation applies only to a bare state_dict; a module's activations are read from "
                            "its traced graph")
        return _traced(obj, in_features, str(path), "pickle", output, data)
    _no_output(output, path, "a state_dict, read as a plain MLP")
    state = _state_dict_from(obj)
    if state is None:
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state_dict or module; give {SAFE_FORMS}")
    network = mlp_from_state_dict(state, activation or "tanh")
    notify(state_dict_note(path))
    return network


def open_model(path: str | Path, *, activation: str | None = None, trust_pickle: bool = False,
               model_code: str | None = None, in_features: int | None = None,
               notify: Callable[[str], None] = print, output: int | None = None,
               data: torch.Tensor | None = None) -> Checkpoint:
    """Any model file as a checkpoint: a spinn-export checkpoint as it is (metadata kept), anything else imported
    (`import_model`) as a dense model whose metadata names its source."""
    path = Path(path)
    if model_code is None and path.suffix == ".safetensors" and path.is_file() and is_checkpoint(read_metadata(path)):
        _no_output(output, path, "a spinn-export checkpoint")
        return _checkpoint(path, activation)
    network = import_model(path, activation=activation, trust_pickle=trust_pickle, model_code=model_code,
                           in_features=in_features, notify=notify, output=output, data=data)
    return Checkpoint(network, {"variant": "dense", "source": str(path)})


def _checkpoint(path: Path, activation: str | None) -> Checkpoint:
    """A spinn-export checkpoint as it is; an --activation is only checked against the one it records."""
    checkpoint = load_checkpoint(path)
    recorded = checkpoint.network.architecture.activation
    if activation not in (None, recorded):
        raise UserError(f"{path} is a spinn-export checkpoint of a {recorded} model; drop --activation {activation}")
    return checkpoint


def _no_output(output: int | None, path: Path, form: str) -> None:
    if output is not None:
        raise UserError(f"--output chooses one of a network's several outputs; {path} is {form}, with one: "
                        f"drop --output {output}")


def _is_pt2(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("archive_format") for name in archive.namelist())


def _read(path: Path, trust_pickle: bool) -> object:
    """A .safetensors file's tensors, or what torch.save wrote (weights only unless trusted)."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise UserError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not _is_torch_save(path):
            raise UserError(f"{path}: not a readable PyTorch file (neither the zip archive nor the pickle that "
                            "torch.save writes); it may be corrupt or another format") from None
        if not trust_pickle:
            raise UserError(
                f"{path} holds pickled Python objects (e.g. a whole module saved with torch.save(model)), and "
                f"unpickling runs code from the file; if you trust its source re-run with --trust-pickle, or give "
                f"{SAFE_FORMS}"
            ) from None
        return _load_trusted(path)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable PyTorch file ({first_line(exc)}); "
                        "it may be truncated or corrupt") from None


def _state_dict_from(obj: object) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return None


def model_from_code(model_code: str, in_features: int) -> Network:
    """A fresh module from the user's factory (its own initial weights), traced: what `train --model-code` trains."""
    return _traced(_built(model_code), in_features, f"--model-code {model_code}", "model-code")


def _built(model_code: str) -> nn.Module:
    factory, _ = load_named(model_code, "--model-code", CODE_FORM)
    try:
        module = factory()
    except Exception as exc:  # the user's code may fail in any way
        raise UserError(f"--model-code {model_code}: calling it failed ({type(exc).__name__}: "
                        f"{first_line(exc)}); {CODE_FORM}") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"--model-code {model_code} returned a {type(module).__name__}, not a torch.nn.Module; "
                        f"{CODE_FORM}")
    return module


def _from_code(path: Path, model_code: str, in_features: int | None, trust_pickle: bool,
               output: int | None = None, data: torch.Tensor | None = None) -> Network:
    """The user's factory builds the module; the file's state_dict must fit it exactly."""
    if zipfile.is_zipfile(path) and _is_pt2(path):
        raise UserError(f"{path} is a torch.export program, which carries its own architecture; drop --model-code")
    module = _built(model_code)
    obj = _read(path, trust_pickle)
    state = obj.state_dict() if isinstance(obj, nn.Module) else _state_dict_from(obj)
    if state is None:
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state_dict for --model-code {model_code}")
    _require_fits(module, state, path, model_code)
    module.load_state_dict(state, strict=True)
    return _traced(module, in_features, f"{path} with --model-code {model_code}", "model-code", output, data)


def _require_fits(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, model_code: str) -> None:
    """One line naming the first key that is missing, unexpected or misshapen (load_state_dict's message is many)."""
    expected = module.state_dict()
    problems = [f"missing key {k!r}" for k in expected if k not in state]
    problems += [f"unexpected key {k!r}" for k in state if k not in expected]
    problems += [f"key {k!r} has shape {tuple(state[k].shape)} but the module's is {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{path} does not fit the module of --model-code {model_code}: {problems[0]}{more}; save "
                        "the state_dict of the model this code builds")


def _traced(module: nn.Module, in_features: int | None, label: str, source: str,
            output: int | None = None, data: torch.Tensor | None = None) -> Network:
    if in_features is None:
        raise UserError(f"{label}: a module is traced at its input width: give --in-features N (the number of "
                        "input columns), or the data it was trained on")
    if output is not None:
        _choose_output(module, output)
        try:  # an --output out of range is said here, in its own words, not as a failure to trace
            with torch.no_grad():
                module(torch.zeros(2, in_features))
        except UserError:
            raise
        except Exception:  # whatever else fails, torch.export below names it
            pass
    graph, tensors = graph_of_module(module, in_features, label, data)
    return Network.built(Architecture(graph, source), tensors)


def _choose_output(module: nn.Module, output: int) -> None:
    """Make `module` return only its output number `output` (in torch.export's flattened order), so it traces as a
    network of one output with its tensors' names unchanged (a wrapper module would prefix them)."""
    forward = module.forward

    @functools.wraps(forward)  # torch.export reads forward's signature
    def chosen(*args: Any, **kwargs: Any) -> Any:
        leaves = torch.utils._pytree.tree_leaves(forward(*args, **kwargs))
        if not 0 <= output < len(leaves):
            more = f"{len(leaves)} outputs (0-{len(leaves) - 1})" if len(leaves) > 1 else "one output; drop --output"
            raise UserError(f"--output {output} is out of range: the model returns {more}")
        return leaves[output]

    module.forward = chosen


def _is_torch_save(path: Path) -> bool:
    """Whether the file is in a format torch.save writes: a zip archive (the default since PyTorch 1.6) or a
    legacy pickle stream (which opens with the pickle PROTO opcode). Anything else that fails to unpickle is a
    damaged or foreign file, not a pickled module waiting for --trust-pickle."""
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as handle:
        return handle.read(1) == pickle.PROTO


def _load_trusted(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError) as exc:
        raise UserError(
            f"{path}: the pickled model needs code that is not importable here ({first_line(exc)}); "
            "make its module importable (PYTHONPATH) or give --model-code PATH.py:FACTORY with its state_dict"
        ) from None
    except Exception as exc:  # unpickling can fail in any way the pickled code chooses
        raise UserError(f"{path}: could not unpickle the model ({type(exc).__name__}: {first_line(exc)})") from None
