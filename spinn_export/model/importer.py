"""Convert what users have today (state_dicts, pickled modules) into a spinn-export checkpoint."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from spinn_export.errors import UserError, first_line, require_file
from spinn_export.model.checkpoint import SPEC_KEY, load_checkpoint, read_metadata
from spinn_export.model.mlp import mlp_from_module, mlp_from_state_dict
from spinn_export.model.spec import MLPSpec

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def _state_dict_from(obj: object) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return None


def import_model(path: str | Path, activation: str | None = None,
                 trust_pickle: bool = False) -> tuple[MLPSpec, nn.Sequential]:
    """Safe by default: only `weights_only` loading, unless the user vouches for the file."""
    path = require_file(path, "file", "check the path")
    if path.suffix == ".safetensors":
        if SPEC_KEY in read_metadata(path):  # already a spinn-export checkpoint: its spec knows the activation
            checkpoint = load_checkpoint(path)
            if activation not in (None, checkpoint.spec.activation):
                raise UserError(f"{path} is a spinn-export checkpoint of a {checkpoint.spec.activation} model; "
                                f"drop --activation {activation}")
            return checkpoint.spec, checkpoint.model
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return mlp_from_state_dict(load_file(str(path)), activation or "tanh")
        except SafetensorError as exc:
            raise UserError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not _is_torch_save(path):
            raise UserError(f"{path}: not a readable PyTorch file (neither the zip archive nor the pickle that "
                            "torch.save writes); it may be corrupt or another format") from None
        if not trust_pickle:
            raise UserError(
                f"{path} holds pickled Python objects (e.g. a whole module saved with torch.save(model)), and "
                "unpickling runs code from the file; if you trust its source re-run with --trust-pickle, "
                "or better, save model.state_dict() and import that"
            ) from None
        obj = _load_trusted(path)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable PyTorch file ({first_line(exc)}); "
                        "it may be truncated or corrupt") from None
    if isinstance(obj, nn.Module):
        return mlp_from_module(obj, activation)
    state = _state_dict_from(obj)
    if state is None:
        raise UserError(
            f"{path} holds a {type(obj).__name__}, not an MLP state_dict or module; "
            "save model.state_dict() (a dict of weight tensors) and import that"
        )
    return mlp_from_state_dict(state, activation or "tanh")


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
            "make its module importable (PYTHONPATH) or save model.state_dict() instead"
        ) from None
    except Exception as exc:  # unpickling can fail in any way the pickled code chooses
        raise UserError(f"{path}: could not unpickle the model ({type(exc).__name__}: {first_line(exc)})") from None
