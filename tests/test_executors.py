"""Executors fine-tune a sweep's points: discovered as plug-ins, the same result on every engine (local processes, a
real Dask LocalCluster of processes, a real local Ray instance), a failed point as one line, a missing engine as an
unavailable plug-in naming its pip extra. Starting a cluster is slow; connecting, refusing and the futures are fast."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import operator
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.pipeline import executors as executors_module
from spinn_export.pipeline.executors import executors, get_executor
from spinn_export.pipeline.executors.ray import RayFuture
from spinn_export.pipeline.points import DataSource, PointJob, PointOutput, finetune_point, parse_targets
from spinn_export.pipeline.sweep import SweepConfig, plan_jobs, run_jobs
from spinn_export.prune.target import Target

SPEC = MLPSpec(4, (16, 16), 1)
COLUMNS = ("a", "b", "c", "d")


def write_tiny(directory: Path) -> tuple[Path, Path]:
    """A 4 -> 16 -> 16 -> 1 tanh MLP and 600 rows of data for it (y = sin a + b c - d / 2)."""
    directory.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).uniform(-1, 1, (600, 4)).astype(np.float32)
    frame = pd.DataFrame(x, columns=list(COLUMNS)).assign(y=np.sin(x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3])
    frame.to_csv(directory / "data.csv", index=False)
    torch.manual_seed(0)
    save_checkpoint(directory / "dense.safetensors", mlp_network(SPEC), {"variant": "dense"})
    return directory / "dense.safetensors", directory / "data.csv"


@dataclasses.dataclass(frozen=True)
class Jobs:
    good: PointJob
    bad: PointJob
    reference: PointOutput  # the good job run in this process: what every executor must reproduce


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    checkpoint, data_file = write_tiny(tmp_path_factory.mktemp("tiny"))
    data = DataSource.of(str(data_file), ",".join(COLUMNS), "y", None, 0)
    config = SweepConfig(parse_targets("0.5"), rounds=1, finetune_epochs=1, magnitude=False)
    good = dataclasses.replace(plan_jobs(config, load_checkpoint(checkpoint), checkpoint.read_bytes(), data,
                                         data.load())[0], threads=1)
    # a budget no widths meet, past the sweep's own check: the worker's error must come back as one line
    bad = dataclasses.replace(good, name="structured-0.99",
                              config=dataclasses.replace(good.config, target=Target.params(0.99)))
    return Jobs(good, bad, finetune_point(good))


def weights(output: PointOutput, method: str, scratch: Path) -> dict[str, torch.Tensor]:
    path = scratch / f"{output.name}.safetensors"
    path.write_bytes(dict(output.files)[f"{method}.safetensors"])
    return load_checkpoint(path).network.module.state_dict()


def assert_same_point(output: PointOutput, reference: PointOutput, scratch: Path) -> None:
    """Same files, same weights (bytes differ only in metadata order), same history; where it ran is recorded."""
    assert [name for name, _ in output.files] == [name for name, _ in reference.files]
    got, want = weights(output, "structured", scratch), weights(reference, "structured", scratch)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert [s.val_r2 for s in output.history.stages] == [s.val_r2 for s in reference.history.stages]
    assert output.host == socket.gethostname() and output.wall_s > 0


def run_on(name: str, address: str | None, jobs: Jobs, scratch: Path) -> None:
    """The good and the failing job on one executor (one worker: each engine's start-up is most of the cost)."""
    with get_executor(name).open(1, address) as pool:
        good, bad = pool.submit(finetune_point, jobs.good), pool.submit(finetune_point, jobs.bad)
        assert_same_point(good.result(timeout=300), jobs.reference, scratch)
        with pytest.raises(UserError, match="impossible") as failure:
            bad.result(timeout=300)
    assert "\n" not in str(failure.value)


def test_executors_are_discovered_plugins_named_as_their_entry_points() -> None:
    found = executors()
    assert {"local", "dask", "ray"} <= set(found)
    assert all(executor.name == name for name, executor in found.items())
    assert found["local"].unavailable_reason() is None and not found["local"].takes_address
    assert (found["dask"].extra, found["ray"].extra) == ("dask", "ray")


@pytest.mark.parametrize("name", ["dask", "ray"])
def test_a_missing_engine_is_an_unavailable_plugin_naming_its_pip_extra(name: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executors_module.importlib.util, "find_spec", lambda module: None)
    executor = get_executor(name)  # still listed: its module imports the engine only when started
    assert executor.unavailable_reason() == f"{executor.engine} is not installed; pip install 'spinn-export[{name}]'"
    with pytest.raises(UserError) as error:
        executor.open(1, None)
    assert str(error.value) == f"executor {name} is unavailable: {executor.unavailable_reason()}"


def test_unknown_executors_and_an_address_for_local_processes_are_one_line() -> None:
    with pytest.raises(UserError, match=r"unknown executor 'slurm': choose from dask, local, ray"):
        get_executor("slurm")
    with pytest.raises(UserError, match=r"--address applies to a cluster executor \(dask, ray\), not to local"):
        get_executor("local").check("tcp://127.0.0.1:8786")


def test_the_local_executor_runs_a_task_in_a_fresh_worker_process() -> None:
    """The pool itself, on a task that costs nothing (fine-tuning a real point there is the slow test below)."""
    with get_executor("local").open(1, None) as pool:
        assert pool.submit(os.getpid).result(timeout=60) != os.getpid()


def test_dask_connects_to_a_running_scheduler_and_a_bad_address_is_one_line() -> None:
    """A scheduler of threads in this process starts in a fraction of a second; a LocalCluster of processes (what
    the executor starts without --address) is the slow test below."""
    distributed = pytest.importorskip("distributed", reason="dask is not installed: pip install 'spinn-export[dask]'")
    cluster = distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None)
    with cluster, get_executor("dask").open(1, cluster.scheduler_address) as pool:
        assert pool.submit(operator.add, 2, 3).result(timeout=60) == 5
    with pytest.raises(UserError, match=r"^executor dask: no scheduler answered at nowhere://x \(ValueError: .*\); "
                                        r"start one \(dask scheduler\) or drop --address$"), \
            get_executor("dask").open(1, "nowhere://x"):
        pass


