"""RULER tables, baseline-vs-candidate recovery with intervals, CI gates, and reports.

lm-eval writes one ``results_<timestamp>.json`` per run (and, with
``--log_samples``, one ``samples_<task>_<timestamp>.jsonl`` per task).  This
package turns those files into what RULER users actually read:

* :func:`load_run` reads a results folder (merging a sweep's several files),
  :func:`load_sweep` a sweep's output folder (one run per model);
* :func:`ruler_table` gives RULER's leaderboard numbers: the 13-task score per
  length, Avg, wAvg (inc/dec) and the effective length;
* :func:`compare` gives a candidate's *recovery* of a baseline (the
  quantization-evaluation convention: candidate / baseline x 100) with
  confidence intervals, after checking both runs saw identical data;
* :func:`gate` turns a comparison into a pass/fail decision for CI;
* :func:`to_markdown`, :func:`to_csv`, :func:`to_json`, :func:`to_html`,
  :func:`github_summary` and :func:`save_plots` write it all out.

Everything is recomputed from the per-task rows: lm-eval's group rows
(``ruler_4k``, ``ruler_suite`` ...) are ignored, because a group row averages
whatever subtasks happened to run and cannot say that a length is incomplete.

Modules, in import order: ``runs`` (reading results), ``table`` (the RULER
table), ``intervals`` and ``comparison`` (recovery, intervals, the gate),
``items``, ``text``, ``plots`` and ``html`` (outputs), ``sweep_folder`` (a
sweep's output folder) and ``cli`` (the ``report`` and ``compare`` commands).
None of them imports lm-eval, transformers or torch; matplotlib is imported
only when a plot is drawn.
"""

from __future__ import annotations

from ..errors import ReportError
from .comparison import Comparison, GateResult, LengthComparison, compare, gate, select_lengths
from .html import to_html
from .intervals import Estimate
from .plots import plot_depth_heatmap, plot_recovery_heatmap, plot_scores, save_plots
from .runs import Run, SampleScore, TaskResult, length_label, load_run
from .sweep_folder import is_sweep_folder, load_sweep
from .table import RELATIVE_FRACTION, THRESHOLD, LengthRow, Table, effective_length, ruler_table
from .text import github_summary, to_csv, to_json, to_markdown

__all__ = [
    "RELATIVE_FRACTION",
    "THRESHOLD",
    "Comparison",
    "Estimate",
    "GateResult",
    "LengthComparison",
    "LengthRow",
    "ReportError",
    "Run",
    "SampleScore",
    "Table",
    "TaskResult",
    "compare",
    "effective_length",
    "gate",
    "github_summary",
    "is_sweep_folder",
    "length_label",
    "load_run",
    "load_sweep",
    "plot_depth_heatmap",
    "plot_recovery_heatmap",
    "plot_scores",
    "ruler_table",
    "save_plots",
    "select_lengths",
    "to_csv",
    "to_html",
    "to_json",
    "to_markdown",
]
