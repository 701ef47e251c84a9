"""`spinn-export import`: state_dicts and (trusted) pickled modules into safe checkpoints."""
from __future__ import annotations

import argparse

from spinn_export.cli import output_file
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.importer import import_model
from spinn_export.model.spec import ACTIVATIONS

STAGE = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("import", help="convert a PyTorch state_dict or module into a checkpoint")
    parser.add_argument("file", help="a .pt/.pth file: a state_dict, or a whole module with --trust-pickle")
    parser.add_argument("--activation", choices=ACTIVATIONS,
                        help="activation between layers (default: detected, else tanh)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow unpickling a whole module; this runs code from the file")
    parser.add_argument("--out", required=True, help="the .safetensors checkpoint to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output_file(args.out, "model.safetensors")
    spec, model = import_model(args.file, args.activation, args.trust_pickle)
    save_checkpoint(args.out, model, spec, {"variant": "dense", "source": str(args.file)})
    print(f"imported {spec.describe()} to {args.out}")
    return 0
