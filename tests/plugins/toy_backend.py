"""A third-party backend, as another package would ship it: numpy matrix products on the checkpoint's weights,
registered only through an entry point (tests/test_bench_cli.py writes its dist-info). `wrong-cpu` computes
something slightly different, so the suite's parity check must refuse to time it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from spinn_export.bench.backends import CHECKPOINT_FORMAT, Backend, BackendConfig, Runner


class NumpyRunner(Runner):
    def __init__(self, path: Path, threads: int, backend: str, offset: float) -> None:
        tensors = load_file(str(path))
        count = len([k for k in tensors if k.endswith(".weight")])
        self.layers = [(tensors[f"linear{i}.weight"].T.copy(), tensors[f"linear{i}.bias"]) for i in range(count)]
        self.backend, self.device, self.provider = backend, "cpu", "numpy"
        self.threads, self.device_name = threads, "cpu"
        self.offset = offset

    def infer(self, x: np.ndarray) -> np.ndarray:
        hidden = x
        for index, (weight, bias) in enumerate(self.layers):
            hidden = hidden @ weight + bias
            if index < len(self.layers) - 1:
                hidden = np.tanh(hidden)
        return (hidden + self.offset).astype(np.float32)

    def prepare(self, x: np.ndarray):  # type: ignore[no-untyped-def]
        x = np.ascontiguousarray(x)
        self.infer(x)
        return lambda: self.infer(x)


def _loader(name: str, offset: float):  # type: ignore[no-untyped-def]
    def load(source: Path, threads: int, config: BackendConfig) -> NumpyRunner:
        return NumpyRunner(source, threads, name, offset)

    return load


TOY = Backend("toy-cpu", "cpu", CHECKPOINT_FORMAT, _loader("toy-cpu", 0.0), description="numpy on the checkpoint")
WRONG = Backend("wrong-cpu", "cpu", CHECKPOINT_FORMAT, _loader("wrong-cpu", 1e-3), description="numpy, off by 1e-3")
