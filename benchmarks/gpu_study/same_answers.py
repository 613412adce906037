#!/usr/bin/env python3
"""Did two sweeps give the same answer to every sample? (stdlib only)

    python3 benchmarks/gpu_study/same_answers.py SWEEP_A SWEEP_B

Each sweep folder holds one model (any label). For every length both ran, the samples of each
task are paired by ``doc_hash`` (it covers the prompt) and their generated answers compared;
one markdown row per length and task, and the first differing samples. Exit code 1 if any
answer differs, a sample is missing on one side, or nothing was compared (no length ran in both,
or their cells hold no samples files), so a script can gate on it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_TASK = re.compile(r"samples_(?P<task>.+)_\d{4}-\d\d-\d\dT[\d\-.]+\.jsonl$")


def answers(cell: Path) -> dict[str, dict[str, tuple[str, float]]]:
    """task -> doc_hash -> (answer, score), from the newest samples file of each task in a cell folder."""
    newest: dict[str, Path] = {}
    for path in sorted(cell.rglob("samples_*.jsonl")):
        match = _TASK.search(path.name)
        if match:
            newest[match["task"]] = path
    found: dict[str, dict[str, tuple[str, float]]] = {}
    for task, path in newest.items():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        found[task] = {row["doc_hash"]: (str(row["filtered_resps"][0]), float(row["score"])) for row in rows}
    return found


def cells(sweep: Path) -> dict[str, Path]:
    """length -> cell folder (the sweep's one model)."""
    return {state.parent.name: state.parent for state in sorted(sweep.glob("*/*/cell.json"))}


def compare(first: Path, second: Path) -> tuple[list[str], bool]:
    lines = [f"| length | task | samples | same answer | score {first.name} | score {second.name} |", "|---|---|---|---|---|---|"]
    differences: list[str] = []
    same_everywhere = True
    compared = 0
    a_cells, b_cells = cells(first), cells(second)
    common = sorted(set(a_cells) & set(b_cells), key=lambda name: int(name.rstrip("k")))
    if not common:
        return [f"no length ran in both {first} and {second}"], False
    for length in common:
        a_answers, b_answers = answers(a_cells[length]), answers(b_cells[length])
        for task in sorted(set(a_answers) | set(b_answers)):
            a, b = a_answers.get(task, {}), b_answers.get(task, {})
            same = sum(a[key][0] == b[key][0] for key in set(a) & set(b))
            compared += len(set(a) & set(b))
            same_everywhere &= same == len(a) == len(b)
            score_a = sum(score for _, score in a.values()) / max(1, len(a))
            score_b = sum(score for _, score in b.values()) / max(1, len(b))
            lines.append(f"| {length} | {task} | {len(a)} / {len(b)} | {same} | {score_a:.1f} | {score_b:.1f} |")
            differences += [f"- {length} {task} {key[:12]}: {a[key][0]!r} vs {b[key][0]!r}"
                            for key in sorted(set(a) & set(b)) if a[key][0] != b[key][0]][:3]  # fmt: skip
    if not compared:
        return [f"no sample of {first} and {second} to compare (no samples_*.jsonl: run without --log_samples?)"], False
    return lines + ([""] + differences[:20] if differences else []), same_everywhere


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    lines, same = compare(args.first, args.second)
    print("\n".join(lines))
    compared = len(lines) > 1
    print(f"\n{'every answer identical' if same else 'ANSWERS DIFFER' if compared else 'nothing compared'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
