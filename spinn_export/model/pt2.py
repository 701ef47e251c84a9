"""Read a torch.export archive (`.pt2`) without running anything from it.

`torch.export.load` is not safe on a file from elsewhere: it reads weights with `torch.load(weights_only=False)`,
constants with `pickle.loads`, and parses symbolic shape expressions with sympy, whose parser evaluates strings.
This reader takes only what a graph of ATen operations needs: the graph from `models/<name>.json` (op names,
argument values and tensor names; expressions are never parsed), and every tensor from its raw bytes as the
archive's own config describes it. A payload stored as a pickle is refused unless the user vouches for the file
(`--trust-pickle`), and then read with `torch.load`; custom objects are refused always (no graph of ours can hold
them). Sample inputs are not read at all.

What a graph of plain tensors cannot mean is refused in one line naming the user's mistake and its fix: dropout in
training mode, random numbers drawn in forward, `.item()`, several outputs without `--output N`. What means nothing
to it is dropped once checked: torch.export's metadata assertions, dropout in eval mode, a one-chunk `split`.
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
from spinn_export.model.graph import Constant, Graph, Node, Ref, TensorInfo, fresh_name

DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
          7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16}
DTYPE_NAMES = {code: str(dtype).removeprefix("torch.") for code, dtype in DTYPES.items()}
LAYOUTS = {7: "strided"}
MEMORY_FORMATS = {1: "contiguous_format", 2: "channels_last", 3: "channels_last_3d", 4: "preserve_format"}
POSITIONAL, KEYWORD = 1, 2
FIX = "export your model again with torch.export.export(model, (x,)) and torch.export.save"
# checks torch.export adds that return nothing (a `.float()` or `.to()` adds _assert_tensor_metadata): checked, dropped
ASSERTIONS = frozenset({"_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range",
                        "sym_constrain_range_for_size"})
DROPOUTS = frozenset({"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout"})
RANDOM = frozenset({"rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "randperm", "normal",
                    "bernoulli", "multinomial", "poisson", "binomial", "uniform", "exponential", "geometric", "cauchy",
                    "log_normal", "_standard_gamma", "_sample_dirichlet", "rrelu_with_noise", "_fused_dropout"})
SPLITS = frozenset({"split", "split_with_sizes"})
VALUE_SHAPED = frozenset({"nonzero", "argwhere", "masked_select", "unique", "_unique", "_unique2", "unique_dim",
                          "unique_consecutive"})  # their output's shape depends on their input's values
MASKS = frozenset({1, 12})  # uint8 and bool: an index of these selects by value
SCALARS = frozenset({"item", "_local_scalar_dense"})
OUTPUT_KINDS = {  # output kinds other than user outputs: what they mean, and the fix
    "buffer_mutation": "forward changes buffer {name!r} (a BatchNorm in training mode?): call model.eval() before "
                       "torch.export.export",
    "user_input_mutation": "forward changes its input in place: compute on a copy",
    "parameter_mutation": "forward changes parameter {name!r}: keep forward free of updates",
}


class _Refused(Exception):
    """Something the graph or archive holds that this reader will not take; the message says what."""


def read_pt2(path: str | Path | IO[bytes], trust_pickle: bool = False, label: str | None = None,
             output: int | None = None) -> tuple[Graph, dict[str, torch.Tensor]]:
    """The archive's graph and its tensors (by the names the model's state_dict used). `path` may be an open binary
    file (an archive just written in memory); `label` names it in messages; `output` chooses which of several
    outputs (in torch.export's flattened order) the graph computes."""
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
            return _graph(program["graph_module"], weights, constants, output)
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
           constants: Mapping[str, tuple[torch.Tensor, bool]],
           output: int | None) -> tuple[Graph, dict[str, torch.Tensor]]:
    graph, signature = module["graph"], module["signature"]
    names: dict[str, str] = {}  # placeholder or node output -> value name
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
        # a buffer registered with persistent=False is not in the state_dict: torch.export stores it as a constant
        found = weights.get(key) if kind == "parameter" else constants.get(key) if kind == "tensor_constant" else (
            weights.get(key) or constants.get(key))
        if found is None:
            raise _Refused(f"{kind} {key!r} has no stored value")
        tensor = found[0]
        names[placeholder] = key
        tensors[key] = tensor
        infos.append(TensorInfo.of(key, tensor, trainable=kind == "parameter"))
    if len(inputs) != 1:
        raise _Refused(f"the model takes {len(inputs)} tensor inputs; {_one_io()}")
    [input_name] = inputs
    meta = graph["tensor_values"].get(input_name, {})
    sizes = meta.get("sizes", [])
    if len(sizes) != 2 or "as_int" not in sizes[1]:
        raise _Refused(f"the model's input has {len(sizes)} dimensions; {_one_io()}")
    chosen = _output(signature["output_specs"], module, output)
    taken = {input_name, *tensors}
    protected = {input_name: "its input", **{key: repr(key) for key in tensors}}
    nodes = [node for raw in graph["nodes"] if (node := _node(raw, names, taken, graph["tensor_values"], protected))]
    return Graph(input_name, int(sizes[1]["as_int"]), tuple(nodes), names.get(chosen, chosen), tuple(infos)), tensors


