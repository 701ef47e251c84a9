"""`spinn-export backends`: every registered benchmark backend, whether it can run here, and why not."""
from __future__ import annotations

import argparse
import dataclasses
import json

from spinn_export.bench.backends import backends, broken_backends

STAGE = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backends", help="list the registered benchmark backends and whether each can run here",
        description="Backends are plug-ins in the entry-point group spinn_export.backends; another package adds one "
                    "with an entry point. Each line says what it consumes and, when it cannot run here, why.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def listing() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for backend in backends().values():
        reason = backend.unavailable_reason()
        rows.append({
            "name": backend.name, "device": backend.device, "format": backend.format, "runtime": backend.runtime,
            "precisions": list(backend.precisions), "available": reason is None, "reason": reason,
            "slow": backend.slow, "description": backend.description,
            "options": {f.name: f.default for f in dataclasses.fields(backend.config)},
        })
    for name, reason in broken_backends().items():
        rows.append({"name": name, "device": None, "format": None, "runtime": None, "precisions": [],
                     "available": False, "reason": reason, "slow": False, "description": "", "options": {}})
    return sorted(rows, key=lambda row: str(row["name"]))


def run(args: argparse.Namespace) -> int:
    rows = listing()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(str(row["name"])) for row in rows)
    for row in rows:
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items())  # type: ignore[union-attr]
        what = f"{row['device'] or '?':<4} {row['format'] or '?':<16} {'/'.join(row['precisions']) or '?':<9}"  # type: ignore[arg-type]
        state = "available" if row["available"] else f"unavailable: {row['reason']}"
        extras = "; ".join(part for part in (f"options {options}" if options else "",
                                              "slow: only by name" if row["slow"] else "") if part)
        print(f"{row['name']:<{width}}  {what}  {state}" + (f"  ({extras})" if extras else ""))
    return 0
