"""Text outputs: markdown, CSV, JSON and the GitHub step summary, and the table rows they (and HTML) share."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence

from .comparison import Comparison, GateResult
from .intervals import METHOD_BOOTSTRAP, Estimate
from .items import Items, all_lengths, collect, display_names, score_tables
from .runs import length_label
from .table import CATEGORY_ORDER, TASK_ORDER, THRESHOLD, Table, settings_text

#: Shown for a value that is missing or (for a length score) partial.
MISSING = "–"


# --------------------------------------------------------------------------- number formats


def _format_score(value: float | None) -> str:
    """Scores: one decimal, as RULER's tables."""
    return MISSING if value is None else f"{value:.1f}"


def _format_difference(value: float | None) -> str:
    """Differences: signed, two decimals (a 0.3-point drop matters)."""
    return MISSING if value is None else f"{value:+.2f}"


def _format_recovery(value: float | None) -> str:
    """Recovery: two decimals, so 98.96 is not printed as a passing 99.0."""
    return MISSING if value is None else f"{value:.2f}"


def _format_interval(ci: tuple[float, float] | None, fmt: Callable[[float | None], str]) -> str:
    """An interval as ``[low, high]``, each end in ``fmt``'s format."""
    return MISSING if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _confidence_label(alpha: float) -> str:
    """The confidence level of ``alpha`` as a percentage: 0.05 -> ``95%``."""
    return f"{100 * (1 - alpha):g}%"


def _csv_number(value: float | None, digits: int = 4) -> str:
    """A CSV cell: rounded to ``digits``, empty when missing."""
    return "" if value is None else f"{round(value, digits)}"


# --------------------------------------------------------------------------- rows shared by markdown, github and html


def method_text(comparison: Comparison) -> str:
    """How a comparison's intervals were made, in words."""
    if comparison.method == METHOD_BOOTSTRAP:
        return (
            f"paired bootstrap over documents (B={comparison.n_bootstrap}, seed {comparison.seed}), "
            f"{_confidence_label(comparison.alpha)} percentile intervals"
        )
    return f"normal approximation from reported stderrs, runs treated as independent, {_confidence_label(comparison.alpha)} intervals"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> list[str]:
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else ":---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out.extend("| " + " | ".join(row) + " |" for row in rows)
    return out


def leaderboard_rows(tables: Sequence[Table]) -> tuple[list[str], list[list[str]]]:
    """One row per run: effective lengths, the score per length, Avg and wAvg."""
    lengths = all_lengths(tables)
    header = ["Model", "Effective", "Eff. (≥85% of 4K)", *map(length_label, lengths), "Avg", "wAvg (inc)", "wAvg (dec)"]
    rows = []
    for table, name in zip(tables, display_names(tables)):
        cells = []
        for tokens in lengths:
            row = table.row(tokens)
            cells.append(_format_score(row.score) if row else MISSING)
        rows.append(
            [
                name,
                table.effective_length or MISSING,
                table.relative_effective_length or MISSING,
                *cells,
                _format_score(table.avg),
                _format_score(table.wavg_inc),
                _format_score(table.wavg_dec),
            ]
        )
    return header, rows


def breakdown_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """One run's score, stderr, categories and tasks (rows) by length (columns)."""
    header = ["", *(row.label for row in table.rows)]
    rows = [
        ["Score (13-task mean)", *(_format_score(row.score) for row in table.rows)],
        ["± stderr", *(_format_score(row.stderr) if row.stderr is not None else MISSING for row in table.rows)],
    ]
    rows += [[category, *(_format_score(row.categories[category]) for row in table.rows)] for category in CATEGORY_ORDER]
    rows += [[task, *(_format_score(row.tasks[task]) for row in table.rows)] for task in TASK_ORDER]
    return header, rows


def _estimate_cells(estimate: Estimate) -> list[str]:
    """Baseline, candidate, Δ, its interval, recovery and its interval."""
    return [
        _format_score(estimate.baseline),
        _format_score(estimate.candidate),
        _format_difference(estimate.difference),
        _format_interval(estimate.difference_ci, _format_difference),
        _format_recovery(estimate.recovery),
        _format_interval(estimate.recovery_ci, _format_recovery),
    ]


