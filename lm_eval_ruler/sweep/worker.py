"""One long-lived process that runs a sweep's cells one after another, each as its own lm-eval run.

A fresh ``python -m lm_eval_ruler run`` per cell pays, every cell, for what does not change
between cells: importing lm-eval, torch and vLLM (about 30 s on an H100 machine, 14 s of it
``import vllm``), torch's environment report in lm-eval's results (``add_env_info``), and the
vLLM engine itself. The worker pays for them once:

* it is started before the sweep generates its data, so the imports overlap that work;
* each cell is the same argument list the per-cell command would run (``cli.main``), so a cell's
  results, samples and refusals are those of ``lm-eval-ruler run``;
* a vLLM engine is kept for the next cell when that cell asks for exactly the same engine
  arguments (with ``--window model`` every length of a model does), and shut down before a
  different one is built, so two engines never hold the GPU at once;
* torch's environment report, identical for every cell of the process, is computed once.

The sweep talks to it over two pipes: cell requests on its stdin (one JSON line: the argument
list), one JSON reply per cell on the reply descriptor. Its stdout and stderr, and those of the
processes it starts (vLLM's engine core), go to the sweep, which copies them into the running
cell's log. A cell that fails, times out or is interrupted ends the worker; the next cell gets
a fresh one, so a broken CUDA context or a half-built engine never reaches another cell.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .state import kill_group, pdeathsig

#: The module the sweep starts; ``state.classify`` knows a live cell owner by the package name in it.
WORKER_MODULE = "lm_eval_ruler.sweep.worker"


# --------------------------------------------------------------------------------------------
# the sweep's side


class CellWorker:
    """The sweep's handle on a worker process: start it, run a cell on it, stop it."""

    def __init__(self, python: str, env: Mapping[str, str], *, preload_vllm: bool) -> None:
        reply_read, reply_write = os.pipe()
        command = [python, "-m", WORKER_MODULE, "--reply-fd", str(reply_write)]
        if preload_vllm:
            command.append("--preload-vllm")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            pass_fds=(reply_write,),
            start_new_session=True,
            preexec_fn=pdeathsig(),  # noqa: PLW1509 - one prctl call, resolved before the fork
        )
        os.close(reply_write)
        self._replies = os.fdopen(reply_read, "rb", buffering=0)
        self._pending = b""
        self._lock = threading.Lock()
        #: Output before the first cell (imports) is kept and written into that cell's log.
        self._early: list[bytes] = []
        self._log: IO[bytes] | None = None
        self.cells_run = 0
        self._copier = threading.Thread(target=self._copy_output, name="cell-worker-output", daemon=True)
        self._copier.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _copy_output(self) -> None:
        assert self.process.stdout is not None
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):  # type: ignore[union-attr]
            with self._lock:
                if self._log is None:
                    self._early.append(chunk)
                else:
                    self._log.write(chunk)
                    self._log.flush()

    def run(self, argv: Sequence[str], log_path: Path, header: str, timeout: float | None,
            heartbeat: Callable[[], None], heartbeat_seconds: float) -> tuple[int, str]:  # fmt: skip
        """Run one cell (``argv`` as for ``lm-eval-ruler``); (exit code, why it was killed or "")."""
        with self._lock:
            if self._log is not None:
                self._log.close()
            self._log = open(log_path, "ab")  # noqa: SIM115 - closed when the next cell or stop() swaps it
            self._log.write(header.encode())
            for chunk in self._early:
                self._log.write(chunk)
            self._early = []
            self._log.flush()
        started = time.time()
        try:
            assert self.process.stdin is not None
            self.process.stdin.write((json.dumps({"argv": list(argv)}) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died(), ""
        self.cells_run += 1
        while True:
            wait = heartbeat_seconds if timeout is None else max(0.1, min(heartbeat_seconds, started + timeout - time.time()))
            reply = self._read_reply(wait)
            if reply is not None:
                return int(reply.get("exit_code", 1)), ""
            if not self.alive() or self._replies.closed:
                return self._died(), ""
            if timeout is not None and time.time() >= started + timeout:
                self.stop(kill=True)
                return (self.process.returncode if self.process.returncode is not None else -9,
                        f"killed after the --cell-timeout of {timeout:g} s")  # fmt: skip
            heartbeat()

    def _read_reply(self, wait: float) -> dict[str, Any] | None:
        """The next reply line, waiting at most ``wait`` seconds; None on timeout or end of file."""
        deadline = time.time() + wait
        while b"\n" not in self._pending:
            remaining = deadline - time.time()
            if remaining <= 0 or self._replies.closed:
                return None
            ready, _, _ = select.select([self._replies], [], [], remaining)
            if not ready:
                return None
            data = self._replies.read(65536)
            if not data:
                self._replies.close()
                return None
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def _died(self) -> int:
        """The worker ended without a reply: its exit code (negative: killed by a signal)."""
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.stop(kill=True)
            code = self.process.returncode if self.process.returncode is not None else -9
        self._finish_output()
        return code if code != 0 else 1

    def stop(self, *, kill: bool = False) -> None:
        """End the worker: ask it to finish (stdin closed), or kill its process group."""
        if self.alive():
            if kill:
                kill_group(self.process)  # type: ignore[arg-type]
            else:
                try:
                    assert self.process.stdin is not None
                    self.process.stdin.close()
                    self.process.wait(timeout=120)
                except (OSError, subprocess.TimeoutExpired):
                    kill_group(self.process)  # type: ignore[arg-type]
        self._finish_output()

    def _finish_output(self) -> None:
        self._copier.join(timeout=10)
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
        if not self._replies.closed:
            self._replies.close()


# --------------------------------------------------------------------------------------------
# the worker's side


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

    from .. import cli  # noqa: F401 - the cells' entry point and its imports

    lm_eval.evaluator.add_env_info = _once(lm_eval.evaluator.add_env_info)
    if not preload_vllm:
        return None
    import lm_eval.models.vllm_causallms as vllm_lm

    pool = _EnginePool(vllm_lm.LLM)
    vllm_lm.LLM = pool
    return pool


def _run_cell(argv: Sequence[str]) -> int:
    from ..cli import main

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
