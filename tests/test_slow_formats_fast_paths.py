"""The fast lane's share of the formats whose full export is slow or machine-bound: AOTInductor (a package takes
minutes to compile: its availability and refusals here, a real package in test_export's slow tests), NNCF int8
(accuracy control is slow: plain calibrated quantisation of a tiny network here) and OpenVINO bf16 (its export runs
only on a CPU with native bf16: the file it writes here, opened at float32 where the CPU has none)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from spinn_export.bench.backends import get_backend
from spinn_export.errors import UserError
from spinn_export.export.formats import Calibration, compiler_missing
from spinn_export.export.formats.aoti import AOTI, aoti_weight_shapes, load_aoti
from spinn_export.export.formats.onnx import onnx_bytes
from spinn_export.export.formats.onnx_bf16 import write_onnx_bf16
from spinn_export.export.formats.onnx_int8_nncf import ONNX_INT8_NNCF, Tried, int8_gemms, r2, write_onnx_int8_nncf
from spinn_export.model.mlp import mlp_network
from spinn_export.model.network import Network
from spinn_export.model.spec import MLPSpec
from spinn_export.runtimes import openvino as openvino_runtime

SPEC = MLPSpec(4, (8, 8), 1)
OPSET = 18


@pytest.fixture(scope="module")
def network() -> Network:
    torch.manual_seed(0)
    return mlp_network(SPEC)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (256, SPEC.in_features)).astype(np.float32)


def test_aoti_is_available_where_a_compiler_is_and_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    assert AOTI.available() == compiler_missing() and not AOTI.default
    missing, foreign = tmp_path / "m.aoti.pt2", tmp_path / "foreign.aoti.pt2"
    foreign.write_bytes(b"not a zip archive")
    for read in (aoti_weight_shapes, load_aoti):
        with pytest.raises(UserError, match=r"m\.aoti\.pt2: no such AOTInductor file"):
            read(missing)
        with pytest.raises(UserError, match=r"foreign\.aoti\.pt2 is not a readable AOTInductor file .*re-run"):
            read(foreign)
    backend = get_backend("aoti-cpu")
    assert backend.slow and backend.format == "aoti"
    with pytest.raises(UserError, match=r"m\.aoti\.pt2: no such AOTInductor file"):
        backend.load(missing, threads=1)


def test_nncf_without_known_data_quantises_every_gemm_and_runs_on_openvino(tmp_path: Path, network: Network,
                                                                          rows: np.ndarray) -> None:
    path = tmp_path / f"m{ONNX_INT8_NNCF.extension}"
    record = write_onnx_int8_nncf(network, path, OPSET, Calibration(rows, 0.01, None))
    assert record["accuracy_control"] is None and record["int8_gemms"] == record["gemms"] == 3
    assert int8_gemms(onnx.load(path)) == (3, 3) and int8_gemms(onnx.load_from_string(onnx_bytes(network, OPSET))) \
        == (0, 3)
    with torch.no_grad():
        want = network.module.eval()(torch.from_numpy(rows)).numpy()
    got = ONNX_INT8_NNCF.load(path)(rows)
    assert got.shape == want.shape and np.abs(got - want).max() < 0.05 * np.abs(want).max() + 0.01


def test_a_full_validation_keeps_the_best_int8_model_and_a_ranking_subset_does_not(tmp_path: Path, network: Network,
                                                                                  rows: np.ndarray) -> None:
    float32 = onnx.load_from_string(onnx_bytes(network, OPSET))
    with torch.no_grad():
        target = network.module.eval()(torch.from_numpy(rows)).numpy()
    items = [(rows[:128], target[:128]), (rows[128:], target[128:])]
    tried = Tried(items=2)
    score, per_item = tried.validate(float32, items)
    assert score == pytest.approx(1.0, abs=1e-5) and len(per_item) == 2
    assert tried.scores == [(0, score)] and tried.best is None  # float32: validated, but not an int8 candidate
    tried.validate(float32, items[:1])  # one of NNCF's ranking subsets: not recorded
    assert len(tried.scores) == 1
    assert r2(target, target) == 1.0 and r2(np.zeros_like(target), target) < 0


def test_the_bf16_file_is_the_float32_graph_marked_bf16(tmp_path: Path, network: Network, rows: np.ndarray) -> None:
    path = tmp_path / "m.bf16.onnx"
    write_onnx_bf16(network, path, OPSET)
    marked, plain = onnx.load(path), onnx.load_from_string(onnx_bytes(network, OPSET))
    assert {p.key: p.value for p in marked.metadata_props}[openvino_runtime.MARKER] == "bf16"
    assert marked.graph == plain.graph
