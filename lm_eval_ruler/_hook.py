"""Let lm-eval 0.4.13 find our tasks, and tell our tasks how lm-eval renders prompts.

lm-eval 0.4.13 has no plugin hook: it only scans its own task folder and
``--include_path``. Two small patches make the installed plugin behave like a
built-in task family:

* ``TaskManager.__init__`` gets our ``task_configs`` directory as an extra
  include path, placed *before* any user path so users can still override;
* ``EvaluatorConfig._process_arguments`` copies ``--apply_chat_template`` and
  ``--system_instruction`` into the task metadata (as ``ruler_*`` keys), so
  prompts are sized for exactly the rendering the run will use, and, when a
  ``ruler*`` task is requested, validates the task names, metadata and backend
  (``_validate``) before lm-eval loads the model.

The ``lm-eval-ruler`` command applies them explicitly. For a plain ``lm_eval``
the wheel ships ``lm_eval_ruler.pth``, which imports this (deliberately tiny)
module at interpreter start; it does nothing until lm-eval itself is imported.
Set ``LM_EVAL_RULER_AUTOLOAD=0`` to turn that off.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

from ._tasks import task_configs_dir

DISABLE_ENV = "LM_EVAL_RULER_AUTOLOAD"
_PATCHED = "_lm_eval_ruler_patched"
#: Set by ``lm-eval-ruler run`` when every requested task is ours: lm-eval then need not index its
#: own ~15,000 task configs, which takes seconds at the start of every run (every sweep cell).
index_lm_eval_tasks = True


def autoload_enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def _patch_task_manager(module: Any) -> None:
    manager = module.TaskManager
    original = manager.__init__
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def __init__(self: Any, verbosity: Any = None, include_path: Any = None, *args: Any, **kwargs: Any) -> None:
        if include_path is None:
            paths: list[Any] = []
        elif isinstance(include_path, (list, tuple)):
            paths = list(include_path)
        else:
            paths = [include_path]
        ours = str(task_configs_dir())
        if ours not in [str(p) for p in paths]:
            paths.insert(0, ours)
        if not index_lm_eval_tasks and not args:
            kwargs.setdefault("include_defaults", False)
        original(self, verbosity, paths, *args, **kwargs)

    setattr(__init__, _PATCHED, True)
    manager.__init__ = __init__


def validate_requested_tasks(tasks: Any, metadata: Any, model: Any, model_args: Any = None) -> bool:
    """Check a run that asks for a ``ruler*`` task before lm-eval loads the model; True for such a run.

    Runs from ``EvaluatorConfig._process_arguments`` (``from_cli`` -> ``_configure``),
    where lm-eval has merged the YAML config, CLI args and ``model_args | metadata``
    but not yet resolved tasks or built the model. Runs without such a task never
    import the validator. A run against a server (``base_url``) first gets the args it
    lacks from the server (``add_server_args``).
    """
    items = [tasks] if isinstance(tasks, str) else tasks if isinstance(tasks, (list, tuple)) else []
    names = [part.strip() for item in items if isinstance(item, str) for part in item.split(",")]
    if not any(name.startswith("ruler") for name in names):
        return False
    if isinstance(metadata, dict) and metadata.get("base_url") and isinstance(model_args, dict):
        add_server_args(model, model_args, metadata)
    from ._validate import validate_run

    validate_run(tasks, metadata if isinstance(metadata, dict) else {}, model if isinstance(model, str) else None)
    return True


def add_server_args(model: Any, model_args: dict[str, Any], metadata: dict[str, Any]) -> None:
    """A RULER run against a server (``base_url``) takes its window and tokenizer from the server.

    Without this, lm-eval's API backend keeps its default ``max_length`` of 2048 whatever the
    server serves, and counts with whatever tokenizer the served name loads. The missing args
    (``_server.complete_server_args``) go into both the model's args and the tasks' metadata,
    before lm-eval builds either, so the task refuses a length over the server's window.
    """
    from ._server import SERVER_BACKENDS, complete_server_args

    if model not in SERVER_BACKENDS:
        return
    for key, value in complete_server_args(metadata).items():
        model_args.setdefault(key, value)
        metadata.setdefault(key, value)


#: lm-eval turns tokenizer threads off for every run (``_cli/run.py``), so its vLLM backend tokenizes
#: all of a run's prompts on one core before generating: 32-36 s of a 108-136 s RULER cell (4K,
#: 5,500 prompts, 22M tokens) on an H100 machine, as long as the generation itself. vLLM's engine
#: process is already running by then and gets token ids, so RULER runs on vLLM turn threads back on
#: (measured on the H100 machine: 46 s -> 5 s of tokenizing, a warm cell 148 s -> 94 s, same scores).
_VLLM_BACKENDS = ("vllm", "vllm-vlm")


def _patch_evaluator_config(module: Any) -> None:
    config_cls = module.EvaluatorConfig
    original = config_cls._process_arguments
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def _process_arguments(self: Any) -> Any:
        result = original(self)
        metadata = self.metadata if isinstance(self.metadata, dict) else {}
        metadata.setdefault("ruler_apply_chat_template", bool(self.apply_chat_template))
        if self.system_instruction:
            metadata.setdefault("ruler_system_instruction", self.system_instruction)
        self.metadata = metadata
        if validate_requested_tasks(self.tasks, metadata, self.model, self.model_args) and self.model in _VLLM_BACKENDS:
            os.environ["TOKENIZERS_PARALLELISM"] = "true"
        return result

    setattr(_process_arguments, _PATCHED, True)
    config_cls._process_arguments = _process_arguments


_PATCHES = {"lm_eval.tasks.manager": _patch_task_manager, "lm_eval.config.evaluate_config": _patch_evaluator_config}


def patch_lm_eval(*, only_our_tasks: bool = False) -> None:
    """Apply both patches now (imports lm-eval); ``only_our_tasks`` skips indexing lm-eval's own tasks."""
    import importlib

    global index_lm_eval_tasks
    index_lm_eval_tasks = not only_our_tasks
    for name, patch in _PATCHES.items():
        patch(importlib.import_module(name))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies a patch right after lm-eval's own module finishes importing."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            _PATCHES[fullname](module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Called from ``lm_eval_ruler.pth`` at interpreter start; cheap and silent."""
    if not autoload_enabled():
        return
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
