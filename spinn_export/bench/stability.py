"""Noise flagged where it is read: whether a paired figure is steady enough to rank deployments by.

Pure statistics on figures already measured (a median, its CI, each process's own median), so the verdict is tested on
synthetic samples and the same test judges every paired figure the suite writes (`bench.paired`, the fastest
deployment). The figure itself is never changed or dropped: an unstable case is reported as measured, flagged, with
its reason.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinn_export.defaults import UNSTABLE_SPREAD


@dataclass(frozen=True)
class Stability:
    """Whether a paired figure is steady enough to read as a difference between deployments (docs/bench.md).

    Two tests, at one threshold (a spread either side of the median, as a fraction of it); either flags the case:

    * the CI's half-width. It resamples processes first, so a process-level effect widens it;
    * half the range of the fresh processes' own medians. The pooled median and its CI are robust to one odd process
      (over 4 processes the bootstrap draws a given one twice or more in only about a quarter of its resamples), so a
      process that ran through a burst of load can be 15 % off while the CI stays narrow: the processes then disagree
      about the figure, and a reader should know. A process median merely outside the CI was not chosen as the test:
      with a +-1 % CI, the ordinary 2 % between processes would flag nearly every case, and "unstable" would stop
      meaning "a spread you could mistake for a difference between deployments".
    """

    ci_half_width: float
    process_spread: float | None  # None: one process, nothing to disagree
    threshold: float = UNSTABLE_SPREAD

    @property
    def reasons(self) -> tuple[str, ...]:
        reasons = []
        if not self.ci_half_width <= self.threshold:  # NaN (no CI) is not a stable figure either
            reasons.append(f"its 95 % CI spans {_pm(self.ci_half_width, 1)} of the median (threshold "
                           f"{_pm(self.threshold)})")
        if self.process_spread is not None and self.process_spread > self.threshold:
            reasons.append(f"its processes' own medians spread {_pm(self.process_spread, 1)} of the median "
                           f"(threshold {_pm(self.threshold)})")
        return tuple(reasons)

    @property
    def unstable(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """What bench.json records beside the figure: the verdict, its reason (None when stable) and its inputs."""
        return {"unstable": self.unstable, "unstable_reason": "; ".join(self.reasons) or None,
                "process_spread": self.process_spread, "unstable_threshold": self.threshold}


def stability(median: float, low: float, high: float, process_medians: Sequence[float] = (),
              threshold: float = UNSTABLE_SPREAD) -> Stability:
    """The `Stability` of a figure `median` [`low`, `high`] whose processes' own medians are `process_medians`."""
    half_width = (high - low) / 2.0 / median if median > 0 else float("nan")
    spread = ((max(process_medians) - min(process_medians)) / 2.0 / median
              if len(process_medians) > 1 and median > 0 else None)
    return Stability(half_width, spread, threshold)


def process_medians(ratios_by_process: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """Each process's own median ratio, in the order measured."""
    return tuple(float(np.median(ratios)) for ratios in ratios_by_process)


def _pm(fraction: float, digits: int = 0) -> str:
    """±10 %; the measured side with a decimal, so ±10.4 % never reads as the threshold it exceeds."""
    return f"±{fraction * 100:.{digits}f} %"
