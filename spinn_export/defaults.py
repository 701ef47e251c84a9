"""Every default a run falls back to, in one place: the headline backend, the reference pruning, the batch sets and
which backends get the ABBA measurement. Declarations only; a default never fails a run it does not apply to (where
it names something the run does not have, the run goes on without it)."""
from __future__ import annotations

HEADLINE_BACKEND = "ort-cpu"  # where the headline speedup, the default gate and "dense float32" are read, when it ran
PAIRED_BACKENDS = ("ort-cpu", "ort-cuda")  # ABBA in fresh processes (about a minute each): the headline ones
PAIRED_VARIANT = "structured"  # whose speedups also get fresh processes, when the run has it

REFERENCE_TARGET = 0.685  # the built-in job's parameter reduction
REFERENCE_ROUND_TO = 32  # its widths in multiples of 32 keep the reference's GEMMs on full SIMD tiles

BATCHES = (1, 64, 1024, 8192)
QUICK_BATCHES = (1, 8192)
QUICK_VARIANTS = ("dense", "structured")

LATENCY_BACKEND = HEADLINE_BACKEND  # where --target-latency and --round-to auto measure
LATENCY_BATCH = 4096  # as compute-bound as 8192 for the reference's GEMMs, at half the measuring time
# How a latency table's probes are timed (bench.measurer); prune's table cache is keyed on them too.
PROBE_ANCHOR = (256, 256)  # what every probe is timed against: mid-sized, so its ratio to any probe is well measured
PROBE_ROUNDS = 9  # per chunk; each probe's CI comes with it, and a noisier machine shows as wider intervals

# Backends the main job leaves out because, at the reference's sizes, they repeat another one's figures (measured
# beside it: docs/MEASURED.md); `spinn-export bench` still runs them by default, and by name.
MAIN_JOB_LEAVES_OUT = {"ort-optimized-cpu": "ort-cpu", "exported-program-cpu": "eager-cpu"}  # -> the one it repeats

# Noise flagged where it is read (docs/bench.md, "Unstable cases"): a paired speedup whose 95 % CI, or whose fresh
# processes' medians, spread more than this fraction of its median either side is marked unstable. At +-10 % a case can
# no longer tell a 2.0x from a 2.4x, which is the size of the differences between deployments the report ranks.
UNSTABLE_SPREAD = 0.10

# The timeit cross-check (bench/crosscheck.py): medians within TIMEIT_TOLERANCE agree; a disagreement is measured again
# up to TIMEIT_REMEASURES times, and only one that every re-measurement confirms beyond TIMEIT_FAULT_BOUND, on the same
# side, fails the benchmark as a harness fault (anything less is flagged as unverified: a busy machine, not a bug).
TIMEIT_TOLERANCE = 0.10
TIMEIT_REMEASURES = 3
TIMEIT_FAULT_BOUND = 0.20
