"""`spinn-export prune`: structured neuron pruning with fine-tuning, or the magnitude baseline."""
from __future__ import annotations

import argparse
import dataclasses

from spinn_export.bench.measurer import measuring
from spinn_export.cli import (
    add_budget_arguments,
    add_data_arguments,
    add_model_arguments,
    budget_of,
    dataset_of,
    open_model_file,
    output_dir,
    physics_weight,
    positive_int,
    print_architecture,
    recorded_seed,
    round_to,
)
from spinn_export.errors import UserError, require_file
from spinn_export.prune.budget import MODES
from spinn_export.prune.config import METHODS, ON_DROP, PruneConfig
from spinn_export.prune.importance import CRITERIA
from spinn_export.prune.shrink import FOLDS
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.data import dataset_metadata
from spinn_export.task.train import LR_TEST_HIGH, LR_TEST_LOW

STAGE = 3
DEFAULTS = PruneConfig(Target.params(0.5))


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or a positive integer, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune", help="remove whole neurons to a parameter/FLOP/latency/width budget, fine-tuning after each round",
        description="Structured pruning: layers become smaller dense layers, so the speedup is real. "
                    "Exactly one of --target, --target-flops, --target-latency or --widths sets the budget.",
    )
    parser.add_argument("checkpoint", metavar="MODEL",
                        help="a spinn-export .safetensors checkpoint (dense or structured), or your model: a .pt2 "
                             "(torch.export), a state_dict with --model-code, or a pickled module with --trust-pickle")
    add_model_arguments(parser)
    add_budget_arguments(parser, required=True)
    parser.add_argument("--method", choices=METHODS, default=DEFAULTS.method,
                        help="structured (remove neurons) or magnitude (unstructured L1 baseline, same non-zero count)")
    parser.add_argument("--rounds", type=positive_int, default=DEFAULTS.rounds,
                        help="prune/fine-tune rounds whose reductions compound to the target "
                             f"(default {DEFAULTS.rounds})")
    parser.add_argument("--finetune-epochs", type=_non_negative_int, default=DEFAULTS.finetune.epochs,
                        help="fine-tuning epochs after each round, data + physics loss "
                             f"(default {DEFAULTS.finetune.epochs})")
    parser.add_argument("--lr", type=float, default=None,
                        help="fine-tuning learning rate (default: chosen for each round by a learning-rate range test "
                             f"on the pruned network, {LR_TEST_LOW:g} to {LR_TEST_HIGH:g})")
    parser.add_argument("--importance", choices=CRITERIA, default=DEFAULTS.importance,
                        help="l1/l2: norm of a neuron's incoming and outgoing weights (-in/-out: one side only); "
                             "taylor: |activation x gradient| of the training loss; random: the control")
    parser.add_argument("--mode", choices=MODES, default=DEFAULTS.mode,
                        help="uniform: every hidden layer keeps the same fraction; global: rank neurons across layers")
    parser.add_argument("--round-to", type=round_to, default=None, metavar="N|auto",
                        help="make every hidden width a multiple of N (8, 16 or 32 suit SIMD and tensor cores), or "
                             "auto: each layer's multiple read from latencies measured on --backend at --batch")
    parser.add_argument("--min-width", type=positive_int, default=DEFAULTS.min_width, metavar="N",
                        help="no hidden layer falls below N neurons (default 1)")
    parser.add_argument("--fold", choices=FOLDS, default=DEFAULTS.fold,
                        help="constant folded into the next bias for a removed neuron: its mean activation on "
                             "training data (default), the activation of its bias, or none")
    parser.add_argument("--tolerance", type=float, default=None, metavar="DR2",
                        help="largest allowed drop in validation R2 versus the input model")
    parser.add_argument("--on-drop", choices=ON_DROP, default=DEFAULTS.on_drop,
                        help="when a round exceeds --tolerance: record it only (default), stop, "
                             "or roll it back and stop")
    parser.add_argument("--physics-weight", type=float, default=None,
                        help="weight of the PDE residual in fine-tuning and Taylor scores (built-in task or --physics; "
                             f"default {DEFAULTS.finetune.physics_weight})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for fine-tuning")
    add_data_arguments(parser)
    parser.set_defaults(seed=None)
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the checkpoints and history")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = budget_of(args)
    if target is not None and target.kind == "latency" and args.method == "magnitude":
        raise UserError("--method magnitude cannot meet --target-latency: masked weights keep every matrix full-size, "
                        "so the model runs no faster; prune structurally, or give magnitude a --target/--target-flops/"
                        "--widths budget")
    output_dir(args.out)
    require_file(args.checkpoint, "model file", "check the path of the checkpoint or model")
    seed = args.seed if args.seed is not None else recorded_seed(args.checkpoint)
    dataset = dataset_of(args, seed)
    checkpoint = open_model_file(args, args.checkpoint, dataset.in_features)
    if checkpoint.variant == "magnitude":
        raise UserError(f"{args.checkpoint} is a magnitude-pruned (masked) checkpoint; "
                        "prune its dense original instead")
    print_architecture(checkpoint.network)
    finetune = dataclasses.replace(DEFAULTS.finetune, epochs=args.finetune_epochs,
                                   lr=DEFAULTS.finetune.lr if args.lr is None else args.lr,
                                   physics_weight=physics_weight(args, dataset, DEFAULTS.finetune.physics_weight),
                                   seed=seed, device=args.device)
    config = PruneConfig(
        target=target, method=args.method, rounds=args.rounds, finetune=finetune,
        importance=args.importance, mode=args.mode, min_width=args.min_width, round_to=args.round_to,
        fold=args.fold, tolerance=args.tolerance, on_drop=args.on_drop, seed=seed,
        backend=args.backend, batch=args.batch, lr_test=args.lr is None,
    )
    metadata = {**dataset_metadata(dataset), "variant": checkpoint.variant}
    with measuring(config.measured_on) as measurer:
        result = prune(checkpoint.network, dataset, config, args.out, metadata=metadata, measurer=measurer)
    dense, final = result.stages[0], result.final
    print(f"{config.method} pruning: {result.plan.describe()}")
    if config.method == "magnitude":
        print(f"stored {final.params:,} parameters, {final.nonzero_params:,} non-zero "
              f"(target {result.target_nonzero:,} non-zero)")
    for stage in result.stages:
        residual = "n/a" if stage.val_residual_rms is None else f"{stage.val_residual_rms:.4g}"
        note = " (rolled back)" if stage.rolled_back else ""
        if stage.finetune_lr is not None:
            note += f", fine-tuned at lr {stage.finetune_lr:.2g} (kept epoch {stage.finetune_kept_epoch})"
        print(f"  stage {stage.stage}: widths {list(stage.widths)}, {stage.nonzero_params:,} non-zero params, "
              f"val R2 {stage.val_r2:.4f}, rel L2 {stage.val_rel_l2:.4f}, residual RMS {residual}, "
              f"{stage.wall_s:.1f} s{note}")
    if result.achieved_latency is not None:
        print(f"latency on {target.backend} at batch {target.batch}: target {target.latency_ratio:.3f} of dense, "
              f"achieved {result.achieved_latency.describe()}")
    if result.stopped:
        missed = "; the final model misses the target" if final.stage < config.rounds else ""
        print(f"warning: {result.stopped}{missed}")
    print(f"final val R2 {final.val_r2:.4f} (input {dense.val_r2:.4f}) in {result.wall_s:.0f} s -> "
          f"{args.out}/{config.method}.safetensors, history.json, history.csv")
    return 0