def _one_io() -> str:
    return ("spinn-export prunes a network of one (batch, features) input and one (batch, outputs) output: wrap the "
            "model so that forward(x) takes one tensor and returns one, then export that")


def _output(specs: list[Mapping[str, Any]], module: Mapping[str, Any], output: int | None) -> str:
    """The name of the user output the graph computes: the only one, or the one `output` chooses."""
    for spec in specs:
        (kind, body), = spec.items()
        if kind != "user_output":
            name = body.get("buffer_name") or body.get("parameter_name") or ""
            problem = OUTPUT_KINDS.get(kind, f"the program has a {kind} output; {_one_io()}")
            raise _Refused(problem.format(name=name))
    count = len(specs)
    if count == 0:
        raise _Refused(f"the model returns nothing; {_one_io()}")
    if output is None and count > 1:
        raise _Refused(f"the model returns {count} outputs{_labels(module, count)}; choose one with --output N "
                       f"(0-{count - 1}), or wrap the model so that forward(x) returns one tensor")
    index = output or 0
    if not 0 <= index < count:
        more = f"{count} outputs (0-{count - 1})" if count > 1 else "one output; drop --output"
        raise _Refused(f"--output {index} is out of range: the model returns {more}")
    arg = specs[index]["user_output"]["arg"]
    if "as_tensor" not in arg:
        raise _Refused(f"output {index} of the model is a {next(iter(arg)).removeprefix('as_')}, not a tensor; "
                       f"{_one_io()}")
    return str(arg["as_tensor"]["name"])


def _labels(module: Mapping[str, Any], count: int) -> str:
    """` (0: u, 1: v)` where forward returns a dict (the keys of torch.export's output tree), else nothing. The tree
    is read as JSON; nothing in it is evaluated."""
    try:
        _, tree = json.loads(module["module_call_graph"][0]["signature"]["out_spec"])
        labels: list[str] = []

        def walk(node: Mapping[str, Any], path: str) -> None:
            children = node["children_spec"]
            if not children:
                labels.append(path)
                return
            keys = json.loads(node["context"]) if node["type"] == "builtins.dict" else None
            for i, child in enumerate(children):
                walk(child, f"{path}.{keys[i]}" if keys else f"{path}[{i}]")

        walk(tree, "")
    except (KeyError, IndexError, TypeError, ValueError):
        return ""
    if len(labels) != count or not any(label.startswith(".") for label in labels):
        return ""
    return " (" + ", ".join(f"{i}: {label.lstrip('.')}" for i, label in enumerate(labels)) + ")"


def _node(raw: Mapping[str, Any], names: dict[str, str], taken: set[str], metadata: Mapping[str, Any],
          protected: Mapping[str, str]) -> Node | None:
    """One ATen call as a Node; None for a call that is checked and dropped (an assertion) or that passes its input
    through unchanged (its output then names the input). `protected`: the input and stored tensors, which no call
    may change in place, each as a message names it."""
    target = str(raw["target"])
    op = target.removeprefix("torch.ops.")
    if not (target.startswith("torch.ops.aten.") or target.startswith("_operator.")):
        raise _Refused(f"the graph calls {target!r}; only ATen operations are read (no custom or higher-order ops)")
    packet = op.split(".")[1] if op.startswith("aten.") else op
    named = {str(item.get("name")): item["arg"] for item in raw["inputs"]}
    _refuse_mistakes(packet, named, names, metadata, protected)
    if packet in ASSERTIONS:
        _check_assertion(packet, named, names, metadata)
        return None
    if not raw["outputs"]:
        raise _Refused(f"operation {op} returns nothing, and spinn-export does not know what it is for; {FIX} "
                       "without it")
    passed = _passed_through(packet, raw, named)
    if passed is not None:  # a one-chunk split, or dropout in eval mode: the output is the input itself
        names[passed[1]] = names.get(passed[0], passed[0])
        return None
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
        fresh = fresh_name(name, taken)
        taken.add(fresh)
        names[name] = fresh
        renamed.append(fresh)
    return Node(renamed[0], op, tuple(args), tuple(kwargs), tuple(renamed))


