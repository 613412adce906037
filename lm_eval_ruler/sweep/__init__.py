"""``lm-eval-ruler sweep``: a grid of models x lengths, one lm-eval run per cell, resumable.

A *cell* is one model at one length. Each cell is one ``lm-eval-ruler run`` (lm-eval's CLI with
our tasks registered) that evaluates all the requested RULER tasks at that length and writes its
results under ``<output>/<model-slug>/<length>/``; the cells run in turn in one worker process
(``lm_eval_ruler._cell_worker``: imports once, keeps a vLLM engine while cells ask for the same
one), or with ``process_per_cell`` each as its own ``python -m lm_eval_ruler run``. The sweep

1. validates everything cheap first: tasks, lengths, backend options, and every length against
   the model's window (``--max-window``, else the model's ``config.json``), so a length that
   cannot be served is refused *before* anything runs;
2. generates (or loads) every pending cell's datasets in this process, with exactly the
   options the child will derive from its metadata, so the child loads them from the cache
   and the served window can be sized from the real prompts;
3. runs the cells in a fixed order (``--shard i/n`` takes every n-th), recording each in
   ``cell.json`` (status running/done/failed, exit code, timings, command, results file) and
   ``manifest.json`` (versions, GPU, tokenizer and data fingerprints, seeds, command).

A second invocation skips ``done`` cells and reruns ``failed`` and stale ``running`` ones, so
a killed sweep continues where it stopped. All shards write the same layout, so merging them
is pointing the report at the output folder.

Modules: ``config`` (the configuration and its validation), ``plan`` (cells, their datasets and
commands), ``checks`` (backend, windows and settings, before anything runs), ``state`` (a cell's
``cell.json`` and process), ``run`` (the loop and manifests), ``worker`` (the handle on the worker
process), ``slurm`` (the grid as one Slurm job
array, ``--slurm``) and ``cli`` (the command line). The folder format that ``report`` reads lives
in ``lm_eval_ruler.report.sweep_folder``.

Python API: ``run_sweep(SweepConfig(models=("meta-llama/Llama-3.1-8B-Instruct",), ...))``.
"""

from __future__ import annotations

from .checks import REPLACED_DIR, cell_settings
from .cli import add_arguments, main, run_command
from .config import BACKENDS, ModelSpec, SweepConfig, model_slug, parse_shard
from .plan import Cell, plan_cells
from .run import CellOutcome, SweepResult, run_sweep

__all__ = [
    "BACKENDS",
    "REPLACED_DIR",
    "Cell",
    "CellOutcome",
    "ModelSpec",
    "SweepConfig",
    "SweepResult",
    "add_arguments",
    "cell_settings",
    "main",
    "model_slug",
    "parse_shard",
    "plan_cells",
    "run_command",
    "run_sweep",
]
