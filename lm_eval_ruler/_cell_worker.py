"""The sweep's worker process: runs the cells it is sent, one after another, each as its own lm-eval run.

A fresh ``python -m lm_eval_ruler run`` per cell pays, every cell, for what does not change
between cells: importing lm-eval, torch and vLLM (about 30 s on an H100 machine, 14 s of it
``import vllm``), torch's environment report in lm-eval's results (``add_env_info``), and the
vLLM engine itself. This process (started by ``sweep.worker.CellWorker``) pays for them once:

* it imports while the sweep generates its data;
* each cell is the argument list the per-cell command would run, through ``cli.main``, so a
  cell's results, samples and refusals are those of ``lm-eval-ruler run``;
* a vLLM engine is kept for the next cell when that cell asks for exactly the same engine
  arguments (with the sweep's ``--window model`` every length of a model does), and shut down
  before a different one is built, so two engines never hold the GPU at once;
* a new engine is built on a thread while lm-eval goes on with the cell: building its tasks from
  the data cache and tokenizing every prompt (11 s of a 4K cell on an H100 machine) happen
  during vLLM's load instead of after it; the first use of the engine waits for it;
* torch's environment report, identical for every cell of the process, is computed once, by a
  child process started with the worker (in this process it would initialize CUDA, see
  ``_EnvironmentReport``), so not even the first cell waits for it.

Protocol: one JSON line per cell on stdin (``{"argv": [...]}``), one JSON line per cell on the
reply descriptor (``{"exit_code": N}``); stdin closed ends it. Its output and that of the
processes it starts (vLLM's engine core) go to its stdout, which the sweep copies into the
running cell's log.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

#: The name of the thread that builds an engine (``phases.py`` charges its time to vLLM's load).
BUILD_THREAD = "vllm-engine-build"


class _EngineBeingBuilt:
    """A vLLM engine built on a thread; lm-eval holds this in its place and any use of it waits.

    lm-eval's backend reads one thing from the engine before it needs it for generation: the
    model's configuration, to resolve the chat template. That comes from vLLM's ``EngineArgs``, as
    lm-eval's own data-parallel path builds it, so the backend is not held up by the load. A build
    that fails raises its exception at the first use, so the cell fails with vLLM's own error.
    """

    def __init__(self, build: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self._engine: Any = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._build, args=(build,), name=BUILD_THREAD, daemon=True).start()

    def _build(self, build: Callable[..., Any]) -> None:
        try:
            self._engine = build(**self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that uses the engine
            self._error = exc
        finally:
            self._done.set()

    @property
    def failed(self) -> bool:
        return self._done.is_set() and self._error is not None

    def result(self) -> Any:
        """The engine, once built (raises what building it raised)."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._engine

    @property
    def llm_engine(self) -> Any:
        return self.result().llm_engine if self._done.is_set() else _ConfigBeforeTheEngine(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not the engine's: copy and pickle probe these before __init__ has run
            raise AttributeError(name)
        return getattr(self.result(), name)


class _ConfigBeforeTheEngine:
    """``llm_engine`` while the engine is still loading: its ``model_config`` now, anything else once built."""

    def __init__(self, pending: _EngineBeingBuilt) -> None:
        self._pending = pending

    @functools.cached_property
    def model_config(self) -> Any:
        from vllm.engine.arg_utils import EngineArgs

        try:
            return EngineArgs(**self._pending.kwargs).create_model_config()
        except Exception:  # noqa: BLE001 - arguments only LLM() takes: ask the engine once it is built
            return self._pending.result().llm_engine.model_config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pending.result().llm_engine, name)


class _EnginePool:
    """Hands lm-eval's VLLM class the engine it already built when the arguments are identical."""

    def __init__(self, build: Callable[..., Any]) -> None:
        self.build = build
        self.key: str | None = None
        self.engine: _EngineBeingBuilt | None = None

    def __call__(self, **kwargs: Any) -> _EngineBeingBuilt:
        key = json.dumps(kwargs, sort_keys=True, default=repr)
        if key != self.key or self.engine.failed:
            self.release()
            self.engine = _EngineBeingBuilt(self.build, kwargs)
            self.key = key
        return self.engine

    def release(self) -> None:
        """Shut the engine down and free its GPU memory before another is built (or the worker ends)."""
        pending, self.engine, self.key = self.engine, None, None
        if pending is None:
            return
        try:
            engine = pending.result()
        except BaseException:  # noqa: BLE001 - the cell that used it has reported the failure
            engine = None
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del engine, core, pending
        _free_memory()


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    # is_initialized first: is_available() may initialize CUDA here, and vLLM forks its engine from this process
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


