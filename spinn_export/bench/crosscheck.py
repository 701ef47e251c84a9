"""The harness's self-check against an outside timer: measure again on disagreement, then flag; fail only on a fault.

The suite's median and an independent timer's (suite/test_timeit.py) should agree within `TIMEIT_TOLERANCE`. On a
shared machine they sometimes do not, for two very different reasons:

* the machine was busy: a burst of load lands on one series more than the other, and the disagreement changes sign
  and size from one measurement to the next; re-measured, it mostly vanishes;
* the harness distorts the timing (a copy per call, fixture overhead, a wrong timer): it adds (or hides) work in
  every call, so the disagreement has one sign and about one size however often it is measured, busy machine or not.

So a disagreement is measured again, up to `TIMEIT_REMEASURES` times, with the two timers' calls alternating
suite, timer, timer, suite (ABBA: the order of the two calls and the machine's slow drift cancel, which the first
measurement, always timer-then-suite, cannot do). The check

* agrees when any measurement agrees within the tolerance (a harness that adds work never produces agreeing medians);
* finds a harness fault only when every re-measurement disagrees on the same side by more than `TIMEIT_FAULT_BOUND`
  (twice the tolerance): a distortion that persists, with a consistent sign and size, beyond what load was seen to
  produce (+23.6 % once on a busy machine, not repeated). Only this fails the benchmark;
* is unverified otherwise: recorded with every figure and shown in the report and console as a noisy cross-check, and
  the job goes on. A busy machine is a fact about the run, not a fault of the harness or of the user's model.

Pure: the measuring is handed in (`remeasure`), so the decision is tested with a fake measurer.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spinn_export.defaults import TIMEIT_FAULT_BOUND, TIMEIT_REMEASURES, TIMEIT_TOLERANCE

AGREES = "agrees"
AGREES_REMEASURED = "agrees on re-measurement"
UNVERIFIED = "unverified: the machine was too noisy to confirm"
DISTORTS = "harness fault"

Medians = tuple[float, float]  # (the suite's median, the independent timer's), seconds per call


@dataclass(frozen=True)
class CrossCheck:
    """Every measurement of one case (the first, then the re-measurements) and what they show."""

    attempts: tuple[Medians, ...]
    verdict: str
    tolerance: float
    fault_bound: float

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(suite / reference for suite, reference in self.attempts)

    @property
    def failed(self) -> bool:
        return self.verdict == DISTORTS

    @property
    def flagged(self) -> bool:
        return self.verdict == UNVERIFIED

    def describe(self, case: str) -> str:
        """One line for the console and the failure message, with both figures of the last measurement."""
        suite, reference = self.attempts[-1]
        ratios = ", ".join(f"{r - 1.0:+.1%}" for r in self.ratios)
        line = (f"{case}: the suite's median {suite * 1e6:.1f} us against timeit's {reference * 1e6:.1f} us; "
                f"suite / timeit {ratios} over {len(self.attempts)} measurement(s) (tolerance {self.tolerance:.0%})")
        if self.failed:
            return (f"{line}: every re-measurement off by more than {self.fault_bound:.0%} on the same side: the "
                    "harness distorts the timing")
        return f"{line}: {self.verdict}"

    def to_dict(self) -> dict[str, Any]:
        """The benchmark's extra_info: the first measurement's figures, every ratio and the verdict."""
        suite, reference = self.attempts[0]
        return {"reference_median": reference, "ratio": suite / reference, "ratios": list(self.ratios),
                "remeasured": [list(a) for a in self.attempts[1:]], "verdict": self.verdict,
                "flagged": self.flagged, "tolerance": self.tolerance, "fault_bound": self.fault_bound}


def cross_check(first: Medians, remeasure: Callable[[], Medians], tolerance: float = TIMEIT_TOLERANCE,
                fault_bound: float = TIMEIT_FAULT_BOUND, remeasures: int = TIMEIT_REMEASURES) -> CrossCheck:
    """Judge `first`, calling `remeasure` (ABBA-ordered medians) up to `remeasures` times while they disagree."""
    attempts = [first]

    def off(medians: Medians) -> float:
        return medians[0] / medians[1] - 1.0

    if abs(off(first)) < tolerance:
        return CrossCheck(tuple(attempts), AGREES, tolerance, fault_bound)
    for _ in range(remeasures):
        attempts.append(remeasure())
        if abs(off(attempts[-1])) < tolerance:
            return CrossCheck(tuple(attempts), AGREES_REMEASURED, tolerance, fault_bound)
    again = [off(a) for a in attempts[1:]]
    persistent = bool(again) and (all(d > fault_bound for d in again) or all(d < -fault_bound for d in again))
    return CrossCheck(tuple(attempts), DISTORTS if persistent else UNVERIFIED, tolerance, fault_bound)
