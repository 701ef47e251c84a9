"""The main job (`spinn-export run`): every stage chained, resumable. `job` defines the run, `stages` the
record that decides what is reused."""
