"""Reporting: bench.json, the manifest and the pruning histories read through their records (`results`), the
tables, summary and figures built from them (`writer`), the sweep's Pareto front (`pareto`) and the CI gate (`gate`)."""
