"""Read a torch.export archive (`.pt2`) without running anything from it.

`torch.export.load` is not safe on a file from elsewhere: it reads weights with `torch.load(weights_only=False)`,
constants with `pickle.loads`, and parses symbolic shape expressions with sympy, whose parser evaluates strings.
This reader takes only what a graph of ATen operations needs: the graph from `models/<name>.json` (op names,
argument values and tensor names; expressions are never parsed), and every tensor from its raw bytes as the
archive's own config describes it. A payload stored as a pickle is refused unless the user vouches for the file
(`--trust-pickle`), and then read with `torch.load`; custom objects are refused always (no graph of ours can hold
them). Sample inputs are not read at all.
"""
from __future__ import annotations

import io
import json
import posixpath
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

from spinn_export.errors import UserError, first_line
from spinn_export.model.graph import Constant, Graph, Node, Ref, TensorInfo

DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
          7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16}
DTYPE_NAMES = {code: str(dtype).removeprefix("torch.") for code, dtype in DTYPES.items()}
LAYOUTS = {7: "strided"}
MEMORY_FORMATS = {1: "contiguous_format", 2: "channels_last", 3: "channels_last_3d", 4: "preserve_format"}
POSITIONAL, KEYWORD = 1, 2
FIX = "export your model again with torch.export.export(model, (x,)) and torch.export.save"


class _Refused(Exception):
    """Something the graph or archive holds that this reader will not take; the message says what."""


def read_pt2(path: str | Path | IO[bytes], trust_pickle: bool = False,
             label: str | None = None) -> tuple[Graph, dict[str, torch.Tensor]]:
    """The archive's graph and its tensors (by the names the model's state_dict used). `path` may be an open binary
    file (an archive just written in memory); `label` names it in messages."""
    name_of = label or str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            root = _root(archive)
            models = sorted(n for n in archive.namelist() if n.startswith(f"{root}models/") and n.endswith(".json"))
            if len(models) != 1:
                raise _Refused(f"holds {len(models)} programs; spinn-export reads an archive of exactly one")
            name = posixpath.basename(models[0]).removesuffix(".json")
            program = json.loads(archive.read(models[0]))
            weights = _payloads(archive, f"{root}data/weights/", f"{root}data/weights/{name}_weights_config.json",
                                trust_pickle, name_of)
            constants = _payloads(archive, f"{root}data/constants/",
                                  f"{root}data/constants/{name}_constants_config.json", trust_pickle, name_of)
            return _graph(program["graph_module"], weights, constants)
    except UserError:
        raise
    except _Refused as exc:
        raise UserError(f"{name_of}: {exc}") from None
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
            RuntimeError, OSError) as exc:
        raise UserError(f"{name_of} is not a readable torch.export archive ({type(exc).__name__}: {first_line(exc)}); "
                        f"{FIX}") from None


def _root(archive: zipfile.ZipFile) -> str:
    formats = [n for n in archive.namelist() if posixpath.basename(n) == "archive_format"]
    if len(formats) != 1 or archive.read(formats[0]).strip() != b"pt2":
        raise _Refused(f"is a zip file but not a torch.export archive; {FIX}")
    return formats[0].removesuffix("archive_format")


