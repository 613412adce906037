"""``lm-eval-ruler report`` and ``lm-eval-ruler compare``: tables, recovery and a CI gate from results folders.

Wire into the main CLI with :func:`add_report_commands` on its subparsers
object, then dispatch ``args.command in REPORT_COMMANDS`` to
``args.report_handler(args)`` (or call :func:`handle_report` /
:func:`handle_compare` directly). Exit codes: 0 = report written / gate
passed, 1 = a gate failed, 2 = bad input (unreadable or incomparable results).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ReportError, run_reporting_errors
from .comparison import compare, gate
from .html import to_html
from .intervals import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from .plots import save_plots
from .runs import Run, load_run
from .sweep_folder import is_sweep_folder, load_sweep
from .table import ruler_table
from .text import github_summary, to_csv, to_json, to_markdown

REPORT_COMMANDS = ("report", "compare")
FORMATS = ("markdown", "csv", "json", "html", "github")

EXIT_OK = 0
EXIT_GATE_FAILED = 1

_RUN_HELP = """\
A RUN is what lm-eval wrote with --output_path: the <output_path>/<model_name>
folder, the <output_path> itself when it holds one model folder, or one
results_<timestamp>.json. Several results files in one folder (a sweep that ran
one length per invocation) are merged, newest winning. Sample logs
(--log_samples) next to them are used for paired intervals and depth heatmaps.
Prefix LABEL= to name a run in the report: base=results/llama  fp8=results/llama-fp8
"""

REPORT_EPILOG = (
    _RUN_HELP
    + """
