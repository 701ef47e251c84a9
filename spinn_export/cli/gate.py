"""`spinn-export gate`: exit 0 when the measured speedups (and the variant's validation R²) meet the policy, 1 when
not, 2 on bad input."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from spinn_export.errors import UserError
from spinn_export.report.gate import (
    GatePolicy,
    format_rows,
    load_policy,
    parse_min_speedup,
    run_gate,
)

STAGE = 7
DEFAULT_POLICY = Path("pyproject.toml")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gate", help="check measured speedups against a policy (exit 0 pass, 1 fail, 2 bad input)",
        description="Judge the variant's speedup over dense. A minimum is judged on the paired CI's lower bound "
                    "where one was measured; with --baseline, each speedup may drop at most --max-drop relative "
                    "to the baseline's; with --max-r2-drop (or the policy's max_r2_drop) the variant may lose at most "
                    "that much validation R² against dense, read from the pruning histories. Flags override the "
                    "policy file's [tool.spinn_export.gate] table.")
    parser.add_argument("results", help="a pytest-benchmark JSON file from the spinn-export benchmark suite")
    parser.add_argument("--baseline", help="an earlier results JSON to compare speedups with")
    parser.add_argument("--policy",
                        help=f"a TOML file with a [tool.spinn_export.gate] table (default ./{DEFAULT_POLICY})")
    parser.add_argument("--variant", help="the variant judged against dense (default: the policy's, else structured)")
    parser.add_argument("--min-speedup", action="append", metavar="BACKEND:BATCH:X", type=str,
                        help="a minimum speedup, e.g. ort-cpu:8192:1.5; repeatable; replaces the policy file's rules")
    parser.add_argument("--max-drop", type=float, metavar="FRACTION",
                        help="largest allowed drop of each speedup relative to --baseline's, e.g. 0.10")
    parser.add_argument("--max-r2-drop", type=float, metavar="D",
                        help="most validation R² the variant may lose against dense, e.g. 0.01 (read from the pruning "
                             "histories; without one, exit 2)")
    parser.add_argument("--history", action="append", metavar="DIR",
                        help="a pruning --out DIR (or its history.json) holding the variant's and dense's validation "
                             "R²; repeatable (default: the main job's prune-*/ beside RESULTS)")
    parser.set_defaults(func=run)


def resolve_policy(args: argparse.Namespace) -> GatePolicy:
    """The policy file's table (if any), then the flags on top of it."""
    path = Path(args.policy) if args.policy else DEFAULT_POLICY
    policy = load_policy(path) if (args.policy or path.is_file()) else None
    if args.policy and policy is None:
        raise UserError(f"{path} has no [tool.spinn_export.gate] table: add one or give the rules as flags")
    policy = policy or GatePolicy()
    changes: dict[str, object] = {}
    if args.variant:
        changes["variant"] = args.variant
    if args.min_speedup:
        changes["rules"] = tuple(parse_min_speedup(text) for text in args.min_speedup)
    if args.max_drop is not None:
        changes["max_drop"] = args.max_drop
    if args.max_r2_drop is not None:
        changes["max_r2_drop"] = args.max_r2_drop
    return dataclasses.replace(policy, **changes)


def r2_required(args: argparse.Namespace) -> bool:
    """Whether a results file without R² is unusable input for the accuracy rule: yes when the budget or the histories
    were asked for (--max-r2-drop, --history, --policy); a budget that came only with ./pyproject.toml is skipped,
    with the reason printed, on results that have no pruning history (a bare benchmark run)."""
    return bool(args.max_r2_drop is not None or args.history or args.policy)


def run(args: argparse.Namespace) -> int:
    policy = resolve_policy(args)
    outcome = run_gate(args.results, policy, args.baseline, args.history, require_r2=r2_required(args))
    if policy.max_drop is not None and args.baseline is None:
        print(f"max drop {policy.max_drop:g} not checked: no --baseline given")
    print(format_rows(outcome.rows))
    for note in outcome.notes:  # after the rows, before the verdict: what the verdict stands on (an unstable case)
        print(note)
    verdict = ("passed" if outcome.passed
               else f"FAILED: {int((outcome.rows['result'] != 'pass').sum())} rule(s) fall short")
    print(f"gate {verdict} ({policy.variant} vs dense)")
    return outcome.exit_code
