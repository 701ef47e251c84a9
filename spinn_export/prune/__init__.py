"""Pruning: proven structured removal (`shrink`), unit importance (`importance`), the width plan (`walk`, `budget`,
`latency`), the run's config and history, and its strategies: methods, schedule, composed by `structured.prune`."""
