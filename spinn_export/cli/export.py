"""`spinn-export export`: verified TorchScript, ONNX and torch.export artifacts plus DIR/manifest.json."""
from __future__ import annotations

import argparse

from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import DEFAULT_OPSET, default_formats, formats, parse_formats
from spinn_export.export.manifest import ArtifactRecord
from spinn_export.cli import output_dir

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
                        help=f"comma-separated formats (default: {','.join(default_formats())})")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.set_defaults(func=run)


def _line(record: ArtifactRecord) -> str:
    parity = record.parity
    delta = record.accuracy_delta
    extra = f", val R2 {delta['r2']:.4f} (delta {delta['delta_r2']:+.2e})" if delta else ""
    return (f"{record.file:<34} {record.bytes:>10,} B  max abs err {parity['max_abs_error']:.2e} "
            f"({parity['criterion']}{', ok' if parity['passed'] else ''}){extra}")


def run(args: argparse.Namespace) -> int:
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise UserError(f"--opset {args.opset} is out of range: choose {MIN_OPSET}..{MAX_OPSET}")
    formats = parse_formats(args.formats)
    output_dir(args.out)
    manifest = export_checkpoints(args.checkpoints, args.out, formats, args.opset,
                                  on_artifact=lambda record: print(_line(record), flush=True))
    print(f"{len(manifest.artifacts)} verified artifact(s) listed in {args.out}/manifest.json")
    return 0
