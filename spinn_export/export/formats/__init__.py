"""Export formats as plug-ins: each is one frozen `Format` in `FORMATS`, with its writer, loader and shape reader.

Adding a format means adding one `Format(...)` entry (and its three functions); the CLI, parity checks
and manifest pick it up from the registry.  Loaders are shared with the benchmark backends, so every
one of them turns a corrupt or truncated file into a one-line `UserError` and never unpickles by default.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import shutil
import tempfile
import warnings
import weakref
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from spinn_export.errors import UserError, require_file
from spinn_export.model.spec import MLPSpec

if TYPE_CHECKING:  # onnxruntime is imported lazily: the torch-only formats do not need it
    import onnxruntime as ort

DEFAULT_OPSET = 18
ARTIFACT_HINT = "check the path or re-run `spinn-export export`"
INPUT_NAME, OUTPUT_NAME = "x", "y"
EXAMPLE_BATCH = 2  # the batch traced/exported; the batch axis stays dynamic (min 1)

Shape = tuple[int, int]
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Format:
    """One artifact format.

    `float32`: parity is held to float32 tolerance (False: the error is recorded, e.g. int8).
    `byte_stable`: re-running the same export command gives byte-identical files (checked in the tests).
    TorchScript is stable only for the same command: its archive names the class `___torch_mangle_<n>`,
    with n counting earlier scripted modules in the process.  AOTInductor is not checked.
    `uses_opset`: the --opset option applies (ONNX formats).
    `available()`: None, or why this machine cannot produce the format.
    """

    name: str
    extension: str
    write: Callable[[nn.Module, MLPSpec, Path, int], None]
    load: Callable[[Path], Predict]
    weight_shapes: Callable[[Path], list[Shape]]
    description: str
    default: bool = True
    float32: bool = True
    byte_stable: bool = True
    uses_opset: bool = False
    available: Callable[[], str | None] = lambda: None

    def filename(self, model: str) -> str:
        return f"{model}{self.extension}"


# ---------------------------------------------------------------------------------------------- quiet


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter noise (deprecation warnings, progress prints, log lines); real errors still raise."""
    previous = logging.root.manager.disable
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _example(spec: MLPSpec) -> torch.Tensor:
    return torch.randn(EXAMPLE_BATCH, spec.in_features, generator=torch.Generator().manual_seed(0))


def _batch_dim() -> dict[int, torch.export.Dim]:
    return {0: torch.export.Dim("batch", min=1)}


def _unreadable(path: Path, what: str, exc: BaseException) -> UserError:
    return UserError(
        f"{path} is not a readable {what} file ({_reason(exc)}); it may be truncated or corrupt: "
        "re-run `spinn-export export`"
    )


# ---------------------------------------------------------------------------------------------- ONNX


_ONNX_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, MLPSpec, str], bytes]]" = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def onnx_bytes(model: nn.Module, spec: MLPSpec, opset: int) -> bytes:
    """One self-contained ONNX model (dynamo exporter, inline weights, dynamic batch axis).

    The three ONNX formats start from the same export, and the dynamo exporter takes seconds even for a
    tiny MLP, so the bytes are kept per model object, keyed by opset, spec and a hash of the weights.
    """
    key = (opset, spec, _fingerprint(model))
    cache = _ONNX_CACHE.setdefault(model, {})
    if key not in cache:
        cache.clear()
        cache[key] = _export_onnx(model, spec, opset)
    return cache[key]


