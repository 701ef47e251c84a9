"""`spinn-export sweep`: prune to several targets, measure each, and draw accuracy against measured speedup."""
from __future__ import annotations

import argparse

from spinn_export.bench.paired import PairedConfig
from spinn_export.cli import add_data_arguments, add_model_arguments, output_dir, positive_int, recorded_seed, round_to
from spinn_export.defaults import LATENCY_BACKEND, LATENCY_BATCH
from spinn_export.pipeline.executors import DEFAULT_EXECUTOR, executors
from spinn_export.pipeline.points import DataSource, parse_targets
from spinn_export.pipeline.sweep import QUICK_PAIRED_PROCESSES, SweepConfig, run_sweep
from spinn_export.prune.config import METHODS
from spinn_export.prune.latency import AUTO

STAGE = 8
TARGET_COLUMNS_FLAG = "--target-columns"  # the data's target columns; --targets is the budget list here


def _executor_help() -> str:
    found = executors()
    listed = ", ".join(name if e.unavailable_reason() is None else f"{name} (needs spinn-export[{e.extra}])"
                       for name, e in found.items())
    return f"where points are fine-tuned: {listed or 'none registered'} (default {DEFAULT_EXECUTOR})"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="prune to several targets, benchmark each paired against dense, and write the accuracy/speed Pareto front",
        description="Prune one checkpoint to each target (fine-tuning each, side by side on an executor), export every "
                    "point, measure its paired speedup over dense on this machine (one measurement at a time), and "
                    "write DIR/pareto.csv and DIR/pareto.png.")
    parser.add_argument("checkpoint", metavar="MODEL",
                        help="a spinn-export .safetensors checkpoint (dense), or your model: a .pt2 (torch.export), "
                             "a state_dict with --model-code, or a pickled module with --trust-pickle")
    add_model_arguments(parser)
    add_data_arguments(parser, targets_flag=TARGET_COLUMNS_FLAG)
    parser.set_defaults(seed=None)
    parser.add_argument("--targets", dest="budgets", required=True, metavar="LIST",
                        help="comma-separated targets: fractions of parameters to remove (0.3,0.5,0.685,0.8) and/or "
                             "latency budgets, the fraction of dense's latency to keep on --backend at --batch "
                             "(lat:0.4 = 2.5x faster; such points are fine-tuned here, one at a time, as their "
                             "pruning times)")
    parser.add_argument("--method", choices=METHODS, default="structured",
                        help="structured (default; magnitude points are added at each parameter target for "
                             "comparison) or magnitude")
    parser.add_argument("--no-magnitude", action="store_true", help="no magnitude points alongside the structured ones")
    parser.add_argument("--backend", default=LATENCY_BACKEND,
                        help=f"the backend that measures (default {LATENCY_BACKEND})")
    parser.add_argument("--batch", type=positive_int, default=LATENCY_BATCH,
                        help=f"rows per call measured (default {LATENCY_BATCH}, as prune --target-latency)")
    parser.add_argument("--quick", action="store_true",
                        help="as run --quick: 2 pruning rounds of 1 fine-tuning epoch each; measured in "
                             f"{QUICK_PAIRED_PROCESSES} fresh processes (timings still paired, CIs wider)")
    parser.add_argument("--rounds", type=positive_int, help="pruning rounds per point (default 3, quick 2)")
    parser.add_argument("--finetune-epochs", type=positive_int,
                        help="fine-tuning epochs per round (default 4, quick 1)")
    parser.add_argument("--round-to", type=round_to, metavar="N",
                        help=f"make every hidden width a multiple of N, or {AUTO} (per layer, from latencies measured "
                             "on --backend at --batch; such points are fine-tuned here, one at a time)")
    parser.add_argument("--executor", default=DEFAULT_EXECUTOR, help=_executor_help())
    parser.add_argument("--address", help="a running cluster's address for --executor dask (tcp://HOST:8786) or ray "
                                          "(HOST:6379 or auto); without it a local cluster is started and stopped")
    parser.add_argument("--workers", type=positive_int,
                        help="points fine-tuned at once here (local pool or local cluster; default: one per physical "
                             "core, at most one per point)")
    parser.add_argument("--paired-processes", type=positive_int,
                        help=f"fresh processes per paired measurement (default {PairedConfig.processes}, quick "
                             f"{QUICK_PAIRED_PROCESSES})")
    parser.add_argument("--paired-cycles", type=positive_int, default=PairedConfig.cycles,
                        help=f"ABBA cycles per process (default {PairedConfig.cycles})")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the sweep directory: pareto.csv, pareto.png, sweep.json, points/, artifacts/")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    targets = parse_targets(args.budgets)
    out = output_dir(args.out)
    seed = args.seed if args.seed is not None else recorded_seed(args.checkpoint)
    processes = QUICK_PAIRED_PROCESSES if args.quick else PairedConfig.processes
    config = SweepConfig(
        targets=targets, method=args.method, magnitude=not args.no_magnitude, backend=args.backend, batch=args.batch,
        quick=args.quick, rounds=args.rounds, finetune_epochs=args.finetune_epochs, round_to=args.round_to, seed=seed,
        executor=args.executor, address=args.address, workers=args.workers,
        paired=PairedConfig(processes=args.paired_processes or processes, cycles=args.paired_cycles),
    )
    data = DataSource.of(args.data, args.inputs, args.targets, args.physics, seed, TARGET_COLUMNS_FLAG)
    sweep = run_sweep(args.checkpoint, data, config, out, model_flags={
        "model_code": args.model_code, "trust_pickle": args.trust_pickle, "activation": args.activation})
    front = sweep.front()
    print(f"Pareto front ({len(front)} of {len(sweep.points)} points), {config.backend} batch {config.batch}:")
    for _, row in front.iterrows():
        print(f"  {row['method']} {row['target']}: {row['speedup']:.2f}x [{row['ci_low']:.2f}, {row['ci_high']:.2f}], "
              f"val R2 {row['val_r2']:.4f}")
    print(f"wrote {out}/pareto.csv, pareto.png, sweep.json")
    return 0
