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
* torch's environment report, identical for every cell of the process, is computed once.

Protocol: one JSON line per cell on stdin (``{"argv": [...]}``), one JSON line per cell on the
reply descriptor (``{"exit_code": N}``); stdin closed ends it. Its output and that of the
processes it starts (vLLM's engine core) go to its stdout, which the sweep copies into the
running cell's log.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


class _EnginePool:
    """Hands lm-eval's VLLM class the engine it already built when the arguments are identical."""

    def __init__(self, build: Callable[..., Any]) -> None:
        self.build = build
        self.key: str | None = None
        self.engine: Any = None

    def __call__(self, **kwargs: Any) -> Any:
        key = json.dumps(kwargs, sort_keys=True, default=repr)
        if key != self.key:
            self.release()
            self.engine = self.build(**kwargs)
            self.key = key
        return self.engine

    def release(self) -> None:
        """Shut the engine down and free its GPU memory before another is built (or the worker ends)."""
        engine, self.engine, self.key = self.engine, None, None
        if engine is None:
            return
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del engine, core
        _free_memory()


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _once(function: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """``add_env_info`` computed on the first call and copied afterwards (torch's report runs tools)."""
    computed: dict[str, Any] = {}

    def add_env_info(storage: dict[str, Any]) -> None:
        if not computed:
            function(computed)
        storage.update(computed)

    return add_env_info


def _prepare(preload_vllm: bool) -> _EnginePool | None:
    """Import what every cell imports and install the engine pool and the environment report memo."""
    import lm_eval.evaluator

    from . import cli  # noqa: F401 - the cells' entry point and its imports

    lm_eval.evaluator.add_env_info = _once(lm_eval.evaluator.add_env_info)
    if not preload_vllm:
        return None
    import lm_eval.models.vllm_causallms as vllm_lm

    pool = _EnginePool(vllm_lm.LLM)
    vllm_lm.LLM = pool
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