def _refuse_mistakes(packet: str, named: Mapping[str, Any], names: Mapping[str, str], metadata: Mapping[str, Any],
                     protected: Mapping[str, str]) -> None:
    """What a network to prune cannot do, refused with the user's mistake named: randomness, `.item()`, training
    mode, updates in place, shapes that depend on tensor values."""
    if packet in RANDOM or packet.rstrip("_") in RANDOM:
        raise _Refused(f"forward draws random numbers (aten.{packet}): a network to prune must be deterministic; "
                       "remove the sampling from forward and export again")
    if packet in SCALARS:
        raise _Refused(f"forward calls .item() (aten.{packet}), which fixes a tensor's value as a Python number at "
                       "export: use the tensor, not .item(), in forward, and export again")
    if packet in DROPOUTS and named.get("train", {}).get("as_bool") is not False:
        raise _Refused("the model calls dropout in training mode: call model.eval() before torch.export.export")
    changed = names.get(name := next(iter(named.values()), {}).get("as_tensor", {}).get("name"), name)
    counts = packet.endswith("_") and str(changed).endswith("num_batches_tracked")
    if counts or ("batch_norm" in packet and named.get("training", {}).get("as_bool")):
        raise _Refused("the model normalises with each batch's statistics (a BatchNorm in training mode, or one "
                       "without running statistics): call model.eval() before torch.export.export, and keep "
                       "track_running_stats=True")
    if packet.endswith("_") and changed in protected:
        raise _Refused(f"forward changes {protected[changed]} in place (aten.{packet}): a network to prune must not "
                       "change its input or its own tensors; compute on a copy, or drop the update")
    if _value_shaped(packet, named, metadata):
        raise _Refused(f"the shape of aten.{packet}'s output depends on the values of its input (a boolean mask, "
                       "a count), which spinn-export does not infer shapes from: select with an integer index "
                       "instead (torch.index_select(x, 1, idx) with idx a buffer), and export again")


def _value_shaped(packet: str, named: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    """Whether the call's output shape depends on tensor values, which a graph's shapes (inferred on zeros) cannot
    follow: `nonzero`, `unique`, ..., `repeat_interleave` by a tensor of counts, indexing by a boolean mask."""
    if packet == "repeat_interleave":
        return "as_tensor" in named.get("repeats", {})
    if packet in ("index", "_unsafe_index"):
        indices = named.get("indices", {}).get("as_optional_tensors", [])
        masks = [metadata.get(i["as_tensor"]["name"], {}).get("dtype") for i in indices if "as_tensor" in i]
        return any(dtype in MASKS for dtype in masks)
    return packet in VALUE_SHAPED


def _passed_through(packet: str, raw: Mapping[str, Any], named: Mapping[str, Any]) -> tuple[str, str] | None:
    """(input, output) names of a call whose output is its input: a split into one chunk (which torch.export gives
    only where the chunk is the whole tensor, for every batch size), or dropout in eval mode."""
    source = named.get("self") or named.get("input") or {}
    outputs = raw["outputs"]
    if "as_tensor" not in source or len(outputs) != 1:
        return None
    (kind, body), = outputs[0].items()
    if packet in SPLITS and kind == "as_tensors" and len(body) == 1:
        return source["as_tensor"]["name"], body[0]["name"]
    if packet in DROPOUTS and packet != "native_dropout" and kind == "as_tensor":
        return source["as_tensor"]["name"], body["name"]
    return None


def _check_assertion(packet: str, named: Mapping[str, Any], names: Mapping[str, str],
                     metadata: Mapping[str, Any]) -> None:
    """torch.export's `_assert_tensor_metadata(t, dtype=..., size=...)` must agree with what the graph records for
    `t`; the other assertions test symbolic sizes, which a graph read at any batch size does not keep."""
    if packet != "_assert_tensor_metadata" or "as_tensor" not in named.get("a", {}):
        return
    name = named["a"]["as_tensor"]["name"]
    recorded = metadata.get(name, {})
    asserted = named.get("dtype", {}).get("as_scalar_type")
    if asserted is not None and "dtype" in recorded and int(asserted) != int(recorded["dtype"]):
        raise _Refused(f"the graph asserts that {names.get(name, name)!r} is "
                       f"{DTYPE_NAMES.get(int(asserted), asserted)} but records it as "
                       f"{DTYPE_NAMES.get(int(recorded['dtype']), recorded['dtype'])}; the file is damaged; {FIX}")
    size = named.get("size", {})
    sizes = size.get("as_ints") or [s.get("as_int") for s in size.get("as_sym_ints", [])]
    known = [s.get("as_int") for s in recorded.get("sizes", [])]
    if sizes and (len(sizes) != len(known) or any(a is not None and b is not None and a != b
                                                  for a, b in zip(sizes, known))):
        raise _Refused(f"the graph asserts that {names.get(name, name)!r} has shape {sizes} but records {known}; "
                       f"the file is damaged; {FIX}")


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
