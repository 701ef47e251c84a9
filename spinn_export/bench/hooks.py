"""The suite's own hook: where models come from when no --spinn-artifacts directory is given. bench builds no
models; the pipeline does (`pipeline.reference`), and `spinn-export bench` and the checkout's bench/conftest.py
register it."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.hookspec(firstresult=True)
def pytest_spinn_models(config: pytest.Config, directory: Path) -> Path | None:
    """Build the models to benchmark under `directory`, export them, and return the folder holding their
    manifest.json (None: this implementation builds none)."""
