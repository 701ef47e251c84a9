"""`spinn-export export` as a user runs it: quiet, reproducible, and one-line errors."""
from __future__ import annotations

import json

import pytest

from spinn_export.export.formats import default_formats, get_format
from spinn_export.export.manifest import MANIFEST_NAME
from spinn_export.files import sha256_of

from .conftest import assert_clean_error, run_cli


@pytest.mark.slow
def test_export_is_quiet_and_rerunning_gives_identical_files(tmp_path, small_checkpoint):
    out = tmp_path / "out"
    first = run_cli("export", str(small_checkpoint), "--out", str(out))
    assert first.returncode == 0 and first.stderr == "", first  # no deprecation warnings or exporter log lines
    assert len(first.stdout.strip().splitlines()) == len(default_formats()) + 1
    before = {p.name: sha256_of(p) for p in out.iterdir()}
    assert set(before) == {MANIFEST_NAME, "small.safetensors",
                           *(f"small{get_format(f).extension}" for f in default_formats())}
    second = run_cli("export", str(small_checkpoint), "--out", str(out))
    assert second.returncode == 0 and second.stderr == "", second
    after = {p.name: sha256_of(p) for p in out.iterdir()}
    assert all(get_format(f).byte_stable for f in default_formats())
    assert after == before  # byte-identical artifacts, checkpoint copy and manifest
    records = json.loads((out / MANIFEST_NAME).read_text())["artifacts"]
    assert [r["format"] for r in records] == list(default_formats())  # re-run replaced, not duplicated


@pytest.mark.slow
def test_unknown_format_is_one_line(tmp_path, small_checkpoint):
    result = run_cli("export", str(small_checkpoint), "--out", str(tmp_path / "o"), "--formats", "onnx,coreml")
    assert_clean_error(result, "unknown format 'coreml'", "exported-program")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_truncated_checkpoint_is_one_line(tmp_path, small_checkpoint):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(small_checkpoint.read_bytes()[:200])
    assert_clean_error(run_cli("export", str(bad), "--out", str(tmp_path / "o")), "cut.safetensors", "truncated")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_opset_out_of_range_is_one_line(tmp_path, small_checkpoint):
    assert_clean_error(run_cli("export", str(small_checkpoint), "--out", str(tmp_path / "o"), "--opset", "9"),
                       "--opset 9", "18..23")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["export", "run"])
@pytest.mark.parametrize("value", ["-0.1", "nan", "much"])
def test_an_unusable_accuracy_budget_is_one_line_before_any_work(tmp_path, command, value):
    arguments = ["export", "missing.safetensors"] if command == "export" else ["run"]
    result = run_cli(*arguments, "--max-r2-drop", value, "--out", str(tmp_path / "out"))
    assert_clean_error(result, "--max-r2-drop", "R² change")
    assert not (tmp_path / "out").exists()
