"""A cell's life on disk and as a process: ``cell.json`` states, liveness, the child's environment.

A cell is ``done`` (skip it), ``busy`` (a live process owns it, maybe on another host of a
shared filesystem) or ``todo``; a sweep killed mid-cell leaves a ``running`` state whose owner
is dead, which the next invocation reruns.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import site
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..data.cache import CACHE_ENV
from ..report.sweep_folder import results_path

HEARTBEAT_SECONDS = 60.0
#: ...and a ``running`` cell from another host is stale once its heartbeat is this old.
STALE_AFTER_SECONDS = 600.0
#: lm-eval's defaults for --seed (random, numpy, torch, fewshot); the sweep does not change them.


# --------------------------------------------------------------------------------------------
# state files


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def pid_alive(pid: Any, needle: str | None = None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if needle is None:
        return True
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc: trust the pid


def classify(cell_dir: Path, state: Mapping[str, Any] | None) -> str:
    """``done`` (skip), ``busy`` (a live process owns it), or ``todo``."""
    if state is None:
        return "todo"
    status = state.get("status")
    if status == "done":
        return "done" if results_path(cell_dir, state) else "todo"
    if status != "running":
        return "todo"
    try:
        heartbeat = _dt.datetime.fromisoformat(str(state.get("heartbeat"))).timestamp()
    except ValueError:
        heartbeat = 0.0
    fresh = time.time() - heartbeat < STALE_AFTER_SECONDS
    if state.get("host") == socket.gethostname():
        if pid_alive(state.get("pid"), needle="lm_eval_ruler"):
            return "busy"
        return "busy" if pid_alive(state.get("sweep_pid")) and fresh else "todo"
    return "busy" if fresh else "todo"


def find_results(cell_dir: Path, since: float) -> Path | None:
    candidates = [p for p in cell_dir.rglob("results_*.json") if p.stat().st_mtime >= since - 1]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def checkout_root() -> Path | None:
    """The directory this package was imported from, when it is not an installed site-packages copy."""
    root = Path(__file__).resolve().parents[2]
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()] if p}
    return None if root in installed else root


def child_env(cache_dir: Path) -> dict[str, str]:
    """The cells' environment: this checkout first on PYTHONPATH (when not installed), the sweep's cache."""
    env = dict(os.environ)
    root = checkout_root()
    if root is not None:
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != root]
        env["PYTHONPATH"] = os.pathsep.join([str(root), *rest])
    env[CACHE_ENV] = str(cache_dir)
    return env


# --------------------------------------------------------------------------------------------
# running


def pdeathsig() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child if this process dies (e.g. SIGKILLed)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG

    return preexec


def kill_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_slice(started: float, timeout: float | None) -> float:
    """How long to wait for a running cell before the next heartbeat (or its --cell-timeout)."""
    if timeout is None:
        return HEARTBEAT_SECONDS
    return max(0.1, min(HEARTBEAT_SECONDS, started + timeout - time.time()))


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])

