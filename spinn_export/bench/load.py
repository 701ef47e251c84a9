"""The load the machine carried while a case was measured, recorded beside the case so a reader sees a busy machine.

A figure measured while other work held the cores is not wrong, but it is not the quiet machine's either, and the
reader of a report cannot tell the two apart from the figure alone. So each case records, over the interval it was
timed (`start_interval`, then `Interval.sample`):

* `loadavg`: the kernel's 1-minute load average at the end (runnable and uninterruptible tasks, ours included),
  beside `cpus`, the CPUs the system has: a load above the CPU count means tasks waited for a core;
* `others`: the share of all CPUs' time spent busy on work other than this process tree (the suite, its fork server
  and fresh processes): the neighbours' load, which the load average mixes with ours;
* `steal`: the share the hypervisor gave to other guests while this machine's vCPUs wanted to run.

The shares come from `/proc/stat` and `/proc/<pid>/stat` (Linux); where they cannot be read they are None, and the
load average alone is recorded (None too where the platform has none). Reading them costs a few hundred microseconds,
once before and once after a case, never inside a timed block.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's unit of CPU time


@dataclass(frozen=True)
class Counters:
    """Cumulative CPU time at one moment, in clock ticks: all CPUs' total, idle (with I/O wait), steal, and this
    process tree's own (its live members, plus their reaped children's)."""

    wall: float
    total: int
    idle: int
    steal: int
    ours: int


@dataclass(frozen=True)
class LoadSample:
    """The machine's load over one measured interval (module docstring); None: not readable here."""

    seconds: float
    loadavg: float | None
    cpus: int
    others: float | None
    steal: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_line(text: str) -> tuple[int, int, int]:
    """(total, idle + iowait, steal) ticks from /proc/stat's aggregate `cpu` line (guest time is already in user)."""
    fields = [int(v) for v in text.split("\n", 1)[0].split()[1:]]
    fields += [0] * (8 - len(fields))
    return sum(fields[:8]), fields[3] + fields[4], fields[7]


def _tree_ticks(root: int) -> int | None:
    """utime + stime + cutime + cstime of `root` and its live descendants: a fresh process that has exited is counted
    through its parent's cutime/cstime once reaped."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(v) for v in fields[11:15])
    if root not in ticks:
        return None
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in members]
        members.update(children)
        frontier.extend(children)
    return sum(ticks[pid] for pid in members)


def read_counters() -> Counters | None:
    """The counters now, or None where /proc cannot be read (not Linux, or a restricted container)."""
    try:
        total, idle, steal = _cpu_line((PROC / "stat").read_text())
        ours = _tree_ticks(os.getpid())
    except (OSError, ValueError, IndexError):
        return None
    return None if ours is None else Counters(time.monotonic(), total, idle, steal, ours)


def between(start: Counters | None, end: Counters | None, wall_seconds: float,
            loadavg: float | None, cpus: int) -> LoadSample:
    """The shares over the interval from `start` to `end` (None where either is missing or no CPU time passed)."""
    if start is None or end is None or end.total <= start.total:
        return LoadSample(wall_seconds, loadavg, cpus, None, None)
    total = end.total - start.total
    busy = total - (end.idle - start.idle) - (end.steal - start.steal)
    others = min(1.0, max(0.0, (busy - (end.ours - start.ours)) / total))
    return LoadSample(wall_seconds, loadavg, cpus, others, (end.steal - start.steal) / total)


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class Interval:
    """The start of a measured interval (`start_interval`); `sample()` is the load from then to now."""

    counters: Counters | None
    began: float

    def sample(self) -> LoadSample:
        return between(self.counters, read_counters(), time.monotonic() - self.began, _loadavg(), os.cpu_count() or 1)


def start_interval() -> Interval:
    return Interval(read_counters(), time.monotonic())


def combined(samples: Sequence[LoadSample]) -> LoadSample:
    """Several intervals as one (a case timed in the matrix, then in fresh processes): shares weighted by each
    interval's length, the highest load average."""
    seconds = sum(s.seconds for s in samples)

    def weighted(values: list[tuple[float | None, float]]) -> float | None:
        known = [(v, w) for v, w in values if v is not None]
        weight = sum(w for _, w in known)
        return sum(v * w for v, w in known) / weight if known and weight > 0 else None

    loads = [s.loadavg for s in samples if s.loadavg is not None]
    return LoadSample(seconds, max(loads) if loads else None, max(s.cpus for s in samples),
                      weighted([(s.others, s.seconds) for s in samples]),
                      weighted([(s.steal, s.seconds) for s in samples]))


def load_text(load: dict[str, Any]) -> str:
    """The machine's load over a measurement (`LoadSample.to_dict`, as bench.json holds it), as one clause."""
    parts = [f"load average {load['loadavg']:.1f} on {load['cpus']} CPUs" if load.get("loadavg") is not None else "",
             f"{load['others']:.0%} of the CPU time to other processes" if load.get("others") is not None else "",
             f"{load['steal']:.0%} stolen by the hypervisor" if (load.get("steal") or 0) >= 0.005 else ""]
    return "; ".join(p for p in parts if p) or "load not readable here"
