"""AOTInductor: the exported program compiled ahead of time to a shared library (`.aoti.pt2`; slow: minutes)."""
from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from spinn_export.errors import require_file
from spinn_export.export.formats import (
    ARTIFACT_HINT,
    Calibration,
    Format,
    Predict,
    Shape,
    compiler_missing,
    quiet,
    read_artifact,
    torch_predict,
    unreadable,
)
from spinn_export.export.formats.exported_program import exported
from spinn_export.model.network import Network


def write_aoti(network: Network, path: Path, opset: int, calibration: Calibration | None = None) -> None:
    program = exported(network)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "model.pt2"
        with quiet():
            torch._inductor.aoti_compile_and_package(program, package_path=str(package))
        shutil.copyfile(package, path)


def load_aoti(path: str | Path):  # type: ignore[no-untyped-def]
    """The package's runner (a callable on tensors); what the aoti-cpu backend times."""
    return read_artifact(path, "AOTInductor", torch._inductor.aoti_load_package)


def _aoti_predict(path: Path) -> Predict:
    return torch_predict(load_aoti(path))


def aoti_weight_shapes(path: Path) -> list[Shape]:
    """The 2-D constants declared in the package's own generated wrapper source (`constants_info_[i].shape`),
    which the shared library was compiled from; the loader has no API that returns constant tensors."""
    require_file(path, "AOTInductor file", ARTIFACT_HINT)
    try:
        with zipfile.ZipFile(path) as archive:
            source = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith("wrapper.cpp"))
    except Exception as exc:  # BadZipFile, UnicodeDecodeError
        raise unreadable(path, "AOTInductor", exc) from None
    fqns = dict(re.findall(r'constants_info_\[(\d+)\]\.original_fqn = "([^"]*)";', source))
    shapes: list[Shape] = []
    for index, rows, cols in re.findall(r"constants_info_\[(\d+)\]\.shape = \{(\d+), (\d+)\};", source):
        if fqns.get(index, "").endswith("weight"):
            shapes.append((int(rows), int(cols)))
    return shapes


AOTI = Format("aoti", ".aoti.pt2", write_aoti, _aoti_predict, aoti_weight_shapes,
              "AOTInductor package (compiled C++; slow to build)", default=False, byte_stable=False,
              available=compiler_missing)