What you get, per run: RULER's score per length (mean of the 13 task scores,
0-100; a length missing any task shows no score instead of averaging a zero),
category and task scores, Avg and wAvg (inc/dec) over 4K..128K, and the
effective length (largest length above 85.6, RULER's Llama-2-7B-chat@4K
threshold; and the NoLiMa-style one keeping >=85% of the model's own 4K score).

Examples:
  lm-eval-ruler report results/meta-llama__Llama-3.1-8B-Instruct
  lm-eval-ruler report base=results/llama fp8=results/llama-fp8 --format html --output ruler.html
  lm-eval-ruler report results/llama --format csv --output ruler.csv --plots plots/
"""
)

COMPARE_EPILOG = (
    _RUN_HELP
    + """
Recovery = candidate / baseline x 100 (the quantization convention: 99% means
the candidate keeps 99% of the baseline's score), per task, category, length and
overall (overall = candidate Avg / baseline Avg over the compared lengths).

Intervals: with sample logs in both runs, a paired bootstrap over documents
(pairs by task + doc_id, verified by doc_hash): tight, because both models
answered the same prompts. Without logs, a normal approximation from lm-eval's
stderrs that treats the runs as independent (wider).

Both runs must have been evaluated on identical data (same tokenizer, chat
template, profile, seed, num_samples, cache key, source files); otherwise the
command refuses (exit 2) unless --allow-mismatch.

The gate fails (exit 1) when overall recovery < --min-recovery, or when the
overall drop is statistically significant (upper bound of the (1-alpha)
interval of candidate - baseline below 0). One overall test, not one per
length, so an unchanged model does not fail by chance on one of six lengths;
use --gate-lengths to leave e.g. 128K report-only.

Examples:
  lm-eval-ruler compare --baseline results/llama --candidate results/llama-w4a16
  lm-eval-ruler compare --baseline results/llama --candidate results/fp8 --candidate results/w8a8 \\
      --lengths 4k..64k --min-recovery 99 --format github --output "$GITHUB_STEP_SUMMARY"
  lm-eval-ruler compare --baseline results/llama --candidate results/w4a16 \\
      --gate-lengths 4k..64k --format html --output recovery.html --plots plots/

Exit codes: 0 every gate passed, 1 a gate failed, 2 bad input.
"""
)


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="markdown",
        help="markdown (default), csv (long format), json (everything, unrounded), html (one self-contained file "
        "with plots), github (compact markdown for $GITHUB_STEP_SUMMARY)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write here instead of stdout (github format appends, as $GITHUB_STEP_SUMMARY expects; "
        "without --output it appends to $GITHUB_STEP_SUMMARY when that is set)",
    )
    parser.add_argument("--plots", metavar="DIR", help="also save PNG and SVG plots here (needs: pip install 'lm-eval-ruler[plot]')")
    parser.add_argument("--title", default=None, help="report title (markdown and html)")


def add_report_commands(subparsers: Any) -> None:
    """Add ``report`` and ``compare`` to an argparse subparsers object.

    Each sets ``report_handler`` on the parsed namespace: call
    ``args.report_handler(args)`` and use its return value as the exit code.
    """
    formatter = argparse.RawDescriptionHelpFormatter
    report_parser = subparsers.add_parser(
        "report",
        help="RULER tables (per-length scores, Avg, wAvg, effective length) from lm-eval results",
        description="Print RULER's tables for one or more runs, recomputed from the per-task rows of lm-eval's results.",
        epilog=REPORT_EPILOG,
        formatter_class=formatter,
    )
    report_parser.add_argument("runs", nargs="+", metavar="RUN", help="results folder or results_*.json, optionally LABEL=PATH")
    _add_output_args(report_parser)
    report_parser.set_defaults(report_handler=handle_report)

    compare_parser = subparsers.add_parser(
        "compare",
        help="recovery of candidate(s) vs a baseline with confidence intervals, and a pass/fail gate for CI",
        description="Compare candidate runs (e.g. quantized checkpoints) with a baseline run on the same RULER data.",
        epilog=COMPARE_EPILOG,
        formatter_class=formatter,
    )
    compare_parser.add_argument("--baseline", required=True, metavar="RUN", help="the reference run (e.g. the bf16 model)")
    compare_parser.add_argument(
        "--candidate", required=True, action="append", metavar="RUN", help="a run to judge; repeat for several candidates"
    )
    compare_parser.add_argument(
        "--min-recovery",
        type=float,
        default=99.0,
        metavar="PCT",
        help="gate: overall recovery must be at least this percentage (default 99)",
    )
    compare_parser.add_argument(
        "--lengths",
        metavar="SPEC",
        help="compare only these lengths: a range 4k..64k, a list 4k,8k,32k, or 'standard' (4k..128k); default: all "
        "the candidate ran. The baseline must have every compared task.",
    )
    compare_parser.add_argument(
        "--gate-lengths", metavar="SPEC", help="gate on these compared lengths only (same syntax); the others are report-only"
    )
    compare_parser.add_argument(
        "--alpha", type=float, default=0.05, help="intervals are (1-alpha) level and the gate tests at alpha (default 0.05 = 95%%)"
    )
    compare_parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="compare runs whose data provenance differs (tokenizer, template, samples ...); differences become warnings",
    )
    compare_parser.add_argument(
        "--method",
        choices=("auto", "paired-bootstrap", "stderr"),
        default="auto",
        help="interval method: auto = paired bootstrap when both runs have sample logs, else stderr",
    )
    compare_parser.add_argument(
        "--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES, metavar="B", help=f"bootstrap resamples (default {BOOTSTRAP_RESAMPLES})"
    )
    compare_parser.add_argument(
        "--seed", type=int, default=BOOTSTRAP_SEED, help=f"bootstrap seed, fixed so reports are reproducible (default {BOOTSTRAP_SEED})"
    )
    _add_output_args(compare_parser)
    compare_parser.set_defaults(report_handler=handle_compare)


def _load(spec: str) -> list[Run]:
    """Runs named by one argument: a results folder, ``LABEL=PATH``, or a sweep output (one run per model).

    A label names the runs of a sweep folder too: ``LABEL`` for a folder with one
    model, ``LABEL/<model>`` for each model of a folder with several.
    """
    label, sep, path = spec.partition("=")
    if not (sep and label and not Path(spec).exists()):
        label, path = "", spec
    if is_sweep_folder(path):
        return _labelled(list(load_sweep(path).values()), label)
    return [load_run(path, name=label) if label else load_run(path)]


def _labelled(runs: list[Run], label: str) -> list[Run]:
    """``runs`` (one per model of a sweep folder) renamed after the user's label, when there is one."""
    import dataclasses

    if not label:
        return runs
    if len(runs) == 1:
        return [dataclasses.replace(runs[0], name=label)]
    return [dataclasses.replace(run, name=f"{label}/{run.name}") for run in runs]


def _render(items: list[Any], fmt: str, title: str | None) -> str:
    kwargs = {"title": title} if title else {}
    renderers: dict[str, Callable[..., str]] = {
        "markdown": lambda: to_markdown(items, **kwargs),
        "csv": lambda: to_csv(items),
        "json": lambda: to_json(items),
        "html": lambda: to_html(items, **kwargs),
        "github": lambda: github_summary(items),
    }
    return renderers[fmt]()


def _emit(text: str, args: argparse.Namespace) -> None:
    target = args.output or (os.environ.get("GITHUB_STEP_SUMMARY") if args.format == "github" else None)
    if not target:
        sys.stdout.write(text)
        return
    path = Path(target)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if args.format == "github" else "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {path}", file=sys.stderr)


def _plots(items: list[Any], args: argparse.Namespace) -> None:
    if args.plots:
        for path in save_plots(items, args.plots):
            print(f"plot {path}", file=sys.stderr)


def handle_report(args: argparse.Namespace) -> int:
    """``report RUN...``: RULER tables; always exit 0 unless the input is bad (2)."""
    runs = [run for spec in args.runs for run in _load(spec)]
    tables = [ruler_table(run) for run in runs]
    for run in runs:
        for warning in run.warnings:
            print(f"warning: {run.name}: {warning}", file=sys.stderr)
    text = _render(tables, args.format, args.title)
    _plots(tables, args)
    _emit(text, args)
    return EXIT_OK


def handle_compare(args: argparse.Namespace) -> int:
    """``compare --baseline A --candidate B...``: recovery, intervals and the gate; exit 0 pass, 1 fail, 2 bad input."""
    baselines = _load(args.baseline)
    if len(baselines) != 1:
        raise ReportError(f"--baseline must name one model's results, but {args.baseline} holds {len(baselines)} models")
    baseline = baselines[0]
    results = []
    for candidate in (run for spec in args.candidate for run in _load(spec)):
        comparison = compare(
            baseline,
            candidate,
            lengths=args.lengths,
            alpha=args.alpha,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            method=args.method,
            allow_mismatch=args.allow_mismatch,
        )
        results.append(gate(comparison, min_recovery=args.min_recovery, alpha=args.alpha, lengths=args.gate_lengths))
    text = _render(results, args.format, args.title)
    _plots(results, args)
    _emit(text, args)
    for result in results:
        c, e = result.comparison, result.estimate
        for warning in c.warnings:
            print(f"warning: {c.candidate}: {warning}", file=sys.stderr)
        ci = f" [{e.difference_ci[0]:+.2f}, {e.difference_ci[1]:+.2f}]" if e.difference_ci else ""
        recovery = f"{e.recovery:.2f}%" if e.recovery is not None else "n/a"
        print(
            f"{'PASS' if result.passed else 'FAIL'}  {c.candidate} vs {c.baseline}: recovery {recovery} "
            f"(min {result.min_recovery:.2f}%), Δ {e.difference:+.2f}{ci} over {', '.join(result.lengths)} [{c.method}]",
            file=sys.stderr,
        )
        for reason in result.reasons:
            print(f"  - {reason}", file=sys.stderr)
    return EXIT_OK if all(r.passed for r in results) else EXIT_GATE_FAILED


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser with just these two commands (``python -m lm_eval_ruler.report.cli``)."""
    parser = argparse.ArgumentParser(prog="lm-eval-ruler", description="RULER reports and recovery gates from lm-eval results.")
    add_report_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: args.report_handler(args))


if __name__ == "__main__":
    sys.exit(main())
