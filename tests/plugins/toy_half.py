"""A third-party precision and the backend that runs it, as another package would ship them: the `toy-half` format
stores a plain MLP's weights in float16 (precision `half`, a name spinn-export has never heard of) and the `half-cpu`
backend times them, and float32 checkpoints, with numpy. Registered only through entry points (tests/test_plugins.py
writes their dist-info), with no edit to spinn-export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from toy_backend import NumpyRunner

from spinn_export.bench.backends import CHECKPOINT_FORMAT, Backend, BackendConfig
from spinn_export.export.formats import Calibration, Format, Predict, Shape
from spinn_export.hardware import FP32
from spinn_export.model.network import Network

HALF = "half"


def write_half(network: Network, path: Path, opset: int, calibration: Calibration | None) -> None:
    """The checkpoint's tensors, rounded to float16, under the checkpoint's own names."""
    tensors = {name: t.detach().cpu().numpy().astype(np.float16) for name, t in network.module.state_dict().items()}
    save_file(tensors, str(path))


def load_half(path: Path) -> Predict:
    return NumpyRunner(path, 1, "toy-half", 0.0).infer


def half_weight_shapes(path: Path) -> list[Shape]:
    with safe_open(str(path), "np") as stored:
        names = sorted((k for k in stored.keys() if k.endswith(".weight")), key=lambda k: int(k[6:-7]))  # noqa: SIM118
        return [tuple(stored.get_slice(name).get_shape()) for name in names]  # type: ignore[misc]


TOY_HALF = Format("toy-half", ".half.safetensors", write_half, load_half, half_weight_shapes,
                  "a plain MLP's weights in float16 (a test plug-in)", precision=HALF, opened_as=CHECKPOINT_FORMAT,
                  default=False)


def load(source: Path, threads: int, config: BackendConfig) -> NumpyRunner:
    return NumpyRunner(source, threads, "half-cpu", 0.0)


HALF_CPU = Backend("half-cpu", "cpu", CHECKPOINT_FORMAT, load, precisions=(FP32, HALF),
                   description="numpy on float32 or float16 checkpoints (a test plug-in)")
