"""Plots: score vs length, recovery heatmaps and NIAH needle-depth heatmaps, as PNG and SVG.

matplotlib is an optional extra (``lm-eval-ruler[plot]``), imported only when a
plot is drawn, through the Agg backend without touching pyplot's global state.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._tasks import CATEGORIES
from ..errors import ReportError
from .comparison import Comparison
from .items import Items, all_lengths, collect, display_names, score_tables
from .runs import Run, length_label
from .table import TASK_ORDER, THRESHOLD, Table

PLOT_INSTALL_HINT = "pip install 'lm-eval-ruler[plot]'"
#: Needle depths (0-100% of the context) fall into this many equal bins.
DEPTH_BINS = 10


def require_matplotlib() -> Any:
    """Import matplotlib only when a plot is asked for; it is an optional extra."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(f"plots need matplotlib, which is not installed: {PLOT_INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def _new_figure(width: float, height: float) -> Any:
    Figure, FigureCanvasAgg = require_matplotlib()
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend, without touching pyplot's global state
    return figure


# --------------------------------------------------------------------------- figures


def figure_scores(tables: Sequence[Table]) -> Any:
    """Score vs length per run, with RULER's dashed threshold line."""
    lengths = all_lengths(tables)
    if not lengths:
        raise ReportError("nothing to plot: no lengths")
    figure = _new_figure(7.5, 4.2)
    ax = figure.add_subplot()
    positions = {tokens: math.log2(tokens) for tokens in lengths}
    for table, name in zip(tables, display_names(tables)):
        points = sorted(table.scores.items())
        if points:
            ax.plot([positions[t] for t, _ in points], [s for _, s in points], marker="o", linewidth=2, label=name)
    ax.axhline(THRESHOLD, color="0.35", linestyle="--", linewidth=1.2, label=f"{THRESHOLD} (Llama-2-7B-chat @ 4K)")
    ax.set_xticks([positions[t] for t in lengths], [length_label(t) for t in lengths])
    lows = [s for table in tables for s in table.scores.values()]
    ax.set_ylim(max(0.0, min(lows + [THRESHOLD]) - 8), 100.5)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("RULER score (13-task mean)")
    ax.set_title("RULER score vs length")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure


def _heatmap(ax: Any, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], norm: Any, cmap: str, fmt: str) -> Any:
    import matplotlib

    colormap = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=colormap, norm=norm)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            red, green, blue, _ = colormap(norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7, color="white" if dark else "black")
    return image


def figure_recovery(comparison: Comparison) -> Any:
    """Recovery % by task and length, white at 100%."""
    from matplotlib.colors import TwoSlopeNorm

    rows = ["length score", *TASK_ORDER]
    matrix = np.full((len(rows), len(comparison.lengths)), np.nan)
    for j, item in enumerate(comparison.lengths):
        matrix[0, j] = item.score.recovery if item.score.recovery is not None else np.nan
        for i, task in enumerate(TASK_ORDER, 1):
            e = item.per_task.get(task)
            if e is not None and e.recovery is not None:
                matrix[i, j] = e.recovery
    finite = matrix[np.isfinite(matrix)]
    # White = unchanged (100%); the scale spans at least 90..110 so small noise stays pale.
    low = min(float(finite.min()) if finite.size else 90.0, 90.0)
    high = max(float(finite.max()) if finite.size else 110.0, 110.0)
    figure = _new_figure(max(5.8, 2.6 + 0.9 * len(comparison.lengths)), 6.0)
    ax = figure.add_subplot()
    image = _heatmap(ax, matrix, rows, [i.label for i in comparison.lengths], TwoSlopeNorm(100.0, low, high), "RdBu", ".1f")
    ax.axhline(0.5, color="black", linewidth=1)
    ax.set_title(f"Recovery % (candidate / baseline x 100)\ncandidate: {comparison.candidate}\nbaseline: {comparison.baseline}", fontsize=8)
    figure.colorbar(image, ax=ax, label="recovery %")
    return figure


