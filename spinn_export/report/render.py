"""Rendering only: titled tables and figures as one self-contained HTML page, as Markdown, and as terminal text.

A leaf: it takes plain data (frames, strings, `Section`, `Figure`) and imports nothing else of the report, so the
gate, the summary and the table builders can all print through it without importing one another.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

OPENING = ("summary", "fastest")  # the answer, before the run's metadata
MISSING = "-"  # not measured (never a filled-in value)
PLAIN_INTEGERS = ("batch", "stage", "threads")  # labels, not quantities: no thousands separator
SHARES = ("others' CPU", "steal")  # fractions of the machine's CPU time, shown as percentages
LONG_TEXT = 40  # characters; longer text cells may wrap


@dataclass(frozen=True)
class Section:
    """A titled table (saved as csv/<name>.csv) or, when `table` is None, the line saying why not."""

    name: str
    title: str
    note: str
    table: pd.DataFrame | None = None


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    path: Path


def _format_value(column: str, value: object) -> str:
    """A cell as a reader expects it; the unit follows from the column's name, so every table formats alike."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if column == "fraction of ceiling" or column.startswith("fraction CI"):
        return f"{value:.1%}"
    if column in SHARES:
        return f"{value:.0%}"
    if column == "load avg":
        return f"{value:.2f}"
    if column.startswith("Δ"):
        return f"{value:+.4f}"
    if column == "peak MiB":
        return f"{value:.1f}"
    if "speedup" in column or column.startswith("CI ") or column == "FLOP-ratio ideal" or column.endswith("vs dense"):
        return f"{value:.2f}×"
    if column in ("val R²", "val rel L2"):
        return f"{value:.4f}"
    if column in PLAIN_INTEGERS:
        return str(int(value))
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def displayed(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings: units, separators and a dash for what was not measured."""
    return pd.DataFrame({c: [_format_value(c, v) for v in table[c].tolist()] for c in table.columns})


def terminal_table(table: pd.DataFrame) -> str:
    """A table for the terminal as the report shows it: units, separators, and a dash for what was not measured."""
    return displayed(table).to_string(index=False) if not table.empty else "(nothing measured)"


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:1240px;margin:2rem auto;
padding:0 1.2rem}
h1{font-size:1.6rem;margin-bottom:.2rem}
h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
.meta{color:#57606a;margin:.1rem 0}.meta code{background:#f6f8fa;padding:1px 4px;border-radius:4px;font-size:13px}
p.note{color:#57606a;margin:.3rem 0 .6rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums;margin-bottom:.5rem}
th,td{padding:4px 7px;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap}
th{background:#f6f8fa;border-bottom:2px solid #d0d7de;white-space:normal;vertical-align:bottom}
tbody tr:hover{background:#f9fafb}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e5e7eb;border-radius:6px}
figcaption{color:#57606a;font-size:13px}
"""


def _cells(name: str, columns: Sequence[int]) -> str:
    return ",".join(f"#t-{name} td:nth-child({i}),#t-{name} th:nth-child({i})" for i in columns)


def _html_table(name: str, table: pd.DataFrame) -> str:
    """The table, with scoped rules: text columns left-aligned (numbers right), long text wraps."""
    shown = displayed(table)
    text = [i for i, column in enumerate(table.columns, 1) if not pd.api.types.is_numeric_dtype(table[column])]
    long = [i for i in text if shown.iloc[:, i - 1].str.len().max() > LONG_TEXT]
    style = "".join([f"{_cells(name, text)}{{text-align:left}}" if text else "",
                     f"{_cells(name, long)}{{white-space:normal;min-width:16em}}" if long else ""])
    return f"<style>{style}</style>" + shown.to_html(index=False, border=0, escape=True, table_id=f"t-{name}")


def _data_uri(path: Path) -> str:
    """The PNG inside the page, so the HTML file is the whole report (nothing fetched from elsewhere)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _opening(sections: Sequence[Section]) -> tuple[list[Section], list[Section]]:
    """The summary and the fastest verified deployment open the report, before the run's metadata; details follow."""
    first = [s for s in sections if s.name in OPENING]
    return first, [s for s in sections if s.name not in OPENING]


def _html_section(section: Section, figure: Figure | None) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2><p class=\"note\">{html.escape(section.note)}</p>"]
    if section.table is not None:
        parts.append(f'<div class="scroll">{_html_table(section.name, section.table)}</div>')
    if figure is not None:
        parts.append(f'<figure><img src="{_data_uri(figure.path)}" alt="{html.escape(figure.title)}">'
                     f"<figcaption>{html.escape(figure.title)}</figcaption></figure>")
    return "".join(parts)


def render_html(sections: Sequence[Section], figures: Sequence[Figure], header: dict[str, str]) -> str:
    meta = "".join(f'<p class="meta"><b>{html.escape(k)}:</b> '
                   + (f"<code>{html.escape(v)}</code>" if k == "command" else html.escape(v)) + "</p>"
                   for k, v in header.items())
    by_name = {f.name: f for f in figures}
    first, rest = _opening(sections)
    body = "".join(_html_section(s, by_name.get(s.name)) for s in first) + meta + "".join(
        _html_section(s, by_name.get(s.name)) for s in rest)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>spinn-export report</title>'
            f"<style>{CSS}</style></head><body><h1>spinn-export benchmark report</h1>{body}</body></html>\n")


def _markdown_section(section: Section, figure: Figure | None) -> list[str]:
    lines = [f"## {section.title}", "", section.note, ""]
    if section.table is not None:
        align = ["right" if pd.api.types.is_numeric_dtype(section.table[c]) else "left" for c in section.table.columns]
        lines += [displayed(section.table).to_markdown(index=False, colalign=align, disable_numparse=True), ""]
    if figure is not None:
        lines += [f"![{figure.title}]({figure.path.name})", ""]
    return lines


def render_markdown(sections: Sequence[Section], figures: Sequence[Figure], header: dict[str, str]) -> str:
    by_name = {f.name: f for f in figures}
    first, rest = _opening(sections)
    lines = ["# spinn-export benchmark report", ""]
    for section in first:
        lines += _markdown_section(section, by_name.get(section.name))
    lines += [f"- **{k}:** " + (f"`{v}`" if k == "command" else v) for k, v in header.items()]
    for section in rest:
        lines += ["", *_markdown_section(section, by_name.get(section.name))]
    return "\n".join(lines).rstrip() + "\n"