def _payloads(archive: zipfile.ZipFile, directory: str, config_file: str, trust_pickle: bool,
              path: str) -> dict[str, tuple[torch.Tensor, bool]]:
    """name -> (tensor, is_param) for every payload of one config, refusing what would be unpickled."""
    if config_file not in archive.namelist():
        return {}
    found: dict[str, tuple[torch.Tensor, bool]] = {}
    for key, payload in json.loads(archive.read(config_file))["config"].items():
        path_name = str(payload["path_name"])
        if not path_name.startswith(("weight_", "tensor_")):
            raise UserError(f"{path}: entry {key!r} is a custom object, which unpickling would build by running code "
                            "from the file, and no network of plain tensors needs; export a model without it")
        if payload.get("use_pickle"):
            if not trust_pickle:
                raise UserError(f"{path}: entry {key!r} is stored as a pickle, and reading it would run code from "
                                "the file; if you trust its source re-run with --trust-pickle")
            value = torch.load(io.BytesIO(archive.read(directory + path_name)), weights_only=False)
            if type(value) is not torch.Tensor:
                raise _Refused(f"entry {key!r} is a {type(value).__name__}, not a plain tensor")
            found[key] = (value.detach().clone(), bool(payload.get("is_param")))
            continue
        meta = payload["tensor_meta"]
        dtype = DTYPES.get(int(meta["dtype"]))
        if dtype is None:
            raise _Refused(f"entry {key!r} has a tensor type spinn-export does not read (code {meta['dtype']})")
        sizes = [_int(s) for s in meta["sizes"]]
        strides = [_int(s) for s in meta["strides"]]
        offset = _int(meta["storage_offset"])
        raw = archive.read(directory + path_name)
        if raw:
            flat = torch.frombuffer(bytearray(raw), dtype=dtype)
            tensor = torch.as_strided(flat, sizes, strides, offset).clone()
        else:
            tensor = torch.zeros(sizes, dtype=dtype)
        found[key] = (tensor, bool(payload.get("is_param")))
    return found


def _int(value: Mapping[str, Any]) -> int:
    if "as_int" not in value:
        raise _Refused("stores a tensor with a symbolic size")
    return int(value["as_int"])


def _graph(module: Mapping[str, Any], weights: Mapping[str, tuple[torch.Tensor, bool]],
           constants: Mapping[str, tuple[torch.Tensor, bool]]) -> tuple[Graph, dict[str, torch.Tensor]]:
    graph, signature = module["graph"], module["signature"]
    names: dict[str, str] = {}  # placeholder -> value name
    tensors: dict[str, torch.Tensor] = {}
    infos: list[TensorInfo] = []
    inputs: list[str] = []
    for spec in signature["input_specs"]:
        (kind, body), = spec.items()
        if kind == "user_input":
            if "as_tensor" not in body["arg"]:
                raise _Refused(f"the model takes a non-tensor input ({next(iter(body['arg']))}); {_one_io()}")
            inputs.append(body["arg"]["as_tensor"]["name"])
            continue
        if kind not in ("parameter", "buffer", "tensor_constant"):
            raise _Refused(f"the program has a {kind} input, which a network of plain tensors does not need")
        placeholder = body["arg"]["name"]
        key = body[f"{kind}_name"]
        source = weights if kind in ("parameter", "buffer") else constants
        if key not in source:
            raise _Refused(f"{kind} {key!r} has no stored value")
        tensor = source[key][0]
        names[placeholder] = key
        tensors[key] = tensor
        infos.append(TensorInfo(key, tuple(tensor.shape), trainable=kind == "parameter"))
    if len(inputs) != 1:
        raise _Refused(f"the model takes {len(inputs)} tensor inputs; {_one_io()}")
    outputs = signature["output_specs"]
    kinds = [next(iter(o)) for o in outputs]
    if kinds != ["user_output"] or "as_tensor" not in outputs[0]["user_output"]["arg"]:
        detail = ", ".join(kinds) if kinds != ["user_output"] * len(kinds) else f"{len(kinds)} outputs"
        raise _Refused(f"the model returns {detail}; {_one_io()}")
    [input_name] = inputs
    meta = graph["tensor_values"].get(input_name, {})
    sizes = meta.get("sizes", [])
    if len(sizes) != 2 or "as_int" not in sizes[1]:
        raise _Refused(f"the model's input has {len(sizes)} dimensions; {_one_io()}")
    taken = {input_name, *tensors}
    nodes = []
    for raw in graph["nodes"]:
        nodes.append(_node(raw, names, taken))
    output = names.get(outputs[0]["user_output"]["arg"]["as_tensor"]["name"],
                       outputs[0]["user_output"]["arg"]["as_tensor"]["name"])
    return Graph(input_name, int(sizes[1]["as_int"]), tuple(nodes), output, tuple(infos)), tensors


