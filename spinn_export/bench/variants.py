"""What is benchmarked: a `Variant` (a model's role x its precision, and for magnitude weights how they are
stored), and the `ModelRef` that says where its files are and what it costs.

A manifest model becomes one variant per precision it was exported at (dense, structured,
magnitude-masked; `<...>-<precision>` for every precision the formats declare: `export.formats.precisions`), plus
magnitude-csr (the magnitude weights as torch sparse CSR, on backends that run sparse modules). Every
precision is a file in the manifest, bf16 included (`export.formats.onnx_bf16` says why), so a variant is
always its files. Variant names are derived here and parsed back here, nowhere else. This module imports
no torch: the report reads variant names with it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from spinn_export.bench.backends import CHECKPOINT_FORMAT, Backend, BackendConfig, Runner, Source, get_backend
from spinn_export.errors import UserError
from spinn_export.export.formats import formats, precisions
from spinn_export.export.manifest import read_manifest
from spinn_export.hardware import FP32
from spinn_export.model.spec import ROLES

if TYPE_CHECKING:
    from torch import nn

    from spinn_export.export.parity import ParityResult, Tolerance

BASELINE_ROLE = "dense"
MASKED, CSR = "masked", "csr"


@dataclass(frozen=True)
class Variant:
    """A model's role (dense, structured, magnitude), its precision, and whether magnitude weights run as
    sparse CSR. `model` tells apart two manifest models of the same role and precision."""

    role: str
    precision: str = FP32
    sparse: bool = False
    model: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise UserError(f"unknown model role {self.role!r}: expected one of {', '.join(ROLES)}")
        # fp32 is always known: naming a float32 variant loads no format plug-in (the report and gate import no torch)
        if self.precision != FP32 and self.precision not in (known := precisions()):
            raise UserError(f"unknown precision {self.precision!r}: expected one of {', '.join(known)} (the installed "
                            "formats' precisions)")
        if self.sparse and (self.role != "magnitude" or self.precision != FP32):
            raise UserError("only fp32 magnitude-pruned weights run as sparse CSR")

    @property
    def name(self) -> str:
        parts = [self.role]
        if self.role == "magnitude":
            parts.append(CSR if self.sparse else MASKED)
        if self.precision != FP32:
            parts.append(self.precision)
        return "-".join(parts) + (f":{self.model}" if self.model else "")

    @property
    def is_baseline(self) -> bool:
        """Dense fp32: what every speedup is measured against."""
        return self.role == BASELINE_ROLE and self.precision == FP32 and not self.sparse

    @property
    def quantised(self) -> bool:
        """Below float32 (bf16 or int8): its error is recorded, not held to float32."""
        return self.precision != FP32

    def unsupported_reason(self, backend: Backend) -> str | None:
        """Why `backend` can never run this variant, whatever files exist: its precision, or sparse CSR."""
        if not backend.runs(self.precision):
            return f"{backend.name} runs {'/'.join(backend.precisions)} models, not {self.precision} ({self.name})"
        if self.sparse and not backend.sparse:
            return f"{self.name} runs only where torch sparse CSR runs (eager backends)"
        return None

    def sort_key(self) -> tuple[object, ...]:
        """fp32 before quantised; within a precision dense, magnitude (masked, then CSR), structured."""
        return (self.quantised, self.precision, ROLES.index(self.role), self.sparse, self.model or "")

    @classmethod
    def parse(cls, text: str) -> Variant:
        """The inverse of `name`: 'structured-int8', 'dense-int8-static', 'magnitude-csr', 'dense:mymodel'."""
        base, _, model = text.partition(":")
        role, *rest = base.split("-")
        flags = [part for part in rest if part in (MASKED, CSR)]
        precision = "-".join(part for part in rest if part not in (MASKED, CSR)) or FP32
        try:
            variant = cls(role, precision, CSR in flags, model or None)
        except UserError:
            variant = None
        if variant is None or variant.name != text:
            raise UserError(f"{text!r} is not a variant name (such as dense, structured, magnitude-masked, "
                            "magnitude-csr, structured-int8, structured-int8-static)")
        return variant


def possible_variants(precisions: Iterable[str]) -> list[Variant]:
    """Every variant a manifest with all three roles at these precisions can offer, in display order."""
    found = []
    for precision in precisions:
        for role in ROLES:
            found.append(Variant(role, precision))
            if role == "magnitude" and precision == FP32:
                found.append(Variant(role, precision, sparse=True))
    return sorted(found, key=Variant.sort_key)


@dataclass(frozen=True)
class ModelRef:
    """One benchmarked variant: its files by the runtime format that opens them (relative to `directory`)
    and its cost figures.

    `flops_per_sample` counts the arithmetic this variant executes (dense shapes for masked weights,
    non-zeros for CSR), so achieved GFLOP/s is honest for each. `recorded_error` is the max abs error a
    quantised artifact had at export (parity holds later runs to the tolerance derived from it).
    Plain, picklable data, so a fresh process (the paired measurement) can open exactly the same model.
    """

    variant: Variant
    model: str
    directory: Path
    checkpoint: str
    files: tuple[tuple[str, str], ...]
    params: int
    nonzero_params: int
    flops_per_sample: int
    widths: tuple[int, ...]
    in_features: int
    recorded_error: float | None = None

    @property
    def name(self) -> str:
        return self.variant.name

    def file(self, fmt: str) -> Path | None:
        name = dict(self.files).get(fmt)
        return None if name is None else self.directory / name

    def reference(self) -> nn.Module:
        """The eager float32 model every runner of this variant must agree with."""
        # start-up: torch only where a model is opened (the report reads variant names with this module)
        from spinn_export.model.checkpoint import load_checkpoint

        return load_checkpoint(self.directory / self.checkpoint).network.module

    def tolerance(self) -> Tolerance | None:
        # start-up: torch only where a model is opened (the report reads variant names with this module)
        from spinn_export.export.parity import tolerance_for

        return tolerance_for(self.variant.precision, self.recorded_error)

    def unsupported_reason(self, backend: Backend) -> str | None:
        reason = self.variant.unsupported_reason(backend)
        if reason is not None or self.variant.sparse:  # CSR is built in memory from the checkpoint: no file needed
            return reason
        if self.file(backend.format) is None:
            return f"{self.name} ({self.model}) has no {backend.format} artifact in the manifest"
        return None

    def source_for(self, backend: Backend) -> Source:
        reason = self.unsupported_reason(backend)
        if reason is not None:
            raise UserError(reason)
        if self.variant.sparse:
            # start-up: torch only where a model is opened (the report reads variant names with this module)
            from spinn_export.model.checkpoint import load_checkpoint
            from spinn_export.prune.magnitude import to_sparse_csr

            return to_sparse_csr(load_checkpoint(self.directory / self.checkpoint).network).module
        return self.file(backend.format)  # type: ignore[return-value]


def refs_from_manifest(directory: str | Path) -> list[ModelRef]:
    """Every variant the manifest in `directory` offers (sha256 of each file verified)."""

    directory = Path(directory)
    known = formats()
    by_model: dict[str, list] = {}
    for record in read_manifest(directory).artifacts:
        by_model.setdefault(record.model, []).append(record)
    refs: list[ModelRef] = []
    for model, records in by_model.items():
        first = records[0]
        common = {"model": model, "directory": directory, "checkpoint": first.checkpoint, "params": first.params,
                  "widths": tuple(first.widths), "in_features": first.in_features}
        for precision in dict.fromkeys(r.precision for r in records):
            same = [r for r in records if r.precision == precision and r.format in known]
            files = tuple((known[r.format].runtime_format, r.file) for r in same)
            if precision == FP32:
                files = ((CHECKPOINT_FORMAT, first.checkpoint), *files)
            elif not files:
                continue
            recorded = (max((float(r.parity["max_abs_error"]) for r in same), default=None)
                        if precision != FP32 else None)
            refs.append(ModelRef(Variant(first.variant, precision), files=files,
                                 nonzero_params=first.nonzero_params, flops_per_sample=first.flops_per_sample,
                                 recorded_error=recorded, **common))
            if first.variant == "magnitude" and precision == FP32:
                biases = sum(first.widths) + first.out_features  # a plain MLP's, for manifests that did not record it
                csr_flops = first.csr_flops_per_sample or 2 * (first.nonzero_params - biases) + biases
                refs.append(ModelRef(Variant("magnitude", FP32, sparse=True), files=(),
                                     nonzero_params=first.nonzero_params, flops_per_sample=csr_flops, **common))
    counts = Counter(ref.name for ref in refs)
    return [ref if counts[ref.name] == 1 else replace(ref, variant=replace(ref.variant, model=ref.model))
            for ref in refs]


def open_runner(backend: Backend | str, ref: ModelRef, threads: int, config: BackendConfig | None = None) -> Runner:
    """Load `ref` on `backend` and check it against eager PyTorch (the one parity check) before anything is timed.

    The check's result stays on the runner as `runner.parity` (a `ParityResult`): every timed case reports its
    max abs error against eager float32 from it.
    """

    backend = get_backend(backend) if isinstance(backend, str) else backend
    runner = backend.load(ref.source_for(backend), threads, config)
    runner.parity = verify_runner(backend, ref, runner)  # type: ignore[attr-defined]
    return runner


def verify_runner(backend: Backend, ref: ModelRef, runner: Runner) -> ParityResult:
    """Raise ParityError unless `runner` computes what `ref`'s checkpoint computes in eager PyTorch; else what the
    check measured."""
    # start-up: torch only where a model is opened (the report reads variant names with this module)
    from spinn_export.export.parity import check_parity
    from spinn_export.model.checkpoint import load_checkpoint
    from spinn_export.task.data import input_range

    reference = load_checkpoint(ref.directory / ref.checkpoint)
    return check_parity(reference.network, runner.infer, f"{ref.name} on {backend.name}", ref.tolerance(),
                        domain=input_range(reference.metadata))
