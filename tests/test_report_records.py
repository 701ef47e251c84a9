"""The fast lane's report: the whole report (tables, summary, figures, HTML and Markdown) built from the previous
release's real files in tests/data/records (a real export, prune, quick ort-cpu benchmark and sweep), in about a
second. test_report.py traces every value on the tiny pipeline's fresh files; that fixture is slow."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from spinn_export.report.render import MISSING, Section, render_markdown, terminal_table
from spinn_export.report.writer import ReportPaths, build_report, fastest_summary, summary_table

RECORDS = Path(__file__).parent / "data" / "records"
RESULTS, MANIFEST, HISTORY = RECORDS / "bench.json", RECORDS / "manifest.json", RECORDS / "history.json"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReportPaths:
    return build_report([RESULTS], MANIFEST, [HISTORY], tmp_path_factory.mktemp("report"), sweep=RECORDS)


def test_every_section_is_a_csv_and_every_figure_a_png_in_both_pages(report: ReportPaths) -> None:
    names = {p.stem for p in report.csvs}
    assert {"summary", "fastest", "latency", "speedup", "memory", "artifacts", "pruning", "pareto"} <= names
    assert {p.name for p in report.pngs} == {"latency.png", "speedup.png", "memory.png", "pruning.png",
                                                "pareto.png"}
    assert all(p.read_bytes().startswith(PNG) for p in report.pngs)
    page, markdown = report.html.read_text(), report.markdown.read_text()
    assert page.count("data:image/png;base64,") == len(report.pngs)  # self-contained: no file fetched
    assert all(f"]({p.name})" in markdown for p in report.pngs)
    assert markdown.index("## ") < markdown.index("**machines:**")  # the answer opens, the metadata follows


def test_the_tables_carry_the_results_and_the_summary_reads_them_the_same_way(report: ReportPaths) -> None:
    latency = pd.read_csv(report.csv_dir / "latency.csv")
    assert set(latency["backend"]) == {"ort-cpu"} and {"dense", "structured"} <= set(latency["variant"])
    sentence, fastest = fastest_summary([RESULTS])
    assert sentence and not fastest.empty
    summary = summary_table([RESULTS], MANIFEST, [HISTORY])
    assert summary.equals(pd.read_csv(report.csv_dir / "summary.csv").pipe(lambda f: f.astype(summary.dtypes)))


def test_cells_show_units_and_a_dash_for_what_was_not_measured() -> None:
    table = pd.DataFrame({"variant": ["structured", "dense"], "speedup": [2.5, float("nan")],
                          "batch": [8192.0, 1.0], "peak MiB": [1.25, 3.0]})
    shown = terminal_table(table)
    assert "2.50×" in shown and MISSING in shown and "8192" in shown and "1.2" in shown
    assert terminal_table(table.iloc[0:0]) == "(nothing measured)"
    text = render_markdown([Section("speedup", "Speedup", "why", table), Section("none", "None", "not run")], [], {})
    assert "| structured" in text and "## None\n\nnot run" in text
