"""The `spinn-export` command: one sub-command module per pipeline stage.

Every module in this package with a `register(subparsers)` function is a sub-command, listed
in pipeline order by its `STAGE`; adding a command means adding one file, named after the command
(`-` as `_`, and a trailing `_` where the name is a Python keyword: `import_.py` is `import`).
User errors print one line and exit non-zero; tracebacks are for bugs only.

Only the chosen command's module is imported, and this module imports torch, pandas and the stages
only inside the helpers that need them: importing every command pulled in torch, pandas, matplotlib
and pytest, seconds before even a usage error, where `gate` or `report` need none of torch. The full list
is built only for `spinn-export --help` and unknown commands.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from spinn_export.defaults import LATENCY_BACKEND, LATENCY_BATCH
from spinn_export.errors import SettingError, UserError
from spinn_export.model.spec import ACTIVATIONS
from spinn_export.prune.target import Target, widths_target

if TYPE_CHECKING:
    from spinn_export.model.checkpoint import Checkpoint
    from spinn_export.model.network import Network
    from spinn_export.task.data import Dataset

MODEL_CODE_HELP = ("your model's code: a function in a file (PATH.py:FACTORY) or an importable module (module:FACTORY) "
                   "returning the torch.nn.Module the state_dict FILE belongs to")
TRUST_PICKLE_HELP = "allow unpickling a whole module (or a pickled payload of a .pt2); this runs code from the file"
ACTIVATION_HELP = "the activation of a bare state_dict, which does not record it (default tanh)"


def command_names() -> dict[str, str]:
    """Command name -> module name, read from the package's files without importing any of them."""
    return {info.name.rstrip("_").replace("_", "-"): info.name for info in pkgutil.iter_modules(__path__)}


