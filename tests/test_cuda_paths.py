"""The CUDA backends' own logic, checked on a machine without a GPU: each timed call synchronises the device
inside it and moves nothing between host and device, a CUDA provider that fell back to the CPU is refused,
a missing GPU (or Triton, or onnxruntime-gpu) is one clear line and a skip in the suite, and torch.compile's
GPU modes are accepted with the recompile guard still in force.

Only what cannot exist here is faked: the GPU itself (a host-to-device copy that records itself,
`torch.cuda.synchronize`, onnxruntime-gpu's session, IOBinding and device buffers)."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import torch

import spinn_export.bench.backends as backends_module
from spinn_export.bench.backends import (
    BackendConfig,
    ProviderFallback,
    RecompileDetected,
    TorchRunner,
    backends,
    cuda_unavailable_reason,
    get_backend,
    sample_input,
    torch_compile,
)
from spinn_export.bench.backends import ort as ort_backend
from spinn_export.bench.backends.ort import OrtCudaConfig, OrtRunner
from spinn_export.bench.backends.torch_compile import MODES, CompileConfig, CompiledRunner
from spinn_export.errors import UserError
from spinn_export.export.formats.torchscript import write_torchscript
from spinn_export.runtimes.onnxruntime import session_providers
from tests.conftest import run_bench

CUDA_BACKENDS = {"eager-cuda", "compile-cuda", "torchscript-cuda", "exported-program-cuda", "ort-cuda"}
NO_GPU_HERE = not (torch.cuda.is_available() or Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi"))
no_gpu_only = pytest.mark.skipif(not NO_GPU_HERE, reason="checks what a machine without a GPU reports")
ON_GPU = SimpleNamespace(device=torch.device("cuda", 0))  # what a model's output looks like when it ran on the GPU


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A CUDA device that is not there: copies to it are recorded (the tensor stays where it was) and so are
    synchronisations. Returns the log both are written to."""
    log: list[str] = []
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        target = args[0] if args else kwargs.get("device")
        if str(target).startswith("cuda"):
            log.append("copy to device")
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("synchronize"))
    monkeypatch.setattr(backends_module, "torch_device_name", lambda device: "a GPU that is not there")
    return log


# ----------------------------------------------------------------------------------------- torch backends


def test_a_torch_cuda_call_synchronises_the_device_inside_every_call_and_copies_nothing(fake_gpu):
    def model_on_gpu(x: torch.Tensor) -> SimpleNamespace:
        fake_gpu.append("run")
        return ON_GPU

    runner = TorchRunner(model_on_gpu, "eager-cuda", "cuda", "eager", 1)
    call = runner.prepare(sample_input(4, 18))
    assert fake_gpu == ["copy to device", "run"]  # the input is placed on the device once, before any timing
    fake_gpu.clear()
    call()
    call()
    assert fake_gpu == ["run", "synchronize", "run", "synchronize"]  # the call returns once the GPU is done
    assert runner.provider == "eager:cuda:0"


def test_a_cuda_runner_whose_work_stays_on_the_cpu_is_refused(fake_gpu, network):
    # what a frozen TorchScript module moved with .to("cuda") did: the weights (and so the work) stayed behind
    runner = get_backend("eager-cuda").loader(network.module, 1, BackendConfig())
    with pytest.raises(ProviderFallback, match="eager-cuda produced its output on cpu, not cuda"):
        runner.prepare(sample_input(4, 18))


