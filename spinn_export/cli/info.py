"""`spinn-export info`: a model's architecture (its width groups) and its exact cost figures."""
from __future__ import annotations

import argparse
import json

from spinn_export.cli import positive_int
from spinn_export.errors import UserError
from spinn_export.model.checkpoint import load_checkpoint
from spinn_export.model.mlp import architecture_of, count_nonzero
from spinn_export.model.spec import ACTIVATIONS, MLPSpec, parse_widths

STAGE = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print a model's width groups, parameters, MACs and FLOPs")
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
        architecture = checkpoint.network.architecture
        summary = {**architecture.summary(), "nonzero_params": count_nonzero(checkpoint.network.module),
                   "variant": checkpoint.variant}
    else:
        architecture = architecture_of(MLPSpec(args.in_features, parse_widths(args.widths), args.out_features,
                                               args.activation))
        summary = architecture.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"architecture      {architecture.describe()}")
    for reason in architecture.frozen_reasons():
        print(f"{'frozen':<17} {reason}")
    for key in ("params", "nonzero_params", "macs_per_sample", "flops_per_sample", "weight_bytes"):
        if key in summary:
            print(f"{key:<17} {summary[key]:,}")
    if "variant" in summary:
        print(f"{'variant':<17} {summary['variant']}")
    return 0
