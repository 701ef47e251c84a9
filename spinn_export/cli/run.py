"""`spinn-export run`: the whole pipeline on the built-in default, resumable."""
from __future__ import annotations

import argparse
from pathlib import Path

from spinn_export.pipeline.job import RunConfig, format_summary, run as run_pipeline

STAGE = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="the main job: train, prune, export, benchmark, report and gate the built-in SPINN",
        description="Train the dense SPINN (or reuse it), prune it to 68.5%% structurally and by magnitude, "
                    "export and verify every artifact, benchmark the CPU (and CUDA) backends, write the report "
                    "and run the gate. Stages whose outputs exist and match are not redone.")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer epochs, formats, backends and batches")
    parser.add_argument("--out", type=Path, default=RunConfig.out, help="output directory (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", type=Path, help="gate policy TOML with [tool.spinn_export.gate] "
                        "(default: ./pyproject.toml's, else structured >= 1.0x dense on ort-cpu at the largest batch)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    outcome = run_pipeline(RunConfig(out=args.out, quick=args.quick, seed=args.seed, policy=args.policy))
    print(format_summary(outcome))
    return outcome.gate.exit_code
