"""Artifact formats as plug-ins: one module per format, each exposing one frozen `Format` (writer, loader,
weight-shape reader) and registered in the `spinn_export.formats` entry-point group.

The exporter, the parity check, the manifest and the benchmark variants all take format names from
this registry, so a new format is one module plus its entry point. Loaders are shared with the
benchmark backends, so every one turns a corrupt or truncated file into a one-line `UserError` and
never unpickles by default.

A precision is what an artifact computes in, declared by its format (`Format.precision`, `Format.runs_as`): the set
of precisions is whatever the discovered formats declare (`precisions()`), so a new one is a format module plus its
entry point. `fp32` is held to float32 parity; the others have their error against eager float32 recorded when they
are exported, and later runs are held to it (`export.parity.tolerance_for`).
"""
from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from spinn_export.errors import UserError, require_file
from spinn_export.hardware import FP32
from spinn_export.plugins import discover
from spinn_export.progress import quiet

if TYPE_CHECKING:
    import torch

    from spinn_export.model.network import Network

FORMAT_GROUP = "spinn_export.formats"
INTEGER_KERNELS = "int8"  # the precision whose GEMMs count operations, not floating-point ones (`rate_unit`)
ALL_FORMATS = "all"  # --formats all: every format this machine can produce
DEFAULT_OPSET = 18
ARTIFACT_HINT = "check the path or re-run `spinn-export export`"
INPUT_NAME, OUTPUT_NAME = "x", "y"
EXAMPLE_BATCH = 2  # the batch traced/exported; the batch axis stays dynamic (min 1)
CALIBRATION_ROWS = 4096  # static ranges (MinMax) settle well before this on the project's inputs; more costs time
MIN_CALIBRATION_ROWS = 128  # fewer rows miss the tails of the inputs' ranges, and later inputs are clipped to them
CONTROL_ROWS = 8192  # an accuracy control's held-out training rows: as many as the built-in task validates on

