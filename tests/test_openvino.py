"""The openvino-cpu backend on real OpenVINO sessions: float32 really is float32 (hint set, read back, parity), the
settings it ran with are recorded, quantised ONNX runs within its recorded error, bf16 runs only where the CPU
has it natively, and without openvino the backend is one line of reason."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spinn_export.bench.backends import get_backend, sample_input
from spinn_export.bench.memory import kernel_peak_unavailable, peak_memory
from spinn_export.bench.variants import Variant, open_runner, refs_from_manifest
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.export.formats.onnx_bf16 import write_onnx_bf16
from spinn_export.export.parity import FLOAT32, ParityError
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.runtimes.openvino import (
    compile_onnx,
    core,
    cpu_capabilities,
    declared_precision,
    native_bf16_missing,
    tanh_as_sigmoid,
)
from spinn_export.runtimes.openvino import missing as openvino_missing

SPEC = MLPSpec(18, (64, 64), 2)
BF16_MISSING = native_bf16_missing()
needs_openvino = pytest.mark.skipif(openvino_missing() is not None,
                                    reason=f"openvino is in the test extra; here: {openvino_missing()}")


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """float32, dynamic int8 and static int8 ONNX of one model trained on nothing but named as the built-in task's."""
    directory = tmp_path_factory.mktemp("openvino")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(directory / "dense.safetensors", mlp_network(SPEC),
                                 {"variant": "dense", "dataset": "stokes2d", "seed": "0"})
    export_checkpoints([checkpoint], directory / "out", parse_formats("onnx,onnx-int8,onnx-int8-static"))
    return {ref.name: ref for ref in refs_from_manifest(directory / "out")}


@needs_openvino
def test_float32_runs_in_float32_with_its_settings_read_back_and_recorded(refs):
    runner = open_runner("openvino-cpu", refs["dense"], threads=1)  # the float32 parity check runs here
    assert runner.parity.criterion == "float32" and runner.parity.max_abs_error < FLOAT32.atol
    assert runner.threads == 1 and runner.compiled.precision == "f32" and runner.compiled.streams == 1
    assert "CPU f32 (1 stream" in runner.provider and runner.device_name
    batch1, batch64 = runner.prepare(sample_input(1, 18)), runner.prepare(sample_input(64, 18))
    assert batch1() is None and batch64() is None  # prepared calls of two batch sizes coexist
    two = get_backend("openvino-cpu").load(refs["dense"].file("onnx"), 1,
                                           get_backend("openvino-cpu").make_config({"threads": "2"}))
    assert two.threads == 2  # the backend option wins over the suite's count, and what ran is what is recorded


@needs_openvino
@pytest.mark.parametrize("variant", ["dense", "dense-int8-static"])
def test_a_prepared_batch_runs_the_model_compiled_for_that_batch_checked_against_the_verified_one(refs, variant):
    backend = get_backend("openvino-cpu")
    runner = backend.load(refs[variant].file("onnx"), 1)
    static = runner.compile_for_batch(64)
    assert static.model.inputs[0].get_partial_shape().is_static and runner.compiled.model.inputs[0].get_partial_shape(
    ).is_dynamic and static.precision == runner.compiled.precision and static.tanh == runner.compiled.tanh
    assert runner.prepare(sample_input(64, 18))() is None
    assert backend.load(refs[variant].file("onnx"), 1, backend.make_config({"static_batch": "false"})
                        ).compile_for_batch is None


@needs_openvino
def test_a_model_compiled_for_the_batch_that_computes_otherwise_is_refused(refs, tmp_path):
    """The batch-compiled model must compute what the verified one does: another file's model is refused."""
    from dataclasses import replace

    from spinn_export.bench.backends.openvino import OpenVinoRunner
    from spinn_export.runtimes.openvino import compile_onnx

    verified = compile_onnx(refs["dense"].file("onnx"), None, 1)
    other = replace(compile_onnx(refs["dense-int8"].file("onnx"), None, 1, batch=64), precision=verified.precision)
    runner = OpenVinoRunner(verified, None, lambda batch: other)
    with pytest.raises(UserError, match=r"differs from the verified one in .* static_batch=false"):
        runner.prepare(sample_input(64, 18))


@needs_openvino
@pytest.mark.parametrize("variant", ["dense", "dense-int8-static"])
def test_tanh_as_sigmoid_is_the_same_function_and_is_what_the_label_says(refs, variant):
    """The rewrite replaces every Tanh (one per hidden layer) and is recorded; the native form keeps them. Both
    compute the same outputs: float32 parity for both, and each other within float32 rounding."""
    model = core().read_model(str(refs[variant].file("onnx")))
    assert tanh_as_sigmoid(model) == len(SPEC.widths)
    assert "Tanh" not in {node.get_type_name() for node in model.get_ordered_ops()}
    backend = get_backend("openvino-cpu")
    rewritten = open_runner("openvino-cpu", refs[variant], threads=1)  # parity is checked as it opens
    native = open_runner("openvino-cpu", refs[variant], 1, backend.make_config({"tanh": "native"}))
    assert rewritten.compiled.tanh == "sigmoid" and "tanh as 2 sigmoid(2x) - 1" in rewritten.provider
    assert native.compiled.tanh == "native" and "sigmoid" not in native.provider
    x = sample_input(256, 18)
    np.testing.assert_allclose(rewritten.infer(x), native.infer(x), atol=1e-3 if "int8" in variant else 1e-5)


