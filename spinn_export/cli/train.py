"""`spinn-export train`: the dense model on the built-in task or the user's data."""
from __future__ import annotations

import argparse

from spinn_export.cli import (
    add_data_arguments,
    dataset_of,
    output_file,
    physics_weight,
    positive_int,
)
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import build_model
from spinn_export.model.spec import ACTIVATIONS, SPINN_REFERENCE, MLPSpec, parse_widths
from spinn_export.task.data import check_model_fits, dataset_metadata
from spinn_export.task.train import TrainConfig, train

DEFAULTS = TrainConfig()

STAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a dense MLP on a data + physics loss")
    add_data_arguments(parser)
    parser.add_argument("--widths", help="hidden widths (default: the SPINN reference 512,512,512,256)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default=SPINN_REFERENCE.activation)
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
    widths = parse_widths(args.widths) if args.widths else SPINN_REFERENCE.widths
    spec = MLPSpec(dataset.in_features, widths, dataset.out_features, args.activation)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         physics_weight=weight, seed=args.seed, device=args.device)
    model = build_model(spec)
    check_model_fits(dataset, spec, model)
    result = train(model, dataset, config)
    final = result.final
    save_checkpoint(args.out, model, spec, {
        "variant": "dense", **dataset_metadata(dataset), "seed": str(args.seed), "val_r2": f"{final.r2:.6f}"})
    residual = "n/a" if final.residual_rms is None else f"{final.residual_rms:.4g}"
    print(f"trained {spec.params:,}-parameter model for {config.epochs} epochs: "
          f"val R2 {final.r2:.4f}, rel L2 {final.rel_l2:.4f}, residual RMS {residual} -> {args.out}")
    return 0
