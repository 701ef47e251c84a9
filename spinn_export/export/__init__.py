"""Exporting: every checkpoint written in each format plug-in (`formats/`), checked against eager PyTorch
(`parity`) before it gets its name, and listed with its figures in DIR/manifest.json (`exporter`, `manifest`)."""
