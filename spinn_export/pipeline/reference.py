"""The reference models the benchmark suite runs when it is given no artifacts: the SPINN reference (seeded random
weights: timing does not need training), structured at the reference target (uniform plan, the reference's
multiples), magnitude at the same non-zero count, exported in every format the chosen backends open, and verified.

The suite asks for them through its `pytest_spinn_models` hook (`bench.hooks`): `ReferenceModels` answers it, for
`spinn-export bench` and for `pytest bench` from the checkout.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from spinn_export.bench.options import SuiteSettings
from spinn_export.bench.plugin import settings_of
from spinn_export.bench.variants import Variant
from spinn_export.defaults import REFERENCE_ROUND_TO, REFERENCE_TARGET
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import formats
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import SPINN_REFERENCE
from spinn_export.prune.budget import plan_widths
from spinn_export.prune.magnitude import magnitude_prune
from spinn_export.prune.structured import structured_prune_once


def build_reference_models(directory: Path, settings: SuiteSettings) -> Path:
    """The reference models' checkpoints in `directory`, exported to `directory/export` (its manifest.json)."""
    torch.manual_seed(0)
    dense = mlp_network(SPINN_REFERENCE)
    dense.module.eval()
    plan = plan_widths(dense.architecture, REFERENCE_TARGET, round_to=REFERENCE_ROUND_TO)
    structured = structured_prune_once(dense, plan)
    magnitude = magnitude_prune(dense.with_module(copy.deepcopy(dense.module)), structured.architecture.params)
    networks = {"dense": dense, "structured": structured, "magnitude": magnitude}
    variants = [Variant.parse(v) for v in settings.variants]
    opened = {b.format for b in (*settings.backends, *settings.paired_backends)}
    usable = [f for f in formats().values() if f.runtime_format in opened and f.available() is None]
    fp32 = [f for f in usable if f.float32]
    if not fp32:  # variants are read from the manifest, so an eager-only run still exports one (cheap) format
        fp32 = [next(f for f in formats().values() if f.float32 and f.default)]
    out = directory / "export"
    for role in dict.fromkeys(["dense", *(v.role for v in variants)]):  # dense: the paired baseline
        path = save_checkpoint(directory / f"{role}.safetensors", networks[role], {"variant": role})
        quantised = [f for f in usable if not f.float32 and any(v.role == role and v.precision == f.precision
                                                                  for v in variants)]
        export_checkpoints([path], out, fp32 + quantised)
    return out


class ReferenceModels:
    """The suite's model source when it is given no artifacts (a pytest plug-in object)."""

    @pytest.hookimpl
    def pytest_spinn_models(self, config: pytest.Config, directory: Path) -> Path:
        return build_reference_models(directory, settings_of(config))
