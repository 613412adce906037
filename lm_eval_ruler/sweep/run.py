"""Running a sweep: each pending cell as one lm-eval run (in the worker, or its own process), its manifest, the summary.

Python API: ``run_sweep(SweepConfig(models=("meta-llama/Llama-3.1-8B-Instruct",), ...))``.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import write_json_atomically
from ..report.sweep_folder import CELL_FILE, LOG_FILE, MANIFEST_FILE, read_state, results_path, sweep_table
from .checks import cell_settings, check_backend, check_settings, check_windows
from .config import Resolved, SweepConfig, parse_shard, resolve
from .manifest import gpu_info, manifest
from .plan import Cell, plan, prepare, share_model_windows
from .state import (
    child_env,
    classify,
    find_results,
    format_seconds,
    kill_group,
    now,
    pdeathsig,
    tail,
    wait_slice,
)
from .worker import CellWorker


@dataclass
class CellOutcome:
    """What happened to one cell in this invocation (``model`` is the model's label, else its name)."""

    model: str
    length: str
    directory: Path
    #: done / failed (this run), skipped (already done), busy (running elsewhere), planned (dry run)
    status: str
    launched: bool = False
    exit_code: int | None = None
    seconds: float | None = None
    results_file: Path | None = None
    command: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class SweepResult:
    """This shard's cells, in order, and the printed table."""

    output: Path
    shard: tuple[int, int]
    cells: list[CellOutcome]
    table: str | None = None

    @property
    def launched(self) -> int:
        return sum(cell.launched for cell in self.cells)

    @property
    def failed(self) -> list[CellOutcome]:
        return [cell for cell in self.cells if cell.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


def _initial_state(resolved: Resolved, cell: Cell, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """A cell's ``cell.json`` as it starts: who runs it (host, pids), with which command and settings."""
    command_line = shlex.join(cell.command)
    return {
        "status": "running",
        "model": cell.model,
        "label": cell.spec.label,
        "length": cell.length,
        "length_tokens": cell.tokens,
        "tasks": list(cell.lm_eval_tasks),
        "cell_index": cell.index,
        "shard": "{}/{}".format(*parse_shard(resolved.config.shard)),
        "attempt": int((previous or {}).get("attempt", 0)) + 1,
        "host": socket.gethostname(),
        "sweep_pid": os.getpid(),
        "pid": None,
        "started": now(),
        "heartbeat": now(),
        "finished": None,
        "seconds": None,
        "exit_code": None,
        "command": cell.command,
        "command_line": command_line,
        "settings": cell_settings(resolved, cell.spec).to_dict(),
        "window": cell.window,
        "results_file": None,
        "log_file": LOG_FILE,
        "manifest": MANIFEST_FILE,
        "message": "",
    }


def _header(state: Mapping[str, Any], where: str) -> str:
    return f"\n===== {now()} attempt {state['attempt']}{where}: {state['command_line']}\n"


def _launch(cell: Cell, env: Mapping[str, str], state: Mapping[str, Any]) -> subprocess.Popen[bytes]:
    """Start the cell's lm-eval process in its own session, its output appended to the cell's log."""
    with open(cell.directory / LOG_FILE, "ab") as log:
        log.write(_header(state, "").encode())
        log.flush()
        return subprocess.Popen(
            cell.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
            preexec_fn=pdeathsig(),  # noqa: PLW1509 - one prctl call, resolved before the fork
        )


def _wait(process: subprocess.Popen[bytes], heartbeat: Callable[[], None], timeout: float | None) -> tuple[int, str]:
    """Wait for the process, refreshing the heartbeat; (exit code, why it was killed or "")."""
    started = time.time()
    while True:
        try:
            return process.wait(timeout=wait_slice(started, timeout)), ""
        except subprocess.TimeoutExpired:
            if timeout is not None and time.time() >= started + timeout:
                kill_group(process)
                exit_code = process.returncode if process.returncode is not None else -9
                return exit_code, f"killed after the --cell-timeout of {timeout:g} s"
            heartbeat()


def _run_cell(
    resolved: Resolved,
    cell: Cell,
    env: Mapping[str, str],
    previous: Mapping[str, Any] | None,
    say: Callable[[str], None],
    worker: CellWorker | None,
) -> CellOutcome:
    """Run one cell (in ``worker``, else its own process) to its end, keeping ``cell.json`` current.

    Interrupted, the cell is marked failed and its process (or the worker) is killed.
    """
    state_path = cell.directory / CELL_FILE
    log_path = cell.directory / LOG_FILE
    started = time.time()
    state = _initial_state(resolved, cell, previous)
    write_json_atomically(state_path, state)
    timeout = resolved.config.cell_timeout

    def heartbeat() -> None:
        state["heartbeat"] = now()
        write_json_atomically(state_path, state)

    process = None
    if worker is None:
        process = _launch(cell, env, state)
        state["pid"] = process.pid
    else:
        state.update(pid=worker.pid, worker_cell=worker.cells_run + 1)
    write_json_atomically(state_path, state)
    try:
        if process is not None:
            exit_code, message = _wait(process, heartbeat, timeout)
        else:
            assert worker is not None
            header = _header(state, f" (cell {state['worker_cell']} of the sweep's worker, pid {worker.pid})")
            exit_code, message = worker.run(cell.arguments, log_path, header, timeout, heartbeat)
    except BaseException:
        if process is not None:
            kill_group(process)
        if worker is not None:
            worker.stop(kill=True)
        state.update(status="failed", exit_code=None if process is None else process.returncode, finished=now(),
                     seconds=round(time.time() - started, 1),
                     message="interrupted: the sweep was stopped while this cell ran")  # fmt: skip
        write_json_atomically(state_path, state)
        raise
    seconds = time.time() - started
    results = find_results(cell.directory, started) if exit_code == 0 and not message else None
    if exit_code == 0 and not message and results is None:
        message = "lm-eval exited 0 but wrote no results_*.json"
    status = "done" if results is not None else "failed"
    if status == "failed" and not message:
        message = f"lm-eval exited with code {exit_code}; see {log_path}"
    state.update(
        status=status,
        exit_code=exit_code,
        finished=now(),
        heartbeat=now(),
        seconds=round(seconds, 1),
        results_file=None if results is None else str(results.relative_to(cell.directory)),
        results_path=None if results is None else str(results),
        message=message,
    )
    write_json_atomically(state_path, state)
    if status == "failed":
        say(f"FAILED {cell.title} ({message}); last lines of {log_path}:\n{tail(log_path)}")
    return CellOutcome(cell.name, cell.length, cell.directory, status, True, exit_code, seconds, results, cell.command, message)


class _Interrupt(KeyboardInterrupt):
    pass


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise _Interrupt(f"signal {signum}")


class Sweep:
    """One invocation of a sweep: this shard's cells, their states on disk, and the messages to the user."""

    def __init__(self, config: SweepConfig, echo: Callable[[str], None] | None) -> None:
        self.config = config
        self.echo = echo
        self.bar: Any = None
        self.resolved = resolve(config)
        self.shard = parse_shard(config.shard)
        self.all_cells = plan(self.resolved)
        self.cells = [cell for cell in self.all_cells if cell.index % self.shard[1] == self.shard[0]]
        self.memo: dict[Any, dict[str, Any]] = {}
        self.outcomes: dict[int, CellOutcome] = {}
        self.durations: list[float] = []
        self.env = child_env(self.resolved.cache_dir)
        self.worker: CellWorker | None = None

    @property
    def shard_label(self) -> str:
        index, count = self.shard
        return f" (shard {index}/{count}: {len(self.cells)} of {len(self.all_cells)} cells)" if count > 1 else ""

    def say(self, message: str) -> None:
        if self.echo is not None:
            self.echo(message)
        elif self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def check(self) -> None:
        """Every refusal, before any data or process: windows (the whole grid, as every shard), backend, settings."""
        self.windows = check_windows(self.resolved, self.all_cells, self.say)
        if not self.config.dry_run:
            check_backend(self.resolved)
        check_settings(self.resolved, self.say)
        self.states = {cell.index: read_state(cell.directory / CELL_FILE) for cell in self.cells}
        self.kinds = {cell.index: classify(cell.directory, self.states[cell.index]) for cell in self.cells}

    def prepare_pending(self) -> None:
        """Generate or load the datasets of every cell that will run (all of them in a dry run)."""
        pending = [cell for cell in self.cells if self.config.dry_run or self.kinds[cell.index] == "todo"]
        done = sum(kind == "done" for kind in self.kinds.values())
        self.say(
            f"RULER sweep{self.shard_label}: {len(self.resolved.models)} model(s) x {len(self.resolved.lengths)} length(s), "
            f"{len(self.resolved.tasks)} task(s), backend {self.resolved.backend}, output {self.resolved.output}; "
            f"{done} done, {len(pending)} to run"
        )
        if pending and not self.config.dry_run:
            self.start_worker()  # its imports overlap the data generation below
        for number, cell in enumerate(pending, 1):
            started = time.time()
            prepare(self.resolved, cell, self.memo)
            cached = sum(info["from_cache"] for info in cell.datasets.values())
            self.say(
                f"data {number}/{len(pending)} {cell.title}: {len(cell.datasets)} dataset(s) ({cached} cached) in "
                f"{format_seconds(time.time() - started)}; longest prompt + answer {cell.needed or '?'} -> window {cell.window}"
            )
        if self.config.window == "model":
            share_model_windows(self.resolved, pending)

    def start_worker(self) -> CellWorker | None:
        """The process that runs the cells (None with --process-per-cell); a fresh one if the last ended."""
        if self.config.process_per_cell:
            return None
        if self.worker is None or not self.worker.alive():
            if self.worker is not None:
                self.worker.stop()
            self.worker = CellWorker(self.config.python, self.env, preload_vllm=self.resolved.backend == "vllm")
        return self.worker

    def stop_worker(self, *, kill: bool = False) -> None:
        if self.worker is not None:
            self.worker.stop(kill=kill)
            self.worker = None

    def print_commands(self) -> SweepResult:
        for cell in self.cells:
            note = " (done: would be skipped)" if self.kinds[cell.index] == "done" else ""
            sizing = (f"longest prompt + answer {cell.needed}" if cell.needed is not None
                      else "data not cached yet: a real run sizes the window from the generated prompts")  # fmt: skip
            print(f"# cell {cell.index} {cell.title}{note}: window {cell.window}, {sizing}")
            print(shlex.join(cell.command), flush=True)
            self.outcomes[cell.index] = CellOutcome(cell.name, cell.length, cell.directory, "planned", command=cell.command)
        return self.result()

    def run_all(self) -> None:
        """Each cell of the shard in order, with a progress bar; SIGTERM/SIGHUP stop it like Ctrl-C."""
        from tqdm import tqdm

        handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                handlers[sig] = signal.signal(sig, _raise_interrupt)
        self.bar = tqdm(total=len(self.cells), initial=sum(kind == "done" for kind in self.kinds.values()),
                        desc="RULER sweep", unit="cell", file=sys.stderr, disable=not self.config.progress,
                        dynamic_ncols=True)  # fmt: skip
        gpu: dict[str, Any] | None = None
        finished = False
        try:
            for cell in self.cells:
                if self._skipped(cell):
                    continue
                gpu = gpu or gpu_info(self.config.python, self.env)
                self._run(cell, gpu)
            finished = True
        finally:
            self.stop_worker(kill=not finished)
            self.bar.close()
            self.bar = None
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _skipped(self, cell: Cell) -> bool:
        """Record a cell finished earlier, or owned by a live process elsewhere; False when it must run."""
        kind, state = self.kinds[cell.index], self.states[cell.index] or {}
        if kind == "done":
            self.outcomes[cell.index] = CellOutcome(cell.name, cell.length, cell.directory, "skipped",
                                                    exit_code=state.get("exit_code"), seconds=state.get("seconds"),
                                                    results_file=results_path(cell.directory, state),
                                                    command=state.get("command", []), message="done earlier")  # fmt: skip
            return True
        if kind != "busy":
            return False
        state = read_state(cell.directory / CELL_FILE) or {}  # it may have finished while data were generated
        if classify(cell.directory, state) == "todo":
            prepare(self.resolved, cell, self.memo)
            if self.config.window == "model":
                share_model_windows(self.resolved, [c for c in self.cells if c.name == cell.name and c.window is not None])
            return False
        owner = f"pid {state.get('pid')} on {state.get('host')}"
        self.say(f"skip {cell.title}: {CELL_FILE} says {state.get('status')} ({owner})")
        status = "skipped" if state.get("status") == "done" else "busy"
        self.outcomes[cell.index] = CellOutcome(cell.name, cell.length, cell.directory, status,
                                                message=f"owned by another process ({owner})")  # fmt: skip
        self.bar.update()
        return True

    def _run(self, cell: Cell, gpu: dict[str, Any]) -> None:
        cell.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomically(cell.directory / MANIFEST_FILE, manifest(self.resolved, cell, self.windows[cell.name], gpu))
        self.say(f"run  {cell.title}: {len(cell.lm_eval_tasks)} lm-eval task(s) {','.join(cell.lm_eval_tasks)}, "
                 f"window {cell.window}; log {cell.directory / LOG_FILE}")  # fmt: skip
        outcome = _run_cell(self.resolved, cell, self.env, self.states[cell.index], self.say, self.start_worker())
        if outcome.status == "failed":
            self.stop_worker(kill=True)  # a broken CUDA context or half-built engine stays with this cell
        self.outcomes[cell.index] = outcome
        self.durations.append(outcome.seconds or 0.0)
        remaining = sum(1 for c in self.cells if c.index not in self.outcomes)
        mean = sum(self.durations) / len(self.durations)
        eta = f"; ~{format_seconds(mean * remaining)} for {remaining} more" if remaining else ""
        self.say(f"{outcome.status:4} {cell.title} in {format_seconds(outcome.seconds or 0)}"
                 f"{' -> ' + str(outcome.results_file) if outcome.results_file else ''}{eta}")  # fmt: skip
        self.bar.update()

    def result(self) -> SweepResult:
        return SweepResult(self.resolved.output, self.shard, [self.outcomes[cell.index] for cell in self.cells])

    def summarize(self, result: SweepResult) -> None:
        counts = {status: sum(o.status == status for o in result.cells) for status in ("done", "skipped", "failed", "busy")}
        self.say(
            f"RULER sweep{self.shard_label}: {counts['done']} run now, {counts['skipped']} done earlier, "
            f"{counts['failed']} failed, {counts['busy']} owned by another process; results in {self.resolved.output}"
        )
        for outcome in result.failed:
            self.say(f"  failed: {outcome.model} @ {outcome.length}: {outcome.message} (rerun the same command to retry)")
        if self.config.report and any(o.status in ("done", "skipped") for o in result.cells):
            result.table = sweep_table(self.resolved.output, self.say)
            if result.table:
                print(result.table, flush=True)


def run_sweep(config: SweepConfig, *, echo: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or with ``dry_run``, print) the sweep's cells for this shard; see the package docstring."""
    sweep = Sweep(config, echo)
    sweep.check()
    try:
        sweep.prepare_pending()
    except BaseException:
        sweep.stop_worker(kill=True)  # started early for its imports; no cell will run
        raise
    if config.dry_run:
        return sweep.print_commands()
    sweep.run_all()
    result = sweep.result()
    sweep.summarize(result)
    return result
