"""The comparison report: pandas tables as CSV, Markdown and one self-contained HTML page.

The top of the report package: it reads the inputs, assembles the sections (`summary`, `tables`), draws the figures
(`plots`, `pareto`), renders them (`render`) and writes the files. Every value in a table is read from the benchmark
JSON, the manifest or the pruning history; a piece that is missing is an omitted section with one line saying so,
never a filled-in value.
"""
from __future__ import annotations

import datetime as dt
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spinn_export.files import write_text
from spinn_export.report import limits, pareto, plots
from spinn_export.report.gate import GateOutcome
from spinn_export.report.render import MISSING, Figure, Section, render_html, render_markdown
from spinn_export.report.results import (
    History,
    ManifestView,
    Results,
    load_history,
    load_manifest,
    load_results,
    speedups,
)
from spinn_export.report.summary import fastest_sentence, summary_rows, summary_section
from spinn_export.report.tables import DATE_FORMAT, dates, detail_sections, fastest_section, fastest_table

CSV_NAMES = ("summary", "fastest", "runs", "latency", "speedup", "memory", "ceilings", "ceiling_fractions", "gflops",
             "crosscheck", "artifacts", "comparison", "skipped", "architecture", "pruning", "pareto", "limits",
             "outside_timer")
PNG_NAMES = ("latency", "speedup", "memory", "pruning", "pareto")


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    csv_dir: Path
    csvs: tuple[Path, ...]
    pngs: tuple[Path, ...]


def build_sections(results: Results, manifest: ManifestView | None, histories: Sequence[History],
                   gate: GateOutcome | None = None) -> list[Section]:
    """The summary and the fastest deployment, then the details, in the order the report shows them."""
    speedup = speedups(results)
    summary = summary_rows(results, speedup, manifest, histories)
    return [summary_section(results, summary, gate, manifest, histories),
            fastest_section(results, fastest_sentence(results)),
            *detail_sections(results, speedup, manifest, histories)]


def build_figures(results: Results, histories: Sequence[History], out_dir: Path) -> list[Figure]:
    figures = [Figure("latency", "Latency against batch size (log-log; bars span the IQR)",
                      plots.plot_latency(results.benchmarks, out_dir / "latency.png"))]
    speedup = speedups(results)
    if not speedup.empty:
        figures.append(Figure("speedup", "Speedup over dense against batch size (bars: paired CI; dashed: FLOP ideal)",
                              plots.plot_speedup(speedup, out_dir / "speedup.png")))
    if results.benchmarks["peak_memory_bytes"].notna().any():
        figures.append(Figure("memory", "Peak memory against batch size (log-log)",
                              plots.plot_memory(results.benchmarks, out_dir / "memory.png")))
    if histories:
        figures.append(Figure("pruning", "Accuracy and PDE residual after each pruning stage",
                              plots.plot_pruning(histories, out_dir / "pruning.png")))
    return figures


def default_command(results: Sequence[Path], manifest: Path | None, histories: Sequence[Path], out_dir: Path,
                    sweep: Path | None = None) -> str:
    """The `spinn-export report` command that rebuilds this report, for the header when the caller gives none."""
    words = ["spinn-export", "report", *map(str, results)]
    words += ["--manifest", str(manifest)] if manifest is not None else []
    for history in histories:
        words += ["--history", str(history)]
    words += ["--sweep", str(sweep)] if sweep is not None else []
    return shlex.join([*words, "--out", str(out_dir)])


def build_report(results: Sequence[str | os.PathLike[str]], manifest: str | os.PathLike[str] | None,
                 history: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
                 out_dir: str | os.PathLike[str], *, command: str | None = None,
                 gate: GateOutcome | None = None, sweep: str | os.PathLike[str] | None = None,
                 outside_timer: str | os.PathLike[str] | None = None) -> ReportPaths:
    """Read everything first (so bad input leaves no output), then write out_dir/report.{html,md}, csv/, *.png.

    `gate`, when the results were judged (spinn-export run), puts its verdict in the summary. `sweep`, the --out
    DIR of `spinn-export sweep`, adds its Pareto section (`report.pareto`). `outside_timer`, a JSON of
    bench/outside_timer.py, adds its verdict (`report.limits`).

    `history` is one pruning directory (or history.json) or several (e.g. structured and magnitude).
    """
    result_paths = [Path(p) for p in results]
    history_paths = [] if history is None else [Path(history)] if isinstance(history, (str, os.PathLike)) \
        else [Path(h) for h in history]
    out = Path(out_dir)
    loaded = load_results(result_paths)
    loaded_manifest = None if manifest is None else load_manifest(manifest)
    histories = [load_history(h) for h in history_paths]
    loaded_sweep = None if sweep is None else pareto.load_sweep(sweep)
    outside = None if outside_timer is None else limits.load_outside_timer(outside_timer)
    sections = build_sections(loaded, loaded_manifest, histories, gate)
    sections[2:2] = [s for s in (limits.bound_section(loaded), outside and limits.outside_section(outside)) if s]
    figures = build_figures(loaded, histories, out)
    if loaded_sweep is not None:
        sections.append(Section("pareto", pareto.TITLE, pareto.NOTE, pareto.report_table(loaded_sweep)))
        figures.append(Figure("pareto", pareto.CAPTION, pareto.plot_pareto(loaded_sweep, out / "pareto.png")))
    csv_dir = out / "csv"
    csvs = []
    for section in sections:
        if section.table is not None:
            csvs.append(csv_dir / f"{section.name}.csv")
            write_text(csvs[-1], section.table.to_csv(index=False))
    _remove_stale(out, csv_dir, {p.name for p in csvs}, {f.path.name for f in figures})
    header = {
        "machines": ", ".join(loaded.runs["machine"].unique()),
        "command": command or default_command(result_paths, None if manifest is None else Path(manifest),
                                              history_paths, out, None if sweep is None else Path(sweep)),
        "benchmarked": ", ".join(sorted(set(dates(loaded.runs["datetime"]).dropna()))) or MISSING,
        "report written": dt.datetime.now(dt.timezone.utc).strftime(DATE_FORMAT),
    }
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, render_html(sections, figures, header))
    write_text(md_path, render_markdown(sections, figures, header))
    return ReportPaths(html_path, md_path, csv_dir, tuple(csvs), tuple(f.path for f in figures))


def fastest_summary(results: Sequence[str | os.PathLike[str]]) -> tuple[str, pd.DataFrame]:
    """The fastest verified deployment as the report's summary says it and its table, read from the results
    (what `spinn-export run` prints at the end)."""
    loaded = load_results([Path(p) for p in results])
    return fastest_sentence(loaded), fastest_table(loaded)


def summary_table(results: Sequence[str | os.PathLike[str]], manifest: str | os.PathLike[str] | None,
                  histories: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """The report's summary, read from the results themselves (what `spinn-export run` prints at the end)."""
    loaded = load_results([Path(p) for p in results])
    return summary_rows(loaded, speedups(loaded), None if manifest is None else load_manifest(manifest),
                        [load_history(h) for h in histories])


def _remove_stale(out: Path, csv_dir: Path, csvs: set[str], pngs: set[str]) -> None:
    """A section omitted this time must not leave last time's file looking current."""
    for name in CSV_NAMES:
        if f"{name}.csv" not in csvs:
            (csv_dir / f"{name}.csv").unlink(missing_ok=True)
    for name in PNG_NAMES:
        if f"{name}.png" not in pngs:
            (out / f"{name}.png").unlink(missing_ok=True)
