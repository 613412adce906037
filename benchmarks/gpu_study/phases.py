"""Where a sweep cell's wall time goes: phases from a py-spy stack timeline (stdlib only).

`stack_sampler.sh` dumps the Python stacks of every process running cells (`lm_eval_ruler run`, or
the sweep's worker) about once a second. This script names the phase each dump of the main thread
is in, charges the time up to the next dump of that process to it, and charges the cell's
remaining wall time (from its `cell.json`: before the first dump and after the last) to start-up
and shutdown. The worker builds a vLLM engine on a thread of its own while the main thread goes on
with the cell: while that thread is in vLLM's load, the time is the load's, and what the main
thread did meanwhile is shown apart as work hidden in the load. A worker runs several cells: each
cell gets the dumps inside its own start and end, and the worker's dumps before its first cell
(imports, while the sweep prepares data) get their own column. Phases are read from the frames,
so the table names lm-eval's and vLLM's steps, not guesses from logs:

    python3 benchmarks/gpu_study/phases.py stacks.txt --sweep OUT/sweep [--sweep OTHER/sweep]

The target of issue 14 is the share of everything except the vLLM load and generation.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

#: (phase, frame fragments); the first phase with a fragment in the main thread's stack wins.
PHASE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("saving, environment info", ("EvaluationTracker.save", "add_env_info", "get_git_commit_hash")),
    ("tokenizing prompts (lm-eval)", ("VLLM.tok_encode",)),
    ("generation", ("VLLM._model_generate",)),
    ("vLLM requests: sampling parameters (lm-eval)", ("VLLM.generate_until",)),
    ("scoring", ("process_results", "score_sample", "consolidate_results", "aggregate")),
    ("vLLM load", ("LLM.__init__ (vllm/",)),
    ("import vLLM", ("(lm_eval/models/vllm_causallms.py", "(vllm/")),
    ("tasks: data from the cache, requests", ("RulerTask.", "build_all_requests", "TaskFactory", "TaskManager.load")),
)
START = "Python start, imports, lm-eval set-up"
IDLE = "worker idle, waiting for a cell"
SHUTDOWN = "exit, engine shutdown (unsampled)"
HIDDEN = "of it, the cell's own work done during the load"
#: Frames of the worker's engine-building thread (``_cell_worker.BUILD_THREAD``) carry this prefix.
BUILD_MARK = "engine build thread: "
BUILD_THREAD = '"vllm-engine-build"'
OUTSIDE = ("vLLM load", "generation")
ORDER = (START, "tasks: data from the cache, requests", "import vLLM", "vLLM load", "tokenizing prompts (lm-eval)",
         "vLLM requests: sampling parameters (lm-eval)", "generation", "scoring", "saving, environment info", SHUTDOWN, IDLE)

_HEADER = re.compile(r"^=== (?P<time>[0-9.]+) pid (?P<pid>\d+)$")


def read_dumps(path: Path) -> dict[int, list[tuple[float, list[str]]]]:
    """Per process: (time, frames) of every dump, in time order: the main thread's frames, then those
    of the engine-building thread (prefixed with ``BUILD_MARK``)."""
    dumps: dict[int, list[tuple[float, list[str]]]] = defaultdict(list)
    current: list[str] | None = None
    prefix: str | None = None
    for line in path.read_text(errors="replace").splitlines():
        header = _HEADER.match(line)
        if header:
            current = []
            dumps[int(header["pid"])].append((float(header["time"]), current))
            prefix = None
        elif current is not None and line.startswith("Thread "):
            prefix = "" if '"MainThread"' in line else BUILD_MARK if BUILD_THREAD in line else None
        elif current is not None and prefix is not None and line.startswith("    "):
            current.append(prefix + line.strip())
    return {pid: sorted(items) for pid, items in dumps.items()}


def _main_thread_phase(frames: list[str], seen_generation: bool) -> str:
    text = "\n".join(frames)
    if "_cell_worker.py" in text and not any(frame.startswith(("_run_cell ", "_prepare ")) for frame in frames):
        return IDLE
    for phase, fragments in PHASE_RULES:
        if any(fragment in text for fragment in fragments):
            return phase
    return "saving, environment info" if seen_generation else START


def phases_of(frames: list[str], seen_generation: bool) -> tuple[str, str | None]:
    """The phase a dump is in, and the main thread's own phase when that is hidden in an engine load
    (``seen_generation``: after it, lm-eval set-up code means the end)."""
    main = _main_thread_phase([frame for frame in frames if not frame.startswith(BUILD_MARK)], seen_generation)
    loading = any(frame.startswith(BUILD_MARK) and "LLM.__init__ (vllm/" in frame for frame in frames)
    if not loading or main == IDLE:
        return main, None
    waiting = any(frame.startswith(("_EngineBeingBuilt.", "_ConfigBeforeTheEngine.")) for frame in frames)
    return "vLLM load", None if waiting or main == "vLLM load" else main


def cell_phases(dumps: list[tuple[float, list[str]]], started: float | None, seconds: float | None) -> dict[str, float]:
    """Seconds per phase for one process; with the cell's start and wall time, the unsampled ends too."""
    totals: dict[str, float] = defaultdict(float)
    seen_generation = False
    for (moment, frames), (following, _) in zip(dumps, [*dumps[1:], (dumps[-1][0], [])]):
        phase, hidden = phases_of(frames, seen_generation)
        seen_generation = seen_generation or phase == "generation"
        totals[phase] += following - moment
        if hidden is not None:
            totals[HIDDEN] += following - moment
    if started is not None and seconds is not None:
        totals[START] += max(0.0, dumps[0][0] - started)
        totals[SHUTDOWN] += max(0.0, started + seconds - dumps[-1][0])
    return dict(totals)


