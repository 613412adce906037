"""The sweep's side of its worker process (``lm_eval_ruler._cell_worker``): start it, run a cell, stop it.

The worker runs the cells one after another, importing lm-eval and vLLM once and keeping a vLLM
engine while cells ask for the same one (see its module). The sweep sends each cell's argument
list on the worker's stdin and reads one reply per cell from a second pipe; the worker's stdout
and stderr, and those of the processes it starts, are copied into the running cell's log by a
thread here. A cell that fails, times out or is interrupted ends the worker; the next cell gets a
fresh one, so a broken CUDA context or a half-built engine never reaches another cell.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .state import kill_group, pdeathsig, wait_slice

#: The worker's module; ``state.classify`` knows a live cell owner by the package name in its command.
WORKER_MODULE = "lm_eval_ruler._cell_worker"


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
            heartbeat: Callable[[], None]) -> tuple[int, str]:  # fmt: skip
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
            reply = self._read_reply(wait_slice(started, timeout))
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
