"""The outside timer (`spinn_export.bench.outside`): the main job's fastest deployment and dense float32 timed with the
runtimes' own tools (OpenVINO's benchmark_app, a plain ONNX Runtime loop), outside the suite's harness, in alternating
rounds, beside the suite's paired figure from the same run's bench.json.

    python bench/outside_timer.py RUN_DIR [--batch 8192] [--rounds 3] [--seconds 5] [--threads 2] [--out FILE]

RUN_DIR is a main job's --out folder (its bench.json and artifacts/); or give --results FILE --artifacts DIR. It
prints each round, the ratios and the verdict ("agree within 15 %" or "do not agree"), and with --out writes them as
JSON, which `spinn-export report --outside-timer FILE` shows. A benchmark, not a test: named outside `test_*.py` so
`pytest bench` does not collect it, and it never fails on a disagreement (exit 0; a bad input exits 2).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from spinn_export.bench.options import manifest_models
from spinn_export.bench.outside import (
    HINTS,
    OPENVINO,
    TOLERANCE,
    benchmark_app,
    deployment_of,
    ort_loop,
    verdict,
)
from spinn_export.bench.record import OUTSIDE_SCHEMA, SPINN_KEY, BenchRecord
from spinn_export.errors import UserError
from spinn_export.files import write_json
from spinn_export.hardware import cpu_model


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="a main job's --out folder (bench.json, artifacts/)")
    parser.add_argument("--results", type=Path, help="the suite's JSON (default RUN/bench.json)")
    parser.add_argument("--artifacts", type=Path, help="the exporter's folder (default RUN/artifacts)")
    parser.add_argument("--batch", type=int, help="the batch to time (default: the largest the suite measured)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per tool per round (default 5)")
    parser.add_argument("--threads", type=int, help="threads (default: the suite's, from the results)")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    results_path = args.results or (args.run / "bench.json" if args.run else None)
    artifacts = args.artifacts or (args.run / "artifacts" if args.run else None)
    if results_path is None or artifacts is None:
        raise UserError("give a main job's folder, or --results FILE and --artifacts DIR")
    if not results_path.is_file():
        raise UserError(f"{results_path}: no results file; give the bench.json of a main job (--results)")
    try:
        results = json.loads(results_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{results_path} is not JSON ({exc.msg}): give the suite's bench.json") from None
    spinn = BenchRecord.from_dict(results.get(SPINN_KEY) or {}, results_path)
    deployment = deployment_of(spinn.fastest, manifest_models(artifacts), args.batch)
    threads = args.threads or int(spinn.threads or 2)
    tools = ({f"benchmark_app -hint {hint}": (lambda hint=hint: benchmark_app(
        deployment.file, deployment.batch, deployment.in_features, threads, hint, args.seconds)) for hint in HINTS}
        if deployment.backend == OPENVINO else {"onnxruntime loop": lambda: ort_loop(
            deployment.file, deployment.batch, deployment.in_features, threads, args.seconds)})
    rounds = []
    for index in range(args.rounds):
        dense = ort_loop(deployment.dense_file, deployment.batch, deployment.in_features, threads, args.seconds)
        timed = {tool: run() for tool, run in tools.items()}
        rounds.append({"dense_onnxruntime_s": dense, "deployment_s": timed})
        print(f"round {index + 1}: dense float32, plain onnxruntime loop {dense * 1e3:.3f} ms; " + "; ".join(
            f"{deployment.variant} by {tool} {seconds * 1e3:.3f} ms ({dense / seconds:.2f}x)"
            for tool, seconds in timed.items()))
    verdicts = {tool: verdict([r["dense_onnxruntime_s"] / r["deployment_s"][tool] for r in rounds],
                              deployment.suite_speedup) for tool in tools}
    return {**OUTSIDE_SCHEMA.stamp(), "kind": "outside-timer", "machine": cpu_model(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "results": str(results_path),
            "batch": deployment.batch, "variant": deployment.variant, "backend": deployment.backend,
            "file": deployment.file.name, "dense_file": deployment.dense_file.name, "threads": threads,
            "seconds": args.seconds, "rounds": rounds, "tolerance": TOLERANCE,
            "suite": {"speedup": deployment.suite_speedup, "ci_low": deployment.suite_ci[0],
                      "ci_high": deployment.suite_ci[1]},
            "tools": {tool: {"ratio": v.ratio, "difference": v.difference, "agree": v.agree, "verdict": v.text,
                             "ratios": [r["dense_onnxruntime_s"] / r["deployment_s"][tool] for r in rounds]}
                      for tool, v in verdicts.items()},
            "agree": all(v.agree for v in verdicts.values())}


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        if args.rounds < 1 or args.seconds <= 0:
            raise UserError(f"--rounds must be at least 1 and --seconds positive, got {args.rounds} and {args.seconds}")
        result = measure(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    suite = result["suite"]
    for tool, entry in result["tools"].items():
        print(f"{result['variant']} on {result['backend']} at batch {result['batch']}: {tool} {entry['ratio']:.2f}x "
              f"(rounds {', '.join(f'{r:.2f}' for r in entry['ratios'])}) against the suite's paired "
              f"{suite['speedup']:.2f}x [{suite['ci_low']:.2f}, {suite['ci_high']:.2f}]: {entry['difference']:+.0%}, "
              f"they {entry['verdict']}")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
