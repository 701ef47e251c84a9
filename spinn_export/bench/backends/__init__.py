"""Inference backends behind one small protocol, and their registry.

Each backend is one plug-in module that registers `Backend` entries (a CPU and a CUDA twin where
both exist). A backend says whether it can run here (`unavailable_reason`) and loads a model into
a `Runner`. Runners refuse to time anything that is not what their label says: a provider that
fell back, a compiled model that recompiled, or outputs that disagree with eager PyTorch.
"""
from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spinn_export.errors import UserError
from spinn_export.bench.timing import Call

Source = nn.Module | Path


class BackendUnavailable(UserError):
    """The backend cannot run on this machine (missing library, no GPU); the message says why."""


class ProviderFallback(UserError):
    """The work ran somewhere other than the backend's label says (e.g. CUDA requested, CPU used)."""


class RecompileDetected(UserError):
    """A compiled model recompiled (or fell back to eager) after warm-up: its timings are not compiled timings."""


class ParityError(UserError):
    """A loaded model's outputs disagree with the eager PyTorch reference."""


def sample_input(batch: int, in_features: int, seed: int = 0) -> np.ndarray:
    """The fixed, reproducible input every backend is timed and checked on."""
    return np.random.default_rng(seed).standard_normal((batch, in_features), dtype=np.float32)


def torch_device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from spinn_export.bench.machine import cpu_model

    return cpu_model()


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

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Wrap timed calls: raises if what ran was not what the label says. Default: nothing to check."""
        yield


def as_module(source: Source) -> nn.Module:
    """An eager module: given, or loaded from a safetensors checkpoint."""
    if isinstance(source, nn.Module):
        return source.eval()
    from spinn_export.model.checkpoint import load_checkpoint

    return load_checkpoint(source).model


def require_path(source: Source, backend: str, what: str) -> Path:
    if isinstance(source, nn.Module):
        raise UserError(f"backend {backend} runs {what} files, not in-memory modules; export the model first")
    return Path(source)


class TorchRunner(Runner):
    """Any torch callable (eager module, compiled, scripted, exported) on one device."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], backend: str, device: str, engine: str, threads: int):
        self.fn, self.backend, self.device, self.engine, self.threads = fn, backend, device, engine, threads
        self.provider = f"{engine}:{device}"
        self.device_name = torch_device_name(device)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.fn(x)
        if out.device.type != torch.device(self.device).type:
            raise ProviderFallback(f"{self.backend} produced its output on {out.device}, not {self.device}")
        self.provider = f"{self.engine}:{out.device}"
        return out

    def prepare(self, x: np.ndarray) -> Call:
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
        return self._run(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


Loader = Callable[[Source, int], Runner]


@dataclass(frozen=True)
class Backend:
    """A registered backend: `format` is the manifest format it consumes ("checkpoint" for eager torch)."""

    name: str
    device: str
    format: str
    loader: Loader
    requirement: Callable[[], str | None]
    sparse: bool = False  # runs torch sparse-CSR modules

    def unavailable_reason(self) -> str | None:
        """None when this backend can run here, else one line saying why not."""
        return self.requirement()

    def load(self, source: Source, threads: int) -> Runner:
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"backend {self.name} is unavailable: {reason}")
        return self.loader(source, threads)


REGISTRY: dict[str, Backend] = {}


def register(*backends: Backend) -> None:
    for backend in backends:
        if backend.name in REGISTRY:
            raise ValueError(f"backend {backend.name} registered twice")
        REGISTRY[backend.name] = backend


def get_backend(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown backend {name!r}: choose from {', '.join(REGISTRY)}") from None


def resolve_backends(text: str) -> list[Backend]:
    """'all', exact names, or families ('eager' = eager-cpu and eager-cuda), comma-separated."""
    chosen: list[Backend] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "all":
            matches = list(REGISTRY.values())
        elif part in REGISTRY:
            matches = [REGISTRY[part]]
        else:
            matches = [b for b in REGISTRY.values() if b.name.rsplit("-", 1)[0] == part]
        if not matches:
            raise UserError(f"unknown backend {part!r}: choose from all, {', '.join(REGISTRY)} (or a family such as 'eager')")
        chosen.extend(b for b in matches if b not in chosen)
    if not chosen:
        raise UserError("no backend selected: give names such as ort-cpu,eager-cpu")
    return chosen


def cuda_unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return f"no CUDA GPU visible to torch ({build})"
    return None


def check_parity(runner: Runner, reference: nn.Module, in_features: int, *, atol: float = 1e-4, rtol: float = 1e-3,
                 batches: tuple[int, ...] = (1, 7)) -> float:
    """Compare the runner with eager float32 PyTorch on fixed inputs; return the max abs error or raise."""
    worst = 0.0
    for batch in batches:
        x = sample_input(batch, in_features, seed=batch)
        with torch.inference_mode():
            expected = reference(torch.from_numpy(x)).float().numpy()
        got = np.asarray(runner.infer(x), dtype=np.float32)
        if got.shape != expected.shape or not np.all(np.isfinite(got)):
            raise ParityError(f"{runner.backend} returned shape {got.shape} (finite: {np.all(np.isfinite(got))}) "
                              f"where eager PyTorch gives {expected.shape}; the model did not load correctly")
        error = float(np.max(np.abs(got - expected)))
        if not np.allclose(got, expected, atol=atol, rtol=rtol):
            raise ParityError(f"{runner.backend} disagrees with eager PyTorch at batch {batch} (max abs error {error:.3g}, "
                              f"atol {atol}, rtol {rtol}); re-export the model")
        worst = max(worst, error)
    return worst


# Registers the plug-ins, in the order results are listed.
from spinn_export.bench.backends import eager, torch_compile, torchscript, exported_program, aoti, ort  # noqa: E402,F401,I001