def test_ray_refuses_a_malformed_address_in_one_line_and_stays_stopped() -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'spinn-export[ray]'")
    with pytest.raises(UserError, match=r"^executor ray: could not connect to host:port:x \(ValueError: .*\)$"), \
            get_executor("ray").open(1, "host:port:x"):
        pass
    assert not ray.is_initialized()


class _Ref:
    """What RayFuture needs of an ObjectRef, over a plain future the test settles (a real task needs ray.init)."""

    def __init__(self) -> None:
        self.inner: concurrent.futures.Future = concurrent.futures.Future()

    def future(self) -> concurrent.futures.Future:
        return self.inner


def test_a_ray_future_settles_with_the_result_or_the_tasks_own_error() -> None:
    done, failed, wrapped = _Ref(), _Ref(), _Ref()
    futures = [RayFuture(ref) for ref in (done, failed, wrapped)]
    cause = UserError("target 99.00% fewer params is impossible")
    done.inner.set_result(7)
    failed.inner.set_exception(ValueError("plain"))
    wrapped.inner.set_exception(type("RayTaskError", (Exception,), {"cause": cause})("remote traceback"))
    assert futures[0].result() == 7 and str(futures[1].exception()) == "plain" and futures[2].exception() is cause


@pytest.mark.slow
def test_local_processes_fine_tune_points_as_this_process_does(jobs: Jobs, tmp_path: Path) -> None:
    run_on("local", None, jobs, tmp_path)


@pytest.mark.slow
def test_a_failed_point_stops_the_sweep_with_one_line_naming_it(jobs: Jobs) -> None:
    config = SweepConfig(parse_targets("0.5,0.99"), workers=1)
    lines: list[str] = []
    with pytest.raises(UserError) as failure:
        run_jobs([jobs.good, jobs.bad], config, lines.append)
    assert str(failure.value).startswith("point structured-0.99 failed: target 99.00% fewer params is impossible")
    assert "\n" not in str(failure.value) and lines[0] == "fine-tuning 2 points on local (1 worker here)"


@pytest.mark.slow
def test_a_dask_local_cluster_of_processes_fine_tunes_the_same_point(jobs: Jobs, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="dask is not installed: pip install 'spinn-export[dask]'")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run_on("dask", cluster.scheduler_address, jobs, tmp_path)


@pytest.mark.slow
def test_a_local_ray_instance_fine_tunes_the_same_point(jobs: Jobs, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'spinn-export[ray]'")
    run_on("ray", None, jobs, tmp_path)  # the executor starts Ray here (ray.init, 1 CPU) and stops it
    assert not ray.is_initialized()
