"""`spinn-export train`: the dense model on the built-in task or the user's data."""
from __future__ import annotations

import argparse

from spinn_export.cli import (
    MODEL_CODE_HELP,
    TRUST_PICKLE_HELP,
    add_data_arguments,
    dataset_of,
    open_model_file,
    output_file,
    physics_weight,
    positive_int,
    print_architecture,
)
from spinn_export.errors import UserError
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.importer import model_from_code
from spinn_export.model.mlp import mlp_network
from spinn_export.model.network import Network
from spinn_export.model.spec import ACTIVATIONS, SPINN_REFERENCE, MLPSpec, parse_widths
from spinn_export.task.data import check_model_fits, dataset_metadata
from spinn_export.task.train import TrainConfig, train

DEFAULTS = TrainConfig()

STAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a dense MLP on a data + physics loss")
    add_data_arguments(parser)
    parser.add_argument("--widths", help="hidden widths of a plain MLP (default: the SPINN reference 512,512,512,256)")
    parser.add_argument("--activation", choices=ACTIVATIONS,
                        help=f"the plain MLP's activation (default {SPINN_REFERENCE.activation}), or a bare "
                             "state_dict's with --model")
    parser.add_argument("--model", metavar="FILE",
                        help="train your model from these weights instead: a .pt2, a state_dict with --model-code, "
                             "a pickled module with --trust-pickle")
    parser.add_argument("--model-code", metavar="PATH.py:FACTORY",
                        help=MODEL_CODE_HELP + "; without --model, the module as the factory builds it")
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs)
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size)
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr)
    parser.add_argument("--physics-weight", type=float, default=None,
                        help="weight of the PDE residual loss (built-in task or --physics; "
                             f"default {DEFAULTS.physics_weight})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", required=True, help="the .safetensors checkpoint to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output_file(args.out, "dense.safetensors")
    dataset = dataset_of(args, args.seed)
    weight = physics_weight(args, dataset, DEFAULTS.physics_weight)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         physics_weight=weight, seed=args.seed, device=args.device)
    network = _starting_model(args, dataset.in_features, dataset.out_features)
    check_model_fits(dataset, network)
    result = train(network.module, dataset, config)
    final = result.final
    save_checkpoint(args.out, network, {
        "variant": "dense", **dataset_metadata(dataset), "seed": str(args.seed), "val_r2": f"{final.r2:.6f}"})
    residual = "n/a" if final.residual_rms is None else f"{final.residual_rms:.4g}"
    print(f"trained {network.architecture.params:,}-parameter model for {config.epochs} epochs: "
          f"val R2 {final.r2:.4f}, rel L2 {final.rel_l2:.4f}, residual RMS {residual} -> {args.out}")
    return 0


def _starting_model(args: argparse.Namespace, in_features: int, out_features: int) -> Network:
    """A plain MLP of --widths (the default), your model from --model FILE, or --model-code's fresh module."""
    if args.model is None and args.model_code is None:
        if args.trust_pickle:
            raise UserError("--trust-pickle applies only with --model FILE")
        widths = parse_widths(args.widths) if args.widths else SPINN_REFERENCE.widths
        spec = MLPSpec(in_features, widths, out_features, args.activation or SPINN_REFERENCE.activation)
        return mlp_network(spec)
    if args.widths:
        raise UserError("--widths shapes the built-in plain MLP; your model (--model, --model-code) has its own widths")
    if args.model is None:
        if args.activation:
            raise UserError("--activation applies only to a plain MLP or a bare state_dict (--model FILE)")
        network = model_from_code(args.model_code, in_features)
    else:
        network = open_model_file(args, args.model, in_features).network
    print_architecture(network)
    return network
