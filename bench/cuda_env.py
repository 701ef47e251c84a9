"""`tox -e bench-cuda` (or `python3 bench/cuda_env.py` on a GPU machine): the suite on the CUDA backends,
in an environment that already has a CUDA build of torch, or one line saying why not.

* No NVIDIA GPU: prints "bench-cuda: skipped: <reason>" and exits 0, installing nothing: CUDA wheels are
  gigabytes, and useless here.
* A GPU and a CUDA build of torch (a GPU machine's python3, perhaps with no network): the environment is
  used as it is. Only the project is installed, with `pip install --no-deps --no-build-isolation -e .`,
  which downloads nothing; then the suite runs on every CUDA backend.
* `--install-cuda` (and only then): first installs the CUDA build of torch (unless one is there),
  onnxruntime-gpu (unless it is there) and the project's other dependencies, from PyPI, with the
  project's constraints.

onnxruntime and onnxruntime-gpu provide the same module (`onnxruntime`: the last one installed wins), so
an environment with both is refused, and so is installing onnxruntime-gpu beside the CPU build. The
decisions are pure functions of what `probe` finds (tests/test_cuda_env.py). Every other argument goes
to pytest. The script needs only the standard library: it runs before the project, or torch, is there.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_FLAG = "--install-cuda"
TORCH_PIN = "torch==2.13.0"  # PyPI's Linux wheel of torch is the CUDA build
ORT_CPU, ORT_GPU = "onnxruntime", "onnxruntime-gpu"
ORT_GPU_PIN = "onnxruntime-gpu==1.31.1"
BUILD_BACKEND = "setuptools"  # pip install --no-build-isolation builds the project with the environment's own
DISTRIBUTIONS = (ORT_CPU, ORT_GPU, BUILD_BACKEND)  # the installed distributions the decisions look at
PROJECT_INSTALL = ("--no-deps", "--no-build-isolation", "-e", str(ROOT))
TORCH_PROBE = ("import json, torch; "
               "print(json.dumps([torch.__version__, torch.version.cuda, torch.cuda.is_available()]))")


@dataclass(frozen=True)
class Environment:
    """What the running interpreter's environment holds: all that the decisions read.

    `no_gpu`: why there is no NVIDIA GPU (None: there is one; nothing else is looked at otherwise).
    `torch`: torch's version (None: it does not import, for the reason in `torch_error`).
    `torch_cuda`: the CUDA version torch was built for (None: a CPU build).
    `installed`: which of `DISTRIBUTIONS` are installed.
    """

    no_gpu: str | None
    torch: str | None = None
    torch_error: str | None = None
    torch_cuda: str | None = None
    torch_sees_gpu: bool = False
    installed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """Stop with the one line `stop` (exit code 0: skipped; 2: refused), or run the `pip` installs (each the
    arguments of one `pip install`, in order) and go on; `notes` are printed either way."""

    stop: str | None = None
    exit_code: int = 0
    pip: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = ()


def skipped(reason: str) -> Decision:
    return Decision(stop=f"bench-cuda: skipped: {reason}")


def refused(reason: str) -> Decision:
    return Decision(stop=f"bench-cuda: refused: {reason}", exit_code=2)


def blocked(env: Environment) -> Decision | None:
    """What stops bench-cuda whatever was asked for: no GPU (a skip), or both ONNX Runtime builds (a refusal)."""
    if env.no_gpu is not None:
        return skipped(env.no_gpu)
    if {ORT_CPU, ORT_GPU} <= env.installed:
        return refused("both onnxruntime and onnxruntime-gpu are installed and they provide one module (the last "
                       "installed wins): pip uninstall -y onnxruntime onnxruntime-gpu, then pip install one of them")
    return None


def run_decision(env: Environment) -> Decision:
    """Use the environment as it is: its torch must be a CUDA build that sees the GPU; the project is installed
    without dependencies or build isolation, so nothing is downloaded."""
    stop = blocked(env)
    if stop is not None:
        return stop
    fix = f"use an environment whose torch is a CUDA build, or pass {INSTALL_FLAG} to install one (needs the network)"
    if env.torch is None:
        return refused(f"torch does not import here ({env.torch_error or 'not installed'}): {fix}")
    if env.torch_cuda is None:
        return refused(f"torch {env.torch} here is a CPU build: {fix}")
    if not env.torch_sees_gpu:
        return refused(f"torch {env.torch} (built for CUDA {env.torch_cuda}) sees no GPU: check that nvidia-smi "
                       f"lists one, that its driver supports CUDA {env.torch_cuda}, and CUDA_VISIBLE_DEVICES")
    if BUILD_BACKEND not in env.installed:
        return refused(f"{BUILD_BACKEND} is not installed here, and pip install --no-build-isolation builds the "
                       f"project with it: pip install {BUILD_BACKEND}")
    notes: tuple[str, ...] = ()
    if ORT_GPU not in env.installed:
        has = "the CPU build of onnxruntime" if ORT_CPU in env.installed else "no onnxruntime"
        notes = (f"bench-cuda: note: ort-cuda will be skipped: this environment has {has}, not onnxruntime-gpu",)
    return Decision(pip=(PROJECT_INSTALL,), notes=notes)


def install_decision(env: Environment, requirements: Sequence[str]) -> Decision:
    """What `--install-cuda` installs before `run_decision`: the CUDA build of torch unless one is there,
    onnxruntime-gpu unless it is there, and `requirements` (the project's dependencies and build backend)
    except torch. Refused over a CPU build of torch (it would be replaced in an environment someone set
    up) and beside the CPU onnxruntime (both builds would then be installed)."""
    stop = blocked(env)
    if stop is not None:
        return stop
    if env.torch is not None and env.torch_cuda is None:
        return refused(f"torch {env.torch} here is a CPU build: run {INSTALL_FLAG} in a fresh environment "
                       "(python3 -m venv DIR, then DIR/bin/python bench/cuda_env.py --install-cuda)")
    if ORT_CPU in env.installed:
        return refused(f"the CPU build of onnxruntime is installed here and {ORT_GPU} would be installed beside it: "
                       f"pip uninstall -y {ORT_CPU} first, or use a fresh environment")
    wanted = [] if env.torch is not None else [TORCH_PIN]
    wanted += [] if ORT_GPU in env.installed else [ORT_GPU_PIN]
    wanted += [r for r in requirements if requirement_name(r) != "torch"]
    return Decision(pip=(tuple(wanted),))


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    return match.group(0).lower().replace("_", "-") if match else ""


def project_requirements(pyproject: str) -> tuple[str, ...]:
    """The project's dependencies (its extras, which name the CPU onnxruntime, excluded) and its build backend."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    data = tomllib.loads(pyproject)
    return (*data["project"]["dependencies"], *data["build-system"]["requires"])


def no_gpu_reason() -> str | None:
    """spinn_export.hardware's test (repeated: this script runs before the project is installed)."""
    if Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi"):
        return None
    return "no NVIDIA GPU on this machine (no /dev/nvidia0, no nvidia-smi)"


def probe() -> Environment:
    """This interpreter's environment. torch is imported in a child process, and only where there is a GPU:
    a CPU machine needs nothing but the skip line, and pip must not replace files this process holds."""
    reason = no_gpu_reason()
    if reason is not None:
        return Environment(reason)
    installed = set()
    for name in DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
            installed.add(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    child = subprocess.run([sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, check=False)
    if child.returncode != 0:
        error = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        return Environment(None, torch_error=error, installed=frozenset(installed))
    version, cuda, sees_gpu = json.loads(child.stdout.strip().splitlines()[-1])
    return Environment(None, torch=version, torch_cuda=cuda, torch_sees_gpu=bool(sees_gpu),
                       installed=frozenset(installed))


def carry_out(decision: Decision, env: dict[str, str]) -> int | None:
    """Print the decision's lines and run its installs: None to go on, else the exit code to stop with."""
    for note in decision.notes:
        print(note)
    if decision.stop is not None:
        print(decision.stop, file=sys.stderr if decision.exit_code else sys.stdout)
        return decision.exit_code
    for args in decision.pip:
        done = subprocess.run([sys.executable, "-m", "pip", "install", *args], env=env, check=False)
        if done.returncode != 0:
            print(f"bench-cuda: pip install {' '.join(args)} failed (exit status {done.returncode}): "
                  "see pip's message above", file=sys.stderr)
            return done.returncode
    return None


def main(argv: list[str]) -> int:
    install = INSTALL_FLAG in argv
    pytest_args = [arg for arg in argv if arg != INSTALL_FLAG]
    env = probe()
    if install:
        # a skip reads nothing more (and tomllib is Python 3.11+)
        requirements = () if env.no_gpu else project_requirements((ROOT / "pyproject.toml").read_text())
        # PyPI's CUDA wheel of torch, not a local CPU wheel (PIP_FIND_LINKS), at the project's pinned versions
        pip_env = {**os.environ, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": str(ROOT / "constraints.txt")}
        stopped = carry_out(install_decision(env, requirements), pip_env)
        if stopped is not None:
            return stopped
        env = probe()
    stopped = carry_out(run_decision(env), dict(os.environ))
    if stopped is not None:
        return stopped
    return subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "bench"), "--spinn-backends=cuda", *pytest_args],
                          cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