def _export_onnx(model: nn.Module, spec: MLPSpec, opset: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with quiet():
            torch.onnx.export(
                model, (_example(spec),), str(path), dynamic_shapes=(_batch_dim(),), external_data=False,
                opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
            )
        leftovers = sorted(p.name for p in Path(tmp).iterdir() if p != path)
        if leftovers:
            raise RuntimeError(f"the ONNX exporter wrote side files {leftovers}; the model must be one file")
        return path.read_bytes()


def _check_onnx(path: Path) -> None:
    """`onnx.checker` (full) and no external data: the artifact must be one self-contained file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    onnx.checker.check_model(str(path), full_check=True)
    external = [t.name for t in onnx.load(str(path), load_external_data=False).graph.initializer if uses_external_data(t)]
    if external:
        raise RuntimeError(f"initializers {external[:3]} live in an external-data side file")


def write_onnx(model: nn.Module, spec: MLPSpec, path: Path, opset: int) -> None:
    path.write_bytes(onnx_bytes(model, spec, opset))
    _check_onnx(path)


def write_onnx_optimized(model: nn.Module, spec: MLPSpec, path: Path, opset: int) -> None:
    """ORT's offline graph optimisation (EXTENDED: Gemm+activation fusions, ORT contrib ops)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model.onnx"
        source.write_bytes(onnx_bytes(model, spec, opset))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(path)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    _check_onnx(path)


def write_onnx_int8(model: nn.Module, spec: MLPSpec, path: Path, opset: int) -> None:
    """Dynamic int8 weight quantisation; `quant_pre_process` first (shape inference fails on dynamo Gemms without it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, quantised = (Path(tmp) / name for name in ("model.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(onnx_bytes(model, spec, opset))
        with quiet():
            quant_pre_process(str(source), str(prepared))
            quantize_dynamic(str(prepared), str(quantised), weight_type=QuantType.QInt8)
        shutil.copyfile(quantised, path)
    _check_onnx(path)


def load_onnx_session(
    path: str | Path,
    providers: Sequence[str] | None = None,
    session_options: ort.SessionOptions | None = None,
) -> ort.InferenceSession:
    """An ORT session on a checked, self-contained ONNX file.

    Raises UserError if the file is unreadable, or if the first requested provider is not the one
    ORT actually uses (onnxruntime-gpu without CUDA silently falls back to CPU otherwise).
    """
    import onnxruntime as ort

    path = Path(path)
    require_file(path, "ONNX file", ARTIFACT_HINT)
    providers = list(providers or ["CPUExecutionProvider"])
    options = session_options or ort.SessionOptions()
    if session_options is None:
        options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind exception types for every kind of bad file
        raise _unreadable(path, "ONNX", exc) from None
    if session.get_providers()[0] != providers[0]:
        raise UserError(
            f"{path}: ONNX Runtime is using {session.get_providers()[0]}, not the requested {providers[0]}; "
            "install the matching onnxruntime build and drivers, or choose another provider"
        )
    return session


def _onnx_predict(path: Path) -> Predict:
    session = load_onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def onnx_weight_shapes(path: Path) -> list[Shape]:
    """(out, in) of each matrix multiply's weight initializer, in graph order (Gemm, MatMul, int8 MatMulInteger)."""
    import onnx

    require_file(path, "ONNX file", ARTIFACT_HINT)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf DecodeError and friends
        raise _unreadable(path, "ONNX", exc) from None
    initializers = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    shapes: list[Shape] = []
    for node in graph.node:
        if node.op_type not in ("Gemm", "FusedGemm", "MatMul", "MatMulInteger") or len(node.input) < 2:
            continue
        dims = initializers.get(node.input[1])
        if dims is None or len(dims) != 2:
            continue
        stored_out_in = node.op_type in ("Gemm", "FusedGemm") and any(
            a.name == "transB" and a.i == 1 for a in node.attribute
        )
        shapes.append((dims[0], dims[1]) if stored_out_in else (dims[1], dims[0]))
    return shapes


# ---------------------------------------------------------------------------------------------- TorchScript


def write_torchscript(model: nn.Module, spec: MLPSpec, path: Path, opset: int) -> None:
    """Traced and frozen; saved through a buffer so the archive's inner name does not depend on the file name."""
    with quiet(), torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), _example(spec)))
        buffer = io.BytesIO()
        torch.jit.save(frozen, buffer)
    path.write_bytes(buffer.getvalue())


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """A TorchScript module on CPU. TorchScript archives hold code by design: load only your own exports."""
    path = Path(path)
    require_file(path, "TorchScript file", ARTIFACT_HINT)
    try:
        with quiet():
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError for every kind of bad archive
        raise _unreadable(path, "TorchScript", exc) from None
    return module.eval()


def _torch_predict(module: Callable[[torch.Tensor], torch.Tensor]) -> Predict:
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return predict


def torchscript_weight_shapes(path: Path) -> list[Shape]:
    module = load_torchscript(path)
    shapes: list[Shape] = []
    for node in module.graph.nodes():
        if node.kind() == "aten::linear":
            weight = node.inputsAt(1).toIValue()
            if isinstance(weight, torch.Tensor) and weight.dim() == 2:
                shapes.append((int(weight.shape[0]), int(weight.shape[1])))
    return shapes


