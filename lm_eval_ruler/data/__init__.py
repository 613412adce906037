"""The data wing: from a task, a length and a tokenizer to docs, generated or loaded from the cache.

``build_dataset(task, length, DatasetOptions(tokenizer=...))`` returns a
``GeneratedDataset`` (docs + the build info recorded as provenance); the lm-eval
task (``harness``), the ``generate`` command and the sweep all go through it.
``options_from_metadata`` turns a run's lm-eval metadata into ``DatasetOptions``.

Inside: ``options`` (the options and their parsing), ``build`` (cache keys,
dispatch to the family generator, provenance), ``cache`` (the cache root and
the dataset cache on disk), ``sources`` (fetching, verifying and importing the
pinned essay/SQuAD/HotpotQA files that ``catalog`` lists), ``tokens``
(tokenizer loading and prompt counting) and ``families/`` (the five RULER task
generators and their shared kit).

Import rule: nothing under ``data/`` imports ``lm_eval_ruler.harness``,
``report``, ``sweep``, ``cli`` or ``lm_eval``; it may import ``_tasks``,
``errors``, ``provenance``, ``_files`` and its own modules. So the sweep and the
CLI can parse options and generate data without importing lm-eval.

Attributes load lazily (like the package's own), so importing the option
parsers (``data.options``) stays cheap for the startup-time validator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import GeneratedDataset, build_dataset
    from .cache import DatasetCache, cache_root
    from .options import DatasetOptions, options_from_metadata

_EXPORTS = {
    "build_dataset": ".build",
    "GeneratedDataset": ".build",
    "DatasetOptions": ".options",
    "options_from_metadata": ".options",
    "DatasetCache": ".cache",
    "cache_root": ".cache",
}
__all__ = ["DatasetCache", "DatasetOptions", "GeneratedDataset", "build_dataset", "cache_root", "options_from_metadata"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'lm_eval_ruler.data' has no attribute {name!r}")
