"""Pruning: what a run aims at (`target`), proven structured removal (`shrink`), importance, widths (`budget`,
`latency`), the run's config, schedule and history (`config`, `structured`, `history`, `record`), magnitude pruning."""