def command_modules(only: str | None = None) -> list:
    """The sub-command modules in pipeline order: all of them, or only the one of command `only`."""
    names = command_names()
    chosen = [names[only]] if only in names else list(names.values())
    modules = [importlib.import_module(f"{__name__}.{name}") for name in chosen]
    return sorted((m for m in modules if hasattr(m, "register")), key=lambda m: (m.STAGE, m.__name__))


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage mistakes are user errors too: one line naming the problem, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of command `only` alone (a known name; anything else builds all of them,
    so --help and an unknown command list every command)."""
    parser = OneLineErrorParser(
        prog="spinn-export",
        description="Structured pruning, export and honest benchmarking of physics-informed MLPs.",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineErrorParser
    )
    for module in command_modules(only):
        module.register(subparsers)
    return parser


FLAGS = {"latency_ratio": "--target-latency"}  # the settings whose flag is not their name with dashes


def flag(setting: str) -> str:
    """The flag that gives a setting (`round_to` -> `--round-to`)."""
    return FLAGS.get(setting, "--" + setting.replace("_", "-"))


def user_message(exc: UserError) -> str:
    """The one line the CLI prints: a `SettingError` names its settings by their flags."""
    return exc.named(flag) if isinstance(exc, SettingError) else str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    words = list(sys.argv[1:] if argv is None else argv)
    cut = words.index("--") if "--" in words else len(words)  # what follows -- is passed through, not parsed
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(words[:cut])
    args.passthrough = words[cut + 1:]
    if "--" in words and not getattr(args, "takes_passthrough", False):
        parser.error(f"{args.command} takes no arguments after --")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"spinn-export {args.command}: error: {user_message(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"spinn-export {args.command}: interrupted; no partial file was left under a final name", file=sys.stderr)
        return 130


def _at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = _at_least(1, "a positive integer")
output_index = _at_least(0, "an output index (0, 1, ...)")  # --output N
OUTPUT_HELP = ("which output to prune for, where the model returns several (a tuple, list or dict, counted in "
               "torch.export's flattened order, from 0)")


def add_data_arguments(parser: argparse.ArgumentParser, targets_flag: str = "--targets") -> None:
    """--data/--inputs/--targets/--physics/--seed, shared by every command that touches data (`targets_flag` names
    the target columns where --targets means something else, as the sweep's budget list)."""
    group = parser.add_argument_group("data (default: the built-in Stokes task)")
    group.add_argument("--data", metavar="FILE", help="your own data: .csv, .parquet or .npz")
    group.add_argument("--inputs", metavar="COLS", help="comma-separated input column names")
    group.add_argument(targets_flag, dest="targets", metavar="COLS", help="comma-separated target column names")
    group.add_argument("--physics", metavar="PATH.py:FUNCTION",
                       help="your PDE residual, a function residual(model, inputs) -> Tensor, in a file "
                            "(PATH.py:FUNCTION) or an importable module (module:FUNCTION); the tool uses its mean "
                            "square (replaces the built-in task's residual)")
    group.add_argument("--seed", type=int, default=0, help="seed for data splits and training (default 0)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model-code, --trust-pickle and --activation: how a model file that is not a spinn-export checkpoint is read
    (a .pt2 needs none of them)."""

    group = parser.add_argument_group("reading your model (a .pt2 from torch.export needs none of these)")
    group.add_argument("--model-code", metavar="PATH.py:FACTORY", help=MODEL_CODE_HELP)
    group.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    group.add_argument("--activation", choices=ACTIVATIONS, help=ACTIVATION_HELP)
    group.add_argument("--output", type=output_index, metavar="N", help=OUTPUT_HELP)


def open_model_file(args: argparse.Namespace, path: str | os.PathLike[str], in_features: int | None) -> Checkpoint:
    """The model FILE names with add_model_arguments' flags: a spinn-export checkpoint, or any form the importer
    reads, traced (where it is a module) at `in_features`, the data's input width."""
    # start-up: torch only for the commands that need it (every command imports this module)
    from spinn_export.model.importer import open_model

    return open_model(path, activation=args.activation, trust_pickle=args.trust_pickle, model_code=args.model_code,
                      in_features=in_features, output=getattr(args, "output", None))


def print_architecture(network: Network) -> None:
    """What was read, and why any group is frozen, one line each."""
    # start-up: torch only for the commands that need it (every command imports this module)
    from spinn_export.model.architecture import SOURCES

    architecture = network.architecture
    print(f"model: {architecture.describe()}, from {SOURCES[architecture.source]}", flush=True)
    for reason in architecture.frozen_reasons():
        print(f"  frozen {reason}", flush=True)


def recorded_seed(path: str | os.PathLike[str]) -> int:
    """The seed a spinn-export checkpoint was trained with (its data splits), else 0."""
    # start-up: torch only for the commands that need it (every command imports this module)
    from spinn_export.model.checkpoint import is_checkpoint, read_metadata

    if str(path).endswith(".safetensors") and Path(path).is_file():
        metadata = read_metadata(path)
        if is_checkpoint(metadata):
            return int(metadata.get("seed", "0"))
    return 0


def dataset_of(args: argparse.Namespace, seed: int) -> Dataset:
    """The data of --data/--inputs/--targets (default: the built-in task), held to --physics when given."""
    # start-up: torch only for the commands that need it (every command imports this module)
    from spinn_export.task.data import resolve_dataset
    from spinn_export.task.physics import load_physics

    physics = None if args.physics is None else load_physics(args.physics)
    return resolve_dataset(args.data, args.inputs, args.targets, seed, physics)


def physics_weight(args: argparse.Namespace, dataset: Dataset, default: float) -> float:
    """--physics-weight, refused where the data has no physics (it would silently do nothing)."""
    if dataset.physics is None and args.physics_weight:
        raise UserError("--physics-weight needs physics: no PDE is known for --data files; "
                        "give --physics PATH.py:FUNCTION or drop the flag")
    return default if args.physics_weight is None else args.physics_weight


def fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.685, got {text!r}") from None


def r2_drop(text: str) -> float:
    """--max-r2-drop: zero or a positive, finite R² change."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an R² change such as 0.01, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected zero or a positive R² change such as 0.01, got {text}")
    return value


def add_accuracy_budget(parser: argparse.ArgumentParser) -> None:
    """--max-r2-drop, shared by export and run: what low-precision files may lose, and what NNCF's accuracy control
    holds its int8 model to."""
    # start-up: torch only for the commands that need it (every command imports this module)
    from spinn_export.export.parity import DEFAULT_MAX_R2_DROP

    parser.add_argument("--max-r2-drop", type=r2_drop, default=DEFAULT_MAX_R2_DROP, metavar="D",
                        help="accuracy budget of low-precision formats: the most validation R² they may lose against "
                             "the float32 model (NNCF's int8 is quantised to meet it); those over it are marked "
                             f"(within_budget: false) and never chosen (default {DEFAULT_MAX_R2_DROP})")


def round_to(text: str) -> int | str:
    """--round-to: a positive integer, or `auto` (each layer's multiple read from measured latencies)."""
    # start-up: torch only for the commands that need it (every command imports this module)
    from spinn_export.prune.latency import AUTO

    return AUTO if text == AUTO else positive_int(text)


def add_budget_arguments(parser: argparse.ArgumentParser, required: bool) -> argparse._MutuallyExclusiveGroup:
    """Exactly one pruning budget (--target, --target-flops, --target-latency or --widths), shared by prune and run,
    with --backend and --batch (where latency is measured) and --round-to."""
    # start-up: torch only for the commands that need it (every command imports this module)
    from spinn_export.prune.latency import AUTO

    budget = parser.add_mutually_exclusive_group(required=required)
    budget.add_argument("--target", type=fraction, metavar="R", help="fraction of parameters to remove, e.g. 0.685")
    budget.add_argument("--target-flops", type=fraction, metavar="R", help="fraction of FLOPs per sample to remove")
    budget.add_argument("--target-latency", type=fraction, metavar="R",
                        help="fraction of dense's latency to keep, measured on --backend at --batch "
                             "(0.4 = 2.5x faster)")
    budget.add_argument("--widths", help="explicit final widths: one per prunable group, e.g. 256,256,256,128, or "
                                         "for named groups, e.g. blocks.0=128,u=96 (the rest keep theirs)")
    parser.add_argument("--backend", metavar="NAME",
                        help=f"where --target-latency and --round-to {AUTO} measure (default {LATENCY_BACKEND})")
    parser.add_argument("--batch", type=positive_int, metavar="B",
                        help=f"rows per call they measure at (default {LATENCY_BATCH})")
    return budget


def budget_of(args: argparse.Namespace) -> Target | None:
    """The budget given by add_budget_arguments' flags, or None when none was given. Where latency will be measured
    (a latency target, --round-to auto), the backend is checked now, before any work."""
    # start-up: torch only for the commands that need it (every command imports this module)
    from spinn_export.bench.measurer import require_backend
    from spinn_export.prune.latency import AUTO

    if args.backend is not None or args.target_latency is not None or args.round_to == AUTO:
        require_backend(args.backend or LATENCY_BACKEND)
    if args.widths is not None:
        return widths_target(args.widths)
    if args.target_flops is not None:
        return Target.flops(args.target_flops)
    if args.target_latency is not None:
        return Target.latency(args.target_latency, args.backend or LATENCY_BACKEND, args.batch or LATENCY_BATCH)
    if args.target is not None:
        return Target.params(args.target)
    return None


def output_dir(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """An output directory that exists or can be made: checked before any work, and without making it."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {target} is a file, not a directory; give a directory path")
    _require_writable_below(target, flag, target)
    return target


def output_file(path: str | os.PathLike[str], example: str, flag: str = "--out") -> Path:
    """An output file path whose directory exists or can be made: checked before any work, writing nothing."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{flag} {target} is a directory; give a file path such as {target / example}")
    _require_writable_below(target.parent, flag, target)
    return target


def _require_writable_below(directory: Path, flag: str, target: Path) -> None:
    """The nearest existing ancestor of `directory` (itself included) must be a directory we may write in."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {target}: {existing} is a file, so no directory can be made there; "
                        "choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {target}: no permission to write in {existing}; choose another path")

