"""What a report is made of: tables, comparisons and gate results, gathered once for every output format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from .comparison import Comparison, GateResult
from .table import Table

#: One thing to report.
Item: TypeAlias = Table | Comparison | GateResult
#: What every writer (``to_markdown``, ``to_html``, ``save_plots`` ...) accepts: one item or several.
Items: TypeAlias = Item | Sequence[Item]


def collect(items: Items) -> tuple[list[Table], list[Comparison], dict[int, GateResult]]:
    """Tables, comparisons, and gates keyed by id(comparison); a gate brings its comparison."""
    seq = [items] if isinstance(items, (Table, Comparison, GateResult)) else list(items)
    tables: list[Table] = []
    comparisons: list[Comparison] = []
    gates: dict[int, GateResult] = {}
    for item in seq:
        if isinstance(item, Table):
            tables.append(item)
        elif isinstance(item, Comparison):
            if all(c is not item for c in comparisons):
                comparisons.append(item)
        elif isinstance(item, GateResult):
            gates[id(item.comparison)] = item
            if all(c is not item.comparison for c in comparisons):
                comparisons.append(item.comparison)
        else:
            raise TypeError(f"cannot report a {type(item).__name__}; pass Table, Comparison or GateResult objects")
    return tables, comparisons, gates


def all_lengths(tables: Sequence[Table]) -> list[int]:
    """Every length any of the tables has, in tokens, ascending."""
    return sorted({row.length for table in tables for row in table.rows})


def display_names(tables: Sequence[Table]) -> list[str]:
    """Table names, with the run's parent folder appended where two runs share a model name."""
    names = [t.name for t in tables]
    out = []
    for table in tables:
        if names.count(table.name) > 1 and table.run is not None:
            out.append(f"{table.name} ({table.run.path.parent.name or table.run.path.name})")
        else:
            out.append(table.name)
    return out


def _same_run(a: Table, b: Table) -> bool:
    return a is b or (a.run is not None and a.run is b.run)


def score_tables(tables: Sequence[Table], comparisons: Sequence[Comparison]) -> list[Table]:
    """The given tables plus each comparison's two runs, once each (by run, not by name:
    two runs of one checkpoint share a model name)."""
    out = list(tables)
    for c in comparisons:
        for t in (c.baseline_table, c.candidate_table):
            if not any(_same_run(t, x) for x in out):
                out.append(t)
    return out
