"""The benchmark suite's options, one table for pytest (`--spinn-<name>`) and `spinn-export bench` (`--<name>`),
and the validated settings of one session (`suite_settings`): every mistake is one line before anything runs. Which
(variant, backend) pairs can never run, and why, is decided here too, from the settings alone."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spinn_export import defaults
from spinn_export.bench.backends import CHECKPOINT_FORMAT, parse_backend_options, resolve_backends
from spinn_export.bench.backends import backends as registered
from spinn_export.bench.paired import PairedConfig
from spinn_export.bench.timing import default_threads
from spinn_export.bench.variants import FP32, ModelRef, Variant, possible_variants, refs_from_manifest
from spinn_export.errors import UserError
from spinn_export.export.formats import formats

PAIRED = PairedConfig()
QUICK_PAIRED = PairedConfig(processes=2, cycles=4)
# The latency matrix's own process plus fresh ones that repeat each case's interleaved rounds after it
# (suite/test_processes.py): pooled, a lucky or unlucky process moves the speedup only by its share.
INTERLEAVED_PROCESSES = 3
TIMEIT_BACKEND = "ort-cpu"  # the cross-check is ONNX Runtime's: timeit calls its own session.run beside the harness
DEFAULT_BATCHES = ",".join(map(str, defaults.BATCHES))
QUICK_BATCHES = ",".join(map(str, defaults.QUICK_BATCHES))
QUICK_VARIANTS = ",".join(defaults.QUICK_VARIANTS)


@dataclass(frozen=True)
class SuiteOption:
    """One suite option: `--spinn-<name>` to pytest, `--<name>` to `spinn-export bench` (one table for both)."""

    name: str
    help: str
    metavar: str | None = None
    kind: str = "text"  # text, flag (store_true), int, repeat (append)

    @property
    def dest(self) -> str:
        return "spinn_" + self.name.replace("-", "_")

    def argparse_kwargs(self) -> dict[str, Any]:
        if self.kind == "flag":
            return {"action": "store_true", "dest": self.dest, "help": self.help}
        kwargs: dict[str, Any] = {"dest": self.dest, "default": None, "help": self.help, "metavar": self.metavar}
        if self.kind == "int":
            kwargs["type"] = int
        if self.kind == "repeat":
            kwargs["action"] = "append"
        return kwargs

    def pytest_args(self, value: Any) -> list[str]:
        """The value as pytest arguments (what `spinn-export bench` passes on)."""
        if value is None or value is False:
            return []
        if self.kind == "flag":
            return [f"--spinn-{self.name}"]
        return [f"--spinn-{self.name}={item}" for item in (value if self.kind == "repeat" else [value])]


OPTIONS = (
    SuiteOption("backends", "comma-separated backends, families (eager, compile, ...), devices (cpu, cuda) or all; "
                            "default: every backend that is not slow (see `spinn-export backends`)", "NAMES"),
    SuiteOption("batches", f"batch sizes (default {DEFAULT_BATCHES}; quick {QUICK_BATCHES})", "SIZES"),
    SuiteOption("variants", f"variants (default: all the models offer; quick {QUICK_VARIANTS})", "NAMES"),
    SuiteOption("quick", "fewer batches, variants and rounds: a smoke run", kind="flag"),
    SuiteOption("artifacts", "benchmark the models of DIR/manifest.json (spinn-export export) instead of the built-in "
                             "ones", "DIR"),
    SuiteOption("threads", "intra-op threads for every backend (default: physical cores)", "N", "int"),
    SuiteOption("backend-option", "a backend's own option, BACKEND:KEY=VALUE (e.g. compile-cpu:mode=max-autotune); "
                                  "repeatable; `spinn-export backends` lists each backend's options", "B:K=V",
                "repeat"),
    SuiteOption("paired", "backends that also get the ABBA speedup in fresh processes, or 'none' (every case is "
                          f"paired with dense in its own rounds anyway; default: {'/'.join(defaults.PAIRED_BACKENDS)} "
                          "where benchmarked)",
                "BACKENDS"),
    SuiteOption("paired-variants", "variants whose speedups also get fresh processes: ABBA on the --paired backends "
                                   "and --processes' repeats of the interleaved rounds on every backend (the rest are "
                                   "paired in the matrix's rounds only; default: "
                                   f"{defaults.PAIRED_VARIANT} where benchmarked; 'all': every benchmarked variant)",
                "NAMES"),
    SuiteOption("paired-processes", f"fresh processes per paired measurement (default {PAIRED.processes}; quick "
                                    f"{QUICK_PAIRED.processes})", "N", "int"),
    SuiteOption("paired-cycles", f"ABBA cycles per process and batch (default {PAIRED.cycles}; quick "
                                 f"{QUICK_PAIRED.cycles})", "N", "int"),
    SuiteOption("processes", "processes that time the --paired-variants' interleaved rounds with dense: the matrix's "
                             f"own plus N-1 fresh ones after it, pooled (default {INTERLEAVED_PROCESSES}; 1: the "
                             "matrix's only)",
                "N", "int"),
    SuiteOption("no-memory", "skip the peak-memory measurement (one fresh process per backend and variant)",
                kind="flag"),
)


@dataclass(frozen=True)
class SuiteSettings:
    """The validated choices of one benchmark session (`suite_settings` builds them from option values)."""

    backends: tuple[Any, ...]
    batches: tuple[int, ...]
    variants: tuple[str, ...]
    threads: int
    backend_configs: dict[str, Any]
    paired_backends: tuple[Any, ...]
    paired_variants: tuple[str, ...]
    paired: PairedConfig
    quick: bool
    manifest_refs: dict[str, ModelRef] | None = None
    memory: bool = True
    processes: int = INTERLEAVED_PROCESSES


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise UserError(f"{option} must be comma-separated positive integers like 1,64, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def manifest_models(directory: str | Path) -> dict[str, ModelRef]:
    """Every variant DIR/manifest.json offers, by name (each file's sha256 checked)."""

    return {ref.name: ref for ref in refs_from_manifest(Path(directory))}


def suite_settings(values: dict[str, Any]) -> SuiteSettings:
    """Validate option values (keyed by `SuiteOption.dest`); every mistake is one UserError line.

    With --artifacts the manifest is read and every file's sha256 checked here, before anything runs.
    """

    quick = bool(values.get("spinn_quick"))
    chosen = tuple(resolve_backends(values.get("spinn_backends")))
    batches = _ints(values.get("spinn_batches") or (QUICK_BATCHES if quick else DEFAULT_BATCHES), "--batches")
    artifacts = values.get("spinn_artifacts")
    manifest_refs = None
    if artifacts:
        manifest_refs = manifest_models(artifacts)
        known = tuple(manifest_refs)
    else:
        precisions = dict.fromkeys([FP32, *(f.precision for f in formats().values())])
        known = tuple(v.name for v in possible_variants(precisions))
    requested = values.get("spinn_variants") or (QUICK_VARIANTS if quick else ",".join(known))
    variants = tuple(_names(requested))
    unknown = [v for v in variants if v not in known]
    if unknown or not variants:
        raise UserError(f"unknown variant(s) {', '.join(unknown) or repr(requested)}: choose from {', '.join(known)}")
    headline = [b.name for b in chosen if b.name in defaults.PAIRED_BACKENDS]
    paired_text = values.get("spinn_paired") or ",".join(headline) or "none"
    paired_backends = () if paired_text == "none" else tuple(resolve_backends(paired_text))
    pair_text = values.get("spinn_paired_variants")
    pair_names = [v for v in variants if v != "dense"] if pair_text == "all" else _names(pair_text or "")
    if any(v not in known for v in pair_names):
        raise UserError(f"unknown --paired-variants {pair_text!r}: choose from all, {', '.join(known)}")
    if pair_text is None:  # the default applies where the run has it, and asks for nothing it does not
        pair_names = [v for v in variants if v == defaults.PAIRED_VARIANT]
    paired = QUICK_PAIRED if quick else PAIRED
    paired = replace(paired, processes=values.get("spinn_paired_processes") or paired.processes,
                     cycles=values.get("spinn_paired_cycles") or paired.cycles)
    processes = values.get("spinn_processes") or INTERLEAVED_PROCESSES
    if processes < 1:
        raise UserError(f"--processes must be a positive integer, got {processes}")
    threads = values.get("spinn_threads") or default_threads()
    if threads < 1:
        raise UserError(f"--threads must be a positive integer, got {threads}")
    options = parse_backend_options(values.get("spinn_backend_option"))
    unknown_backends = sorted(set(options) - set(registered()))
    if unknown_backends:
        raise UserError(f"--backend-option names unknown backend {unknown_backends[0]!r}: "
                        f"choose from {', '.join(registered())}")
    configs = {b.name: b.make_config(options.get(b.name)) for b in (*chosen, *paired_backends)}
    return SuiteSettings(
        backends=chosen, batches=batches, variants=variants, threads=threads, backend_configs=configs,
        paired_backends=paired_backends, paired_variants=tuple(v for v in pair_names if v in variants and v != "dense"),
        paired=paired, quick=quick, manifest_refs=manifest_refs, memory=not values.get("spinn_no_memory"),
        processes=processes,
    )


def prospective_reason(variant: Variant, backend: Any) -> str | None:
    """Why a built-in variant could never run on `backend` (before the models exist), or None."""

    reason = variant.unsupported_reason(backend)
    if reason is not None or variant.sparse:
        return reason
    opened = {f.runtime_format for f in formats().values() if f.precision == variant.precision}
    if variant.precision == FP32:
        opened.add(CHECKPOINT_FORMAT)
    return None if backend.format in opened else f"no {variant.precision} format is opened as {backend.format}"


def unsupported_reason(variant: str, backend: Any, settings: SuiteSettings) -> str | None:
    """Why a pair can never run (int8 runs only where a backend runs int8, CSR only on eager), or None."""
    if settings.manifest_refs is not None:
        return settings.manifest_refs[variant].unsupported_reason(backend)
    return prospective_reason(Variant.parse(variant), backend)


def supported(variant: str, backend: Any, settings: SuiteSettings) -> bool:
    """Pairs that can never run are not generated; the summary says why (`not_generated`)."""
    return unsupported_reason(variant, backend, settings) is None


def not_generated(settings: SuiteSettings) -> dict[str, int]:
    """Reason -> latency cases (pairs x batches) not generated because the pair can never run."""
    counts: dict[str, int] = {}
    for backend in settings.backends:
        for variant in settings.variants:
            reason = unsupported_reason(variant, backend, settings)
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + len(settings.batches)
    return counts