def comparison_rows(comparison: Comparison, gate_result: GateResult | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per compared length, then the overall row and (when it covers other lengths) the gated one."""
    conf = _confidence_label(comparison.alpha)
    header = ["Length", "Tasks", "Baseline", "Candidate", "Δ", f"Δ {conf} CI", "Recovery %", f"Recovery {conf} CI"]
    rows = [[item.label, f"{len(item.tasks)}/13", *_estimate_cells(item.score)] for item in comparison.lengths]
    rows.append([f"Overall ({len(comparison.lengths)} lengths)", "", *_estimate_cells(comparison.overall)])
    if gate_result is not None and gate_result.lengths != tuple(i.label for i in comparison.lengths):
        rows.append([f"Gated ({', '.join(gate_result.lengths)})", "", *_estimate_cells(gate_result.estimate)])
    return header, rows


def recovery_matrix(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Recovery % of the length score, each category and each task (rows) by length (columns)."""
    header = ["Recovery %", *(item.label for item in comparison.lengths)]
    rows = [["**Length score**", *(_format_recovery(item.score.recovery) for item in comparison.lengths)]]
    for category in CATEGORY_ORDER:
        rows.append([category, *(_format_recovery(item.categories[category].recovery) if category in item.categories else MISSING for item in comparison.lengths)])
    for task in TASK_ORDER:
        rows.append([task, *(_format_recovery(item.per_task[task].recovery) if task in item.per_task else MISSING for item in comparison.lengths)])
    return header, rows


def gate_line(result: GateResult) -> str:
    """The gate's verdict and rule, in markdown bold."""
    verdict = "PASS" if result.passed else "FAIL"
    return (
        f"**Gate: {verdict}** (overall recovery ≥ {result.min_recovery:.2f}% and no significant drop at alpha "
        f"{result.alpha:g}, over {', '.join(result.lengths)})"
    )


# --------------------------------------------------------------------------- markdown, csv, json, github


def to_markdown(items: Items, *, title: str = "RULER report") -> str:
    """A markdown report: leaderboard row per run, breakdowns, recovery tables, gate verdicts."""
    tables, comparisons, gates = collect(items)
    out = [f"# {title}", ""]
    unique = score_tables(tables, comparisons)
    if unique:
        out += ["## RULER scores", ""]
        out += _md_table(*leaderboard_rows(unique))
        out += [
            "",
            (
                f"Score = mean of the 13 task scores (0-100). Effective length: the largest length scoring above "
                f"{THRESHOLD} (Llama-2-7B-chat at 4K); the relative one keeps ≥85% of the model's own 4K score (NoLiMa). "
                f"{MISSING} = missing or partial."
            ),
            "",
        ]
    for table in tables:
        out += [f"### {table.name}: by task and length", ""]
        out += [settings_text(table.run), ""] if table.run is not None else []
        out += _md_table(*breakdown_rows(table))
        out += [""] + [f"- {note}" for note in table.notes] + ([""] if table.notes else [])
    for comparison in comparisons:
        result = gates.get(id(comparison))
        out += [f"## {comparison.candidate} vs {comparison.baseline}", ""]
        if result is not None:
            out += [gate_line(result), ""]
            out += [f"- {reason}" for reason in result.reasons] + [f"- note: {n}" for n in result.notes]
            out += [""] if result.reasons or result.notes else []
        out += [f"Recovery = candidate / baseline × 100; Δ = candidate − baseline (points). Intervals: {method_text(comparison)}.", ""]
        out += _md_table(*comparison_rows(comparison, result))
        out += ["", f"### Recovery by task: {comparison.candidate}", ""]
        out += _md_table(*recovery_matrix(comparison))
        if comparison.warnings:
            out += ["", "Warnings:", ""] + [f"- {w}" for w in comparison.warnings]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


CSV_COLUMNS = (
    "section", "model", "baseline", "candidate", "length", "tokens", "scope", "name",
    "score", "stderr", "baseline_score", "candidate_score", "difference", "difference_low", "difference_high",
    "recovery", "recovery_low", "recovery_high", "method", "passed",
)  # fmt: skip


def _estimate_columns(e: Estimate) -> dict[str, str]:
    return {
        "baseline_score": _csv_number(e.baseline),
        "candidate_score": _csv_number(e.candidate),
        "difference": _csv_number(e.difference),
        "difference_low": _csv_number(e.difference_ci[0]) if e.difference_ci else "",
        "difference_high": _csv_number(e.difference_ci[1]) if e.difference_ci else "",
        "recovery": _csv_number(e.recovery),
        "recovery_low": _csv_number(e.recovery_ci[0]) if e.recovery_ci else "",
        "recovery_high": _csv_number(e.recovery_ci[1]) if e.recovery_ci else "",
    }


def to_csv(items: Items) -> str:
    """One long-format CSV (a row per run/comparison x length x scope), full precision, for spreadsheets."""
    tables, comparisons, gates = collect(items)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for table in tables:
        for row in table.rows:
            base = {"section": "table", "model": table.name, "length": row.label, "tokens": row.length}
            writer.writerow({**base, "scope": "length", "name": "score", "score": _csv_number(row.score), "stderr": _csv_number(row.stderr)})
            for category, value in row.categories.items():
                writer.writerow({**base, "scope": "category", "name": category, "score": _csv_number(value)})
            for task, value in row.tasks.items():
                writer.writerow({**base, "scope": "task", "name": task, "score": _csv_number(value)})
        for name in ("avg", "wavg_inc", "wavg_dec"):
            writer.writerow({"section": "table", "model": table.name, "scope": "summary", "name": name, "score": _csv_number(getattr(table, name))})
        for name in ("effective_length", "relative_effective_length"):
            writer.writerow({"section": "table", "model": table.name, "scope": "summary", "name": name, "score": getattr(table, name) or ""})
    for comparison in comparisons:
        base = {"section": "comparison", "baseline": comparison.baseline, "candidate": comparison.candidate, "method": comparison.method}
        for item in comparison.lengths:
            at = {**base, "length": item.label, "tokens": item.length}
            writer.writerow({**at, "scope": "length", "name": "score", **_estimate_columns(item.score)})
            for category, e in item.categories.items():
                writer.writerow({**at, "scope": "category", "name": category, **_estimate_columns(e)})
            for task, e in item.per_task.items():
                writer.writerow({**at, "scope": "task", "name": task, **_estimate_columns(e)})
        writer.writerow({**base, "scope": "overall", "name": "score", **_estimate_columns(comparison.overall)})
        result = gates.get(id(comparison))
        if result is not None:
            writer.writerow(
                {**base, "section": "gate", "length": ",".join(result.lengths), "scope": "overall", "name": "gate",
                 **_estimate_columns(result.estimate), "passed": str(result.passed).lower()}
            )  # fmt: skip
    return buffer.getvalue()


def to_json(items: Items) -> str:
    """Everything in the report as JSON (unrounded), for dashboards and further scripts."""
    tables, comparisons, gates = collect(items)
    payload = {
        "format": "lm-eval-ruler-report",
        "version": 1,
        "threshold": THRESHOLD,
        "tables": [t.to_dict() for t in tables],
        "comparisons": [c.to_dict() for c in comparisons],
        "gates": [gates[id(c)].to_dict() for c in comparisons if id(c) in gates],
    }
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def github_summary(items: Items) -> str:
    """Compact markdown for ``$GITHUB_STEP_SUMMARY``: verdicts first, details folded away."""
    tables, comparisons, gates = collect(items)
    out: list[str] = []
    for comparison in comparisons:
        result = gates.get(id(comparison))
        o = comparison.overall
        if result is not None:
            icon = "✅" if result.passed else "❌"
            out.append(
                f"### {icon} RULER gate {'passed' if result.passed else 'failed'}: {comparison.candidate} vs {comparison.baseline}"
            )
        else:
            out.append(f"### RULER: {comparison.candidate} vs {comparison.baseline}")
        out += [
            "",
            (
                f"Overall recovery **{_format_recovery(o.recovery)}%** {_format_interval(o.recovery_ci, _format_recovery)}, "
                f"Δ {_format_difference(o.difference)} points ({comparison.method})."
            ),
        ]
        if result is not None:
            out += [f"- {r}" for r in result.reasons]
        out += [""] + _md_table(*comparison_rows(comparison, result)) + [""]
        out += ["<details><summary>Recovery by task</summary>", ""] + _md_table(*recovery_matrix(comparison)) + ["", "</details>", ""]
        if comparison.warnings:
            out += ["<details><summary>Warnings</summary>", ""] + [f"- {w}" for w in comparison.warnings] + ["", "</details>", ""]
    if tables:
        out += ["### RULER scores", ""] + _md_table(*leaderboard_rows(tables)) + [""]
        for table in tables:
            out += [f"<details><summary>{table.name}: by task and length</summary>", ""]
            out += _md_table(*breakdown_rows(table)) + ["", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"
