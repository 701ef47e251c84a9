"""OpenVINO's own int8: NNCF post-training quantisation of the float32 ONNX, calibrated on the training inputs, its
accuracy held within the run's --max-r2-drop by NNCF's accuracy control, and run on OpenVINO.

NNCF places QuantizeLinear/DequantizeLinear where OpenVINO's CPU plugin fuses them (its CPU hardware patterns),
which ONNX Runtime's quantiser does not know. The file stays ONNX, one self-contained file for the manifest and every
fresh process; OpenVINO reads its QDQ pairs as FakeQuantize (and ONNX Runtime can run it too).

Accuracy control (`nncf.quantize_with_accuracy_control`), where the data the checkpoint was trained on is known:
NNCF reverts to float32 the GEMMs whose int8 costs most R² until the drop on held-out training rows
(`Calibration.control`) is within --max-r2-drop. The validation split stays unseen: the manifest's accuracy and
budget verdict are measured on it afterwards, as for every low-precision file. Where no set of int8 GEMMs meets the
target, the file written is the int8 model (one GEMM in int8 at least) with the smallest drop NNCF tried, and the
record says the target was not met and the drop reached. Without known data it is plain `nncf.quantize`.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinn_export.export.formats import INPUT_NAME, Calibration, Format, quiet
from spinn_export.export.formats.onnx import check_onnx, onnx_bytes, onnx_weight_shapes
from spinn_export.model.network import Network
from spinn_export.runtimes import nncf as nncf_runtime
from spinn_export.runtimes import openvino as openvino_runtime

CALIBRATION_BATCH = 512  # rows per calibration item; NNCF's subset is every item
CONTROL_BATCH = 256  # rows per validation item: NNCF ranks GEMMs by the items' R²


def int8_gemms(model: Any) -> tuple[int, int]:  # onnx.ModelProto
    """(GEMMs whose weight is dequantised from int8, all GEMMs) of a QDQ model."""
    produced_by = {output: node.op_type for node in model.graph.node for output in node.output}
    gemms = [node for node in model.graph.node if node.op_type in ("Gemm", "MatMul")]
    return sum(produced_by.get(node.input[1]) == "DequantizeLinear" for node in gemms), len(gemms)


def r2(prediction: np.ndarray, target: np.ndarray) -> float:
    """The mean over outputs of R², as `task.metrics.r2_scores` (the exporter's verdict) computes it."""
    residual = ((prediction - target) ** 2).sum(axis=0)
    total = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - residual / total))


def _on_openvino(model: Any, inputs: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Outputs of an ONNX ModelProto compiled as the openvino-cpu backend compiles it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model.SerializeToString())
        predict = openvino_runtime.predict(openvino_runtime.compile_onnx(path))
        return [predict(x) for x in inputs]


@dataclass
class Tried:
    """Every model NNCF validated on all control rows: their R², and the int8 one with the best R² seen."""

    items: int  # how many items a full validation has
    best_r2: float = -np.inf
    best: Any = None
    scores: list[tuple[int, float]] = field(default_factory=list)  # (int8 GEMMs, R²) per full validation

    def validate(self, model: Any, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
        items = list(items)
        outputs = _on_openvino(model, (x for x, _ in items))
        score = r2(np.concatenate(outputs), np.concatenate([y for _, y in items]))
        quantised, _ = int8_gemms(model)
        if len(items) == self.items:  # a full validation, not one of NNCF's ranking subsets
            self.scores.append((quantised, score))
            if quantised and score > self.best_r2:
                self.best_r2, self.best = score, model
        return score, [r2(out, y) for out, (_, y) in zip(outputs, items)]


def quantise(model: Any, calibration: Calibration) -> tuple[Any, dict[str, Any]]:
    """The NNCF-quantised ModelProto and what the quantiser did (for the manifest's calibration record)."""
    nncf = nncf_runtime.nncf_module()
    batches = np.array_split(calibration.rows, max(1, len(calibration.rows) // CALIBRATION_BATCH))
    dataset = nncf.Dataset(batches, lambda rows: {INPUT_NAME: rows})
    common = {"subset_size": len(batches), "target_device": nncf.TargetDevice.CPU}
    if calibration.control is None:
        quantised = nncf.quantize(model, dataset, **common)
        done, total = int8_gemms(quantised)
        return quantised, {"quantiser": f"nncf {nncf_runtime.version()}", "int8_gemms": done, "gemms": total,
                           "accuracy_control": None}
    x, y = calibration.control
    parts = max(1, len(x) // CONTROL_BATCH)
    control = list(zip(np.array_split(x, parts), np.array_split(y, parts)))
    tried = Tried(items=len(control))
    reached = nncf.quantize_with_accuracy_control(model, dataset, nncf.Dataset(control), tried.validate,
                                                  max_drop=calibration.max_r2_drop, **common)
    reference = tried.scores[0][1]  # NNCF validates the float32 model first
    score, _ = tried.validate(reached, control)
    done, total = int8_gemms(reached)
    met = done > 0 and reference - score <= calibration.max_r2_drop
    chosen = reached if met else tried.best
    if chosen is None:
        raise ValueError("NNCF produced no model with an int8 GEMM")
    done, _ = int8_gemms(chosen)
    drop = reference - (score if met else tried.best_r2)
    return chosen, {"quantiser": f"nncf {nncf_runtime.version()}", "int8_gemms": done, "gemms": total,
                    "accuracy_control": {"rows": len(x), "max_r2_drop": calibration.max_r2_drop, "met": met,
                                         "r2_drop": drop, "validations": len(tried.scores)}}


def write_onnx_int8_nncf(network: Network, path: Path, opset: int,
                         calibration: Calibration | None) -> dict[str, Any]:
    # start-up: onnx only where a file is written or read (listing the formats loads every format module)
    import onnx

    with quiet():
        quantised, record = quantise(onnx.load_from_string(onnx_bytes(network, opset)), calibration)
    path.write_bytes(quantised.SerializeToString())
    check_onnx(path)
    return record


ONNX_INT8_NNCF = Format("onnx-int8-nncf", ".int8-nncf.onnx", write_onnx_int8_nncf,
                        lambda path: openvino_runtime.predict(openvino_runtime.compile_onnx(path)),
                        onnx_weight_shapes,
                        "OpenVINO-native int8: NNCF quantisation calibrated on the training inputs, its accuracy "
                        "control held to --max-r2-drop (error and accuracy recorded)", precision="int8-nncf",
                        runs_as="int8", opened_as="onnx", default=False, uses_opset=True, calibrated=True,
                        available=nncf_runtime.missing)
