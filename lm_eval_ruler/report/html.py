"""One self-contained HTML report: inline CSS, the text report's tables, and plots as base64 PNG."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ReportError
from .comparison import Comparison, GateResult
from .items import Items, all_lengths, collect, score_tables
from .plots import (
    PLOT_INSTALL_HINT,
    figure_depth,
    figure_recovery,
    figure_scores,
    png_base64,
    require_matplotlib,
    runs_with_depths,
)
from .table import THRESHOLD, Table, settings_text
from .text import MISSING, breakdown_rows, comparison_rows, gate_line, leaderboard_rows, method_text, recovery_matrix

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;color:#1d232a;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.86rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:right;white-space:nowrap}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
td.pass{text-decoration:underline}td.missing{color:#8c959f}
tr.overall td{font-weight:600;background:#f6f8fa}
.verdict{padding:.6rem 1rem;border-radius:6px;margin:.8rem 0;font-weight:600}
.verdict.pass{background:#dafbe1;border:1px solid #4ac26b}.verdict.fail{background:#ffebe9;border:1px solid #ff8182}
.note{color:#57606a;font-size:.85rem}.warn{color:#9a6700}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d0d7de}
.plots{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
"""


def _escape(text: Any) -> str:
    """Any value as HTML-escaped text."""
    return html.escape(str(text))