def test_torchscript_cuda_maps_the_frozen_weights_onto_the_gpu_as_it_loads(tmp_path, network, monkeypatch, fake_gpu):
    write_torchscript(network, tmp_path / "m.torchscript.pt", 18)
    real_load, asked = torch.jit.load, []

    def load(file, map_location=None, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(map_location)
        return real_load(file, map_location="cpu", **kwargs)  # there is no GPU to map onto here

    monkeypatch.setattr(torch.jit, "load", load)
    runner = get_backend("torchscript-cuda").loader(tmp_path / "m.torchscript.pt", 1, BackendConfig())
    assert asked == ["cuda"] and runner.device == "cuda"
    # why map_location and not .to(): freezing made the weights graph constants, which .to() does not move
    assert list(runner.fn.parameters()) == [] and list(runner.fn.buffers()) == []


def test_compile_cuda_accepts_every_torch_compile_mode_and_its_runner_keeps_the_guard(fake_gpu, network):
    compile_cuda = get_backend("compile-cuda")
    assert {"reduce-overhead", "max-autotune"} <= set(MODES)
    for mode in MODES:
        assert compile_cuda.make_config({"mode": mode}) == CompileConfig(mode=mode)
    with pytest.raises(UserError, match=r"torch\.compile mode 'cudagraphs' is not one of default, reduce-overhead"):
        compile_cuda.make_config({"mode": "cudagraphs"})
    runner = compile_cuda.loader(network.module, 1, CompileConfig(mode="reduce-overhead"))
    assert isinstance(runner, CompiledRunner) and runner.device == "cuda" and runner.backend == "compile-cuda"


@pytest.mark.slow
def test_the_recompile_guard_holds_under_reduce_overhead(network, small_spec):
    # on the CPU, reduce-overhead compiles without CUDA graphs; the guard must refuse the same things as by default
    runner = get_backend("compile-cpu").load(network.module, 1, CompileConfig(mode="reduce-overhead"))
    call = runner.prepare(sample_input(4, small_spec.in_features))
    with runner.guard():
        call()  # a warmed shape: nothing new is compiled
    with pytest.raises(RecompileDetected, match="needed a recompile"), runner.guard(), torch.inference_mode():
        runner.fn(torch.from_numpy(sample_input(6, small_spec.in_features)))  # a shape not warmed up
    never_called = torch.compile(lambda x: x * 2, fullgraph=True, dynamic=False)
    with pytest.raises(RecompileDetected, match="needed a recompile"), runner.guard():
        never_called(torch.ones(3))  # a model compiled for the first time while timed is refused as well


def test_compile_cuda_needs_triton_and_a_c_compiler_besides_the_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(torch_compile, "cuda_unavailable_reason", lambda: None)  # as on a GPU machine
    if torch_compile.importlib.util.find_spec("triton") is None:  # a CPU build of torch brings no Triton
        assert torch_compile.compile_cuda_missing().startswith("Triton is not installed")
    monkeypatch.setattr(torch_compile.importlib.util, "find_spec", lambda name: object())  # Triton, as there
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert torch_compile.compile_cuda_missing().startswith("no C compiler (gcc or clang on PATH, or CC)")
    monkeypatch.setenv("CC", "/opt/cc")
    assert torch_compile.compile_cuda_missing() is None


# ----------------------------------------------------------------------------------------- ONNX Runtime


class FakeBinding:
    """onnxruntime's IOBinding, recording what is bound and each output synchronisation."""

    def __init__(self, log: list[tuple]) -> None:
        self.log = log

    def bind_ortvalue_input(self, name: str, value: SimpleNamespace) -> None:
        self.log.append(("bind input", name, value.device))

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0) -> None:
        self.log.append(("bind output", name, device_type, device_id))

    def synchronize_outputs(self) -> None:
        self.log.append(("synchronize outputs",))


class FakeSession:
    """An onnxruntime-gpu session; `providers` is what it reports it uses (CPU only when CUDA failed to load).
    It has no `run`: a timed CUDA call that fed host arrays would fail here."""

    def __init__(self, providers: list[str]) -> None:
        self.providers, self.log = providers, []

    def get_providers(self) -> list[str]:
        return self.providers

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="x")]

    def get_outputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="y")]

    def io_binding(self) -> FakeBinding:
        return FakeBinding(self.log)

    def run_with_iobinding(self, binding: FakeBinding, run_options=None) -> None:  # type: ignore[no-untyped-def]
        self.log.append(("run",))


def load_ort_cuda(monkeypatch: pytest.MonkeyPatch, session: FakeSession) -> OrtRunner:
    """The ort-cuda loader, with the session onnxruntime-gpu would have made."""
    monkeypatch.setattr(ort_backend, "open_session", lambda path, device, threads, config: session)
    return get_backend("ort-cuda").loader(Path("model.onnx"), 1, OrtCudaConfig())