def _one_io() -> str:
    return ("spinn-export prunes a network of one (batch, features) input and one (batch, outputs) output: wrap the "
            "model so that forward(x) takes one tensor and returns one, then export that")


def _node(raw: Mapping[str, Any], names: dict[str, str], taken: set[str]) -> Node:
    target = str(raw["target"])
    op = target.removeprefix("torch.ops.")
    if not (target.startswith("torch.ops.aten.") or target.startswith("_operator.")):
        raise _Refused(f"the graph calls {target!r}; only ATen operations are read (no custom or higher-order ops)")
    args: list[Any] = []
    kwargs: list[tuple[str, Any]] = []
    for item in raw["inputs"]:
        value = _argument(item["arg"], names, op)
        if int(item.get("kind", POSITIONAL)) == KEYWORD:
            kwargs.append((str(item["name"]), value))
        else:
            args.append(value)
    outputs: list[str] = []
    for index, out in enumerate(raw["outputs"]):
        (kind, body), = out.items()
        if kind == "as_tensor":
            outputs.append(body["name"])
        elif kind == "as_tensors" and len(raw["outputs"]) == 1:
            outputs.extend(t["name"] for t in body)
        elif kind in ("as_sym_int", "as_sym_float", "as_sym_bool") and "as_name" in body:
            outputs.append(body["as_name"])
        elif kind == "as_none":
            outputs.append(f"{raw['name']}_unused_{index}")
        else:
            raise _Refused(f"operation {op} returns a {kind}, which spinn-export does not read")
    renamed = []
    for name in outputs:
        fresh = name
        while fresh in taken:
            fresh = f"{fresh}_"
        taken.add(fresh)
        names[name] = fresh
        renamed.append(fresh)
    return Node(renamed[0], op, tuple(args), tuple(kwargs), tuple(renamed))


def _argument(arg: Mapping[str, Any], names: Mapping[str, str], op: str) -> Any:
    (kind, value), = arg.items()
    if kind == "as_none":
        return None
    if kind in ("as_tensor", "as_optional_tensor"):
        return _ref(value, names)
    if kind in ("as_tensors", "as_optional_tensors"):
        return tuple(_ref(v, names) for v in value)
    if kind in ("as_int", "as_float", "as_bool", "as_string"):
        return value
    if kind in ("as_ints", "as_floats", "as_bools", "as_strings"):
        return tuple(value)
    if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
        return _symbolic(value, names)
    if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
        return tuple(_symbolic(v, names) for v in value)
    if kind == "as_scalar_type" and int(value) in DTYPE_NAMES:
        return Constant("dtype", DTYPE_NAMES[int(value)])
    if kind == "as_layout" and int(value) in LAYOUTS:
        return Constant("layout", LAYOUTS[int(value)])
    if kind == "as_memory_format" and int(value) in MEMORY_FORMATS:
        return Constant("memory_format", MEMORY_FORMATS[int(value)])
    if kind == "as_device":
        return Constant("device", str(value["type"]) + ("" if value.get("index") is None else f":{value['index']}"))
    raise _Refused(f"operation {op} takes a {kind.removeprefix('as_')} argument, which spinn-export does not read")


def _ref(value: Mapping[str, Any], names: Mapping[str, str]) -> Ref | None:
    if value is None or "as_none" in value:
        return None
    name = value["as_tensor"]["name"] if "as_tensor" in value else value["name"]
    return Ref(names.get(name, name))


def _symbolic(value: Mapping[str, Any], names: Mapping[str, str]) -> Any:
    if "as_name" in value:
        return Ref(names.get(value["as_name"], value["as_name"]))
    for key in ("as_int", "as_float", "as_bool"):
        if key in value:
            return value[key]
    raise _Refused("the graph holds a symbolic expression spinn-export does not read")
