"""Inference backends as plug-ins: one module per backend family, each exposing `Backend` objects that
register themselves in the `spinn_export.backends` entry-point group (the project's own included), so a
third-party package adds a backend with an entry point and no edit here.

A backend declares what it consumes (the runtime `format` it opens, the `precisions` it runs, its
`device`; `Backend.runs` adds the precisions that formats declare to run on those), says whether it can run here
(`unavailable_reason`), takes its own typed options
(`config`, validated on construction, in the manner of optimum-benchmark's per-backend configs) and
loads a model into a `Runner`. Runners refuse to time anything that is not what their label says: a
provider that fell back, or a compiled model that recompiled; parity against eager PyTorch is checked
before any timing (`bench.variants.open_runner`).
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from spinn_export.errors import UserError
from spinn_export.export.formats import ceiling_precision
from spinn_export.hardware import FP32, cpu_model
from spinn_export.plugins import discover

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spinn_export.bench.timing import Call
    from spinn_export.runtimes.profile import TimeByOperator

BACKEND_GROUP = "spinn_export.backends"
CHECKPOINT_FORMAT = "checkpoint"  # what eager torch backends open: the safetensors checkpoint itself
DEVICES = ("cpu", "cuda")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

Source = Union["nn.Module", Path]


class BackendUnavailable(UserError):
    """The backend cannot run on this machine (missing library, no GPU); the message says why."""


class ProviderFallback(UserError):
    """The work ran somewhere other than the backend's label says (e.g. CUDA requested, CPU used)."""


class RecompileDetected(UserError):
    """A compiled model recompiled (or fell back to eager) after warm-up: its timings are not compiled timings."""


def sample_input(batch: int, in_features: int, seed: int = 0) -> np.ndarray:
    """The fixed, reproducible input every backend is timed on."""
    return np.random.default_rng(seed).standard_normal((batch, in_features), dtype=np.float32)