def test_ort_cuda_refuses_a_session_that_fell_back_to_the_cpu(monkeypatch):
    with pytest.raises(ProviderFallback) as refused:
        load_ort_cuda(monkeypatch, FakeSession(["CPUExecutionProvider"]))
    message = str(refused.value)
    assert "\n" not in message
    assert "ort-cuda: ONNX Runtime runs this model on CPUExecutionProvider, not CUDAExecutionProvider" in message
    assert "install the CUDA and cuDNN libraries onnxruntime-gpu needs" in message


def test_ort_cuda_binds_input_and_output_on_the_gpu_and_synchronises_inside_every_call(monkeypatch):
    copies: list[np.ndarray] = []

    def to_device(array: np.ndarray, device_type: str = "cpu", device_id: int = 0) -> SimpleNamespace:
        copies.append(array.copy())
        return SimpleNamespace(device=(device_type, device_id))

    monkeypatch.setattr(onnxruntime.OrtValue, "ortvalue_from_numpy", staticmethod(to_device))
    session = FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"])
    runner = load_ort_cuda(monkeypatch, session)
    assert runner.provider == "CUDAExecutionProvider"
    x = sample_input(8, 18)
    call = runner.prepare(x)
    assert len(copies) == 1 and np.array_equal(copies[0], x)
    assert session.log == [("bind input", "x", ("cuda", 0)), ("bind output", "y", "cuda", 0),
                           ("run",), ("synchronize outputs",)]
    session.log.clear()
    call()
    call()
    assert session.log == [("run",), ("synchronize outputs",)] * 2 and len(copies) == 1


def test_ort_cuda_asks_for_the_cuda_provider_first_and_float32_matmuls_unless_told_otherwise():
    assert session_providers("cuda") == [
        ("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"}), "CPUExecutionProvider"]
    assert session_providers("cuda", tf32=True)[0][1]["use_tf32"] == "1"
    assert session_providers("cpu") == ["CPUExecutionProvider"]


def test_ort_cuda_without_the_cuda_provider_says_to_install_onnxruntime_gpu_alone(monkeypatch):
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime is onnxruntime-gpu")
    monkeypatch.setattr("spinn_export.runtimes.onnxruntime.no_gpu_reason", lambda: None)  # as on a GPU machine
    reason = get_backend("ort-cuda").unavailable_reason()
    assert reason.startswith("this onnxruntime build has no CUDAExecutionProvider: install onnxruntime-gpu alone")
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in reason and "\n" not in reason


# ----------------------------------------------------------------------------------------- skip reasons


def test_torch_says_whether_it_is_a_cpu_build_or_sees_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert cuda_unavailable_reason() == "no CUDA GPU visible to torch (a CPU-only torch build)"
    monkeypatch.setattr(torch.version, "cuda", "13.0")  # a CUDA build on a machine whose GPU it cannot see
    assert cuda_unavailable_reason() == "no CUDA GPU visible to torch (torch built for CUDA 13.0)"


@no_gpu_only
def test_every_cuda_backend_says_in_one_line_why_it_cannot_run_here():
    cuda = {name: backend for name, backend in backends().items() if backend.device == "cuda"}
    assert set(cuda) >= CUDA_BACKENDS
    for name, backend in cuda.items():
        reason = backend.unavailable_reason()
        assert reason and "\n" not in reason and "GPU" in reason, (name, reason)


@pytest.mark.slow
@no_gpu_only
def test_the_suite_skips_every_cuda_backend_with_its_reason():
    proc = run_bench("-rs", "bench", "--spinn-backends=cuda", "--spinn-variants=dense", "--spinn-batches=1",
                     "--spinn-paired=none", "--spinn-no-memory", "--benchmark-disable")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name, backend in backends().items():
        if backend.device == "cuda":
            assert f"{name}: {backend.unavailable_reason()}" in proc.stdout, name
    assert " passed" not in proc.stdout
