"""`spinn-export run`: the whole pipeline, on the built-in SPINN or on the user's own model, resumable."""
from __future__ import annotations

import argparse
from pathlib import Path

from spinn_export.cli import (
    add_accuracy_budget,
    add_budget_arguments,
    add_data_arguments,
    add_model_arguments,
    budget_of,
    output_dir,
    round_to,
)
from spinn_export.errors import UserError
from spinn_export.pipeline.config import RunConfig, UserModel, default_round_to
from spinn_export.pipeline.job import format_summary
from spinn_export.pipeline.job import run as run_pipeline
from spinn_export.task.data import parse_columns

STAGE = 8
MODEL_FLAGS = ("data", "inputs", "targets", "physics", "activation", "trust_pickle", "model_code",
               "output")  # only with --model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="the main job: train (or import yours), prune, export, benchmark, report and gate",
        description="Train the dense SPINN (or import your model with --model, trained on --data, held to --physics), "
                    "prune it structurally and by magnitude (default: 68.5% of the parameters), export and verify "
                    "every artifact, benchmark the CPU (and CUDA) backends, write the report and run the gate. "
                    "Stages whose inputs and outputs are unchanged are not redone.")
    parser.add_argument("--model", type=Path, metavar="FILE",
                        help="your trained network: a .pt2 from torch.export (recommended), a state_dict with "
                             "--model-code, a whole module with --trust-pickle, or a bare state_dict (read as a plain "
                             "MLP); needs --data, --inputs and --targets")
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_budget_arguments(parser, required=False)
    parser.add_argument("--round-to", type=round_to, metavar="N|auto",
                        help="every hidden width a multiple of N (default 32 for the built-in SPINN; "
                             "none for --model), or auto: each layer's multiple read from latencies measured on "
                             "--backend at --batch")
    add_accuracy_budget(parser)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer epochs, formats, backends and batches")
    parser.add_argument("--out", type=Path, default=RunConfig.out, help="output directory (default %(default)s)")
    parser.add_argument("--policy", type=Path, help="gate policy TOML with [tool.spinn_export.gate] "
                        "(default: ./pyproject.toml's, else structured >= 1.0x dense on ort-cpu at the largest batch)")
    parser.set_defaults(func=run)


def user_model(args: argparse.Namespace) -> UserModel | None:
    """--model and the flags that describe it; those flags without --model are a mistake, not ignored."""
    if args.model is None:
        given = [f"--{name.replace('_', '-')}" for name in MODEL_FLAGS if getattr(args, name) not in (None, False)]
        if given:
            raise UserError(f"{', '.join(given)} only apply with --model FILE (the built-in job trains its own SPINN)")
        return None
    if not (args.data and args.inputs and args.targets):
        raise UserError("--model needs the data it was trained on: --data FILE --inputs COLS --targets COLS")
    return UserModel(model=args.model, data=Path(args.data), inputs=tuple(parse_columns(args.inputs)),
                     targets=tuple(parse_columns(args.targets)), physics=args.physics, activation=args.activation,
                     trust_pickle=args.trust_pickle, model_code=args.model_code, output=args.output)


def run(args: argparse.Namespace) -> int:
    model = user_model(args)
    config = RunConfig(out=output_dir(args.out), quick=args.quick, seed=args.seed, policy=args.policy, model=model,
                       target=budget_of(args) or RunConfig.target,
                       round_to=args.round_to if args.round_to is not None else default_round_to(model),
                       backend=args.backend, batch=args.batch, max_r2_drop=args.max_r2_drop)
    outcome = run_pipeline(config)
    print(format_summary(outcome))
    return outcome.gate.exit_code