@dataclass(frozen=True)
class BackendConfig:
    """A backend's own options. Subclasses add typed fields with defaults and validate in `__post_init__`
    (raising UserError), so a bad option fails before anything loads, with its name in the message."""

    @classmethod
    def from_options(cls, options: Mapping[str, str], backend: str) -> BackendConfig:
        """Build from `KEY=VALUE` strings, converting each to its field's type."""
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, text in options.items():
            if key not in fields:
                known = ", ".join(sorted(fields)) or "none"
                raise UserError(f"backend {backend} has no option {key!r} (its options: {known})")
            values[key] = _convert(text, hints[key], f"{backend}:{key}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(text: str, kind: Any, label: str) -> Any:
    try:
        if kind is bool:
            if text.lower() not in TRUE + FALSE:
                raise ValueError(text)
            return text.lower() in TRUE
        return kind(text) if kind in (int, float) else text
    except ValueError:
        raise UserError(f"option {label}={text!r} is not a valid {getattr(kind, '__name__', kind)}") from None


def parse_backend_options(items: list[str] | tuple[str, ...] | None) -> dict[str, dict[str, str]]:
    """`BACKEND:KEY=VALUE` strings (as given to --backend-option) to {backend: {key: value}}."""
    options: dict[str, dict[str, str]] = {}
    for item in items or ():
        name, sep, setting = item.partition(":")
        key, eq, value = setting.partition("=")
        if not (sep and eq and name.strip() and key.strip()):
            raise UserError("a backend option is BACKEND:KEY=VALUE, such as compile-cpu:mode=max-autotune; "
                            f"got {item!r}")
        options.setdefault(name.strip(), {})[key.strip()] = value.strip()
    return options


class Runner(abc.ABC):
    """One loaded model on one backend.

    `prepare(x)` places a fixed input where the backend reads it and returns a call that runs
    one complete, synchronised inference. `provider` is what actually ran the work (checked, not
    assumed) and `threads` the intra-op thread count it ran with.
    """

    backend: str
    device: str
    provider: str
    threads: int
    device_name: str

    @abc.abstractmethod
    def prepare(self, x: np.ndarray) -> Call:
        """Place the input `x` where the backend reads it, run it once, and return the call to time."""

    @abc.abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """Outputs for `x` as a float32 host array (used for the parity check, not timed)."""

    def time_by_operator(self, x: np.ndarray) -> TimeByOperator | None:
        """Where a call's time goes, from the runtime's own profiler (`runtimes.profile`), or None where this
        backend has no profiler to ask. Not a timing: profiled calls run slower, so only the shares are meant."""
        return None

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Wrap timed calls: raises if what ran was not what the label says. Default: nothing to check."""
        yield


Loader = Callable[[Source, int, Any], Runner]


@dataclass(frozen=True)
class Backend:
    """A registered backend.

    `format`: the runtime format it opens (`CHECKPOINT_FORMAT` for eager torch; an artifact format's
    `runtime_format` otherwise). `precisions`: the model precisions it runs. `sparse`: it runs torch
    sparse-CSR modules. `slow`: benchmarked only when asked for by name (AOTInductor takes minutes).
    `config`: its typed options. `runtime`: the library that does the work (`ONNXRUNTIME`, `OPENVINO`, `TORCH`), so
    paired timing knows when two calls take the cores from each other's thread pools (`paired.switches_runtime`);
    empty: unknown, treated as a runtime of its own.
    """

    name: str
    device: str
    format: str
    loader: Loader
    requirement: Callable[[], str | None] = lambda: None
    precisions: tuple[str, ...] = (FP32,)
    sparse: bool = False
    slow: bool = False
    config: type[BackendConfig] = BackendConfig
    description: str = ""
    runtime: str = ""

    @property
    def family(self) -> str:
        return self.name.rsplit("-", 1)[0]

    def runs(self, precision: str) -> bool:
        """Whether this backend runs models of `precision`: named in `precisions`, or running on the kernels of one
        that is (`Format.runs_as`: an int8 backend runs int8-static files)."""
        return bool({precision, ceiling_precision(precision)} & set(self.precisions))

    def unavailable_reason(self) -> str | None:
        """None when this backend can run here, else one line saying why not."""
        return self.requirement()

    def make_config(self, options: Mapping[str, str] | None = None) -> BackendConfig:
        return self.config.from_options(options or {}, self.name)

    def load(self, source: Source, threads: int, config: BackendConfig | None = None) -> Runner:
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"backend {self.name} is unavailable: {reason}")
        return self.loader(source, threads, config if config is not None else self.make_config())


@functools.cache
def _discovered():  # type: ignore[no-untyped-def]
    return discover(BACKEND_GROUP, Backend, lambda b: b.name)


def backends() -> dict[str, Backend]:
    """Every registered backend that loaded, by name."""
    found = _discovered().loaded
    if not found and not _discovered().broken:
        raise UserError(f"no benchmark backend is registered (entry-point group {BACKEND_GROUP}): "
                        "install spinn-export with pip (pip install -e . in a checkout)")
    return found


def broken_backends() -> dict[str, str]:
    """Registered backends whose plug-in failed to load, with the reason."""
    return _discovered().broken


def get_backend(name: str) -> Backend:
    backends()  # none registered at all is an install problem, said as such
    return _discovered().get(name, "backend")


def resolve_backends(text: str | None) -> list[Backend]:
    """Comma-separated names; 'all' (every backend), a device ('cpu', 'cuda': its backends that are not
    slow), or a family ('eager' = eager-cpu and eager-cuda). None: every backend that is not slow."""
    found = backends()
    chosen: list[Backend] = []
    for part in (p.strip() for p in (text or "default").split(",")):
        if not part:
            continue
        if part == "all":
            matches = list(found.values())
        elif part == "default":
            matches = [b for b in found.values() if not b.slow]
        elif part in found or part in broken_backends():
            matches = [get_backend(part)]
        elif part in DEVICES:
            matches = [b for b in found.values() if b.device == part and not b.slow]
        else:
            matches = [b for b in found.values() if b.family == part]
        if not matches:
            raise UserError(f"unknown backend {part!r}: choose from all, cpu, cuda, {', '.join(found)} "
                            "(or a family such as 'eager')")
        chosen.extend(b for b in matches if b not in chosen)
    if not chosen:
        raise UserError("no backend selected: give names such as ort-cpu,eager-cpu")
    return chosen


def cuda_unavailable_reason() -> str | None:
    # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return f"no CUDA GPU visible to torch ({build})"
    return None


def torch_device_name(device: str) -> str:
    # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))

    return cpu_model()


def as_module(source: Source) -> nn.Module:
    """An eager module: given, or loaded from a safetensors checkpoint (a bf16 one behind a float32 interface)."""
    # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
    from torch import nn

    if isinstance(source, nn.Module):
        return source.eval()
    # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
    from spinn_export.model.checkpoint import load_checkpoint
    from spinn_export.model.mlp import float32_io

    return float32_io(load_checkpoint(source).network.module)


def torch_cpu_precisions() -> tuple[tuple[str, ...], str]:
    """What the PyTorch CPU backends run: float32, and bf16 (`torch-bf16` artifacts) where the CPU has it natively
    (elsewhere bf16 would be emulated through float32, slower than float32, so such pairs are not generated); and
    a note for the backend listing saying why not."""
    # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
    from spinn_export.export.formats.torch_bf16 import TORCH_BF16, native_torch_bf16_missing

    missing = native_torch_bf16_missing()
    return ((FP32,), f"; no bf16 here: {missing}") if missing else ((FP32, TORCH_BF16.precision), "")


def require_path(source: Source, backend: str, what: str) -> Path:
    if not isinstance(source, Path):
        raise UserError(f"backend {backend} runs {what} files, not in-memory modules; export the model first")
    return source


def torch_loader(family: str, engine: str, device: str, open_model: Callable[[Any, str], Callable[..., Any]],
                 artifact: str | None = None) -> Loader:
    """The loader every torch backend shares: the thread count fixed before the model is opened (torch's pool is
    sized once), `open_model(source, device)` for the callable, and a `TorchRunner` named `<family>-<device>`.
    `artifact` names the file kind it opens (an in-memory module is refused); None: it takes a module or checkpoint."""
    name = f"{family}-{device}"

    def load(source: Source, threads: int, config: BackendConfig) -> TorchRunner:
        # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
        from spinn_export.bench.timing import fix_threads

        threads = fix_threads(threads)
        opened = open_model(source if artifact is None else require_path(source, name, artifact), device)
        return TorchRunner(opened, name, device, engine, threads)

    return load


class TorchRunner(Runner):
    """Any torch callable (eager module, compiled, scripted, exported) on one device.

    The timed call synchronises the device before it returns, so host time around it is the
    complete latency of the inference, GPU work included.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], backend: str, device: str, engine: str,
                 threads: int):
        self.fn, self.backend, self.device, self.engine, self.threads = fn, backend, device, engine, threads
        self.provider = f"{engine}:{device}"
        self.device_name = torch_device_name(device)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
        import torch

        with torch.inference_mode():
            out = self.fn(x)
        if out.device.type != torch.device(self.device).type:
            raise ProviderFallback(f"{self.backend} produced its output on {out.device}, not {self.device}")
        self.provider = f"{self.engine}:{out.device}"
        return out

    def prepare(self, x: np.ndarray) -> Call:
        # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
        import torch

        xt = torch.from_numpy(x).to(self.device)
        self._run(xt)  # first call (compiles where the backend compiles) and checks the output's device
        fn, cuda = self.fn, self.device.startswith("cuda")

        def call() -> None:
            with torch.inference_mode():
                fn(xt)
            if cuda:
                torch.cuda.synchronize()

        return call

    def infer(self, x: np.ndarray) -> np.ndarray:
        # start-up: torch only where a torch backend runs (the report and `spinn-export backends` import this module)
        import torch

        return self._run(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
