"""The records of the files stages hand each other: each round-trips, each file the previous release wrote
(tests/data/records, written by that release's own code) loads, and a newer version or an unknown schema is refused in
one line that names the file and the fix."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from spinn_export.bench.record import SPINN_KEY, BenchRecord
from spinn_export.errors import UserError
from spinn_export.export.manifest import MANIFEST_NAME, Manifest, read_manifest
from spinn_export.model.checkpoint import SCHEMA as CHECKPOINT
from spinn_export.model.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.record import HistoryRecord
from spinn_export.records import UPGRADE
from spinn_export.report.pareto import JSON_NAME, SweepRecord, load_sweep
from spinn_export.report.results import load_history, load_manifest, load_results

DATA = Path(__file__).parent / "data" / "records"


def _bench(path: Path) -> BenchRecord:
    return BenchRecord.from_dict(json.loads(path.read_text())[SPINN_KEY], path)


# record, how it reads the previous release's file, how it reads a dict back
RECORDS: dict[str, tuple[Callable[[Path], Any], Callable[[dict[str, Any], Path], Any], str]] = {
    "history": (HistoryRecord.read, HistoryRecord.from_dict, "history.json"),
    "manifest": (Manifest.read, Manifest.from_dict, "manifest.json"),
    "bench": (_bench, BenchRecord.from_dict, "bench.json"),
    "sweep": (SweepRecord.read, SweepRecord.from_dict, "sweep.json"),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_each_record_round_trips_and_stamps_its_schema(name: str, tmp_path: Path) -> None:
    read, from_dict, file = RECORDS[name]
    record = read(DATA / file)  # the previous release's file, migrated
    data = record.to_dict()
    assert data["schema"] == f"spinn-export.{name}" and data["version"] == 2
    again = from_dict(json.loads(json.dumps(data)), tmp_path / file)
    assert again == record and again.to_dict() == data


def test_the_previous_releases_files_load_through_the_report(tmp_path: Path) -> None:
    history = load_history(DATA / "history.json")
    assert history.method == "structured" and list(history.stages["stage"]) == [0, 1, 2]
    assert history.architecture is not None and history.stages["widths"].iloc[-1] == "9,10"
    shutil.copy(DATA / "manifest.json", tmp_path / MANIFEST_NAME)
    manifest = load_manifest(tmp_path)
    assert set(manifest.artifacts["model"]) == {"d18", "structured"} and "torch" in manifest.versions
    assert read_manifest(tmp_path, verify=False).artifacts[0].precision == "fp32"
    results = load_results([DATA / "bench.json"])
    assert set(results.benchmarks["variant"]) == {"dense", "structured"} and not results.paired.empty
    assert not results.ceilings.empty and not results.fastest.empty
    for file in ("pareto.csv", JSON_NAME):
        shutil.copy(DATA / file, tmp_path / file)
    sweep = load_sweep(tmp_path)
    assert len(sweep.points) == 2 and sweep.dense is not None and sweep.dense["widths"] == [8, 8]


def test_a_bench_file_of_the_oldest_suite_reads_its_one_ceiling_and_no_fastest(tmp_path: Path) -> None:
    data = json.loads((DATA / "bench.json").read_text())
    for key in ("ceilings", "fastest", "fastest_skipped"):
        del data[SPINN_KEY][key]
    data[SPINN_KEY]["ceiling_gflops"] = 50.0
    record = BenchRecord.from_dict(data[SPINN_KEY], tmp_path / "old.json")
    assert record.ceilings["cpu"]["fp32"]["gflops"] == 50.0 and not record.fastest
    assert "predates" in record.fastest_skipped[0]["reason"]


def test_a_checkpoint_records_its_schema_and_the_previous_releases_loads(tmp_path: Path) -> None:
    old = load_checkpoint(DATA / "checkpoint.safetensors")
    assert CHECKPOINT.schema_key not in old.metadata and old.network.architecture.widths == (8, 8)
    path = save_checkpoint(tmp_path / "new.safetensors", mlp_network(MLPSpec(4, (8, 8), 1)), {"variant": "dense"})
    metadata = read_metadata(path)
    assert metadata[CHECKPOINT.schema_key] == CHECKPOINT.name and metadata[CHECKPOINT.version_key] == "3"
    assert load_checkpoint(path).network.architecture.widths == (8, 8)


def _one_line(match: str, action: Callable[[], Any], *needles: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        action()
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message


@pytest.mark.parametrize("name", sorted(RECORDS))
@pytest.mark.parametrize("change, needle", [({"version": 3}, UPGRADE), ({"schema": "someone.else"}, "someone.else")])
def test_a_newer_version_or_an_unknown_schema_is_refused_in_one_line(name: str, change: dict[str, Any], needle: str,
                                                                     tmp_path: Path) -> None:
    read, from_dict, file = RECORDS[name]
    data = {**read(DATA / file).to_dict(), **change}
    path = tmp_path / file
    _one_line(".", lambda: from_dict(data, path), str(path), needle)


def test_a_checkpoint_of_a_newer_version_is_refused_in_one_line(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", mlp_network(MLPSpec(4, (8, 8), 1)))
    metadata = {**read_metadata(path), CHECKPOINT.version_key: "4"}
    newer = tmp_path / "newer.safetensors"
    save_file({k: v.contiguous() for k, v in load_file(str(path)).items()}, str(newer), metadata=metadata)
    _one_line("newer", lambda: load_checkpoint(newer), str(newer), UPGRADE)
    metadata[CHECKPOINT.schema_key] = "someone.else"
    save_file({"x": torch.zeros(1)}, str(newer), metadata=metadata)
    _one_line("someone.else", lambda: load_checkpoint(newer), str(newer))


@pytest.mark.parametrize("drop", ["stamped", "previous"])
def test_a_checkpoint_whose_format_names_a_graph_it_lacks_is_refused_in_one_line(tmp_path: Path, drop: str) -> None:
    """Damaged metadata (a graph key lost) of this release's files or the previous release's: one line, no KeyError."""
    path = save_checkpoint(tmp_path / "m.safetensors", mlp_network(MLPSpec(4, (8, 8), 1)))
    metadata = {k: v for k, v in read_metadata(path).items() if k != "spinn_export.graph"}
    if drop == "previous":
        metadata = {**{k: v for k, v in metadata.items() if k != CHECKPOINT.schema_key}, CHECKPOINT.version_key: "2"}
    damaged = tmp_path / "damaged.safetensors"
    save_file({k: v.contiguous() for k, v in load_file(str(path)).items()}, str(damaged), metadata=metadata)
    _one_line("damaged", lambda: load_checkpoint(damaged), str(damaged), "spinn_export.graph")
