"""`spinn-export import`: your model (a .pt2, a state_dict with its code, a trusted pickled module, or a bare
state_dict read as a plain MLP) into a safe checkpoint that records its architecture."""
from __future__ import annotations

import argparse

from spinn_export.cli import add_model_arguments, output_file, positive_int, print_architecture
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.importer import open_model

STAGE = 1
def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("import", help="read your model's architecture and weights into a checkpoint")
    parser.add_argument("file", help="a .pt2 (torch.export.save), a state_dict (.pt/.pth/.safetensors) with "
                                     "--model-code, a whole module with --trust-pickle, or a bare state_dict "
                                     "(read as a plain MLP)")
    add_model_arguments(parser)
    parser.add_argument("--in-features", type=positive_int, metavar="N",
                        help="the number of input columns a module is traced at (--model-code, --trust-pickle)")
    parser.add_argument("--out", required=True, help="the .safetensors checkpoint to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output_file(args.out, "model.safetensors")
    checkpoint = open_model(args.file, activation=args.activation, trust_pickle=args.trust_pickle,
                            model_code=args.model_code, in_features=args.in_features, output=args.output)
    print_architecture(checkpoint.network)
    save_checkpoint(args.out, checkpoint.network,
                    {**checkpoint.metadata, "variant": checkpoint.variant, "source": str(args.file)})
    print(f"imported to {args.out}")
    return 0
