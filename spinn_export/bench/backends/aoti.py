"""AOTInductor: the exporter's ahead-of-time compiled package (`.aoti.pt2`), where one was built.

CPU only: a package is compiled for one device, and the exporter builds it on the CPU. Slow: its
artifact takes minutes to build, so it runs only when asked for by name.
"""
from __future__ import annotations

from spinn_export.bench.backends import Backend, torch_loader
from spinn_export.export.formats.aoti import load_aoti
from spinn_export.runtimes import TORCH

# The package was compiled for the CPU: the device is not the loader's to choose.
_LOAD = torch_loader("aoti", "aoti", "cpu", lambda path, _device: load_aoti(path), "AOTInductor (.aoti.pt2)")
AOTI_CPU = Backend("aoti-cpu", "cpu", "aoti", _LOAD,
                   slow=True, description="AOTInductor package (compiled C++)", runtime=TORCH)