#: lm-eval's environment report, computed by a child process and printed as JSON.
_REPORT_SCRIPT = (
    "import json, sys\n"
    "from lm_eval.loggers.utils import add_env_info\n"
    "report = {}\n"
    "add_env_info(report)\n"
    "json.dump(report, sys.stdout, default=str)\n"
)


class _EnvironmentReport:
    """lm-eval's ``add_env_info``, computed once by a child process started with the worker and copied into every cell.

    Not in this process: torch's report calls ``torch.cuda.init()``, and once CUDA is initialized
    here vLLM starts every later engine by spawning a process that imports vLLM again instead of
    forking this one (measured on the H100 machine: an engine's load 29 s instead of 9 s). The child also
    takes the report's tools (``pip list``, ``nvidia-smi``: 2-3 s) off the cells. Should it fail,
    the first cell computes the report here, as lm-eval would.
    """

    def __init__(self, compute: Callable[[dict[str, Any]], None]) -> None:
        self._compute = compute
        self._report: dict[str, Any] | None = None
        self._child = subprocess.Popen(
            [sys.executable, "-c", _REPORT_SCRIPT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def _from_child(self) -> dict[str, Any]:
        try:
            out, err = self._child.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.communicate()
            out, err = b"", b"no report after 600 s"
        try:
            report = json.loads(out) if self._child.returncode == 0 else None
        except ValueError:
            report = None
        if isinstance(report, dict):
            return report
        print(f"lm-eval-ruler worker: the environment report's process failed ({err.decode(errors='replace')[-500:]!r}); "
              "computing it here", file=sys.stderr)  # fmt: skip
        report = {}
        self._compute(report)
        return report

    def __call__(self, storage: dict[str, Any]) -> None:
        if self._report is None:
            self._report = self._from_child()
        storage.update(self._report)


#: Modules a cell would otherwise import on its way (lm-eval's results table, transformers' auto
#: classes, vLLM's engine). Imported before the first cell, so the engine-building thread and the
#: cell's thread never import at once: two threads importing one package in different orders can
#: be handed a half-initialized module (seen: vLLM's ``from transformers import PreTrainedConfig``).
_IMPORTED_BY_CELLS = (
    "pytablewriter",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.auto.configuration_auto",
)
_IMPORTED_BY_ENGINES = ("vllm.engine.arg_utils", "vllm.v1.engine.llm_engine", "vllm.v1.engine.core_client")


def _prepare(preload_vllm: bool) -> _EnginePool | None:
    """Start the environment report, import what every cell imports, install the engine pool."""
    import importlib

    import lm_eval.evaluator

    from . import cli  # noqa: F401 - the cells' entry point and its imports

    lm_eval.evaluator.add_env_info = _EnvironmentReport(lm_eval.evaluator.add_env_info)
    pool = None
    if preload_vllm:
        import lm_eval.models.vllm_causallms as vllm_lm

        pool = _EnginePool(vllm_lm.LLM)
        vllm_lm.LLM = pool
    for module in _IMPORTED_BY_CELLS + (_IMPORTED_BY_ENGINES if preload_vllm else ()):
        try:
            importlib.import_module(module)
        except ImportError:  # another version's layout: the cell imports what it needs itself
            pass
    return pool


def _run_cell(argv: Sequence[str]) -> int:
    from .cli import main

    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - any failure is this cell's; the sweep reads the log
        import traceback

        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run sweep cells sent on stdin (started by lm-eval-ruler sweep).")
    parser.add_argument("--reply-fd", type=int, required=True, help="descriptor for one JSON reply line per cell")
    parser.add_argument("--preload-vllm", action="store_true", help="import vLLM now and keep engines between cells")
    args = parser.parse_args(argv)
    replies = os.fdopen(args.reply_fd, "w", buffering=1)
    pool = _prepare(args.preload_vllm)
    try:
        for line in sys.stdin:
            exit_code = _run_cell(json.loads(line)["argv"])
            _free_memory()
            replies.write(json.dumps({"exit_code": exit_code}) + "\n")
    finally:
        if pool is not None:
            pool.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
