"""Latency measurements for pruning to a latency budget, on a registered backend: the `prune.latency.Measurer`
that `spinn-export prune`, `run` and `sweep` hand to the pruning stage (which never imports bench).

Probes (one layer each) are timed against an anchor in one worker process kept for the whole plan
(`bench.timing.fresh_process_context`): a separate process, because ONNX Runtime's global thread pool must exist
before any session (`runtimes.onnxruntime.global_pool`), while the prune process makes sessions of its own. An ONNX
probe is the format plug-in's export of one template with the weight tensors swapped for the probe's (the dynamo
exporter takes about a second per model; a plan reads dozens of shapes); every probe passes the parity check
against eager PyTorch that every benchmarked model passes (`bench.variants.open_runner`) before it is timed.
Whole networks are measured paired against dense in fresh processes (`bench.paired.paired_speedups`).
"""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spinn_export.bench.backends import CHECKPOINT_FORMAT, Backend, backends, get_backend, sample_input
from spinn_export.bench.paired import PairedConfig, interleaved_blocks, paired_speedups, sandwich_ratios, summarize
from spinn_export.bench.timing import calibrate, default_threads, fix_threads, fresh_process_context
from spinn_export.bench.variants import ModelRef, Variant, open_runner
from spinn_export.defaults import PROBE_ANCHOR, PROBE_ROUNDS
from spinn_export.errors import UserError
from spinn_export.export.formats import DEFAULT_OPSET, formats
from spinn_export.hardware import cpu_model, gpu_info
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.network import Network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.latency import Cost, Ratio, Shape
from spinn_export.runtimes import library_versions

BLOCK_SECONDS = 0.01  # a probe's block is at least this long (small probes run several calls per block)
CHECK_PROCESSES, CHECK_CYCLES = 2, 8  # a check only steers the goal; the final measurement uses PairedConfig()
SEED = 0  # probes' random weights: latency does not depend on the values, and seeded files make a plan repeatable


def require_backend(name: str) -> Backend:
    """The named backend if it can run here, else one line naming the ones that can."""

    backend = get_backend(name)
    reason = backend.unavailable_reason()
    if reason is not None:
        usable = [b.name for b in backends().values() if b.unavailable_reason() is None]
        raise UserError(f"--backend {name} cannot measure latency here: {reason}; available here: {', '.join(usable)}")
    return backend


