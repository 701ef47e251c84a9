"""`spinn-export bench`: the benchmark suite that ships in the package, from any folder."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from spinn_export.bench import suite
from spinn_export.bench.options import OPTIONS, suite_settings
from spinn_export.errors import UserError
from spinn_export.files import atomic_path

STAGE = 5
SUITE_OPTIONS = [o for o in OPTIONS if o.name != "artifacts"]  # the artifacts directory is the positional argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark exported models on every backend (the pytest-benchmark suite)",
        description="Run the benchmark suite on the models of ARTIFACTS_DIR/manifest.json (every file's sha256 is "
                    "checked first), or on freshly built reference models when no directory is given. Arguments "
                    "after -- go to pytest and pytest-benchmark (e.g. -- --benchmark-autosave, "
                    "-- --benchmark-compare).")
    parser.add_argument("artifacts", nargs="?", metavar="ARTIFACTS_DIR",
                        help="a directory written by spinn-export export (default: built-in reference models)")
    for option in SUITE_OPTIONS:
        parser.add_argument(f"--{option.name}", **option.argparse_kwargs())
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="write the pytest-benchmark JSON (with the paired speedups) here, for report and gate")
    parser.add_argument("--log", type=Path, metavar="FILE",
                        help="write pytest's and pytest-benchmark's output (the long tables) to FILE, and print one "
                             "plain line per finished case instead")
    parser.set_defaults(func=run, takes_passthrough=True)


def _check_output(path: Path, option: str, example: str) -> None:
    """Refuse an output path that cannot work before minutes of benchmarking, not after."""
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory: give a file name such as {path / example}")
    if not path.parent.is_dir():
        raise UserError(f"{option} {path}: the directory {path.parent} does not exist; "
                        "create it or choose another path")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{option} {path}: the directory {path.parent} is not writable; choose another path")


class Progress:
    """One plain line per finished case on the console while pytest's own output goes to the log file: readable
    in a terminal and in a CI log alike (no progress bar, no 200-column tables)."""

    def __init__(self, console: TextIO) -> None:
        self.console, self.total, self.done = console, 0, 0
        self.skipped: dict[str, int] = {}  # reason -> cases: one line each at the end, not one per case

    def pytest_collection_finish(self, session: Any) -> None:
        self.total = len(session.items)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.done += 1
            if report.skipped and isinstance(report.longrepr, tuple):
                reason = report.longrepr[2].removeprefix("Skipped: ")
                self.skipped[reason] = self.skipped.get(reason, 0) + 1
                return
            name = report.nodeid.rsplit("::", 1)[-1]
            self.console.write(f"  [{self.done}/{self.total}] {name}: {report.outcome} ({report.duration:.1f} s)\n")
            self.console.flush()

    def pytest_sessionfinish(self) -> None:
        for reason, cases in self.skipped.items():
            self.console.write(f"  skipped {cases} case(s): {reason}\n")
        self.console.flush()


def pytest_arguments(args: argparse.Namespace) -> list[str]:
    """The suite's own pytest invocation: its config file (so the caller's pytest config does not leak in), its
    test modules, the options as --spinn-* arguments, then the user's extra arguments."""

    directory = Path(suite.__file__).parent
    words = ["-c", str(directory / "pytest.ini"), "-p", "no:cacheprovider", "-q", str(directory)]
    if args.artifacts:
        words.append(f"--spinn-artifacts={Path(args.artifacts).resolve()}")
    for option in SUITE_OPTIONS:
        words += option.pytest_args(getattr(args, option.dest))
    return words + list(args.passthrough)


def run(args: argparse.Namespace) -> int:
    values = {option.dest: getattr(args, option.dest) for option in SUITE_OPTIONS}
    suite_settings({**values, "spinn_artifacts": args.artifacts})  # every mistake is one line, before pytest starts
    words = pytest_arguments(args)
    for path, option, example in ((args.json, "--json", "bench.json"), (args.log, "--log", "bench.log")):
        if path is not None:
            _check_output(path, option, example)
    if args.json is None:
        _run_suite(words, "", args.log)
        return 0
    try:
        with atomic_path(args.json) as tmp:  # a failed run leaves no JSON, not even an empty one
            _run_suite([*words, f"--benchmark-json={tmp}"], "; no JSON was written", args.log)
    except OSError as exc:
        raise UserError(f"--json {args.json}: cannot write there ({exc.strerror or exc}); "
                        "choose another path") from None
    print(f"wrote {args.json}")
    return 0


def _run_suite(words: list[str], consequence: str, log: Path | None) -> None:
    # start-up: pytest and the suite only when it runs (`spinn-export --help` imports this module)
    import pytest

    storage = Path(".benchmarks")  # pytest-benchmark makes its default storage folder even when nothing is saved
    existed = storage.exists()
    plugins = _plugins_pytest_would_not_load()
    if not any(word.startswith("--spinn-artifacts=") for word in words):
        # start-up: pytest and the suite only when it runs (`spinn-export --help` imports this module)
        from spinn_export.pipeline.reference import ReferenceModels

        plugins.append(ReferenceModels())
    try:
        with contextlib.ExitStack() as stack:
            if log is not None:
                plugins.append(Progress(sys.stdout))
                stream = stack.enter_context(log.open("w", encoding="utf-8"))
                stack.enter_context(contextlib.redirect_stdout(stream))
                stack.enter_context(contextlib.redirect_stderr(stream))
            code = int(pytest.main(words, plugins=plugins))
    finally:
        if not existed and storage.is_dir() and not any(storage.iterdir()):
            storage.rmdir()
    where = "above" if log is None else f"in {log}"
    if log is not None:
        print(f"pytest's output and the benchmark tables: {log}")
    if code != 0:
        raise UserError(f"the benchmark suite failed (pytest exit {code}); see its output {where}{consequence}",
                        exit_code=1)


def _plugins_pytest_would_not_load() -> list[object]:
    """With plug-in autoloading off, pass the two plug-ins the suite needs explicitly (never both ways:
    registering a module twice is an error)."""
    if not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    # start-up: pytest and the suite only when it runs (`spinn-export --help` imports this module)
    import pytest_benchmark.plugin

    # start-up: pytest and the suite only when it runs (`spinn-export --help` imports this module)
    from spinn_export.bench import plugin

    return [pytest_benchmark.plugin, plugin]