def sweep_cells(sweep: Path) -> list[tuple[int, str, float, float]]:
    """(pid, cell title, start time, wall seconds) of each cell in the sweep folder's ``cell.json`` files."""
    import datetime as dt

    cells = []
    for state_path in sorted(sweep.glob("*/*/cell.json")):
        state = json.loads(state_path.read_text())
        if state.get("pid") and state.get("started") and state.get("seconds"):
            started = dt.datetime.fromisoformat(state["started"]).timestamp()
            title = f"{state.get('label') or state.get('model')} @ {state.get('length')}"
            cells.append((int(state["pid"]), title, started, float(state["seconds"])))
    return sorted(cells, key=lambda cell: cell[2])


def columns_of(dumps: dict[int, list[tuple[float, list[str]]]], cells: list[tuple[int, str, float, float]]
               ) -> list[tuple[str, dict[str, float]]]:  # fmt: skip
    """One column per cell (its process's dumps between its start and end); a worker's dumps before
    its first cell, and processes of no known cell, get a column each."""
    columns = []
    for pid, title, started, seconds in cells:
        inside = [dump for dump in dumps.get(pid, []) if started <= dump[0] <= started + seconds]
        if inside:
            columns.append((title, cell_phases(inside, started, seconds)))
    first_start = {pid: min(started for p, _, started, _ in cells if p == pid) for pid, *_ in cells}
    for pid, items in dumps.items():
        if pid not in first_start:
            columns.append((f"pid {pid}", cell_phases(items, None, None)))
            continue
        before = [dump for dump in items if dump[0] < first_start[pid]]
        if before:  # up to the first cell's start: the last dump's phase lasts until then
            columns.append((f"worker {pid} before its first cell", cell_phases([*before, (first_start[pid], [])], None, None)))
    return columns


def table(stacks: Path, sweeps: list[Path]) -> str:
    """A markdown table: one column per cell, one row per phase, and the share outside load + generation."""
    columns = columns_of(read_dumps(stacks), [cell for sweep in sweeps for cell in sweep_cells(sweep)])
    lines = ["| phase | " + " | ".join(title for title, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for phase in ORDER:
        lines.append(f"| {phase} | " + " | ".join(f"{phases.get(phase, 0.0):.0f} s" for _, phases in columns) + " |")
    lines.append(f"| {HIDDEN} | " + " | ".join(f"({phases.get(HIDDEN, 0.0):.0f} s)" for _, phases in columns) + " |")
    walls = [sum(seconds for phase, seconds in phases.items() if phase != HIDDEN) for _, phases in columns]
    lines.append("| **cell** | " + " | ".join(f"**{wall:.0f} s**" for wall in walls) + " |")
    shares = [1 - sum(phases.get(p, 0.0) for p in OUTSIDE) / wall if wall else 0.0
              for (_, phases), wall in zip(columns, walls)]  # fmt: skip
    lines.append("| everything but vLLM load and generation | " + " | ".join(f"{share:.0%}" for share in shares) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stacks", type=Path, help="stack_sampler.sh's output")
    parser.add_argument("--sweep", type=Path, action="append", default=[],
                        help="a sweep folder whose cells were sampled (repeatable): cell titles, start and wall times")
    args = parser.parse_args()
    print(table(args.stacks, args.sweep))


if __name__ == "__main__":
    main()
