"""The `spinn-export` command: one sub-command module per pipeline stage.

Every module in this package with a `register(subparsers)` function is a sub-command, listed
in pipeline order by its `STAGE`; adding a command means adding one file.  User errors print
one line and exit non-zero; tracebacks are for bugs only.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from spinn_export.errors import UserError



def command_modules() -> list:
    modules = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
    return sorted((m for m in modules if hasattr(m, "register")), key=lambda m: (m.STAGE, m.__name__))


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage mistakes are user errors too: one line naming the problem, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="spinn-export",
        description="Structured pruning, export and honest benchmarking of physics-informed MLPs.",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineErrorParser
    )
    for module in command_modules():
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    cut = words.index("--") if "--" in words else len(words)  # what follows -- is passed through, not parsed
    args = parser.parse_args(words[:cut])
    args.passthrough = words[cut + 1:]
    if "--" in words and not getattr(args, "takes_passthrough", False):
        parser.error(f"{args.command} takes no arguments after --")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"spinn-export {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"spinn-export {args.command}: interrupted; no partial file was left under a final name", file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data/--inputs/--targets/--seed, shared by every command that touches data."""
    group = parser.add_argument_group("data (default: the built-in Stokes task)")
    group.add_argument("--data", metavar="FILE", help="your own data: .csv, .parquet or .npz")
    group.add_argument("--inputs", metavar="COLS", help="comma-separated input column names")
    group.add_argument("--targets", metavar="COLS", help="comma-separated target column names")
    group.add_argument("--seed", type=int, default=0, help="seed for data splits and training (default 0)")