def _recovery_color(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 99.0:
        return "background:#dafbe1"
    if value >= 95.0:
        return "background:#fff8c5"
    return "background:#ffebe9"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cell_class: Any = None, cell_style: Any = None, row_class: Any = None) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_escape(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = row_class(i, row) if row_class else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for j, value in enumerate(row):
            klass = cell_class(i, j, value) if cell_class else ""
            style = cell_style(i, j, value) if cell_style else ""
            attrs = (f' class="{klass}"' if klass else "") + (f' style="{style}"' if style else "")
            out.append(f"<td{attrs}>{_escape(value.replace('**', ''))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _score_class(_i: int, j: int, value: str, first: int = 1, last: int | None = None) -> str:
    """Underline scores above the threshold (RULER's tables do) in columns first..last only."""
    if j < first or (last is not None and j > last):
        return ""
    if value == MISSING:
        return "missing"
    try:
        return "pass" if float(value) > THRESHOLD else ""
    except ValueError:
        return ""


def _recovery_style(_i: int, j: int, value: str) -> str:
    if j == 0:
        return ""
    try:
        return _recovery_color(float(value))
    except ValueError:
        return ""


def _overall_rows_from(first: int) -> Callable[[int, Sequence[str]], str]:
    """A ``row_class`` that marks rows ``first`` onward (the overall and gated rows) as ``overall``."""
    return lambda i, row: "overall" if i >= first else ""


def _inline_figure(figure: Any, alt: str) -> str:
    return (
        f'<figure><img alt="{_escape(alt)}" src="data:image/png;base64,{png_base64(figure)}">'
        f'<figcaption class="note">{_escape(alt)}</figcaption></figure>'
    )


def to_html(items: Items, *, title: str = "RULER report", plots: bool | None = None) -> str:
    """One self-contained HTML file: inline CSS, tables, and plots as base64 PNG (no external requests).

    ``plots``: True requires matplotlib (error if missing), False leaves plots
    out, None (default) includes them when matplotlib is installed and says
    how to get them otherwise. Scores above 85.6 are underlined, as in RULER's
    tables; recovery cells are green >= 99%, yellow >= 95%, red below.
    """
    tables, comparisons, gates = collect(items)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{_escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_escape(title)}</h1>",
    ]
    tables_to_plot = score_tables(tables, comparisons)
    if tables_to_plot:
        parts.append("<h2>RULER scores</h2>")
        n_lengths = len(all_lengths(tables_to_plot))
        parts.append(
            _html_table(*leaderboard_rows(tables_to_plot), cell_class=lambda i, j, v: _score_class(i, j, v, 3, 2 + n_lengths))
        )
        parts.append(
            f'<p class="note">Score = mean of the 13 task scores (0-100); underlined = above {THRESHOLD} '
            "(Llama-2-7B-chat at 4K). Effective length: largest length above the threshold; the relative one keeps "
            f"≥85% of the model's own 4K score (NoLiMa). {MISSING} = missing or partial.</p>"
        )
    for comparison in comparisons:
        parts += _comparison_section(comparison, gates.get(id(comparison)))
    for table in tables:
        parts.append(f"<h3>{_escape(table.name)}: by task and length</h3>")
        if table.run is not None:
            parts.append(f'<p class="note">{_escape(settings_text(table.run))}</p>')
        parts.append(_html_table(*breakdown_rows(table), cell_class=lambda i, j, v: "" if i == 1 else _score_class(i, j, v)))
        parts += [f'<p class="note">{_escape(n)}</p>' for n in table.notes]
    parts += _plots_section(plots, tables, comparisons, tables_to_plot)
    parts.append(f'<p class="note">Generated by lm-eval-ruler {_escape(_version())}.</p></body></html>')
    return "\n".join(parts) + "\n"


def _comparison_section(comparison: Comparison, result: GateResult | None) -> list[str]:
    """A comparison's verdict (when gated), its per-length table and its recovery-by-task table."""
    parts = [f"<h2>{_escape(comparison.candidate)} vs {_escape(comparison.baseline)}</h2>"]
    if result is not None:
        verdict = "pass" if result.passed else "fail"
        parts.append(f'<div class="verdict {verdict}">{_escape(gate_line(result).replace("**", ""))}')
        if result.reasons:
            parts.append("<ul>" + "".join(f"<li>{_escape(r)}</li>" for r in result.reasons) + "</ul>")
        parts.append("</div>")
        parts += [f'<p class="note">{_escape(n)}</p>' for n in result.notes]
    parts.append(
        f'<p class="note">Recovery = candidate / baseline × 100; Δ = candidate − baseline. Intervals: {_escape(method_text(comparison))}.</p>'
    )
    parts.append(
        _html_table(
            *comparison_rows(comparison, result),
            cell_style=lambda i, j, v: _recovery_style(i, j, v) if j == 6 else "",
            row_class=_overall_rows_from(len(comparison.lengths)),
        )
    )
    parts.append(f"<h3>Recovery by task: {_escape(comparison.candidate)}</h3>")
    parts.append(_html_table(*recovery_matrix(comparison), cell_style=_recovery_style))
    if comparison.warnings:
        parts.append('<ul class="warn">' + "".join(f"<li>{_escape(w)}</li>" for w in comparison.warnings) + "</ul>")
    return parts


def _plots_section(plots: bool | None, tables: Sequence[Table], comparisons: Sequence[Comparison], tables_to_plot: Sequence[Table]) -> list[str]:
    """The plots as inline PNGs; with ``plots=None``, a note instead when matplotlib is missing."""
    parts: list[str] = []
    want = plots
    if want is None:
        try:
            require_matplotlib()
            want = True
        except ReportError:
            want = False
            parts.append(f'<p class="note">Plots omitted: matplotlib is not installed ({_escape(PLOT_INSTALL_HINT)}).</p>')
    if want:
        figures = []
        if tables_to_plot:
            figures.append(_inline_figure(figure_scores(tables_to_plot), "RULER score vs length; dashed line: 85.6 threshold"))
        for comparison in comparisons:
            figures.append(_inline_figure(figure_recovery(comparison), f"Recovery % by task and length: {comparison.candidate}"))
        for run in runs_with_depths(tables, comparisons):
            figures.append(_inline_figure(figure_depth(run), f"NIAH mean score by needle depth and length: {run.name}"))
        if figures:
            parts.append('<h2>Plots</h2><div class="plots">' + "".join(figures) + "</div>")
    return parts


def _version() -> str:
    from .. import __version__

    return __version__
