"""Resumable stages: each records what it was given (parameters, sha256 of its inputs) and what it made
(sha256 of its outputs) in OUT/stages/<name>.json. A stage whose record matches and whose outputs are
still there, unchanged, is not redone, so an interrupted run resumes where it stopped."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinn_export.files import sha256_of, write_json


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[Path, ...]
    params: dict[str, Any]
    outputs: tuple[Path, ...]
    action: Callable[[], None]


def _record_path(out: Path, name: str) -> Path:
    return out / "stages" / f"{name}.json"


def _digests(paths: Sequence[Path]) -> dict[str, str]:
    return {str(p): sha256_of(p) for p in paths}


def _plain(params: dict[str, Any]) -> Any:
    return json.loads(json.dumps(params, default=str))


def _is_current(stage: Stage, out: Path) -> bool:
    record_path = _record_path(out, stage.name)
    if not record_path.is_file() or not all(p.is_file() for p in stage.outputs):
        return False
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (record.get("params") == _plain(stage.params)
            and record.get("inputs") == _digests(stage.inputs)
            and record.get("outputs") == _digests(stage.outputs))


def run_stage(stage: Stage, out: Path, index: int, total: int) -> bool:
    """Run `stage` unless its record says its outputs are current; True if it ran."""
    if _is_current(stage, out):
        print(f"[{index}/{total}] {stage.name}: up to date, reused", flush=True)
        return False
    print(f"[{index}/{total}] {stage.name} ...", flush=True)
    started = time.perf_counter()
    stage.action()
    missing = [str(p) for p in stage.outputs if not p.is_file()]
    if missing:
        raise RuntimeError(f"stage {stage.name} did not produce {missing}")
    write_json(_record_path(out, stage.name), {
        "params": _plain(stage.params), "inputs": _digests(stage.inputs), "outputs": _digests(stage.outputs),
        "wall_s": round(time.perf_counter() - started, 2)})
    print(f"[{index}/{total}] {stage.name}: done in {time.perf_counter() - started:.0f} s", flush=True)
    return True