# ---------------------------------------------------------------------------------------------- torch.export


def _exported(model: nn.Module, spec: MLPSpec) -> torch.export.ExportedProgram:
    with quiet():
        return torch.export.export(model.eval(), (_example(spec),), dynamic_shapes=(_batch_dim(),))


def write_exported_program(model: nn.Module, spec: MLPSpec, path: Path, opset: int) -> None:
    program = _exported(model, spec)
    buffer = io.BytesIO()
    with quiet():
        torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())


def _refuse_pickles(path: Path) -> None:
    """torch.export.load unpickles payloads flagged `use_pickle` and custom objects, and falls back to
    unrestricted unpickling for sample inputs; our own exports need none of that, so refuse it up front."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(("weights_config.json", "constants_config.json")):
                    config = json.loads(archive.read(name)).get("config", {})
                    for key, payload in config.items():
                        if payload.get("use_pickle") or not str(payload.get("path_name", "")).startswith(
                            ("weight_", "tensor_")
                        ):
                            raise UserError(
                                f"{path}: entry {key!r} would be unpickled (running code from the file); "
                                "only spinn-export's own .pt2 exports are loaded"
                            )
                elif "/sample_inputs/" in name:
                    payload = archive.read(name)
                    if payload:
                        torch.load(io.BytesIO(payload), weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # BadZipFile, JSON errors, UnpicklingError from weights_only
        raise _unreadable(path, "torch.export (.pt2)", exc) from None


def load_exported_program(path: str | Path) -> torch.export.ExportedProgram:
    """A torch.export program, refusing archives that would unpickle anything."""
    path = Path(path)
    require_file(path, "torch.export (.pt2) file", ARTIFACT_HINT)
    _refuse_pickles(path)
    try:
        with quiet():
            return torch.export.load(str(path))
    except Exception as exc:  # torch raises many types for bad archives
        raise _unreadable(path, "torch.export (.pt2)", exc) from None


def _exported_predict(path: Path) -> Predict:
    return _torch_predict(load_exported_program(path).module())


def exported_weight_shapes(path: Path) -> list[Shape]:
    program = load_exported_program(path)
    parameters = program.graph_signature.inputs_to_parameters
    shapes: list[Shape] = []
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.linear.default:
            weight = program.state_dict[parameters[node.args[1].name]]
            shapes.append((int(weight.shape[0]), int(weight.shape[1])))
    return shapes


# ---------------------------------------------------------------------------------------------- AOTInductor


def _compiler_missing() -> str | None:
    if shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"):
        return None
    return "no C++ compiler (c++, g++ or clang++) on PATH"


def write_aoti(model: nn.Module, spec: MLPSpec, path: Path, opset: int) -> None:
    """AOTInductor: the exported program compiled ahead of time to a shared library (slow: minutes)."""
    program = _exported(model, spec)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "model.pt2"
        with quiet():
            torch._inductor.aoti_compile_and_package(program, package_path=str(package))
        shutil.copyfile(package, path)


def _aoti_predict(path: Path) -> Predict:
    require_file(path, "AOTInductor file", ARTIFACT_HINT)
    try:
        with quiet():
            runner = torch._inductor.aoti_load_package(str(path))
    except Exception as exc:  # the loader raises RuntimeError for bad packages
        raise _unreadable(path, "AOTInductor", exc) from None
    return _torch_predict(runner)


def aoti_weight_shapes(path: Path) -> list[Shape]:
    """The 2-D constants declared in the package's own generated wrapper source (`constants_info_[i].shape`),
    which the shared library was compiled from; the loader has no API that returns constant tensors."""
    require_file(path, "AOTInductor file", ARTIFACT_HINT)
    try:
        with zipfile.ZipFile(path) as archive:
            source = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith("wrapper.cpp"))
    except Exception as exc:  # BadZipFile, UnicodeDecodeError
        raise _unreadable(path, "AOTInductor", exc) from None
    fqns = dict(re.findall(r'constants_info_\[(\d+)\]\.original_fqn = "([^"]*)";', source))
    shapes: list[Shape] = []
    for index, rows, cols in re.findall(r"constants_info_\[(\d+)\]\.shape = \{(\d+), (\d+)\};", source):
        if fqns.get(index, "").endswith("weight"):
            shapes.append((int(rows), int(cols)))
    return shapes


# ---------------------------------------------------------------------------------------------- registry

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("torchscript", ".torchscript.pt", write_torchscript, lambda p: _torch_predict(load_torchscript(p)),
               torchscript_weight_shapes, "traced and frozen TorchScript (every torch.jit API is deprecated)"),
        Format("onnx", ".onnx", write_onnx, _onnx_predict, onnx_weight_shapes,
               "ONNX (dynamo exporter), dynamic batch axis, one self-contained file", uses_opset=True),
        Format("exported-program", ".pt2", write_exported_program, _exported_predict, exported_weight_shapes,
               "torch.export program, dynamic batch axis"),
        Format("onnx-optimized", ".ort-opt.onnx", write_onnx_optimized, _onnx_predict, onnx_weight_shapes,
               "ONNX Runtime offline-optimised ONNX (EXTENDED level, CPU fusions)", uses_opset=True),
        Format("onnx-int8", ".int8.onnx", write_onnx_int8, _onnx_predict, onnx_weight_shapes,
               "dynamically int8-quantised ONNX (error and accuracy delta recorded, not held to float32)",
               float32=False, uses_opset=True),
        Format("aoti", ".aoti.pt2", write_aoti, _aoti_predict, aoti_weight_shapes,
               "AOTInductor package (compiled C++; slow to build)", default=False, byte_stable=False,
               available=_compiler_missing),
    )
}
DEFAULT_FORMATS: tuple[str, ...] = tuple(name for name, f in FORMATS.items() if f.default)


def parse_formats(text: str | None) -> tuple[Format, ...]:
    """'onnx,torchscript' -> Formats, in registry order, with a clear error for unknown or unavailable ones."""
    names = [part.strip() for part in (text or ",".join(DEFAULT_FORMATS)).split(",") if part.strip()]
    if not names:
        raise UserError(f"--formats is empty: choose from {', '.join(FORMATS)}")
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise UserError(f"unknown format {unknown[0]!r}: choose from {', '.join(FORMATS)}")
    for name in names:
        reason = FORMATS[name].available()
        if reason:
            raise UserError(f"format {name!r} is unavailable here: {reason}")
    return tuple(f for name, f in FORMATS.items() if name in names)


def format_of(path: str | Path) -> Format:
    """The format a file name's extension says (longest extension wins: `.int8.onnx` before `.onnx`)."""
    name = Path(path).name
    for fmt in sorted(FORMATS.values(), key=lambda f: -len(f.extension)):
        if name.endswith(fmt.extension):
            return fmt
    raise UserError(f"{path}: unknown artifact extension; expected one of {', '.join(f.extension for f in FORMATS.values())}")


