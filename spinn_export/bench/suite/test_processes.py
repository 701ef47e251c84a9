"""More processes for the latency matrix's paired speedups: after the whole matrix (module order), each
backend's cases of the `--paired-variants` (default: structured, the headline) are timed again, with the
same interleaved rounds, in `--processes` - 1 fresh processes, one at a time, and each such case's speedup
pools all of its processes (`session.record_interleaved`). The other variants keep their single-process
figure, recorded as such (`processes: 1`): the masked and CSR baselines' ~1x and ~0.2x need no repeat, and
timing them in every process would cost minutes.

Why: one process's figure does not repeat. What differs between processes (where the weights landed in
memory, the machine's load that minute) is constant within one, so a single process's CI is narrow and
can exclude the next run's figure. Fresh processes minutes later sample exactly that, and the pooled CI
resamples processes first. Each fresh process spends about `FRESH_SECONDS` per case, never fewer than
the matrix's minimum rounds.
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from spinn_export.bench.backends import get_backend
from spinn_export.bench.paired import interleaved_ratios
from spinn_export.bench.session import SuiteState, record_interleaved
from spinn_export.bench.suite.test_latency import MIN_ROUNDS

FRESH_SECONDS = 0.15  # per case and fresh process: small batches get hundreds of rounds, batch 8192 its minimum


def test_fresh_process_rounds(spinn_backend: str, spinn_session: SuiteState) -> None:
    settings = spinn_session.settings
    if settings.processes < 2:
        pytest.skip("--processes 1: the speedups come from the latency matrix's own process only")
    cases = {(variant, batch): case for (backend, batch, variant), case in spinn_session.interleaved.items()
             if backend == spinn_backend and variant in settings.paired_variants}
    if not cases:
        reason = (get_backend(spinn_backend).unavailable_reason()
                  or f"no case of --paired-variants ({', '.join(settings.paired_variants) or 'none'}) was paired with "
                     "dense in the latency matrix")
        pytest.skip(f"{spinn_backend}: {reason}")
    rounds = {key: max(MIN_ROUNDS, min(len(case.ratios_by_process[0]), math.ceil(FRESH_SECONDS / case.round_seconds)))
              for key, case in cases.items()}
    first = next(iter(cases.values()))
    candidates = list({case.candidate.name: case.candidate for case in cases.values()}.values())
    collected = interleaved_ratios(spinn_backend, first.baseline, candidates, rounds, settings.processes - 1,
                                   settings.threads, settings.backend_configs.get(spinn_backend))
    for (variant, batch), case in cases.items():
        fresh = tuple(tuple(ratios) for ratios in collected[(variant, batch)])
        pooled = dataclasses.replace(case, ratios_by_process=case.ratios_by_process + fresh)
        result = record_interleaved(spinn_session, spinn_backend, batch, pooled)
        assert result.processes == settings.processes
        assert result.ci_low <= result.speedup_median <= result.ci_high
