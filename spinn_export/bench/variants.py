"""The benchmarked variants of an exporter manifest, and how each backend opens one.

A manifest model becomes one or more variants: dense, structured, magnitude-masked (the magnitude
checkpoint run as dense matrices), magnitude-csr (the same weights as torch sparse CSR, on backends
that run sparse modules), and `<variant>-int8` for int8 ONNX artifacts. A `ModelRef` is plain,
picklable data, so a fresh process (the paired measurement) can open exactly the same model.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from spinn_export.errors import UserError
from spinn_export.bench.backends import Backend, Runner, Source, check_parity, get_backend

CHECKPOINT = "checkpoint"
FLOAT_FORMATS = ("torchscript", "onnx", "exported-program", "aoti")
INT8_FORMAT = "onnx-int8"


@dataclass(frozen=True)
class ModelRef:
    """One benchmarked variant: its files by format (relative to `directory`) and its cost figures.

    `flops_per_sample` counts the arithmetic this variant executes (dense shapes for masked weights,
    non-zeros for CSR), so achieved GFLOP/s is honest for each. `atol` is None for float32 parity, or
    the bound for a quantised model (twice the error recorded at export).
    """

    variant: str
    model: str
    directory: Path
    checkpoint: str
    files: tuple[tuple[str, str], ...]
    params: int
    nonzero_params: int
    flops_per_sample: int
    widths: tuple[int, ...]
    in_features: int
    sparse: bool = False
    atol: float | None = None

    def file(self, fmt: str) -> Path | None:
        name = dict(self.files).get(fmt)
        return None if name is None else self.directory / name

    def reference(self) -> nn.Module:
        """The eager float32 model every runner of this variant must agree with."""
        from spinn_export.model.checkpoint import load_checkpoint

        return load_checkpoint(self.directory / self.checkpoint).model

    def unsupported_reason(self, backend: Backend) -> str | None:
        if self.sparse:
            return None if backend.sparse else f"{self.variant} runs only where torch sparse CSR runs (eager backends)"
        if self.file(backend.format) is None:
            return f"{self.variant} ({self.model}) has no {backend.format} artifact in the manifest"
        return None

    def source_for(self, backend: Backend) -> Source:
        reason = self.unsupported_reason(backend)
        if reason is not None:
            raise UserError(reason)
        if self.sparse:
            from spinn_export.prune.magnitude import to_sparse_csr

            return to_sparse_csr(self.reference())
        return self.file(backend.format)  # type: ignore[return-value]


def refs_from_manifest(directory: str | Path) -> list[ModelRef]:
    """Every variant the manifest in `directory` offers (sha256 of each file verified)."""
    from spinn_export.export.manifest import read_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    by_model: dict[str, list] = {}
    for record in manifest.artifacts:
        by_model.setdefault(record.model, []).append(record)
    refs: list[ModelRef] = []
    for model, records in by_model.items():
        first = records[0]
        common = dict(model=model, directory=directory, checkpoint=first.checkpoint, params=first.params,
                      widths=tuple(first.widths), in_features=first.in_features)
        floats = tuple((r.format, r.file) for r in records if r.format in FLOAT_FORMATS)
        base = "magnitude-masked" if first.variant == "magnitude" else first.variant
        refs.append(ModelRef(variant=base, files=((CHECKPOINT, first.checkpoint), *floats),
                             nonzero_params=first.nonzero_params, flops_per_sample=first.flops_per_sample, **common))
        if first.variant == "magnitude":
            csr_flops = 2 * (first.nonzero_params - sum(first.widths) - first.out_features) + sum(first.widths) + first.out_features
            refs.append(ModelRef(variant="magnitude-csr", files=(), nonzero_params=first.nonzero_params,
                                 flops_per_sample=csr_flops, sparse=True, **common))
        for r in records:
            if r.format == INT8_FORMAT:  # int8 runs as ONNX: only ONNX Runtime backends take it
                refs.append(ModelRef(variant=f"{first.variant}-int8", files=(("onnx", r.file),),
                                     nonzero_params=r.nonzero_params, flops_per_sample=r.flops_per_sample,
                                     atol=max(2.0 * float(r.parity["max_abs_error"]), 1e-4), **common))
    counts = Counter(ref.variant for ref in refs)
    return [ref if counts[ref.variant] == 1 else replace(ref, variant=f"{ref.variant}:{ref.model}") for ref in refs]


def open_runner(backend: Backend | str, ref: ModelRef, threads: int) -> Runner:
    """Load `ref` on `backend` and check it against eager PyTorch before anything is timed."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    runner = backend.load(ref.source_for(backend), threads)
    if ref.atol is None:
        check_parity(runner, ref.reference(), ref.in_features)
    else:
        check_parity(runner, ref.reference(), ref.in_features, atol=ref.atol, rtol=0.0)
    return runner