Shape = tuple[int, int]
Predict = Callable[[np.ndarray], np.ndarray]
Loaded = TypeVar("Loaded")
# One signature for every writer: (network, path, opset, calibration), where calibration is None unless the format is
# `calibrated`. It returns what a quantiser did (the manifest's calibration record), or None.
Writer = Callable[["Network", Path, int, "Calibration | None"], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Precision:
    """A precision the discovered formats declare: its `name` and the precision whose kernels, and so whose GEMM
    ceiling, it runs on (`runs_as`: its own name, or another's, as int8-static and int8-nncf run on int8's: a
    backend that runs int8 runs every int8 ONNX form), with the formats that declare it."""

    name: str
    runs_as: str
    formats: tuple[str, ...]

    @property
    def float32(self) -> bool:
        return self.name == FP32


def precisions() -> dict[str, Precision]:
    """Every precision a discovered format declares (fp32 always: the checkpoint itself is float32), by name. Two
    formats declaring one precision must agree on what it runs as."""
    declared: dict[str, Precision] = {FP32: Precision(FP32, FP32, ())}
    for fmt in formats().values():
        known = declared.get(fmt.precision)
        if known is not None and known.runs_as != fmt.kernels:
            raise UserError(f"format {fmt.name} declares precision {fmt.precision} running as {fmt.kernels}, but "
                            f"{', '.join(known.formats)} as {known.runs_as}: make the two plug-ins agree")
        declared[fmt.precision] = Precision(fmt.precision, fmt.kernels, (*(known.formats if known else ()), fmt.name))
    return declared


def ceiling_precision(precision: str) -> str:
    """The precision whose kernels, and so whose GEMM ceiling, a model of this precision runs on: its own, or what its
    format declares it runs as (a precision no installed format declares runs as itself)."""
    known = precisions().get(precision)
    return known.runs_as if known else precision


def rate_unit(precision: str) -> str:
    """Integer kernels do operations, not floating-point ones: their rate reads in GOP/s."""
    return "GOP/s" if ceiling_precision(precision) == INTEGER_KERNELS else "GFLOP/s"


@dataclass(frozen=True)
class Calibration:
    """What a calibrated writer is given: `rows`, the checked training inputs its static ranges are fitted on, and,
    where the data the checkpoint was trained on is known, `control`: held-out training rows (inputs, targets) on
    which an accuracy-controlled quantiser keeps its R² drop within `max_r2_drop`. The validation split is never
    here: the budget verdict is measured on it after the file is written, by the exporter, as for every precision."""

    rows: np.ndarray
    max_r2_drop: float
    control: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class Format:
    """One artifact format.

    `precision`: what the artifact computes in (any name; `precisions()` is what the formats declare): "fp32"
    artifacts are held to float32 parity, others have their error recorded. `runs_as`: the precision whose kernels
    (and GEMM ceiling) it runs on, where not its own (int8-static runs as int8); a backend runs the file where its
    `precisions` name either.
    `opened_as`: the format a benchmark backend opens this file as (int8 ONNX is opened as "onnx");
    None means its own name.
    `byte_stable`: re-running the same export command gives byte-identical files (checked in the tests).
    TorchScript is stable only for the same command: its archive names the class `___torch_mangle_<n>`,
    with n counting earlier scripted modules in the process.  AOTInductor is not checked.
    `uses_opset`: the --opset option applies (ONNX formats).
    `available()`: None, or why this machine cannot produce the format.
    `calibrated`: the writer's `calibration` argument is a `Calibration` (float32 rows of the training data, and
    held-out rows for accuracy control), never None, because a static quantiser fixes its activation ranges from
    data; the exporter supplies it. Such a writer may return what its quantiser did, for the manifest's record.
    """

    name: str
    extension: str
    write: Writer
    load: Callable[[Path], Predict]
    weight_shapes: Callable[[Path], list[Shape]]
    description: str
    precision: str = FP32
    runs_as: str | None = None
    opened_as: str | None = None
    default: bool = True
    byte_stable: bool = True
    uses_opset: bool = False
    available: Callable[[], str | None] = lambda: None
    calibrated: bool = False

    @property
    def float32(self) -> bool:
        return self.precision == FP32

    @property
    def kernels(self) -> str:
        """The precision whose kernels this artifact runs on (`runs_as`, else its own)."""
        return self.runs_as or self.precision

    @property
    def runtime_format(self) -> str:
        """The name a backend's `format` must have to open this artifact."""
        return self.opened_as or self.name

    def filename(self, model: str) -> str:
        return f"{model}{self.extension}"


@functools.cache
def _discovered():  # type: ignore[no-untyped-def]
    return discover(FORMAT_GROUP, Format, lambda f: f.name)


def formats() -> dict[str, Format]:
    """Every registered format that loaded, by name."""
    return _discovered().loaded


def get_format(name: str) -> Format:
    return _discovered().get(name, "format")


def default_formats() -> tuple[str, ...]:
    return tuple(name for name, f in formats().items() if f.default)


def unavailable_formats() -> dict[str, str]:
    """Registered formats this machine cannot produce, with the reason (what `--formats all` skips)."""
    reasons = {name: fmt.available() for name, fmt in formats().items()}
    return {name: reason for name, reason in reasons.items() if reason} | _discovered().broken


def parse_formats(text: str | None) -> tuple[Format, ...]:
    """'onnx,torchscript' -> Formats, in the order given, with a clear error for unknown or unavailable ones.

    'all' is every registered format this machine can produce (`unavailable_formats` says why the rest are not).
    """
    if text is not None and text.strip() == ALL_FORMATS:
        skipped = unavailable_formats()
        return tuple(fmt for name, fmt in formats().items() if name not in skipped)
    names = [part.strip() for part in (text or ",".join(default_formats())).split(",") if part.strip()]
    if not names:
        raise UserError(f"--formats is empty: choose from {', '.join(formats())}")
    chosen = [get_format(name) for name in dict.fromkeys(names)]
    for fmt in chosen:
        reason = fmt.available()
        if reason:
            raise UserError(f"format {fmt.name!r} is unavailable here: {reason}")
    return tuple(chosen)


def format_of(path: str | Path) -> Format:
    """The format a file name's extension says (longest extension wins: `.int8.onnx` before `.onnx`)."""
    name = Path(path).name
    for fmt in sorted(formats().values(), key=lambda f: -len(f.extension)):
        if name.endswith(fmt.extension):
            return fmt
    extensions = ", ".join(f.extension for f in formats().values())
    raise UserError(f"{path}: unknown artifact extension; expected one of {extensions}")


# ---------------------------------------------------------------------------------------------- shared by the plug-ins


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def example_input(network: Network) -> torch.Tensor:
    # start-up: torch only where a model is written or run (the report and the listings read formats)
    import torch

    return torch.randn(EXAMPLE_BATCH, network.architecture.in_features, generator=torch.Generator().manual_seed(0))


def dynamic_batch() -> dict[int, torch.export.Dim]:
    # start-up: torch only where a model is written or run (the report and the listings read formats)
    import torch

    return {0: torch.export.Dim("batch", min=1)}


def unreadable(path: Path, what: str, exc: BaseException) -> UserError:
    return UserError(
        f"{path} is not a readable {what} file ({reason(exc)}); it may be truncated or corrupt: "
        "re-run `spinn-export export`"
    )


def read_artifact(path: str | Path, what: str, load: Callable[[str], Loaded]) -> Loaded:
    """`load` on an existing file, quietly; any failure of the runtime's own loader becomes one line saying the
    `what` file is unreadable (runtimes raise many exception types for truncated or foreign files)."""
    path = Path(path)
    require_file(path, f"{what} file", ARTIFACT_HINT)
    try:
        with quiet():
            return load(str(path))
    except UserError:
        raise
    except Exception as exc:  # RuntimeError, BadZipFile, protobuf errors, ...
        raise unreadable(path, what, exc) from None


def torch_predict(module: Callable[[torch.Tensor], torch.Tensor]) -> Predict:
    def predict(x: np.ndarray) -> np.ndarray:
        # start-up: torch only where a model is written or run (the report and the listings read formats)
        import torch

        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return predict


def compiler_missing() -> str | None:
    """Inductor (torch.compile, AOTInductor) compiles C++ at run time."""
    if any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        return None
    return "no C++ compiler (c++, g++ or clang++) on PATH"


def calibration_inputs(x: np.ndarray, in_features: int, source: str) -> np.ndarray:
    """The rows a calibrated format is written from: the first CALIBRATION_ROWS training inputs, as float32.

    The exporter checks them for every checkpoint before anything is written, so too few rows, NaN or the
    wrong width is one line naming `source`, never a half-finished export.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != in_features:
        width = f"{x.shape[1]} columns" if x.ndim == 2 else f"shape {x.shape}"
        raise UserError(f"calibration data ({source}) has {width} but the model takes {in_features} inputs; "
                        "pass the data the model was trained on")
    if len(x) < MIN_CALIBRATION_ROWS:
        raise UserError(f"calibration data ({source}) has {len(x)} training rows; calibrated formats need at least "
                        f"{MIN_CALIBRATION_ROWS}: pass more data")
    rows = np.ascontiguousarray(x[:CALIBRATION_ROWS], dtype=np.float32)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise UserError(f"calibration data ({source}) has {int(bad.sum())} row(s) with NaN or infinite values, first "
                        f"at row {int(np.argmax(bad))}; clean or drop those rows")
    return rows


def control_rows(x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows an accuracy-controlled quantiser is judged on: the last CONTROL_ROWS training rows (after the
    calibration rows wherever the data has that many), inputs and targets as float32, finite."""
    start = max(0, min(CALIBRATION_ROWS, len(x) - CONTROL_ROWS))
    inputs = np.ascontiguousarray(x[start:start + CONTROL_ROWS], dtype=np.float32)
    targets = np.ascontiguousarray(y[start:start + CONTROL_ROWS], dtype=np.float32).reshape(len(inputs), -1)
    bad = ~(np.isfinite(inputs).all(axis=1) & np.isfinite(targets).all(axis=1))
    if bad.any():
        raise UserError(f"accuracy-control data ({source}) has {int(bad.sum())} row(s) with NaN or infinite values, "
                        f"first at row {start + int(np.argmax(bad))}; clean or drop those rows")
    return inputs, targets


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


def load_artifact(path: str | Path, fmt: Format | str | None = None, in_features: int | None = None) -> Artifact:
    """Load any artifact in its own runtime; the format comes from the extension unless given. `in_features` is the
    model's input width (`Graph.in_features`: a weight-free input embedding, `cat([sin(kx), cos(kx)])`, makes the
    first layer wider than the input); without it, the first weight matrix's columns, right for a plain MLP only."""
    path = Path(path)
    fmt = format_of(path) if fmt is None else get_format(fmt) if isinstance(fmt, str) else fmt
    shapes = fmt.weight_shapes(path)
    if not shapes:
        raise UserError(f"{path}: no Linear weights found; this is not a spinn-export {fmt.name} artifact")
    width = shapes[0][1] if in_features is None else in_features
    return Artifact(path=path, format=fmt.name, in_features=width, predict=fmt.load(path))


def write_artifact(fmt: Format, network: Network, path: Path, opset: int, label: str,
                   calibration: Calibration | None = None) -> dict[str, Any] | None:
    """Run one writer (with `calibration` where the format is calibrated) and return what a calibrated writer
    reports; any exporter failure becomes one line naming the model and the format."""
    # start-up: torch only where a model is written or run (the report and the listings read formats)
    import torch

    if fmt.calibrated and calibration is None:
        raise UserError(f"{label}: {fmt.name} needs calibration inputs (the training data); pass --data FILE "
                        "--inputs COLS --targets COLS")
    try:
        network.module.eval()
        with torch.no_grad():
            return fmt.write(network, path, opset, calibration if fmt.calibrated else None)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # exporters fail in many ways; each is reported, none is hidden
        raise UserError(f"{label}: {fmt.name} export failed ({reason(exc)})") from None