@needs_openvino
def test_a_forced_bf16_hint_never_passes_as_float32(refs):
    config = get_backend("openvino-cpu").make_config({"precision_hint": "bf16"})
    if BF16_MISSING:  # OpenVINO would quietly compute in f32: the runner refuses rather than mislabel it
        with pytest.raises(UserError, match="computes this model in f32 here, not the requested bf16"):
            open_runner("openvino-cpu", refs["dense"], 1, config)
    else:  # bf16 on a float32 variant: the float32 parity check rejects it
        with pytest.raises(ParityError, match="parity failed"):
            open_runner("openvino-cpu", refs["dense"], 1, config)


@needs_openvino
@pytest.mark.skipif(kernel_peak_unavailable() is not None, reason=f"peak RSS: {kernel_peak_unavailable()}")
def test_peak_memory_frees_each_batch_call_and_the_runner_still_works(refs):
    """The peak-memory measurement frees each batch's prepared call before the next one and then checks parity:
    with a request-adopted input tensor that crashed the process (OpenVINO kept using the freed memory)."""
    memory = peak_memory(get_backend("openvino-cpu"), refs["dense"], (1, 4096), 1, None)
    assert memory.method == "VmHWM" and memory.reason is None
    assert 0 < memory.peak_bytes[1] <= memory.peak_bytes[4096]


@needs_openvino
@pytest.mark.parametrize("variant", ["dense-int8", "dense-int8-static"])
def test_int8_onnx_runs_within_twice_its_recorded_error(refs, variant):
    ref = refs[variant]
    runner = open_runner("openvino-cpu", ref, threads=1)
    assert runner.compiled.precision == "f32"  # the float parts of a quantised graph stay float32
    assert 0 < runner.parity.max_abs_error <= 2 * ref.recorded_error
    assert runner.prepare(sample_input(8, 18))() is None


@needs_openvino
def test_options_are_typed_and_checked_before_anything_loads():
    backend = get_backend("openvino-cpu")
    assert backend.make_config().to_dict() == {"precision_hint": "auto", "streams": 1, "threads": 0, "tanh": "sigmoid",
                                               "static_batch": True}
    assert backend.make_config({"streams": "2"}).streams == 2
    for options, message in (({"precision_hint": "f16"}, "not one of auto, f32, bf16"),
                             ({"streams": "0"}, "at least 1"),
                             ({"threads": "-1"}, "threads must be 0"), ({"threads": "two"}, "not a valid int"),
                             ({"tanh": "relu"}, "not one of sigmoid, native")):
        with pytest.raises(UserError, match=message):
            backend.make_config(options)


@needs_openvino
def test_bf16_is_offered_only_where_openvino_reports_native_bf16():
    backend = get_backend("openvino-cpu")
    assert ("BF16" in cpu_capabilities()) == (BF16_MISSING is None) == ("bf16" in backend.precisions)
    bf16 = Variant("dense", "bf16")
    assert (bf16.unsupported_reason(backend) is None) == (BF16_MISSING is None)
    assert "not bf16" in bf16.unsupported_reason(get_backend("ort-cpu"))  # ONNX Runtime would run it in float32
    if BF16_MISSING:
        assert "no native bf16" in BF16_MISSING and "no bf16 here" in backend.description
        with pytest.raises(UserError, match="format 'onnx-bf16' is unavailable here: this CPU has no native bf16"):
            parse_formats("onnx-bf16")


@pytest.mark.slow
@needs_openvino
def test_the_bf16_marker_travels_in_the_file_and_sets_the_hint(tmp_path):
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    model = network.module.eval()
    path = tmp_path / "m.bf16.onnx"
    write_onnx_bf16(network, path, 18)  # writing needs no bf16 hardware: it is the float32 graph plus metadata
    assert declared_precision(core().read_model(str(path))) == "bf16"
    if BF16_MISSING:
        with pytest.raises(UserError, match=r"not the requested bf16 .*no native bf16"):
            compile_onnx(path)
    else:
        compiled = compile_onnx(path)
        x = sample_input(256, 18)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        output = compiled.model.create_infer_request().infer({0: x})[0]
        assert compiled.precision == "bf16" and FLOAT32.atol < np.abs(output - expected).max() < 0.1


@pytest.mark.slow
def test_without_openvino_the_backend_is_one_line_of_reason():
    script = ("import sys; sys.modules['openvino'] = None\n"  # any `import openvino` now raises ImportError
              "from spinn_export.bench.backends import get_backend\n"
              "from spinn_export.export.formats import unavailable_formats\n"
              "backend = get_backend('openvino-cpu')\n"
              "print(backend.unavailable_reason()); print(backend.precisions); "
              "print(unavailable_formats()['onnx-bf16'])\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reason, precisions, bf16 = proc.stdout.strip().splitlines()
    assert reason == bf16 == "openvino is not installed (pip install 'spinn-export[cpu]')"
    assert precisions == "('fp32', 'int8')"


@needs_openvino
def test_a_corrupt_onnx_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="truncated or corrupt") as info:
        get_backend("openvino-cpu").load(Path(bad), 1)
    assert "\n" not in str(info.value)
