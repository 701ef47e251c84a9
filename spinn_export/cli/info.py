"""`spinn-export info`: a spec and its exact cost figures."""
from __future__ import annotations

import argparse
import json

from spinn_export.cli import positive_int
from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint
from spinn_export.model.mlp import count_nonzero
from spinn_export.model.spec import ACTIVATIONS, MLPSpec, parse_widths

STAGE = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print a model's spec, parameters, MACs and FLOPs")
    parser.add_argument("checkpoint", nargs="?", help="a spinn-export .safetensors checkpoint")
    parser.add_argument("--widths", help="hidden widths, e.g. 384,384,384,192 (instead of a checkpoint)")
    parser.add_argument("--in", dest="in_features", type=positive_int, default=18)
    parser.add_argument("--out", dest="out_features", type=positive_int, default=2)
    parser.add_argument("--activation", choices=ACTIVATIONS, default="tanh")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (args.widths is None):
        raise UserError("give either a CHECKPOINT or --widths (not both)")
    summary: dict[str, object]
    if args.checkpoint is not None:
        checkpoint = load_checkpoint(args.checkpoint)
        summary = {**checkpoint.spec.summary(), "nonzero_params": count_nonzero(checkpoint.model),
                   "variant": checkpoint.variant}
    else:
        spec = MLPSpec(args.in_features, parse_widths(args.widths), args.out_features, args.activation)
        summary = spec.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    dims = " -> ".join(str(d) for d in (summary["in_features"], *summary["widths"], summary["out_features"]))  # type: ignore[misc]
    print(f"architecture      {dims} ({summary['activation']})")
    for key in ("params", "nonzero_params", "macs_per_sample", "flops_per_sample", "weight_bytes"):
        if key in summary:
            print(f"{key:<17} {summary[key]:,}")
    if "variant" in summary:
        print(f"{'variant':<17} {summary['variant']}")
    return 0