# ---------------------------------------------------------------------------------------------- loaded artifacts


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact as a numpy function, checking the input width before the runtime sees it."""

    path: Path
    format: str
    in_features: int
    predict: Predict

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            given = x.shape[1] if x.ndim == 2 else f"an array of shape {x.shape}"
            raise UserError(
                f"{self.path.name}: the model expects {self.in_features} input features per row, "
                f"got {given}; pass a (batch, {self.in_features}) array"
            )
        return np.asarray(self.predict(np.ascontiguousarray(x, dtype=np.float32)))


def load_artifact(path: str | Path, fmt: Format | str | None = None) -> Artifact:
    """Load any artifact in its own runtime; the format comes from the extension unless given."""
    path = Path(path)
    fmt = format_of(path) if fmt is None else FORMATS[fmt] if isinstance(fmt, str) else fmt
    shapes = fmt.weight_shapes(path)
    if not shapes:
        raise UserError(f"{path}: no Linear weights found; this is not a spinn-export {fmt.name} artifact")
    return Artifact(path=path, format=fmt.name, in_features=shapes[0][1], predict=fmt.load(path))


def write_artifact(fmt: Format, model: nn.Module, spec: MLPSpec, path: Path, opset: int, label: str) -> None:
    """Run one writer; any exporter failure becomes one line naming the model and the format."""
    try:
        with torch.no_grad():
            fmt.write(model.eval(), spec, path, opset)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # exporters fail in many ways; each is reported, none is hidden
        raise UserError(f"{label}: {fmt.name} export failed ({_reason(exc)})") from None
