"""Pruning: proven structured removal (`shrink`), unit importance (`importance`), the width budget (`budget`,
`latency`), the run's config, history and schedule (`config`, `history`, `structured`) and the magnitude baseline."""