def _depth_matrix(run: Run) -> tuple[np.ndarray, np.ndarray, list[int]]:
    niah = set(CATEGORIES["retrieval"])
    lengths = sorted({t for (task, t), samples in run.samples.items() if task in niah and any(s.depth is not None for s in samples)})
    if not lengths:
        raise ReportError(
            f"no NIAH sample logs with needle depths for {run.name}: run lm-eval with --log_samples on the niah tasks"
        )
    sums = np.zeros((DEPTH_BINS, len(lengths)))
    counts = np.zeros((DEPTH_BINS, len(lengths)))
    for (task, tokens), samples in run.samples.items():
        if task not in niah or tokens not in lengths:
            continue
        j = lengths.index(tokens)
        for s in samples:
            if s.depth is None:
                continue
            i = min(int(s.depth // (100 / DEPTH_BINS)), DEPTH_BINS - 1)
            sums[i, j] += s.score
            counts[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), counts, lengths


def figure_depth(run: Run) -> Any:
    """Mean NIAH score by needle depth (rows) and length (columns), from sample logs."""
    from matplotlib.colors import Normalize

    matrix, _, lengths = _depth_matrix(run)
    width = 100 // DEPTH_BINS
    rows = [f"{i * width}-{(i + 1) * width}%" for i in range(DEPTH_BINS)]
    figure = _new_figure(max(5.0, 2.6 + 0.9 * len(lengths)), 4.8)
    ax = figure.add_subplot()
    image = _heatmap(ax, matrix, rows, [length_label(t) for t in lengths], Normalize(0, 100), "RdYlGn", ".0f")
    ax.set_ylabel("needle depth (percent of context)")
    ax.set_xlabel("context length")
    ax.set_title(f"NIAH score by needle depth\n{run.name}", fontsize=9)
    figure.colorbar(image, ax=ax, label="mean score (8 NIAH tasks)")
    return figure


# --------------------------------------------------------------------------- files


def _save(figure: Any, path: str | Path) -> list[Path]:
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix.lower() in (".png", ".svg") else stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        target = stem.parent / (stem.name + suffix)
        figure.savefig(target, format=suffix[1:])
        written.append(target)
    return written


def png_base64(figure: Any) -> str:
    """The figure as a base64 PNG, for an inline ``<img>``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_scores(tables: Table | Sequence[Table], path: str | Path) -> list[Path]:
    """Score vs length per run with RULER's dashed 85.6 line; writes ``<path>.png`` and ``<path>.svg``."""
    return _save(figure_scores([tables] if isinstance(tables, Table) else list(tables)), path)


def plot_recovery_heatmap(comparison: Comparison, path: str | Path) -> list[Path]:
    """Task x length recovery %, diverging at 100; writes PNG and SVG."""
    return _save(figure_recovery(comparison), path)


def plot_depth_heatmap(run: Run, path: str | Path) -> list[Path]:
    """NIAH needle depth (10 bins) x length mean score from sample logs; writes PNG and SVG."""
    return _save(figure_depth(run), path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def runs_with_depths(tables: Sequence[Table], comparisons: Sequence[Comparison]) -> list[Run]:
    """The runs (of tables and both sides of comparisons), once each, whose NIAH sample logs record needle depths."""
    runs: list[Run] = [t.run for t in tables if t.run is not None]
    for c in comparisons:
        runs += [c.baseline_run, c.candidate_run]
    unique: list[Run] = []
    for run in runs:
        if all(run is not u for u in unique) and any(task in CATEGORIES["retrieval"] and any(s.depth is not None for s in samples) for (task, _), samples in run.samples.items()):
            unique.append(run)
    return unique


def save_plots(items: Items, directory: str | Path) -> list[Path]:
    """Every plot that applies to ``items`` (scores, recovery heatmaps, depth heatmaps), as PNG and SVG."""
    tables, comparisons, _ = collect(items)
    directory = Path(directory)
    written: list[Path] = []
    used: set[str] = set()
    tables_to_plot = score_tables(tables, comparisons)
    if tables_to_plot:
        written += plot_scores(tables_to_plot, directory / _unique_stem("ruler_scores", used))
    for comparison in comparisons:
        written += plot_recovery_heatmap(comparison, directory / _unique_stem(f"recovery_{_slug(comparison.candidate)}", used))
    for run in runs_with_depths(tables, comparisons):
        written += plot_depth_heatmap(run, directory / _unique_stem(f"niah_depth_{_slug(run.name)}", used))
    return written


def _unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3`` ... when an earlier plot of this call took it.

    Runs are named by their labels, but two unlabelled runs of one model share a
    name; a plot written earlier in the same call is never overwritten. Compared
    case-insensitively, for case-insensitive file systems.
    """
    candidate, number = stem, 1
    while candidate.casefold() in used:
        number += 1
        candidate = f"{stem}_{number}"
    used.add(candidate.casefold())
    return candidate
