"""Where a sweep cell's wall time goes: phases from a py-spy stack timeline (stdlib only).

`stack_sampler.sh` dumps the Python stacks of every running cell (`lm_eval_ruler run`) about once a
second. This script names the phase each dump of the main thread is in, charges the time up to
the next dump of that process to it, and charges the cell's remaining wall time (from its
`cell.json`: before the first dump and after the last) to start-up and shutdown. Phases are
read from the frames, so the table names lm-eval's and vLLM's steps, not guesses from logs:

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
    ("scoring", ("process_results", "score_sample", "consolidate_results", "aggregate")),
    ("vLLM load", ("LLM.__init__ (vllm/",)),
    ("import vLLM", ("(lm_eval/models/vllm_causallms.py", "(vllm/")),
    ("tasks: data from the cache, requests", ("RulerTask.", "build_all_requests", "TaskFactory", "TaskManager.load")),
)
START = "Python start, imports, lm-eval set-up"
SHUTDOWN = "exit, engine shutdown (unsampled)"
OUTSIDE = ("vLLM load", "generation")
ORDER = (START, "tasks: data from the cache, requests", "import vLLM", "vLLM load", "tokenizing prompts (lm-eval)",
         "generation", "scoring", "saving, environment info", SHUTDOWN)

_HEADER = re.compile(r"^=== (?P<time>[0-9.]+) pid (?P<pid>\d+)$")


def read_dumps(path: Path) -> dict[int, list[tuple[float, list[str]]]]:
    """Per process: (time, main-thread frames) of every dump, in time order."""
    dumps: dict[int, list[tuple[float, list[str]]]] = defaultdict(list)
    current: list[str] | None = None
    in_main = False
    for line in path.read_text(errors="replace").splitlines():
        header = _HEADER.match(line)
        if header:
            current = []
            dumps[int(header["pid"])].append((float(header["time"]), current))
            in_main = False
        elif current is not None and line.startswith("Thread "):
            in_main = '"MainThread"' in line
        elif current is not None and in_main and line.startswith("    "):
            current.append(line.strip())
    return {pid: sorted(items) for pid, items in dumps.items()}


def phase_of(frames: list[str], seen_generation: bool) -> str:
    """The phase a main-thread stack is in (``seen_generation``: after it, lm-eval set-up code means the end)."""
    text = "\n".join(frames)
    for phase, fragments in PHASE_RULES:
        if any(fragment in text for fragment in fragments):
            return phase
    return "saving, environment info" if seen_generation else START


def cell_phases(dumps: list[tuple[float, list[str]]], started: float | None, seconds: float | None) -> dict[str, float]:
    """Seconds per phase for one process; with the cell's start and wall time, the unsampled ends too."""
    totals: dict[str, float] = defaultdict(float)
    seen_generation = False
    for (moment, frames), (following, _) in zip(dumps, [*dumps[1:], (dumps[-1][0], [])]):
        phase = phase_of(frames, seen_generation)
        seen_generation = seen_generation or phase == "generation"
        totals[phase] += following - moment
    if started is not None and seconds is not None:
        totals[START] += max(0.0, dumps[0][0] - started)
        totals[SHUTDOWN] += max(0.0, started + seconds - dumps[-1][0])
    return dict(totals)


def sweep_cells(sweep: Path) -> dict[int, tuple[str, float, float]]:
    """pid -> (cell title, start time, wall seconds) from the sweep folder's ``cell.json`` files."""
    import datetime as dt

    cells = {}
    for state_path in sorted(sweep.glob("*/*/cell.json")):
        state = json.loads(state_path.read_text())
        if state.get("pid") and state.get("started") and state.get("seconds"):
            started = dt.datetime.fromisoformat(state["started"]).timestamp()
            title = f"{state.get('label') or state.get('model')} @ {state.get('length')}"
            cells[int(state["pid"])] = (title, started, float(state["seconds"]))
    return cells


def table(stacks: Path, sweeps: list[Path]) -> str:
    """A markdown table: one column per cell, one row per phase, and the share outside load + generation."""
    dumps = read_dumps(stacks)
    known = {pid: cell for sweep in sweeps for pid, cell in sweep_cells(sweep).items()}
    columns = []
    for pid, items in dumps.items():
        title, started, seconds = known.get(pid, (f"pid {pid}", None, None))
        columns.append((title, cell_phases(items, started, seconds)))
    lines = ["| phase | " + " | ".join(title for title, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for phase in ORDER:
        lines.append(f"| {phase} | " + " | ".join(f"{phases.get(phase, 0.0):.0f} s" for _, phases in columns) + " |")
    walls = [sum(phases.values()) for _, phases in columns]
    lines.append("| **cell** | " + " | ".join(f"**{wall:.0f} s**" for wall in walls) + " |")
    shares = [1 - sum(phases.get(p, 0.0) for p in OUTSIDE) / wall for (_, phases), wall in zip(columns, walls)]
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