def random_network(spec: MLPSpec, seed: int = SEED) -> Network:
    """A probe with seeded random weights: latency does not depend on the values, and seeded files make a plan
    repeatable."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = mlp_network(spec)
    network.module.eval()
    return network


_ANCHORS: dict[tuple[str, Path, int], tuple[Any, Callable[[], object]]] = {}  # the worker's: opened once per plan


def _time_probes(backend: str, anchor: ModelRef, probes: tuple[ModelRef, ...], batch: int,
                 threads: int) -> tuple[list[float], list[list[float]]]:
    """In the worker: open every probe (parity-checked), then PROBE_ROUNDS rounds of each probe's block between the
    anchor's (`bench.paired.interleaved_blocks`); blocks are sized by `bench.timing.calibrate`, whose calls, after
    the parity check's and `prepare`'s, leave every probe warm. The anchor's runner stays open for the worker's
    life (one plan), as it is in every chunk."""

    fix_threads(threads)
    key = (backend, anchor.directory / anchor.checkpoint, batch)
    if key not in _ANCHORS:
        runner = open_runner(backend, anchor, threads)
        _ANCHORS[key] = (runner, runner.prepare(sample_input(batch, anchor.in_features)))
    anchor_runner, anchor_call = _ANCHORS[key]
    runners = [open_runner(backend, ref, threads) for ref in probes]
    with contextlib.ExitStack() as guard:
        for runner in (anchor_runner, *runners):
            guard.enter_context(runner.guard())
        calls = [anchor_call, *(runner.prepare(sample_input(batch, ref.in_features))
                                for runner, ref in zip(runners, probes))]
        counts = [calibrate(call, BLOCK_SECONDS) for call in calls]
        return interleaved_blocks(calls[0], calls[1:], PROBE_ROUNDS, counts)


class BackendMeasurer:
    """Measures on a registered backend at one batch: probes in one worker process, whole models paired in fresh
    processes. A context manager: its files live in a temporary directory, its worker until the plan is done."""

    def __init__(self, backend: str, batch: int, threads: int | None = None) -> None:
        self.backend = require_backend(backend)
        self.batch, self.threads = int(batch), threads or default_threads()
        self.format = None
        if self.backend.format != CHECKPOINT_FORMAT:
            self.format = next((f for f in formats().values() if f.float32 and f.runtime_format == self.backend.format),
                               None)
            if self.format is None:
                raise UserError(f"--backend {backend} opens {self.backend.format} files, which no float32 format "
                                "plug-in writes; choose another backend")
        self._stack = contextlib.ExitStack()
        self._directory: Path | None = None
        self._worker: Any = None
        self._templates: dict[tuple[int, str], bytes] = {}
        self._anchors: dict[tuple[int, str], ModelRef] = {}
        self._exported: dict[int, tuple[Network, ModelRef]] = {}

    def __enter__(self) -> BackendMeasurer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def key(self) -> dict[str, Any]:
        key = {"cpu_model": cpu_model(), "threads": self.threads, "backend": self.backend.name,
               "backend_config": self.backend.make_config().to_dict(), "batch": self.batch,
               "versions": library_versions()}
        if self.backend.device == "cuda":
            key["gpu"] = gpu_info()
        return key

    def costs(self, shapes: Sequence[Shape], out_features: int, activation: str) -> dict[Shape, Cost]:
        anchor = self._anchor(out_features, activation)
        probes = [self._probe(f"probe-{k}x{n}", MLPSpec(k, (n,), out_features, activation)) for k, n in shapes]
        try:
            anchor_times, probe_times = self._pool().submit(
                _time_probes, self.backend.name, anchor, tuple(probes), self.batch, self.threads).result()
        finally:
            for ref in probes:
                for _, name in ref.files:
                    (ref.directory / name).unlink(missing_ok=True)
        found = {}
        for shape, times in zip(shapes, probe_times):
            median, low, high = summarize([sandwich_ratios(anchor_times, times)])  # anchor / probe, per round
            found[shape] = Cost(1.0 / median, 1.0 / high, 1.0 / low, float(np.median(times)))
        return found

    def ratio(self, baseline: Network, candidate: Network, final: bool) -> Ratio:
        config = PairedConfig() if final else PairedConfig(processes=CHECK_PROCESSES, cycles=CHECK_CYCLES)
        dense, pruned = self._export("dense", baseline), self._export("structured", candidate)
        [result] = paired_speedups(self.backend.name, dense, [pruned], [self.batch], self.threads, config)
        return Ratio(1.0 / result.speedup_median, 1.0 / result.ci_high, 1.0 / result.ci_low, result.method,
                     result.processes, result.blocks_per_process)

    def release(self) -> None:
        """Stop the probes' worker (and its open anchor); the next measurement starts a fresh one."""
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self._worker, self._directory = None, None
        self._templates, self._anchors, self._exported = {}, {}, {}

    def _pool(self) -> Any:
        if self._worker is None:
            self._worker = self._stack.enter_context(
                ProcessPoolExecutor(max_workers=1, mp_context=fresh_process_context()))
        return self._worker

    def _dir(self) -> Path:
        if self._directory is None:
            self._directory = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="spinn-latency-")))
        return self._directory

    def _anchor(self, out_features: int, activation: str) -> ModelRef:
        if (out_features, activation) not in self._anchors:
            spec = MLPSpec(PROBE_ANCHOR[0], (PROBE_ANCHOR[1],), out_features, activation)
            self._anchors[(out_features, activation)] = self._probe(f"anchor-{out_features}-{activation}", spec)
        return self._anchors[(out_features, activation)]

    def _probe(self, name: str, spec: MLPSpec) -> ModelRef:
        network = random_network(spec)
        return self._ref(name, "dense", network, self._retargeted(network.module, spec))

    def _export(self, role: str, network: Network) -> ModelRef:
        """A whole model through the format plug-in's own writer (once per module object)."""
        key = id(network.module)
        if key not in self._exported:
            self._exported[key] = (network, self._ref(f"{role}-{len(self._exported)}", role, network, None))
        return self._exported[key][1]

    def _ref(self, name: str, role: str, network: Network, data: bytes | None) -> ModelRef:
        """Checkpoint and artifact in the temporary directory, as the `ModelRef` that runners and pairs open."""

        directory = self._dir()
        checkpoint = save_checkpoint(directory / f"{name}.safetensors", network, {"variant": role}).name
        files = [(CHECKPOINT_FORMAT, checkpoint)]
        if self.format is not None:
            artifact = directory / self.format.filename(name)
            if data is None:
                self.format.write(network, artifact, DEFAULT_OPSET, None)
            else:
                artifact.write_bytes(data)
            files.append((self.format.runtime_format, artifact.name))
        spec = network.architecture
        return ModelRef(Variant(role), name, directory, checkpoint, tuple(files), spec.params, spec.params,
                        spec.flops_per_sample, spec.widths, spec.in_features)

    def _retargeted(self, model: nn.Module, spec: MLPSpec) -> bytes | None:
        """An ONNX probe without an export: the plug-in's file of the anchor's shape with `model`'s tensors in place
        of its own (same operators and attributes; shapes are re-inferred by the runtime). None where the format is
        not ONNX or its file does not name the tensors as the model's state dict does: then the plug-in writes it."""
        if self.format is None or not self.format.uses_opset:
            return None
        # start-up: onnx only for an ONNX backend's probes (`spinn-export prune` imports this module)
        import onnx
        from onnx import numpy_helper

        proto = onnx.load_from_string(self._template(spec.out_features, spec.activation))
        tensors = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
        if {init.name for init in proto.graph.initializer} != set(tensors):
            return None
        for init in proto.graph.initializer:
            init.CopyFrom(numpy_helper.from_array(tensors[init.name], init.name))
        proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = spec.in_features
        del proto.graph.value_info[:]
        return proto.SerializeToString()

    def _template(self, out_features: int, activation: str) -> bytes:
        if (out_features, activation) not in self._templates:
            spec = MLPSpec(PROBE_ANCHOR[0], (PROBE_ANCHOR[1],), out_features, activation)
            path = self._dir() / f"template-{out_features}-{activation}{self.format.extension}"  # type: ignore[union-attr]
            self.format.write(random_network(spec), path, DEFAULT_OPSET)  # type: ignore[union-attr, call-arg]
            self._templates[(out_features, activation)] = path.read_bytes()
        return self._templates[(out_features, activation)]


@contextlib.contextmanager
def measuring(measured_on: tuple[str, int] | None) -> Iterator[BackendMeasurer | None]:
    """The measurer a pruning run needs (`PruneConfig.measured_on`: backend and batch), or None where it measures
    nothing; closed after the run."""
    if measured_on is None:
        yield None
        return
    with BackendMeasurer(*measured_on) as measurer:
        yield measurer
