"""Backends refuse to time anything their label does not describe: fallen-back providers, recompiles,
outputs that disagree with eager PyTorch. ONNX Runtime checks run in a fresh process, because a
process-wide ORT thread pool changes how every later session in the process must be created."""
from __future__ import annotations

import copy
import importlib.metadata
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from spinn_export.bench.backends import (
    ProviderFallback,
    RecompileDetected,
    backends,
    get_backend,
    parse_backend_options,
    resolve_backends,
    sample_input,
)
from spinn_export.bench.variants import Variant, open_runner, possible_variants, refs_from_manifest
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import get_format
from spinn_export.export.formats.exported_program import write_exported_program
from spinn_export.export.formats.onnx import write_onnx
from spinn_export.export.formats.torchscript import write_torchscript
from spinn_export.export.parity import FLOAT32, ParityError, check_parity
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.prune.magnitude import magnitude_prune

CONTRACT_NAMES = {"eager-cpu", "compile-cpu", "torchscript-cpu", "exported-program-cpu", "ort-cpu", "openvino-cpu",
                  "eager-cuda", "compile-cuda", "torchscript-cuda", "exported-program-cuda", "ort-cuda"}


def in_fresh_process(fn, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def test_registry_holds_the_contract_names_and_says_why_a_backend_cannot_run():
    assert set(backends()) >= CONTRACT_NAMES
    for name in ("eager-cpu", "torchscript-cpu", "ort-cpu", "openvino-cpu"):  # what the test extra installs
        assert backends()[name].unavailable_reason() is None, name
    for name, backend in backends().items():
        reason = backend.unavailable_reason()
        assert reason is None or (reason.strip() and "\n" not in reason), name  # one line saying why
    if not torch.cuda.is_available():
        for name in ("eager-cuda", "compile-cuda", "torchscript-cuda", "exported-program-cuda", "ort-cuda"):
            assert "GPU" in backends()[name].unavailable_reason()
            with pytest.raises(UserError, match=f"{name} is unavailable"):
                backends()[name].load(Path("unused"), 1)
    assert backends()["eager-cpu"].unavailable_reason() is None


def test_every_backend_is_an_entry_point_and_none_is_listed_in_code():
    points = importlib.metadata.entry_points(group="spinn_export.backends")
    assert sorted(p.name for p in points) == sorted(backends()) and {p.name for p in points} >= CONTRACT_NAMES
    formats = importlib.metadata.entry_points(group="spinn_export.formats")
    assert {"torchscript", "onnx", "exported-program", "onnx-optimized", "onnx-int8", "onnx-int8-static", "onnx-bf16",
            "aoti"} <= {p.name for p in formats}


def test_backend_names_resolve_by_family_and_device_and_unknown_names_are_refused():
    assert [b.name for b in resolve_backends("eager,ort-cpu")] == ["eager-cpu", "eager-cuda", "ort-cpu"]
    assert len(resolve_backends("all")) == len(backends())
    cpu = {b.name for b in resolve_backends("cpu")}
    assert {"eager-cpu", "compile-cpu", "ort-cpu", "ort-optimized-cpu", "openvino-cpu"} <= cpu and "aoti-cpu" not in cpu
    assert all(b.device == "cuda" for b in resolve_backends("cuda"))
    assert {b.name for b in resolve_backends(None)} == cpu | {b.name for b in resolve_backends("cuda")}
    assert [b.name for b in resolve_backends("aoti-cpu")] == ["aoti-cpu"]  # slow: only by name
    with pytest.raises(UserError, match="unknown backend 'tensorrt'"):
        resolve_backends("ort-cpu,tensorrt")
    with pytest.raises(UserError, match="unknown backend"):
        get_backend("nope")


def test_eager_runner_matches_and_a_wrong_model_fails_parity(network, small_spec):
    runner = get_backend("eager-cpu").load(network.module, 1)
    assert runner.provider == "eager:cpu" and runner.threads == 1 and runner.device_name
    assert check_parity(network, runner.infer, "eager", FLOAT32).max_abs_error == 0.0
    call = runner.prepare(sample_input(5, small_spec.in_features))
    assert call() is None
    other = mlp_network(small_spec)
    other.module.eval()
    with pytest.raises(ParityError, match=r"eager: parity failed.*against eager PyTorch"):
        check_parity(other, runner.infer, "eager", FLOAT32)


def test_exported_files_load_on_their_backends_and_in_memory_modules_are_refused(tmp_path, network, small_spec):
    for name, writer, file in (("torchscript-cpu", write_torchscript, "m.torchscript.pt"),
                               ("exported-program-cpu", write_exported_program, "m.pt2")):
        writer(network, tmp_path / file, 18)
        runner = get_backend(name).load(tmp_path / file, 1)
        assert check_parity(network, runner.infer, name, FLOAT32).max_abs_error < 1e-5
        assert runner.prepare(sample_input(3, small_spec.in_features))() is None
        with pytest.raises(UserError, match="export the model first"):
            get_backend(name).load(network.module, 1)


@pytest.mark.slow
def test_compile_refuses_recompiles_after_warm_up(network, small_spec):
    runner = get_backend("compile-cpu").load(network.module, 1)
    call = runner.prepare(sample_input(4, small_spec.in_features))
    with runner.guard():
        call()  # warmed shape: no recompile, no error
    unwarmed = torch.from_numpy(sample_input(6, small_spec.in_features))
    with pytest.raises(RecompileDetected, match="needed a recompile"), runner.guard(), torch.inference_mode():
        runner.fn(unwarmed)


@pytest.mark.slow
def test_compile_refuses_to_fall_back_to_eager_at_the_recompile_limit(network, small_spec):
    with torch._dynamo.config.patch(recompile_limit=1):
        runner = get_backend("compile-cpu").load(network.module, 1)
        runner.prepare(sample_input(2, small_spec.in_features))
        with pytest.raises(RecompileDetected, match="recompile limit"):
            runner.prepare(sample_input(3, small_spec.in_features))


def _ort_checks(path: str, reference_path: str) -> dict:
    """In a fresh process: ort-cpu loads on the shared pool; a session that fell back to CPU is refused."""
    import onnxruntime as ort

    from spinn_export.bench.backends.ort import OrtRunner, open_session
    from spinn_export.model.checkpoint import load_checkpoint

    out: dict = {}
    runner = get_backend("ort-cpu").load(Path(path), 1)
    out["provider"], out["threads"] = runner.provider, runner.threads
    reference = load_checkpoint(reference_path).network
    out["error"] = check_parity(reference, runner.infer, "ort", FLOAT32).max_abs_error
    out["call"] = runner.prepare(sample_input(8, 18))() is not None
    options = ort.SessionOptions()
    options.use_per_session_threads = False  # the process has a global pool now: every session must share it
    fell_back = ort.InferenceSession(path, options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    for name, attempt in (("runner", lambda: OrtRunner(fell_back, "ort-cuda", "cuda", 1)),
                          ("session", lambda: open_session(Path(path), "cuda", 1))):
        try:
            attempt()
            out[name] = None
        except UserError as exc:
            out[name] = (type(exc).__name__, str(exc))
    try:
        get_backend("ort-cpu").load(Path(path), 2)
    except UserError as exc:
        out["second_pool"] = str(exc)
    return out


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of a CUDA request")
def test_ort_runs_on_the_requested_provider_or_refuses(tmp_path, network, small_checkpoint):
    write_onnx(network, tmp_path / "m.onnx", 18)
    save_checkpoint(tmp_path / "m.safetensors", network, {"variant": "dense"})
    out = in_fresh_process(_ort_checks, str(tmp_path / "m.onnx"), str(tmp_path / "m.safetensors"))
    assert out["provider"] == "CPUExecutionProvider" and out["threads"] == 1 and out["error"] < 1e-5
    assert out["runner"][0] == ProviderFallback.__name__ and "CPUExecutionProvider" in out["runner"][1]
    assert out["session"] is not None and "CPUExecutionProvider" in out["session"][1]
    assert "already fixed at 1 threads" in out["second_pool"]


@pytest.mark.slow
def test_manifest_variants_and_their_backends(tmp_path, network, small_spec):
    save_checkpoint(tmp_path / "dense.safetensors", network, {"variant": "dense"})
    pruned = magnitude_prune(network.with_module(copy.deepcopy(network.module)), 600)
    save_checkpoint(tmp_path / "magnitude.safetensors", pruned, {"variant": "magnitude"})
    export_checkpoints([tmp_path / "dense.safetensors", tmp_path / "magnitude.safetensors"], tmp_path / "out",
                       [get_format("onnx"), get_format("onnx-int8")])
    refs = {ref.name: ref for ref in refs_from_manifest(tmp_path / "out")}
    assert set(refs) == {"dense", "dense-int8", "magnitude-masked", "magnitude-csr", "magnitude-masked-int8"}
    assert refs["dense-int8"].variant == Variant("dense", "int8") and refs["magnitude-csr"].variant.sparse
    assert (refs["magnitude-csr"].flops_per_sample < refs["magnitude-masked"].flops_per_sample
            == small_spec.flops_per_sample)
    assert refs["dense-int8"].tolerance().rtol == 0.0 and refs["dense"].tolerance() == FLOAT32
    assert "eager" in refs["magnitude-csr"].unsupported_reason(backends()["ort-cpu"])
    assert "no onnx artifact" not in (refs["dense-int8"].unsupported_reason(backends()["ort-cpu"]) or "")
    assert "not int8" in refs["dense-int8"].unsupported_reason(backends()["eager-cpu"])
    assert refs["dense"].file("onnx").name == "dense.onnx" and refs["dense-int8"].file("onnx").name == "dense.int8.onnx"
    csr = open_runner("eager-cpu", refs["magnitude-csr"], 1)  # sparse CSR checked against the masked dense model
    x = sample_input(16, small_spec.in_features)
    with torch.inference_mode():
        expected = pruned.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(csr.infer(x), expected, atol=1e-5)


def test_backend_options_are_typed_and_validated_before_anything_loads():
    options = parse_backend_options(["compile-cpu:mode=max-autotune", "ort-cuda:tf32=yes",
                                     "ort-cpu:graph_optimization=basic"])
    assert options == {"compile-cpu": {"mode": "max-autotune"}, "ort-cuda": {"tf32": "yes"},
                       "ort-cpu": {"graph_optimization": "basic"}}
    assert backends()["compile-cpu"].make_config(options["compile-cpu"]).mode == "max-autotune"
    assert backends()["ort-cuda"].make_config(options["ort-cuda"]).tf32 is True
    assert backends()["ort-optimized-cpu"].make_config().graph_optimization == "disabled"  # the graph is optimised
    with pytest.raises(UserError, match="not one of default"):
        backends()["compile-cpu"].make_config({"mode": "fastest"})
    with pytest.raises(UserError, match=r"eager-cpu has no option 'mode' \(its options: none\)"):
        backends()["eager-cpu"].make_config({"mode": "x"})
    with pytest.raises(UserError, match="not a valid bool"):
        backends()["ort-cuda"].make_config({"tf32": "maybe"})
    with pytest.raises(UserError, match="BACKEND:KEY=VALUE"):
        parse_backend_options(["compile-cpu=max-autotune"])


def test_variant_names_round_trip_and_order():
    names = [v.name for v in possible_variants(["fp32", "int8"])]
    assert names == ["dense", "magnitude-masked", "magnitude-csr", "structured",
                     "dense-int8", "magnitude-masked-int8", "structured-int8"]
    for name in [*names, "structured:mine"]:
        assert Variant.parse(name).name == name
    assert Variant.parse("structured-int8") == Variant("structured", "int8")
    assert Variant("dense").is_baseline and not Variant("dense", "int8").is_baseline
    for bad in ("sparse", "magnitude", "structured-csr", "dense-int8-int4"):
        with pytest.raises(UserError, match="not a variant name"):
            Variant.parse(bad)
