"""`tox -e bench-cuda`: the CUDA backends in their own environment, or one line saying why not.

Without an NVIDIA GPU this prints "bench-cuda: skipped: <reason>" and exits 0. With one, it installs
the CUDA build of torch and onnxruntime-gpu (never in the same environment as the CPU onnxruntime:
both install the module `onnxruntime`) with the project's constraints, then runs the suite on the
CUDA backends (every registered backend whose device is cuda). Extra arguments go to pytest.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ("torch==2.13.0", "onnxruntime-gpu==1.31.1")


def no_gpu_reason() -> str | None:
    if Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi"):
        return None
    return "no NVIDIA GPU on this machine (no /dev/nvidia0, no nvidia-smi)"


def main(argv: list[str]) -> int:
    reason = no_gpu_reason()
    if reason is not None:
        print(f"bench-cuda: skipped: {reason}")
        return 0
    # the CUDA torch wheel comes from PyPI: the local CPU wheel (PIP_FIND_LINKS) must not satisfy torch==2.13.0
    env = {**os.environ, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": str(ROOT / "constraints.txt")}
    import tomllib  # Python 3.11+; imported here so the skip line works on any Python

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [d for d in project["dependencies"] if not d.startswith("torch")]
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    subprocess.run([*pip, *PINS, *deps], env=env, check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], env=env, check=True)  # no extras: keeps CPU onnxruntime out
    return subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "bench"), "--spinn-backends=cuda", *argv],
                          cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
