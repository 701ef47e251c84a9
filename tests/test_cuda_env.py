"""`tox -e bench-cuda` (bench/cuda_env.py) decides from what the environment holds; these tests give it the
environments it meets (a CPU machine, a GPU machine with its own CUDA torch, an empty one asked to install)
and check what it would install, without installing anything."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SPEC = importlib.util.spec_from_file_location("cuda_env", REPO / "bench" / "cuda_env.py")
cuda_env = importlib.util.module_from_spec(SPEC)
sys.modules["cuda_env"] = cuda_env
SPEC.loader.exec_module(cuda_env)
Environment = cuda_env.Environment

NO_GPU_HERE = not (Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi"))
CPU_MACHINE = Environment("no NVIDIA GPU on this machine (no /dev/nvidia0, no nvidia-smi)")
# the lent GPU machine of issue 14: python3 with torch 2.11 + CUDA 13 and the CPU onnxruntime, no network
GPU_MACHINE = Environment(None, torch="2.11.0+cu130", torch_cuda="13.0", torch_sees_gpu=True,
                          installed=frozenset({"onnxruntime", "setuptools"}))
EMPTY_GPU_VENV = Environment(None, torch_error="ModuleNotFoundError: No module named 'torch'",
                             installed=frozenset({"setuptools"}))
REQUIREMENTS = cuda_env.project_requirements((REPO / "pyproject.toml").read_text())


def installed_names(pip_args: tuple[str, ...]) -> set[str]:
    return {cuda_env.requirement_name(arg) for arg in pip_args if not arg.startswith("-")}


def test_without_a_gpu_it_skips_in_one_line_and_installs_nothing_even_when_asked_to():
    for decision in (cuda_env.run_decision(CPU_MACHINE), cuda_env.install_decision(CPU_MACHINE, REQUIREMENTS)):
        assert decision.stop == f"bench-cuda: skipped: {CPU_MACHINE.no_gpu}"
        assert decision.exit_code == 0 and decision.pip == () and decision.notes == ()


@pytest.mark.skipif(not NO_GPU_HERE, reason="checks what happens on a machine without a GPU")
def test_the_script_on_this_gpu_less_machine_prints_the_skip_line_with_the_standard_library_alone(tmp_path):
    # -I -S: no site-packages, no project on the path: nothing it could install with, nothing it may need
    done = subprocess.run([sys.executable, "-I", "-S", str(REPO / "bench" / "cuda_env.py"), "--install-cuda", "-x"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["bench-cuda: skipped: no NVIDIA GPU on this machine "
                                        "(no /dev/nvidia0, no nvidia-smi)"]
    assert done.stderr == ""


@pytest.mark.skipif(not NO_GPU_HERE, reason="checks what happens on a machine without a GPU")
def test_main_on_this_gpu_less_machine_runs_no_command(monkeypatch, capsys):
    def no_command(*args, **kwargs):
        raise AssertionError(f"ran {args[0]}")

    monkeypatch.setattr(cuda_env.subprocess, "run", no_command)
    assert cuda_env.main(["--install-cuda"]) == 0
    assert capsys.readouterr().out.startswith("bench-cuda: skipped: no NVIDIA GPU")


def test_a_gpu_machine_with_its_own_cuda_torch_is_used_as_it_is():
    decision = cuda_env.run_decision(GPU_MACHINE)
    assert decision.stop is None
    assert decision.pip == (("--no-deps", "--no-build-isolation", "-e", str(REPO)),)  # the project, nothing else
    assert decision.notes == (("bench-cuda: note: ort-cuda will be skipped: this environment has the CPU build of "
                               "onnxruntime, not onnxruntime-gpu"),)
    with_gpu_ort = Environment(None, torch="2.11.0+cu130", torch_cuda="13.0", torch_sees_gpu=True,
                               installed=frozenset({"onnxruntime-gpu", "setuptools"}))
    assert cuda_env.run_decision(with_gpu_ort).notes == ()


def test_without_the_flag_nothing_but_the_project_is_ever_installed():
    for env in (CPU_MACHINE, GPU_MACHINE, EMPTY_GPU_VENV,
                Environment(None, torch="2.13.0+cpu", installed=frozenset({"setuptools"}))):
        assert all(args == cuda_env.PROJECT_INSTALL for args in cuda_env.run_decision(env).pip)


def test_a_gpu_machine_whose_torch_cannot_run_cuda_is_refused_with_the_fix():
    cases = {
        EMPTY_GPU_VENV: "torch does not import here (ModuleNotFoundError: No module named 'torch'): use an environment",
        Environment(None, torch="2.13.0+cpu", installed=frozenset({"setuptools"})):
            "torch 2.13.0+cpu here is a CPU build",
        Environment(None, torch="2.11.0", torch_cuda="13.0", installed=frozenset({"setuptools"})):
            "torch 2.11.0 (built for CUDA 13.0) sees no GPU: check that nvidia-smi lists one",
        Environment(None, torch="2.11.0", torch_cuda="13.0", torch_sees_gpu=True):
            "setuptools is not installed here",
    }
    for env, message in cases.items():
        decision = cuda_env.run_decision(env)
        assert decision.exit_code == 2 and decision.pip == ()
        assert decision.stop.startswith(f"bench-cuda: refused: {message}") and "\n" not in decision.stop
    assert "--install-cuda" in cuda_env.run_decision(EMPTY_GPU_VENV).stop


def test_both_onnxruntime_builds_are_refused_whatever_was_asked():
    both = Environment(None, torch="2.11.0", torch_cuda="13.0", torch_sees_gpu=True,
                       installed=frozenset({"onnxruntime", "onnxruntime-gpu", "setuptools"}))
    for decision in (cuda_env.run_decision(both), cuda_env.install_decision(both, REQUIREMENTS)):
        assert decision.exit_code == 2 and decision.pip == ()
        assert decision.stop.startswith("bench-cuda: refused: both onnxruntime and onnxruntime-gpu are installed")
        assert "pip uninstall -y onnxruntime onnxruntime-gpu" in decision.stop


def test_install_puts_cuda_torch_and_onnxruntime_gpu_into_an_empty_environment_and_never_the_cpu_onnxruntime():
    (pip,) = cuda_env.install_decision(EMPTY_GPU_VENV, REQUIREMENTS).pip
    assert "torch==2.13.0" in pip and "onnxruntime-gpu==1.31.1" in pip
    assert "onnxruntime" not in installed_names(pip)  # the CPU build: the project's extras are not installed
    assert sum(name == "torch" for name in installed_names(pip)) == 1  # the pin, not the project's torch>=2.4
    assert {"numpy", "onnx", "pytest-benchmark", "setuptools"} <= installed_names(pip)


def test_install_keeps_a_cuda_torch_and_refuses_to_build_on_a_cpu_one():
    cuda_torch = Environment(None, torch="2.11.0", torch_cuda="13.0", installed=frozenset({"setuptools"}))
    (pip,) = cuda_env.install_decision(cuda_torch, REQUIREMENTS).pip
    assert "torch" not in installed_names(pip) and "onnxruntime-gpu==1.31.1" in pip
    cpu_torch = cuda_env.install_decision(Environment(None, torch="2.13.0+cpu"), REQUIREMENTS)
    assert cpu_torch.exit_code == 2 and "CPU build: run --install-cuda in a fresh environment" in cpu_torch.stop
    beside_cpu_ort = cuda_env.install_decision(GPU_MACHINE, REQUIREMENTS)
    assert beside_cpu_ort.exit_code == 2 and "pip uninstall -y onnxruntime first" in beside_cpu_ort.stop


def test_requirement_names_ignore_versions_markers_and_extras():
    assert [cuda_env.requirement_name(r) for r in ("torch>=2.4", "tomli>=2; python_version<'3.11'", "onnx",
                                                   "pytest_benchmark[histogram]>=4", "setuptools>=68")] == \
        ["torch", "tomli", "onnx", "pytest-benchmark", "setuptools"]
