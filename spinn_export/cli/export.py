"""`spinn-export export`: verified TorchScript, ONNX and torch.export artifacts (and low-precision ones, with their
accuracy against an R^2 budget) plus DIR/manifest.json."""
from __future__ import annotations

import argparse

from spinn_export.cli import add_accuracy_budget, add_data_arguments, dataset_of, output_dir
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import (
    ALL_FORMATS,
    DEFAULT_OPSET,
    default_formats,
    formats,
    parse_formats,
    unavailable_formats,
)
from spinn_export.export.manifest import ArtifactRecord

STAGE = 4
MIN_OPSET, MAX_OPSET = 18, 23  # the dynamo exporter's supported range in torch 2.13


def register(subparsers: argparse._SubParsersAction) -> None:
    listed = "; ".join(f"{name} ({f.extension}{'' if f.default else ', on request'})" for name, f in formats().items())
    parser = subparsers.add_parser(
        "export", help="export checkpoints to TorchScript/ONNX/torch.export, each verified against eager PyTorch",
        description=f"Formats (plug-ins, entry-point group spinn_export.formats): {listed}.",
    )
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="spinn-export .safetensors checkpoints")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the artifacts and manifest.json")
    parser.add_argument("--formats", default=None,
                        help=f"comma-separated formats, or '{ALL_FORMATS}' (every format this machine can produce; "
                             f"the rest are skipped with the reason) (default: {','.join(default_formats())})")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    add_accuracy_budget(parser)
    add_data_arguments(parser)
    parser.set_defaults(func=run)


def _line(record: ArtifactRecord) -> str:
    parity, measured = record.parity, record.accuracy
    extra = ""
    if measured:
        verdict = "within budget" if record.within_budget else "OVER BUDGET"
        extra = f", val R2 {measured['val_r2']:.4f} (delta {measured['val_r2_delta']:+.2e}, {verdict})"
    return (f"{record.file:<34} {record.bytes:>10,} B  max abs err {parity['max_abs_error']:.2e} "
            f"({parity['criterion']}{', ok' if parity['passed'] else ''}){extra}")


def run(args: argparse.Namespace) -> int:
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise UserError(f"--opset {args.opset} is out of range: choose {MIN_OPSET}..{MAX_OPSET}")
    formats = parse_formats(args.formats)
    output_dir(args.out)
    given = any(value is not None for value in (args.data, args.inputs, args.targets, args.physics))
    data = dataset_of(args, args.seed) if given else None  # else each checkpoint's own (the built-in task it names)
    skipped = unavailable_formats() if args.formats is not None and args.formats.strip() == ALL_FORMATS else {}
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", flush=True)
    manifest = export_checkpoints(args.checkpoints, args.out, formats, args.opset,
                                  on_artifact=lambda record: print(_line(record), flush=True), data=data,
                                  max_r2_drop=args.max_r2_drop, unavailable=skipped)
    print(f"{len(manifest.artifacts)} verified artifact(s) listed in {args.out}/manifest.json")
    return 0
