"""RULER long-context tasks for lm-evaluation-harness.

The public API, by wing:

* data: ``build_dataset(task, length, DatasetOptions(tokenizer=...))`` generates (or loads from
  the cache) one task's docs; ``Provenance`` is the record of what determined them;
* report: ``load_run`` / ``load_sweep`` read results, ``ruler_table`` gives RULER's numbers,
  ``compare`` a candidate's recovery of a baseline with intervals, ``gate`` the CI verdict;
* sweep: ``run_sweep(SweepConfig(models=(...), lengths=(...)))`` runs models x lengths;
* the task table (``TASKS``, ``LENGTHS`` ...), NVIDIA's metrics and one error hierarchy
  (every error is a ``RulerError``).

Everything else is private and may change. Attributes load on first use: the startup hook
(``lm_eval_ruler.pth``) imports this package in every Python process, which must cost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._tasks import CATEGORIES, LENGTHS, PROFILES, STANDARD_LENGTHS, TASKS, TaskSpec, parse_length, task_configs_dir
    from .data import DatasetOptions, GeneratedDataset, build_dataset
    from .errors import BudgetError, ConfigurationError, DataSourceError, ReportError, RulerError, TokenizerError
    from .metrics import string_match_all, string_match_part
    from .provenance import Provenance
    from .report import compare, gate, load_run, load_sweep, ruler_table
    from .sweep import SweepConfig, run_sweep

_EXPORTS = {
    "DatasetOptions": ".data",
    "GeneratedDataset": ".data",
    "build_dataset": ".data",
    "Provenance": ".provenance",
    "compare": ".report",
    "gate": ".report",
    "load_run": ".report",
    "load_sweep": ".report",
    "ruler_table": ".report",
    "SweepConfig": ".sweep",
    "run_sweep": ".sweep",
    "CATEGORIES": "._tasks",
    "LENGTHS": "._tasks",
    "PROFILES": "._tasks",
    "STANDARD_LENGTHS": "._tasks",
    "TASKS": "._tasks",
    "TaskSpec": "._tasks",
    "parse_length": "._tasks",
    "task_configs_dir": "._tasks",
    "BudgetError": ".errors",
    "ConfigurationError": ".errors",
    "DataSourceError": ".errors",
    "ReportError": ".errors",
    "RulerError": ".errors",
    "TokenizerError": ".errors",
    "string_match_all": ".metrics",
    "string_match_part": ".metrics",
}
__all__ = [
    "CATEGORIES",
    "LENGTHS",
    "PROFILES",
    "STANDARD_LENGTHS",
    "TASKS",
    "BudgetError",
    "ConfigurationError",
    "DataSourceError",
    "DatasetOptions",
    "GeneratedDataset",
    "Provenance",
    "ReportError",
    "RulerError",
    "SweepConfig",
    "TaskSpec",
    "TokenizerError",
    "build_dataset",
    "compare",
    "gate",
    "load_run",
    "load_sweep",
    "parse_length",
    "ruler_table",
    "run_sweep",
    "string_match_all",
    "string_match_part",
    "task_configs_dir",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'lm_eval_ruler' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
