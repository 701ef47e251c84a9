"""The stages chained: the main job (`spinn-export run`: `config`, `job`, resumable through `stages`), the sweep
(`spinn-export sweep`: `sweep`, `points` on an `executors/` plug-in) and the suite's reference models (`reference`)."""
