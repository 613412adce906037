"""RULER's leaderboard numbers for one run: the score per length, Avg, wAvg and the effective length.

Everything is recomputed from the per-task rows: lm-eval's group rows
(``ruler_4k``, ``ruler_suite`` ...) are ignored, because a group row averages
whatever subtasks happened to run and cannot say that a length is incomplete.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._tasks import CATEGORIES, LENGTHS, PREFIX, STANDARD_LENGTHS, TASKS, parse_length, tasks_fitting
from .runs import Run, length_label

#: RULER's threshold: the 13-task mean of Llama-2-7B-chat at 4K (ruler-spec §6).
THRESHOLD = 85.6
#: NoLiMa's relative effective length keeps at least this fraction of the model's own base score.
RELATIVE_FRACTION = 0.85
#: The base length of the relative effective length.
BASE_LENGTH = "4k"

TASK_ORDER: tuple[str, ...] = tuple(TASKS)
CATEGORY_ORDER: tuple[str, ...] = tuple(CATEGORIES)


def mean(values: Sequence[float]) -> float:
    """The unweighted mean, summed exactly (``math.fsum``)."""
    return math.fsum(values) / len(values)


@dataclass(frozen=True)
class LengthRow:
    """One length of a run. ``score`` is RULER's 13-task mean, None unless all 13 tasks ran.

    A category value exists only when all of its tasks ran; a missing task is
    never averaged as zero.
    """

    length: int
    label: str
    score: float | None
    stderr: float | None
    categories: Mapping[str, float | None]
    tasks: Mapping[str, float | None]
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class Table:
    """RULER's numbers for one run, as in the paper's Table 3 plus the breakdown.

    ``avg`` and the weighted averages exist only when all six standard lengths
    (4K..128K) are complete. ``effective_length`` follows RULER: the largest
    evaluated length whose 13-task score exceeds 85.6, ``"<4K"`` when none does
    and ``">128K"`` when the largest evaluated length passes.
    ``relative_effective_length`` follows NoLiMa: the largest length whose score
    stays at or above 85% of the model's own 4K score.
    """

    name: str
    rows: tuple[LengthRow, ...]
    avg: float | None
    wavg_inc: float | None
    wavg_dec: float | None
    effective_length: str | None
    relative_effective_length: str | None
    base_score: float | None
    threshold: float
    relative_fraction: float
    notes: tuple[str, ...]
    run: Run | None = field(default=None, repr=False, compare=False)

    def row(self, length: int | str) -> LengthRow | None:
        tokens = parse_length(length) if isinstance(length, str) else length
        return next((row for row in self.rows if row.length == tokens), None)

    @property
    def scores(self) -> dict[int, float]:
        """Complete lengths only: {tokens: 13-task score}."""
        return {row.length: row.score for row in self.rows if row.score is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "threshold": self.threshold,
            "avg": self.avg,
            "wavg_inc": self.wavg_inc,
            "wavg_dec": self.wavg_dec,
            "effective_length": self.effective_length,
            "relative_effective_length": self.relative_effective_length,
            "relative_fraction": self.relative_fraction,
            "base_score": self.base_score,
            "settings": None if self.run is None else self.run.info.get("settings"),
            "sweep_settings": None if self.run is None else self.run.info.get("sweep_settings"),
            "notes": list(self.notes),
            "lengths": [
                {
                    "length": row.length,
                    "label": row.label,
                    "score": row.score,
                    "stderr": row.stderr,
                    "complete": row.complete,
                    "missing": list(row.missing),
                    "categories": dict(row.categories),
                    "tasks": dict(row.tasks),
                }
                for row in self.rows
            ],
        }


def effective_length(scores: Mapping[int, float], threshold: float, *, inclusive: bool = False) -> str | None:
    """The largest evaluated length whose score passes ``threshold``, as a label.

    RULER's rule ("exceeds", ``inclusive=False``) is applied literally to the
    evaluated lengths, so a dip followed by a recovery still counts the longer
    length. ``"<X"`` when even the shortest length X fails; ``">X"`` when the
    longest evaluated length X passes (the model may hold beyond it).
    """
    if not scores:
        return None
    ordered = sorted(scores)
    passing = [tokens for tokens in ordered if (scores[tokens] >= threshold if inclusive else scores[tokens] > threshold)]
    if not passing:
        return "<" + length_label(ordered[0])
    if passing[-1] == ordered[-1]:
        return ">" + length_label(ordered[-1])
    return length_label(passing[-1])


def _scored_tasks(tokens: int, present: Mapping[str, Any]) -> tuple[str, ...]:
    """The tasks a length's score averages: all 13 when they all ran, else those the length's group holds.

    From 4K up that is all 13 (RULER's score). Below 4K ``tasks_fitting`` leaves
    out the tasks that cannot fit (QA), so a ``ruler_1k`` run has a score.
    """
    if all(task in present for task in TASK_ORDER):
        return TASK_ORDER
    return tasks_fitting(tokens)


def ruler_table(
    run: Run,
    *,
    threshold: float = THRESHOLD,
    relative_fraction: float = RELATIVE_FRACTION,
    base_length: str = BASE_LENGTH,
) -> Table:
    """RULER's per-length scores, Avg, wAvg (inc/dec) and effective lengths for one run.

    Definitions (ruler-spec §6): the score at a length is the unweighted mean of
    the 13 task scores; Avg is the mean over 4K..128K; wAvg(inc) weighs 4K..128K
    by 1..6 and wAvg(dec) by 6..1, each divided by 21. A length with missing
    tasks has no score (its present tasks and complete categories are still
    shown), and a suite with a missing standard length has no Avg. Below 4K,
    where ``ruler_<len>`` holds only the tasks that fit (``tasks_fitting``: no
    QA), a length where those all ran is scored on them, with a note.

    The relative effective length uses NoLiMa's definition (landscape §2): the
    largest length whose score stays >= ``relative_fraction`` (85%) of the
    model's own base score, here its ``base_length`` (4K) score, so a model
    that is weak even at short context is judged against itself.
    """
    rows: list[LengthRow] = []
    small_notes: list[str] = []
    for tokens in run.lengths:
        row, small_note = _length_row(run, tokens)
        rows.append(row)
        if small_note:
            small_notes.append(small_note)
    avg, wavg_inc, wavg_dec, notes = _suite_averages(rows)
    for row in rows:
        if row.missing:
            expected = len(_scored_tasks(row.length, {}))
            notes.append(f"{row.label} is partial: {len(row.missing)} of {expected} tasks missing ({', '.join(row.missing)}); no length score")
    notes.extend(small_notes)

    complete = {row.length: row.score for row in rows if row.score is not None}
    effective = effective_length(complete, threshold)  # type: ignore[arg-type]
    base_tokens = parse_length(base_length)
    base = complete.get(base_tokens)
    relative = None
    if base is not None:
        relative = effective_length(complete, relative_fraction * base, inclusive=True)  # type: ignore[arg-type]
    elif complete:
        notes.append(f"no relative effective length: {length_label(base_tokens)} is not complete")
    partial_above = [row.label for row in rows if row.missing and complete and row.length > max(complete)]
    if partial_above and effective:
        notes.append(f"effective length uses complete lengths only; {', '.join(partial_above)} incomplete")
    return Table(
        name=run.name,
        rows=tuple(rows),
        avg=avg,
        wavg_inc=wavg_inc,
        wavg_dec=wavg_dec,
        effective_length=effective,
        relative_effective_length=relative,
        base_score=base,
        threshold=threshold,
        relative_fraction=relative_fraction,
        notes=tuple(notes),
        run=run,
    )


def _length_row(run: Run, tokens: int) -> tuple[LengthRow, str | None]:
    """One length's row, and a note when its score averages fewer than 13 tasks (below 4K)."""
    present = run.tasks_at(tokens)
    tasks = {task: (present[task].score if task in present else None) for task in TASK_ORDER}
    # Below 4K the ruler_<len> groups hold only the tasks that fit (no QA): score those, as the
    # group row does, unless all 13 ran anyway. A missing task is never averaged as zero.
    scored = _scored_tasks(tokens, present)
    missing = tuple(task for task in scored if task not in present)
    note = None
    if len(scored) < len(TASK_ORDER) and not missing:
        left_out = [task for task in TASK_ORDER if task not in scored]
        note = (
            f"{length_label(tokens)} score is the mean of the {len(scored)} tasks that fit at that length "
            f"({', '.join(left_out)} need {length_label(min(TASKS[t].min_group_length for t in left_out))} or more), "
            f"as the {PREFIX}_<len> groups below 4K hold; not RULER's 13-task score"
        )
    categories = {
        category: (mean([tasks[t] for t in members]) if all(tasks[t] is not None for t in members) else None)  # type: ignore[misc]
        for category, members in CATEGORIES.items()
    }
    score = None if missing else mean([tasks[t] for t in scored])  # type: ignore[misc]
    errors = [present[t].stderr for t in scored if t in present]
    stderr = None
    if not missing and all(e is not None for e in errors):
        stderr = math.sqrt(math.fsum(e * e for e in errors)) / len(errors)  # type: ignore[operator]
    return LengthRow(tokens, length_label(tokens), score, stderr, categories, tasks, missing), note


def _suite_averages(rows: Sequence[LengthRow]) -> tuple[float | None, float | None, float | None, list[str]]:
    """(Avg, wAvg inc, wAvg dec, notes) over 4K..128K; all None, with a note, unless the six lengths are complete."""
    by_length = {row.length: row for row in rows}
    standard = [by_length.get(LENGTHS[name]) for name in STANDARD_LENGTHS]
    if all(row is not None and row.score is not None for row in standard):
        values = [row.score for row in standard]  # type: ignore[union-attr]
        avg = mean(values)  # type: ignore[arg-type]
        wavg_inc = math.fsum(i * s for i, s in enumerate(values, 1)) / 21  # type: ignore[operator]
        wavg_dec = math.fsum((7 - i) * s for i, s in enumerate(values, 1)) / 21  # type: ignore[operator]
        return avg, wavg_inc, wavg_dec, []
    lacking = [length_label(LENGTHS[n]) for n, row in zip(STANDARD_LENGTHS, standard) if row is None or row.score is None]
    return None, None, None, [f"Avg and wAvg need complete 4K..128K; missing or partial: {', '.join(lacking)}"]


def settings_text(run: Run | None) -> str:
    """One line saying which data and run settings a run's results were made with."""
    if run is None:
        return ""
    settings = run.info.get("settings") or {}
    parts = []
    if settings.get("num_samples") is not None:
        parts.append(f"{settings['num_samples']} samples/task")
    for name in ("profile", "seed"):
        if settings.get(name) is not None:
            parts.append(f"{name} {settings[name]}")
    if settings.get("render_modes"):
        parts.append("rendering " + "+".join(settings["render_modes"]))
    if settings.get("model_template"):
        parts.append(f"model template {settings['model_template']}")
    if settings.get("system_instruction"):
        parts.append("with a system instruction")
    sweep = run.info.get("sweep_settings") or {}
    if sweep.get("backend"):
        parts.append(f"backend {sweep['backend']}")
    if sweep.get("tasks") is not None:
        parts.append(f"{len(sweep['tasks'])} task(s) per cell")
    return "Settings: " + (", ".join(parts) if parts else "not recorded")
