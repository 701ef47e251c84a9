"""A clock the tests own: calls cost known seconds plus seeded interference, so the timing and pairing code is checked
exactly however busy the machine is (real timing is measured in bench/, never asserted in tests/)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


class VirtualMachine:
    """`clock` reads virtual seconds; each call of `work(seconds)` advances it by `seconds` times (1 + an exponential
    draw of mean `noise`): interference only ever slows a call, as a neighbour's load does. `calls` counts them."""

    def __init__(self, seed: int = 0, noise: float = 0.05) -> None:
        self.now, self.calls, self.noise, self.rng = 0.0, 0, noise, np.random.default_rng(seed)

    def clock(self) -> float:
        return self.now

    def work(self, seconds: float) -> Callable[[], None]:
        def call() -> None:
            self.calls += 1
            self.now += seconds * (1.0 + (self.rng.exponential(self.noise) if self.noise else 0.0))
        return call
