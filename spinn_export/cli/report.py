"""`spinn-export report`: benchmark results, manifest and pruning history as one comparison report."""
from __future__ import annotations

import argparse

from spinn_export.cli import output_dir
from spinn_export.report.writer import build_report

STAGE = 6


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="tables (CSV, Markdown, HTML) and plots from benchmark results",
        description="Merge one or more pytest-benchmark JSON files (keyed by machine) with the exporter's manifest "
                    "and the pruning history into CSV tables, report.md and a self-contained report.html.")
    parser.add_argument("results", nargs="+", help="pytest-benchmark JSON files from the spinn-export benchmark suite")
    parser.add_argument("--manifest", help="DIR/manifest.json written by spinn-export export (artifact sizes)")
    parser.add_argument("--history", action="append", metavar="PRUNE_DIR",
                        help="the --out DIR of spinn-export prune (accuracy per stage); "
                             "repeat for structured and magnitude")
    parser.add_argument("--sweep", metavar="DIR", help="the --out DIR of spinn-export sweep (adds the Pareto section)")
    parser.add_argument("--outside-timer", metavar="FILE",
                        help="the JSON of bench/outside_timer.py --out (adds its verdict beside the suite's figure)")
    parser.add_argument("--out", required=True, help="the report directory to write, e.g. reports/NAME")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output_dir(args.out)
    paths = build_report(args.results, args.manifest, args.history, args.out, sweep=args.sweep,
                         outside_timer=args.outside_timer)
    print(f"wrote {paths.html}, {paths.markdown}, {len(paths.csvs)} CSV tables in {paths.csv_dir} "
          f"and {len(paths.pngs)} plots")
    return 0
