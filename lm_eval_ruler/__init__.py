"""RULER long-context tasks for lm-evaluation-harness.

The public API is small: generate a task's docs (``build_dataset``), the task
table (``TASKS``, ``LENGTHS``), the metrics, and the error hierarchy.
Everything else is private and may change. Attributes load lazily, so the
interpreter-start hook (``lm_eval_ruler._hook``) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DatasetOptions": ".data.options",
    "GeneratedDataset": ".data.build",
    "build_dataset": ".data.build",
    "CATEGORIES": "._tasks",
    "LENGTHS": "._tasks",
    "PROFILES": "._tasks",
    "STANDARD_LENGTHS": "._tasks",
    "TASKS": "._tasks",
    "TaskSpec": "._tasks",
    "parse_length": "._tasks",
    "task_configs_dir": "._tasks",
    "BudgetError": ".errors",
    "CacheError": ".errors",
    "ConfigurationError": ".errors",
    "DataSourceError": ".errors",
    "ReportError": ".errors",
    "RulerError": ".errors",
    "TokenizerError": ".errors",
    "string_match_all": ".metrics",
    "string_match_part": ".metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'lm_eval_ruler' has no attribute {name!r}")
