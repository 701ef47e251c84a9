"""NNCF, OpenVINO's quantiser: imported with its usage telemetry off, why it is missing here, and its version.

NNCF sends usage telemetry to a remote service unless `NNCF_CI` is set in the environment when it is first imported;
spinn-export must send nothing anywhere, so every import goes through `nncf_module`, which sets it first.
"""
from __future__ import annotations

import os
from types import ModuleType

from spinn_export.runtimes import installed_version
from spinn_export.runtimes import openvino as openvino_runtime

INSTALL_HINT = "pip install 'spinn-export[cpu]'"
TELEMETRY_OFF = "NNCF_CI"  # nncf/telemetry/wrapper.py: set, NNCF installs its telemetry stub


def nncf_module() -> ModuleType:
    os.environ.setdefault(TELEMETRY_OFF, "1")
    # optional: nncf (the cpu extra)
    import nncf

    return nncf


def missing() -> str | None:
    """Why NNCF cannot quantise here: it, or the OpenVINO it targets, is not installed."""

    if installed_version("nncf") is None:
        return f"nncf is not installed ({INSTALL_HINT})"
    return openvino_runtime.missing()


def version() -> str | None:
    return installed_version("nncf")
