"""RULER tables, baseline-vs-candidate recovery with intervals, CI gates, and reports.

lm-eval writes one ``results_<timestamp>.json`` per run (and, with
``--log_samples``, one ``samples_<task>_<timestamp>.jsonl`` per task).  This
module turns those files into what RULER users actually read:

* :func:`load_run` reads a results folder (merging a sweep's several files);
* :func:`ruler_table` gives RULER's leaderboard numbers: the 13-task score per
  length, Avg, wAvg (inc/dec) and the effective length;
* :func:`compare` gives a candidate's *recovery* of a baseline (the
  quantization-evaluation convention: candidate / baseline x 100) with
  confidence intervals, after checking both runs saw identical data;
* :func:`gate` turns a comparison into a pass/fail decision for CI;
* :func:`to_markdown`, :func:`to_csv`, :func:`to_json`, :func:`to_html`,
  :func:`github_summary` and :func:`save_plots` write it all out.

Everything is recomputed from the per-task rows: lm-eval's group rows
(``ruler_4k``, ``ruler_suite`` ...) are ignored, because a group row averages
whatever subtasks happened to run and cannot say that a length is incomplete.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Union

import numpy as np

from ._tasks import CATEGORIES, CUSTOM_LENGTH, LENGTHS, PREFIX, STANDARD_LENGTHS, TASKS, parse_length, tasks_fitting
from .errors import ConfigurationError, ReportError
from .provenance import Provenance

__all__ = [
    "RELATIVE_FRACTION",
    "THRESHOLD",
    "Comparison",
    "Estimate",
    "GateResult",
    "LengthComparison",
    "LengthRow",
    "ReportError",
    "Run",
    "SampleScore",
    "Table",
    "TaskResult",
    "compare",
    "effective_length",
    "gate",
    "github_summary",
    "length_label",
    "load_run",
    "plot_depth_heatmap",
    "plot_recovery_heatmap",
    "plot_scores",
    "ruler_table",
    "save_plots",
    "select_lengths",
    "to_csv",
    "to_html",
    "to_json",
    "to_markdown",
]

#: RULER's threshold: the 13-task mean of Llama-2-7B-chat at 4K (ruler-spec §6).
THRESHOLD = 85.6
#: NoLiMa's relative effective length keeps at least this fraction of the model's own base score.
RELATIVE_FRACTION = 0.85
#: The base length of the relative effective length.
BASE_LENGTH = "4k"
METHOD_BOOTSTRAP = "paired-bootstrap"
METHOD_STDERR = "stderr"
DEFAULT_BOOTSTRAP = 2000
DEFAULT_SEED = 0
PLOT_INSTALL_HINT = "pip install 'lm-eval-ruler[plot]'"

TASK_ORDER: tuple[str, ...] = tuple(TASKS)
CATEGORY_ORDER: tuple[str, ...] = tuple(CATEGORIES)
_TASK_CATEGORY = {task: category for category, tasks in CATEGORIES.items() for task in tasks}
_MISSING = "–"

#: Run-level keys that change what the model saw although the data is the same.
CHECKED_RUN_INFO: tuple[str, ...] = ("chat_template_sha", "system_instruction_sha")


# --------------------------------------------------------------------------- names and lengths


def length_label(tokens: int) -> str:
    """RULER's column names: 4096 -> ``4K``, 1048576 -> ``1M``; other lengths in tokens."""
    for name, value in LENGTHS.items():
        if value == tokens:
            return name.upper()
    if tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    return str(tokens)


def _parse_task_key(key: str) -> tuple[str, str] | None:
    """``ruler_niah_single_1_4k`` -> (``niah_single_1``, ``4k``); group rows and other tasks -> None."""
    if not key.startswith(PREFIX + "_"):
        return None
    stem, _, length = key[len(PREFIX) + 1 :].rpartition("_")
    if stem in TASKS and (length in LENGTHS or length == CUSTOM_LENGTH):
        return stem, length
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class TaskResult:
    """One task at one length, as lm-eval reported it (score on RULER's 0-100 scale)."""

    task: str
    length: int
    lm_eval_task: str
    score: float
    stderr: float | None
    n: int | None
    provenance: Provenance
    source: Path

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, Provenance):  # a recorded JSON object
            object.__setattr__(self, "provenance", Provenance.from_dict(self.provenance))


@dataclass(frozen=True)
class SampleScore:
    """One logged document: enough to pair it across runs and place its needle."""

    doc_id: int
    doc_hash: str | None
    score: float
    depth: float | None


@dataclass
class Run:
    """The task rows (and sample logs) of one evaluated model.

    ``results`` and ``samples`` are keyed by ``(task, length in tokens)``, so a
    ``ruler_*_custom`` task lands on its real length.
    """

    name: str
    path: Path
    files: tuple[Path, ...]
    results: dict[tuple[str, int], TaskResult]
    samples: dict[tuple[str, int], list[SampleScore]]
    info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        return sorted({length for _, length in self.results})

    def tasks_at(self, length: int) -> dict[str, TaskResult]:
        return {task: result for (task, tokens), result in self.results.items() if tokens == length}

    @property
    def has_samples(self) -> bool:
        return bool(self.samples)


_TIMESTAMP_RE = re.compile(r"_(\d{4}-\d{2}-\d{2}T[\d\-.]+)$")


def _timestamp(path: Path) -> str:
    """lm-eval's ``datetime.now().isoformat()`` with ``:`` -> ``-``: sorts as text."""
    match = _TIMESTAMP_RE.search(path.stem)
    return match.group(1) if match else ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path} is not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno}). "
            "The run may have been interrupted while writing it: rerun that evaluation, or delete the file "
            "if another results file covers the same tasks."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ReportError(f"{path} is JSON but not an lm-eval results file (it has no 'results' mapping)")
    return data


def _results_files(path: Path) -> tuple[Path, list[Path]]:
    """The folder holding results files and those files, for a path the user gave."""
    if not path.exists():
        raise ReportError(f"{path} does not exist; pass the --output_path of an lm-eval run, or one of its results_*.json")
    if path.is_file():
        if path.suffix == ".jsonl":
            raise ReportError(f"{path} is a sample log; pass the results_*.json next to it, or the folder")
        return path.parent, [path]
    files = sorted(path.glob("results_*.json"))
    if files:
        return path, files
    subfolders = sorted(d for d in path.iterdir() if d.is_dir() and any(d.glob("results_*.json")))
    if len(subfolders) == 1:
        return subfolders[0], sorted(subfolders[0].glob("results_*.json"))
    if len(subfolders) > 1:
        names = ", ".join(str(d) for d in subfolders)
        raise ReportError(
            f"{path} holds results of several models ({names}); pass one folder per run "
            "(e.g. report A B, or compare --baseline A --candidate B)"
        )
    if not any(path.iterdir()):
        raise ReportError(f"{path} is an empty folder: no lm-eval results to read (did the run write to another --output_path?)")
    raise ReportError(
        f"no lm-eval results in {path}: expected results_<timestamp>.json here or in a <model> subfolder "
        "(lm_eval --output_path writes <output_path>/<model_name>/results_<timestamp>.json)"
    )


def _model_args(data: Mapping[str, Any]) -> Any:
    config = data.get("config")
    return config.get("model_args") if isinstance(config, dict) else None


def _file_settings(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """The run-wide data settings (profile, seed, samples, tokenizer, rendering ...) of one results file.

    Every RULER task of one lm-eval invocation is built with the same options, so
    tasks that disagree mean a hand-merged file: refused rather than averaged.
    """
    found: dict[str, Any] | None = None
    first = ""
    for key, config in (data.get("configs") or {}).items():
        if _parse_task_key(key) is None or not isinstance(config, dict):
            continue
        ruler = (config.get("metadata") or {}).get("ruler")
        provenance = Provenance.from_dict(ruler if isinstance(ruler, dict) else None)
        if not provenance.recorded:
            continue
        settings = provenance.run_settings()
        if found is None:
            found, first = settings, key
            continue
        differing = [name for name in settings if settings[name] != found[name]]
        if differing:
            raise ReportError(
                f"{path}: its RULER tasks were made with different settings ({', '.join(differing)}: {first} has "
                f"{', '.join(f'{n}={found[n]!r}' for n in differing)}, {key} has "
                f"{', '.join(f'{n}={settings[n]!r}' for n in differing)}); one results file must hold one run"
            )
    return found or {}


def _run_identity(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two results files parts of one run: same model arguments, rendering and data settings."""
    return {
        "model_args": _model_args(data),
        "chat_template_sha": data.get("chat_template_sha"),
        "system_instruction_sha": data.get("system_instruction_sha"),
        "ruler settings": _file_settings(path, data),
    }


def _run_name(data: Mapping[str, Any], folder: Path) -> str:
    name = data.get("model_name")
    if isinstance(name, str) and name:
        return name
    args = _model_args(data)
    if isinstance(args, dict):
        for key in ("peft", "delta", "pretrained", "model", "path", "engine"):
            if args.get(key):
                return str(args[key])
    if isinstance(args, str):
        for part in args.split(","):
            key, _, value = part.partition("=")
            if key.strip() in ("pretrained", "model", "path") and value:
                return value.strip()
    return folder.name


def _tokens_for(key: str, length: str, data: Mapping[str, Any], provenance: Mapping[str, Any]) -> int | None:
    if length != CUSTOM_LENGTH:
        return LENGTHS[length]
    value = provenance.get("length")
    if isinstance(value, int) and value > 0:
        return value
    config = (data.get("configs") or {}).get(key) or {}
    value = (config.get("dataset_kwargs") or {}).get("ruler_length")
    if isinstance(value, int) and value > 0:
        return value
    metadata = config.get("metadata") or {}
    if metadata.get("ruler_custom_length"):
        try:
            return parse_length(metadata["ruler_custom_length"])
        except ConfigurationError:
            return None
    return None


def _read_samples(path: Path) -> list[SampleScore]:
    samples: list[SampleScore] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReportError(f"{path}, line {number}: not valid JSON ({exc.msg}); the sample log is damaged") from None
            score = _number(row.get("score"))
            if score is None or "doc_id" not in row:
                raise ReportError(f"{path}, line {number}: no numeric 'score' or no 'doc_id'; is this a RULER sample log?")
            doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
            samples.append(SampleScore(int(row["doc_id"]), row.get("doc_hash"), score, _number(doc.get("depth"))))
    return samples


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read one run: a results folder, a ``<output_path>`` with one model folder, or a results file.

    A folder may hold several ``results_*.json``: a sweep writes one per
    invocation (often one per length), so they are merged, newest last, and a
    task present in several files takes the newest value. A file whose
    ``config.model_args`` differs from the newest file's is a *different run*
    that lm-eval put in the same model folder (e.g. another kv-cache dtype); it
    is skipped with a warning rather than silently mixed in. Sample logs are
    matched to each results file by its timestamp, so a stale log of an older
    run is never paired with newer scores.
    """
    folder, files = _results_files(Path(path))
    loaded = sorted(((_timestamp(f), f, _read_json(f)) for f in files), key=lambda item: (item[0], item[1].name))
    newest_file, newest = loaded[-1][1], loaded[-1][2]
    reference_args = _model_args(newest)
    reference = _run_identity(newest_file, newest)
    warnings: list[str] = []
    used: list[tuple[str, Path, dict[str, Any]]] = []
    for stamp, file, data in loaded:
        identity = _run_identity(file, data)
        differing = [key for key, value in identity.items() if value != reference[key]]
        if "ruler settings" in differing:
            mine, newest_settings = identity["ruler settings"], reference["ruler settings"]
            names = sorted(n for n in {*mine, *newest_settings} if mine.get(n) != newest_settings.get(n))
            differing[differing.index("ruler settings")] = "RULER settings (" + ", ".join(
                f"{n} {mine.get(n)!r} vs {newest_settings.get(n)!r}" for n in names
            ) + ")"
        if differing and data is not newest:
            warnings.append(
                f"skipped {file.name}: its {', '.join(differing)} differ from the newest file's, so it is another run; "
                "pass that file explicitly to report it"
            )
            continue
        used.append((stamp, file, data))

    results: dict[tuple[str, int], TaskResult] = {}
    seen_other: list[str] = []
    for stamp, file, data in used:
        configs = data.get("configs") or {}
        counts = data.get("n-samples") or {}
        for key, row in data["results"].items():
            parsed = _parse_task_key(key)
            if parsed is None:
                if not key.startswith(PREFIX + "_"):
                    seen_other.append(key)
                continue
            task, length = parsed
            metadata = (configs.get(key) or {}).get("metadata") or {}
            provenance = metadata.get("ruler") if isinstance(metadata.get("ruler"), dict) else {}
            score = _number((row or {}).get("score,none"))
            if score is None:
                warnings.append(f"{file.name}: {key} has no numeric 'score,none'; ignored")
                continue
            tokens = _tokens_for(key, length, data, provenance)
            if tokens is None:
                warnings.append(f"{file.name}: {key} does not record its length (metadata ruler.length); ignored")
                continue
            count = (counts.get(key) or {}).get("effective")
            results[(task, tokens)] = TaskResult(
                task=task,
                length=tokens,
                lm_eval_task=key,
                score=score,
                stderr=_number(row.get("score_stderr,none")),
                n=int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else None,
                provenance=Provenance.from_dict(provenance),
                source=file,
            )
    if not results:
        listed = ", ".join(sorted(set(seen_other))[:8]) or "nothing"
        names = ", ".join(f.name for _, f, _ in used)
        raise ReportError(
            f"no RULER task results in {folder} ({names}): expected rows named ruler_<task>_<length> "
            f"(e.g. ruler_niah_single_1_4k), found {listed}. Was the run made with --tasks ruler_...?"
        )

    samples: dict[tuple[str, int], list[SampleScore]] = {}
    for cell, result in sorted(results.items()):
        log = result.source.parent / f"samples_{result.lm_eval_task}_{_timestamp(result.source)}.jsonl"
        if log.is_file():
            samples[cell] = _read_samples(log)
    info = {
        "model_name": newest.get("model_name"),
        "model_args": reference_args,
        "chat_template_sha": newest.get("chat_template_sha"),
        "system_instruction_sha": newest.get("system_instruction_sha"),
        "lm_eval_version": newest.get("lm_eval_version"),
        "date": newest.get("date"),
        "max_length": newest.get("max_length"),
        "settings": reference["ruler settings"],
    }
    return Run(
        name=name or _run_name(newest, folder),
        path=folder,
        files=tuple(f for _, f, _ in used),
        results=results,
        samples=samples,
        info=info,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- the RULER table


def _mean(values: Sequence[float]) -> float:
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
        present = run.tasks_at(tokens)
        tasks = {task: (present[task].score if task in present else None) for task in TASK_ORDER}
        # Below 4K the ruler_<len> groups hold only the tasks that fit (no QA): score those, as the
        # group row does, unless all 13 ran anyway. A missing task is never averaged as zero.
        scored = _scored_tasks(tokens, present)
        missing = tuple(task for task in scored if task not in present)
        if len(scored) < len(TASK_ORDER) and not missing:
            left_out = [task for task in TASK_ORDER if task not in scored]
            small_notes.append(
                f"{length_label(tokens)} score is the mean of the {len(scored)} tasks that fit at that length "
                f"({', '.join(left_out)} need {length_label(min(TASKS[t].min_group_length for t in left_out))} or more), "
                f"as the {PREFIX}_<len> groups below 4K hold; not RULER's 13-task score"
            )
        categories = {
            category: (_mean([tasks[t] for t in members]) if all(tasks[t] is not None for t in members) else None)  # type: ignore[misc]
            for category, members in CATEGORIES.items()
        }
        score = None if missing else _mean([tasks[t] for t in scored])  # type: ignore[misc]
        errors = [present[t].stderr for t in scored if t in present]
        stderr = None
        if not missing and all(e is not None for e in errors):
            stderr = math.sqrt(math.fsum(e * e for e in errors)) / len(errors)  # type: ignore[operator]
        rows.append(LengthRow(tokens, length_label(tokens), score, stderr, categories, tasks, missing))

    by_length = {row.length: row for row in rows}
    standard = [by_length.get(LENGTHS[name]) for name in STANDARD_LENGTHS]
    notes: list[str] = []
    avg = wavg_inc = wavg_dec = None
    if all(row is not None and row.score is not None for row in standard):
        values = [row.score for row in standard]  # type: ignore[union-attr]
        avg = _mean(values)  # type: ignore[arg-type]
        wavg_inc = math.fsum(i * s for i, s in enumerate(values, 1)) / 21  # type: ignore[operator]
        wavg_dec = math.fsum((7 - i) * s for i, s in enumerate(values, 1)) / 21  # type: ignore[operator]
    else:
        lacking = [length_label(LENGTHS[n]) for n, row in zip(STANDARD_LENGTHS, standard) if row is None or row.score is None]
        notes.append(f"Avg and wAvg need complete 4K..128K; missing or partial: {', '.join(lacking)}")
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


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Estimate:
    """Baseline vs candidate for one scope (task, category, length or overall).

    ``recovery`` = candidate / baseline x 100 (None when the baseline is 0);
    ``difference`` = candidate - baseline in score points. Intervals are at the
    comparison's (1 - alpha) level; None when they cannot be computed.
    """

    baseline: float | None
    candidate: float | None
    difference: float | None
    recovery: float | None
    difference_ci: tuple[float, float] | None = None
    recovery_ci: tuple[float, float] | None = None
    difference_se: float | None = None
    recovery_se: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "difference": self.difference,
            "recovery": self.recovery,
            "difference_ci": list(self.difference_ci) if self.difference_ci else None,
            "recovery_ci": list(self.recovery_ci) if self.recovery_ci else None,
            "difference_se": self.difference_se,
            "recovery_se": self.recovery_se,
        }


@dataclass(frozen=True)
class LengthComparison:
    """One compared length. ``complete`` is False when fewer than 13 tasks were compared."""

    length: int
    label: str
    tasks: tuple[str, ...]
    score: Estimate
    categories: Mapping[str, Estimate]
    per_task: Mapping[str, Estimate]

    @property
    def complete(self) -> bool:
        return len(self.tasks) == len(TASKS)


Cell = tuple[str, int]


class _Intervals:
    """Sampling distributions of baseline and candidate means, for any nesting of cells.

    A scope is a list of groups of cells; its score is the mean over groups of
    the mean over each group's cells (a length = one group of its tasks; the
    overall score = one group per length). Bootstrap replicates per cell are
    drawn once, so every scope and every later :func:`gate` call reads the same
    replicates and the numbers agree with each other.
    """

    def __init__(
        self,
        method: str,
        cells: Sequence[Cell],
        baseline: Run,
        candidate: Run,
        n_bootstrap: int,
        seed: int,
    ) -> None:
        self.method = method
        self.base_point = {cell: baseline.results[cell].score for cell in cells}
        self.cand_point = {cell: candidate.results[cell].score for cell in cells}
        self.reps: dict[Cell, tuple[np.ndarray, np.ndarray]] = {}
        self.variances: dict[Cell, tuple[float, float] | None] = {}
        if method == METHOD_BOOTSTRAP:
            rng = np.random.default_rng(seed)
            for cell in sorted(cells):
                base, cand = _paired_arrays(baseline.samples[cell], candidate.samples[cell])
                idx = rng.integers(0, len(base), size=(n_bootstrap, len(base)))
                self.reps[cell] = (base[idx].mean(axis=1), cand[idx].mean(axis=1))
        else:
            for cell in cells:
                se_b, se_c = baseline.results[cell].stderr, candidate.results[cell].stderr
                self.variances[cell] = None if se_b is None or se_c is None else (se_b * se_b, se_c * se_c)

    def estimate(self, groups: Sequence[Sequence[Cell]], alpha: float) -> Estimate:
        groups = [list(g) for g in groups if g]
        if not groups:
            return Estimate(None, None, None, None)
        base = _mean([_mean([self.base_point[c] for c in g]) for g in groups])
        cand = _mean([_mean([self.cand_point[c] for c in g]) for g in groups])
        diff = cand - base
        recovery = 100.0 * cand / base if base > 0 else None
        if self.method == METHOD_BOOTSTRAP:
            b = np.mean([np.mean([self.reps[c][0] for c in g], axis=0) for g in groups], axis=0)
            c_ = np.mean([np.mean([self.reps[c][1] for c in g], axis=0) for g in groups], axis=0)
            d = c_ - b
            lo, hi = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
            diff_ci = (float(lo), float(hi))
            diff_se = float(np.std(d, ddof=1))
            rec_ci = rec_se = None
            if recovery is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = np.where(b > 0, 100.0 * c_ / b, np.nan)
                finite = r[np.isfinite(r)]
                if finite.size:
                    lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
                    rec_ci = (float(lo), float(hi))
                    rec_se = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
            return Estimate(base, cand, diff, recovery, diff_ci, rec_ci, diff_se, rec_se)
        variances = [self.variances.get(c) for g in groups for c in g]
        if any(v is None for v in variances):
            return Estimate(base, cand, diff, recovery)
        var_b = math.fsum(math.fsum(self.variances[c][0] for c in g) / len(g) ** 2 for g in groups) / len(groups) ** 2  # type: ignore[index]
        var_c = math.fsum(math.fsum(self.variances[c][1] for c in g) / len(g) ** 2 for g in groups) / len(groups) ** 2  # type: ignore[index]
        z = NormalDist().inv_cdf(1 - alpha / 2)
        diff_se = math.sqrt(var_b + var_c)
        diff_ci = (diff - z * diff_se, diff + z * diff_se)
        rec_ci = rec_se = None
        if recovery is not None:
            # Delta method for R = 100 C / B with independent C and B.
            rec_se = 100.0 * math.sqrt(var_c / base**2 + cand**2 * var_b / base**4)
            rec_ci = (recovery - z * rec_se, recovery + z * rec_se)
        return Estimate(base, cand, diff, recovery, diff_ci, rec_ci, diff_se, rec_se)


def _paired_arrays(base: Sequence[SampleScore], cand: Sequence[SampleScore]) -> tuple[np.ndarray, np.ndarray]:
    by_id = {s.doc_id: s.score for s in cand}
    ordered = sorted(base, key=lambda s: s.doc_id)
    return np.array([s.score for s in ordered], dtype=float), np.array([by_id[s.doc_id] for s in ordered], dtype=float)


@dataclass(frozen=True)
class Comparison:
    """A candidate against a baseline on the same generated data.

    ``overall`` averages the compared lengths' scores (each length weighs the
    same, like RULER's Avg), and its recovery is candidate Avg / baseline Avg x
    100 — the ratio of the averages, not the average of per-length ratios, so
    it equals the recovery of RULER's Avg when 4K..128K are compared.
    """

    baseline: str
    candidate: str
    lengths: tuple[LengthComparison, ...]
    overall: Estimate
    method: str
    alpha: float
    n_bootstrap: int | None
    seed: int | None
    warnings: tuple[str, ...]
    baseline_table: Table = field(repr=False)
    candidate_table: Table = field(repr=False)
    baseline_run: Run = field(repr=False, compare=False)
    candidate_run: Run = field(repr=False, compare=False)
    _intervals: _Intervals = field(repr=False, compare=False)

    def length(self, length: int | str) -> LengthComparison:
        tokens = parse_length(length) if isinstance(length, str) else length
        for item in self.lengths:
            if item.length == tokens:
                return item
        raise ReportError(f"{length_label(tokens)} was not compared (compared: {', '.join(i.label for i in self.lengths)})")

    def overall_for(self, lengths: Iterable[int | str] | str | None = None, alpha: float | None = None) -> Estimate:
        """The overall estimate over a subset of the compared lengths, at another alpha if given."""
        chosen = self.lengths if lengths is None else [self.length(t) for t in select_lengths(lengths, [i.length for i in self.lengths], "comparison")]
        groups = [[(task, item.length) for task in item.tasks] for item in chosen]
        return self._intervals.estimate(groups, self.alpha if alpha is None else alpha)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "method": self.method,
            "alpha": self.alpha,
            "confidence": 1 - self.alpha,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "warnings": list(self.warnings),
            "overall": self.overall.to_dict(),
            "lengths": [
                {
                    "length": item.length,
                    "label": item.label,
                    "complete": item.complete,
                    "tasks": list(item.tasks),
                    "score": item.score.to_dict(),
                    "categories": {k: v.to_dict() for k, v in item.categories.items()},
                    "per_task": {k: v.to_dict() for k, v in item.per_task.items()},
                }
                for item in self.lengths
            ],
        }


_RANGE_RE = re.compile(r"^\s*([^.\s]+)\s*\.\.\s*([^.\s]+)\s*$")


def select_lengths(spec: str | Iterable[int | str] | None, available: Sequence[int], what: str = "candidate") -> list[int]:
    """Lengths (tokens) chosen by ``spec`` among ``available``.

    ``"4k..64k"`` is an inclusive range over the available lengths;
    ``"4k,8k"`` or ``["4k", 8192]`` lists lengths, each of which must be
    available; ``"standard"`` means 4K..128K; None means all available.
    """
    available = sorted(available)
    if spec is None:
        return available
    try:
        if isinstance(spec, str):
            text = spec.strip()
            if text.lower() == "standard":
                text = f"{STANDARD_LENGTHS[0]}..{STANDARD_LENGTHS[-1]}"
            match = _RANGE_RE.match(text)
            if match:
                low, high = parse_length(match.group(1)), parse_length(match.group(2))
                if low > high:
                    raise ReportError(f"length range {spec!r} is reversed; write the shorter length first (e.g. 4k..64k)")
                chosen = [t for t in available if low <= t <= high]
                if not chosen:
                    raise ReportError(
                        f"no {what} lengths in {spec!r}; the {what} has {', '.join(map(length_label, available))}"
                    )
                return chosen
            items: list[int | str] = [part for part in text.split(",") if part.strip()]
        else:
            items = list(spec)
        wanted = sorted({parse_length(item) for item in items})
    except ConfigurationError as exc:
        raise ReportError(f"bad length selection {spec!r}: {exc}") from None
    absent = [t for t in wanted if t not in available]
    if absent:
        raise ReportError(
            f"the {what} has no results at {', '.join(map(length_label, absent))} "
            f"(it has {', '.join(map(length_label, available))})"
        )
    if not wanted:
        raise ReportError(f"empty length selection {spec!r}")
    return wanted


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_data(baseline: Run, candidate: Run, cells: Sequence[Cell]) -> tuple[list[str], list[str]]:
    """(mismatches that make scores incomparable, softer warnings)."""
    mismatches: dict[str, list[str]] = {}
    warnings: list[str] = []
    no_provenance: list[str] = []
    for cell in cells:
        b, c = baseline.results[cell], candidate.results[cell]
        if not b.provenance.recorded or not c.provenance.recorded:
            no_provenance.append(c.lm_eval_task)
            continue
        for key, (vb, vc) in b.provenance.differences(c.provenance).items():
            mismatches.setdefault(key, []).append(f"{c.lm_eval_task}: baseline {_short(vb)}, candidate {_short(vc)}")
        if b.n is not None and c.n is not None and b.n != c.n:
            mismatches.setdefault("n-samples", []).append(f"{c.lm_eval_task}: baseline {b.n}, candidate {c.n}")
    for key in CHECKED_RUN_INFO:
        vb, vc = baseline.info.get(key), candidate.info.get(key)
        if vb != vc:
            mismatches.setdefault(key, []).append(f"run-level: baseline {_short(vb)}, candidate {_short(vc)}")
    problems = [
        f"{key} differs in {len(items)} task(s), e.g. {items[0]}" if len(items) > 1 else f"{key} differs: {items[0]}"
        for key, items in mismatches.items()
    ]
    if no_provenance:
        warnings.append(
            f"{len(no_provenance)} task(s) have no ruler provenance in configs[...].metadata.ruler "
            f"(e.g. {no_provenance[0]}); identical data cannot be confirmed"
        )
    if baseline.info.get("lm_eval_version") != candidate.info.get("lm_eval_version"):
        warnings.append(
            f"lm_eval_version differs: baseline {baseline.info.get('lm_eval_version')}, "
            f"candidate {candidate.info.get('lm_eval_version')}"
        )
    versions = {(baseline.results[c].provenance.plugin_version, candidate.results[c].provenance.plugin_version) for c in cells}
    if any(vb != vc for vb, vc in versions):
        warnings.append(f"plugin_version differs: {sorted(versions, key=str)[0]}")
    return problems, warnings


def _check_pairing(baseline: Run, candidate: Run, cells: Sequence[Cell]) -> tuple[list[str], list[str]]:
    """(doc mismatches, cells lacking logs) for the paired bootstrap."""
    mismatched: list[str] = []
    lacking: list[str] = []
    for cell in cells:
        name = candidate.results[cell].lm_eval_task
        if cell not in baseline.samples or cell not in candidate.samples:
            lacking.append(name)
            continue
        b = {s.doc_id: s.doc_hash for s in baseline.samples[cell]}
        c = {s.doc_id: s.doc_hash for s in candidate.samples[cell]}
        if len(b) != len(baseline.samples[cell]) or len(c) != len(candidate.samples[cell]):
            mismatched.append(f"{name}: duplicate doc_id in a sample log")
        elif b.keys() != c.keys():
            mismatched.append(f"{name}: baseline logged {len(b)} docs, candidate {len(c)}, {len(b.keys() ^ c.keys())} doc_id(s) unmatched")
        else:
            differing = [d for d in b if b[d] != c[d]]
            if differing:
                mismatched.append(f"{name}: doc_hash differs for {len(differing)} of {len(b)} docs (first doc_id {differing[0]})")
    return mismatched, lacking


def _check_sample_means(run: Run, cells: Sequence[Cell], role: str) -> list[str]:
    out = []
    for cell in cells:
        if run.samples.get(cell):
            mean = _mean([s.score for s in run.samples[cell]])
            if abs(mean - run.results[cell].score) > 0.05:
                out.append(
                    f"{role} {run.results[cell].lm_eval_task}: sample log mean {mean:.2f} != reported score "
                    f"{run.results[cell].score:.2f}; the log may belong to another run"
                )
    return out


def compare(
    baseline: Run,
    candidate: Run,
    *,
    lengths: str | Iterable[int | str] | None = None,
    alpha: float = 0.05,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    method: str = "auto",
    allow_mismatch: bool = False,
) -> Comparison:
    """Recovery and difference of ``candidate`` vs ``baseline`` per task, category, length and overall.

    Compared are the candidate's tasks at the chosen lengths (``lengths``, see
    :func:`select_lengths`); the baseline must have every one of them, since a
    recovery against a missing baseline value means nothing. A length where
    the candidate ran fewer than 13 tasks is compared on those tasks and
    flagged as partial.

    Intervals (at level 1 - ``alpha``):

    * ``paired-bootstrap`` when both runs logged samples: documents are paired
      by task and ``doc_id`` (and must have equal ``doc_hash``), and resampled
      with replacement within each task and length, ``n_bootstrap`` times with
      a fixed ``seed``. Pairing removes the between-document variance both runs
      share, which is most of it: the intervals are much tighter than treating
      the runs as independent.
    * ``stderr`` otherwise: a normal approximation from lm-eval's reported
      standard errors, assuming independent runs (se = sqrt(se_a^2 + se_b^2);
      recovery by the delta method). Conservative for paired data.

    ``method`` is ``"auto"`` (bootstrap when possible), ``"paired-bootstrap"``
    (an error if impossible) or ``"stderr"``.

    Before any number is computed, the runs' provenance is checked: different
    tokenizer, chat template (fingerprint or applied sha), render modes,
    profile, seed, sample count, cache key or source-file hashes mean the two
    models answered different prompts. That raises :class:`ReportError`
    unless ``allow_mismatch=True``, which lists the differences in
    ``Comparison.warnings`` instead.
    """
    if not 0 < alpha < 1:
        raise ReportError(f"alpha must be between 0 and 1 (got {alpha}); 0.05 gives 95% intervals")
    if method not in ("auto", METHOD_BOOTSTRAP, METHOD_STDERR):
        raise ReportError(f"unknown method {method!r}; use auto, {METHOD_BOOTSTRAP} or {METHOD_STDERR}")
    if n_bootstrap < 100:
        raise ReportError(f"n_bootstrap={n_bootstrap} is too few for percentile intervals; use at least 1000")
    chosen = select_lengths(lengths, candidate.lengths, "candidate")
    cells: list[Cell] = [cell for cell in sorted(candidate.results) if cell[1] in chosen]
    absent = [cell for cell in cells if cell not in baseline.results]
    if absent:
        parts, usable = [], []
        for tokens in chosen:
            lacking = [task for task in TASK_ORDER if (task, tokens) in absent]
            if not lacking:
                usable.append(length_label(tokens).lower())
            elif len(lacking) == len(candidate.tasks_at(tokens)):
                parts.append(f"{length_label(tokens)} (all tasks)")
            else:
                parts.append(f"{length_label(tokens)} ({', '.join(lacking)})")
        hint = f" (e.g. --lengths {','.join(usable)})" if usable else ""
        raise ReportError(
            f"the baseline {baseline.name} ({baseline.path}) has no results for what the candidate ran: {'; '.join(parts)}. "
            f"Evaluate the baseline there too, or compare only lengths both runs have (--lengths, or lengths= in Python){hint}"
        )

    warnings: list[str] = []
    problems, soft = _check_data(baseline, candidate, cells)
    mismatched_docs, lacking_logs = _check_pairing(baseline, candidate, cells)
    # Logged docs that differ mean different data, whatever the interval method.
    problems.extend(f"sample logs pair different documents: {m}" for m in mismatched_docs)
    if problems:
        if not allow_mismatch:
            raise ReportError(
                "baseline and candidate were not evaluated on the same data, so their scores are not comparable:\n  - "
                + "\n  - ".join(problems)
                + "\nRun both with the same tokenizer, chat template, profile, seed and num_samples (the same cached "
                "datasets), or pass allow_mismatch=True / --allow-mismatch to compare anyway with these as warnings."
            )
        warnings.extend(f"MISMATCH (allowed): {p}" for p in problems)
    warnings.extend(soft)

    can_pair = not lacking_logs and not mismatched_docs
    if method == METHOD_BOOTSTRAP and not can_pair:
        why = f"no sample logs for {len(lacking_logs)} task(s), e.g. {lacking_logs[0]}" if lacking_logs else mismatched_docs[0]
        raise ReportError(f"a paired bootstrap needs matching sample logs in both runs ({why}); rerun with --log_samples or use method='stderr'")
    chosen_method = METHOD_STDERR if method == METHOD_STDERR or not can_pair else METHOD_BOOTSTRAP
    if method == "auto" and not can_pair and lacking_logs and (baseline.samples or candidate.samples):
        warnings.append(f"sample logs missing for {len(lacking_logs)} task(s) (e.g. {lacking_logs[0]}); intervals use reported stderrs")
    if chosen_method == METHOD_BOOTSTRAP:
        warnings.extend(_check_sample_means(baseline, cells, "baseline") + _check_sample_means(candidate, cells, "candidate"))
    else:
        no_se = [candidate.results[c].lm_eval_task for c in cells if baseline.results[c].stderr is None or candidate.results[c].stderr is None]
        if no_se:
            warnings.append(f"no reported stderr for {len(no_se)} task(s) (e.g. {no_se[0]}); their scopes have no intervals")

    intervals = _Intervals(chosen_method, cells, baseline, candidate, n_bootstrap, seed)
    compared: list[LengthComparison] = []
    for tokens in chosen:
        tasks = tuple(task for task in TASK_ORDER if (task, tokens) in candidate.results)
        if len(tasks) < len(TASKS):
            warnings.append(
                f"{length_label(tokens)}: compared on {len(tasks)} of 13 tasks; its score is the mean of those, not RULER's 13-task score"
            )
        per_task = {task: intervals.estimate([[(task, tokens)]], alpha) for task in tasks}
        categories = {
            category: intervals.estimate([[(t, tokens) for t in members]], alpha)
            for category, members in CATEGORIES.items()
            if all(t in tasks for t in members)
        }
        score = intervals.estimate([[(task, tokens) for task in tasks]], alpha)
        compared.append(LengthComparison(tokens, length_label(tokens), tasks, score, categories, per_task))
    overall = intervals.estimate([[(task, item.length) for task in item.tasks] for item in compared], alpha)
    for run, role in ((baseline, "baseline"), (candidate, "candidate")):
        warnings.extend(f"{role}: {w}" for w in run.warnings)
    return Comparison(
        baseline=baseline.name,
        candidate=candidate.name,
        lengths=tuple(compared),
        overall=overall,
        method=chosen_method,
        alpha=alpha,
        n_bootstrap=n_bootstrap if chosen_method == METHOD_BOOTSTRAP else None,
        seed=seed if chosen_method == METHOD_BOOTSTRAP else None,
        warnings=tuple(warnings),
        baseline_table=ruler_table(baseline),
        candidate_table=ruler_table(candidate),
        baseline_run=baseline,
        candidate_run=candidate,
        _intervals=intervals,
    )


# --------------------------------------------------------------------------- gate


@dataclass(frozen=True)
class GateResult:
    """Pass/fail of a comparison; ``reasons`` say why it failed (empty when it passed)."""

    passed: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    min_recovery: float
    alpha: float
    lengths: tuple[str, ...]
    estimate: Estimate
    comparison: Comparison = field(repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.comparison.baseline,
            "candidate": self.comparison.candidate,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "min_recovery": self.min_recovery,
            "alpha": self.alpha,
            "lengths": list(self.lengths),
            "estimate": self.estimate.to_dict(),
        }


def gate(
    comparison: Comparison,
    min_recovery: float = 99.0,
    alpha: float = 0.05,
    lengths: str | Iterable[int | str] | None = None,
) -> GateResult:
    """Decide whether the candidate may ship: two checks on the *overall* estimate.

    1. Threshold: overall recovery (candidate Avg / baseline Avg x 100 over the
       gated lengths) must be >= ``min_recovery``.
    2. Significance: the drop must not be statistically significant, i.e. the
       upper bound of the (1 - ``alpha``) interval of candidate - baseline must
       not be below 0.

    Why one overall test rather than one per length: six per-length tests at
    alpha = 0.05 would fail an unchanged model up to ~26% of the time (multiple
    comparisons), and per-length intervals at RULER's sample sizes are wide.
    Per-length numbers stay in the report for people to read; restrict the
    gate to the lengths you care about with ``lengths`` (e.g. ``"4k..64k"``,
    leaving 128K report-only). When no interval is available the significance
    check is skipped and a note says so.
    """
    if not 0 < alpha < 1:
        raise ReportError(f"alpha must be between 0 and 1 (got {alpha})")
    estimate = comparison.overall_for(lengths, alpha)
    labels = tuple(
        item.label
        for item in comparison.lengths
        if lengths is None or item.length in select_lengths(lengths, [i.length for i in comparison.lengths], "comparison")
    )
    reasons: list[str] = []
    notes: list[str] = []
    scope = f"over {', '.join(labels)}"
    if estimate.recovery is None:
        reasons.append(f"overall recovery is undefined {scope}: the baseline scores 0")
    elif estimate.recovery < min_recovery:
        reasons.append(
            f"overall recovery {estimate.recovery:.2f}% {scope} is below the required {min_recovery:.2f}% "
            f"(baseline {estimate.baseline:.1f}, candidate {estimate.candidate:.1f})"
        )
    if estimate.difference_ci is None:
        notes.append("significance not tested: no interval (no sample logs and no reported stderrs)")
    elif estimate.difference_ci[1] < 0:
        lo, hi = estimate.difference_ci
        reasons.append(
            f"the drop is statistically significant: candidate - baseline = {estimate.difference:+.2f} points, "
            f"{100 * (1 - alpha):g}% CI [{lo:+.2f}, {hi:+.2f}] lies below 0 ({comparison.method})"
        )
    for item in comparison.lengths:
        if item.label in labels and item.score.difference_ci and item.score.difference_ci[1] < 0:
            notes.append(f"{item.label}: significant drop at this length alone ({item.score.difference:+.2f}); reported, not gated")
    return GateResult(not reasons, tuple(reasons), tuple(notes), min_recovery, alpha, labels, estimate, comparison)


# --------------------------------------------------------------------------- formatting helpers

Item = Union[Table, Comparison, GateResult]
Items = Union[Item, Sequence[Item]]


def _collect(items: Items) -> tuple[list[Table], list[Comparison], dict[int, GateResult]]:
    """Tables, comparisons, and gates keyed by id(comparison); a gate brings its comparison."""
    seq = [items] if isinstance(items, (Table, Comparison, GateResult)) else list(items)
    tables: list[Table] = []
    comparisons: list[Comparison] = []
    gates: dict[int, GateResult] = {}
    for item in seq:
        if isinstance(item, Table):
            tables.append(item)
        elif isinstance(item, Comparison):
            if all(c is not item for c in comparisons):
                comparisons.append(item)
        elif isinstance(item, GateResult):
            gates[id(item.comparison)] = item
            if all(c is not item.comparison for c in comparisons):
                comparisons.append(item.comparison)
        else:
            raise TypeError(f"cannot report a {type(item).__name__}; pass Table, Comparison or GateResult objects")
    return tables, comparisons, gates


def _f1(value: float | None) -> str:
    """Scores: one decimal, as RULER's tables."""
    return _MISSING if value is None else f"{value:.1f}"


def _fd(value: float | None) -> str:
    """Differences: signed, two decimals (a 0.3-point drop matters)."""
    return _MISSING if value is None else f"{value:+.2f}"


def _fr(value: float | None) -> str:
    """Recovery: two decimals, so 98.96 is not printed as a passing 99.0."""
    return _MISSING if value is None else f"{value:.2f}"


def _ci(ci: tuple[float, float] | None, fmt: Any) -> str:
    return _MISSING if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _conf(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}%"


def _method_text(comparison: Comparison) -> str:
    if comparison.method == METHOD_BOOTSTRAP:
        return (
            f"paired bootstrap over documents (B={comparison.n_bootstrap}, seed {comparison.seed}), "
            f"{_conf(comparison.alpha)} percentile intervals"
        )
    return f"normal approximation from reported stderrs, runs treated as independent, {_conf(comparison.alpha)} intervals"


def _all_lengths(tables: Sequence[Table]) -> list[int]:
    return sorted({row.length for table in tables for row in table.rows})


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> list[str]:
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else ":---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out.extend("| " + " | ".join(row) + " |" for row in rows)
    return out


def _display_names(tables: Sequence[Table]) -> list[str]:
    """Table names, with the run's parent folder appended where two runs share a model name."""
    names = [t.name for t in tables]
    out = []
    for table in tables:
        if names.count(table.name) > 1 and table.run is not None:
            out.append(f"{table.name} ({table.run.path.parent.name or table.run.path.name})")
        else:
            out.append(table.name)
    return out


def _leaderboard_rows(tables: Sequence[Table]) -> tuple[list[str], list[list[str]]]:
    lengths = _all_lengths(tables)
    header = ["Model", "Effective", "Eff. (≥85% of 4K)", *map(length_label, lengths), "Avg", "wAvg (inc)", "wAvg (dec)"]
    rows = []
    for table, name in zip(tables, _display_names(tables)):
        cells = []
        for tokens in lengths:
            row = table.row(tokens)
            cells.append(_f1(row.score) if row else _MISSING)
        rows.append(
            [
                name,
                table.effective_length or _MISSING,
                table.relative_effective_length or _MISSING,
                *cells,
                _f1(table.avg),
                _f1(table.wavg_inc),
                _f1(table.wavg_dec),
            ]
        )
    return header, rows


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


def _breakdown_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    header = ["", *(row.label for row in table.rows)]
    rows = [
        ["Score (13-task mean)", *(_f1(row.score) for row in table.rows)],
        ["± stderr", *(_f1(row.stderr) if row.stderr is not None else _MISSING for row in table.rows)],
    ]
    rows += [[category, *(_f1(row.categories[category]) for row in table.rows)] for category in CATEGORY_ORDER]
    rows += [[task, *(_f1(row.tasks[task]) for row in table.rows)] for task in TASK_ORDER]
    return header, rows


def _comparison_rows(comparison: Comparison, gate_result: GateResult | None = None) -> tuple[list[str], list[list[str]]]:
    conf = _conf(comparison.alpha)
    header = ["Length", "Tasks", "Baseline", "Candidate", "Δ", f"Δ {conf} CI", "Recovery %", f"Recovery {conf} CI"]
    rows = []
    for item in comparison.lengths:
        s = item.score
        rows.append(
            [
                item.label,
                f"{len(item.tasks)}/13",
                _f1(s.baseline),
                _f1(s.candidate),
                _fd(s.difference),
                _ci(s.difference_ci, _fd),
                _fr(s.recovery),
                _ci(s.recovery_ci, _fr),
            ]
        )
    o = comparison.overall
    rows.append(
        [
            f"Overall ({len(comparison.lengths)} lengths)",
            "",
            _f1(o.baseline),
            _f1(o.candidate),
            _fd(o.difference),
            _ci(o.difference_ci, _fd),
            _fr(o.recovery),
            _ci(o.recovery_ci, _fr),
        ]
    )
    if gate_result is not None and gate_result.lengths != tuple(i.label for i in comparison.lengths):
        g = gate_result.estimate
        rows.append(
            [
                f"Gated ({', '.join(gate_result.lengths)})",
                "",
                _f1(g.baseline),
                _f1(g.candidate),
                _fd(g.difference),
                _ci(g.difference_ci, _fd),
                _fr(g.recovery),
                _ci(g.recovery_ci, _fr),
            ]
        )
    return header, rows


def _recovery_matrix(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["Recovery %", *(item.label for item in comparison.lengths)]
    rows = [["**Length score**", *(_fr(item.score.recovery) for item in comparison.lengths)]]
    for category in CATEGORY_ORDER:
        rows.append([category, *(_fr(item.categories[category].recovery) if category in item.categories else _MISSING for item in comparison.lengths)])
    for task in TASK_ORDER:
        rows.append([task, *(_fr(item.per_task[task].recovery) if task in item.per_task else _MISSING for item in comparison.lengths)])
    return header, rows


def _gate_line(result: GateResult) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    return (
        f"**Gate: {verdict}** (overall recovery ≥ {result.min_recovery:.2f}% and no significant drop at alpha "
        f"{result.alpha:g}, over {', '.join(result.lengths)})"
    )


# --------------------------------------------------------------------------- markdown, csv, json


def to_markdown(items: Items, *, title: str = "RULER report") -> str:
    """A markdown report: leaderboard row per run, breakdowns, recovery tables, gate verdicts."""
    tables, comparisons, gates = _collect(items)
    out = [f"# {title}", ""]
    unique = _score_tables(tables, comparisons)
    if unique:
        out += ["## RULER scores", ""]
        out += _md_table(*_leaderboard_rows(unique))
        out += [
            "",
            f"Score = mean of the 13 task scores (0-100). Effective length: the largest length scoring above "
            f"{THRESHOLD} (Llama-2-7B-chat at 4K); the relative one keeps ≥85% of the model's own 4K score (NoLiMa). "
            f"{_MISSING} = missing or partial.",
            "",
        ]
    for table in tables:
        out += [f"### {table.name}: by task and length", ""]
        out += [settings_text(table.run), ""] if table.run is not None else []
        out += _md_table(*_breakdown_rows(table))
        out += [""] + [f"- {note}" for note in table.notes] + ([""] if table.notes else [])
    for comparison in comparisons:
        result = gates.get(id(comparison))
        out += [f"## {comparison.candidate} vs {comparison.baseline}", ""]
        if result is not None:
            out += [_gate_line(result), ""]
            out += [f"- {reason}" for reason in result.reasons] + [f"- note: {n}" for n in result.notes]
            out += [""] if result.reasons or result.notes else []
        out += [f"Recovery = candidate / baseline × 100; Δ = candidate − baseline (points). Intervals: {_method_text(comparison)}.", ""]
        out += _md_table(*_comparison_rows(comparison, result))
        out += ["", f"### Recovery by task: {comparison.candidate}", ""]
        out += _md_table(*_recovery_matrix(comparison))
        if comparison.warnings:
            out += ["", "Warnings:", ""] + [f"- {w}" for w in comparison.warnings]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


CSV_COLUMNS = (
    "section", "model", "baseline", "candidate", "length", "tokens", "scope", "name",
    "score", "stderr", "baseline_score", "candidate_score", "difference", "difference_low", "difference_high",
    "recovery", "recovery_low", "recovery_high", "method", "passed",
)  # fmt: skip


def _r(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{round(value, digits)}"


def to_csv(items: Items) -> str:
    """One long-format CSV (a row per run/comparison x length x scope), full precision, for spreadsheets."""
    tables, comparisons, gates = _collect(items)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for table in tables:
        for row in table.rows:
            base = {"section": "table", "model": table.name, "length": row.label, "tokens": row.length}
            writer.writerow({**base, "scope": "length", "name": "score", "score": _r(row.score), "stderr": _r(row.stderr)})
            for category, value in row.categories.items():
                writer.writerow({**base, "scope": "category", "name": category, "score": _r(value)})
            for task, value in row.tasks.items():
                writer.writerow({**base, "scope": "task", "name": task, "score": _r(value)})
        for name in ("avg", "wavg_inc", "wavg_dec"):
            writer.writerow({"section": "table", "model": table.name, "scope": "summary", "name": name, "score": _r(getattr(table, name))})
        for name in ("effective_length", "relative_effective_length"):
            writer.writerow({"section": "table", "model": table.name, "scope": "summary", "name": name, "score": getattr(table, name) or ""})

    def est(e: Estimate) -> dict[str, str]:
        return {
            "baseline_score": _r(e.baseline),
            "candidate_score": _r(e.candidate),
            "difference": _r(e.difference),
            "difference_low": _r(e.difference_ci[0]) if e.difference_ci else "",
            "difference_high": _r(e.difference_ci[1]) if e.difference_ci else "",
            "recovery": _r(e.recovery),
            "recovery_low": _r(e.recovery_ci[0]) if e.recovery_ci else "",
            "recovery_high": _r(e.recovery_ci[1]) if e.recovery_ci else "",
        }

    for comparison in comparisons:
        base = {"section": "comparison", "baseline": comparison.baseline, "candidate": comparison.candidate, "method": comparison.method}
        for item in comparison.lengths:
            at = {**base, "length": item.label, "tokens": item.length}
            writer.writerow({**at, "scope": "length", "name": "score", **est(item.score)})
            for category, e in item.categories.items():
                writer.writerow({**at, "scope": "category", "name": category, **est(e)})
            for task, e in item.per_task.items():
                writer.writerow({**at, "scope": "task", "name": task, **est(e)})
        writer.writerow({**base, "scope": "overall", "name": "score", **est(comparison.overall)})
        result = gates.get(id(comparison))
        if result is not None:
            writer.writerow(
                {**base, "section": "gate", "length": ",".join(result.lengths), "scope": "overall", "name": "gate", **est(result.estimate), "passed": str(result.passed).lower()}
            )
    return buffer.getvalue()


def to_json(items: Items) -> str:
    """Everything in the report as JSON (unrounded), for dashboards and further scripts."""
    tables, comparisons, gates = _collect(items)
    payload = {
        "format": "lm-eval-ruler-report",
        "version": 1,
        "threshold": THRESHOLD,
        "tables": [t.to_dict() for t in tables],
        "comparisons": [c.to_dict() for c in comparisons],
        "gates": [gates[id(c)].to_dict() for c in comparisons if id(c) in gates],
    }
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def github_summary(items: Items) -> str:
    """Compact markdown for ``$GITHUB_STEP_SUMMARY``: verdicts first, details folded away."""
    tables, comparisons, gates = _collect(items)
    out: list[str] = []
    for comparison in comparisons:
        result = gates.get(id(comparison))
        o = comparison.overall
        if result is not None:
            icon = "✅" if result.passed else "❌"
            out.append(
                f"### {icon} RULER gate {'passed' if result.passed else 'failed'}: {comparison.candidate} vs {comparison.baseline}"
            )
        else:
            out.append(f"### RULER: {comparison.candidate} vs {comparison.baseline}")
        out += ["", f"Overall recovery **{_fr(o.recovery)}%** {_ci(o.recovery_ci, _fr)}, Δ {_fd(o.difference)} points ({comparison.method})."]
        if result is not None:
            out += [f"- {r}" for r in result.reasons]
        out += [""] + _md_table(*_comparison_rows(comparison, result)) + [""]
        out += ["<details><summary>Recovery by task</summary>", ""] + _md_table(*_recovery_matrix(comparison)) + ["", "</details>", ""]
        if comparison.warnings:
            out += ["<details><summary>Warnings</summary>", ""] + [f"- {w}" for w in comparison.warnings] + ["", "</details>", ""]
    if tables:
        out += ["### RULER scores", ""] + _md_table(*_leaderboard_rows(tables)) + [""]
        for table in tables:
            out += [f"<details><summary>{table.name}: by task and length</summary>", ""]
            out += _md_table(*_breakdown_rows(table)) + ["", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- plots


def _matplotlib() -> Any:
    """Import matplotlib only when a plot is asked for; it is an optional extra."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(f"plots need matplotlib, which is not installed: {PLOT_INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def _new_figure(width: float, height: float) -> Any:
    Figure, FigureCanvasAgg = _matplotlib()
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend, without touching pyplot's global state
    return figure


def _figure_scores(tables: Sequence[Table]) -> Any:
    lengths = _all_lengths(tables)
    if not lengths:
        raise ReportError("nothing to plot: no lengths")
    figure = _new_figure(7.5, 4.2)
    ax = figure.add_subplot()
    positions = {tokens: math.log2(tokens) for tokens in lengths}
    for table, name in zip(tables, _display_names(tables)):
        points = sorted(table.scores.items())
        if points:
            ax.plot([positions[t] for t, _ in points], [s for _, s in points], marker="o", linewidth=2, label=name)
    ax.axhline(THRESHOLD, color="0.35", linestyle="--", linewidth=1.2, label=f"{THRESHOLD} (Llama-2-7B-chat @ 4K)")
    ax.set_xticks([positions[t] for t in lengths], [length_label(t) for t in lengths])
    lows = [s for table in tables for s in table.scores.values()]
    ax.set_ylim(max(0.0, min(lows + [THRESHOLD]) - 8), 100.5)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("RULER score (13-task mean)")
    ax.set_title("RULER score vs length")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure


def _heatmap(ax: Any, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], norm: Any, cmap: str, fmt: str) -> Any:
    import matplotlib

    colormap = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=colormap, norm=norm)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            red, green, blue, _ = colormap(norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7, color="white" if dark else "black")
    return image


def _figure_recovery(comparison: Comparison) -> Any:
    from matplotlib.colors import TwoSlopeNorm

    rows = ["length score", *TASK_ORDER]
    matrix = np.full((len(rows), len(comparison.lengths)), np.nan)
    for j, item in enumerate(comparison.lengths):
        matrix[0, j] = item.score.recovery if item.score.recovery is not None else np.nan
        for i, task in enumerate(TASK_ORDER, 1):
            e = item.per_task.get(task)
            if e is not None and e.recovery is not None:
                matrix[i, j] = e.recovery
    finite = matrix[np.isfinite(matrix)]
    # White = unchanged (100%); the scale spans at least 90..110 so small noise stays pale.
    low = min(float(finite.min()) if finite.size else 90.0, 90.0)
    high = max(float(finite.max()) if finite.size else 110.0, 110.0)
    figure = _new_figure(max(5.8, 2.6 + 0.9 * len(comparison.lengths)), 6.0)
    ax = figure.add_subplot()
    image = _heatmap(ax, matrix, rows, [i.label for i in comparison.lengths], TwoSlopeNorm(100.0, low, high), "RdBu", ".1f")
    ax.axhline(0.5, color="black", linewidth=1)
    ax.set_title(f"Recovery % (candidate / baseline x 100)\ncandidate: {comparison.candidate}\nbaseline: {comparison.baseline}", fontsize=8)
    figure.colorbar(image, ax=ax, label="recovery %")
    return figure


DEPTH_BINS = 10


def _depth_matrix(run: Run) -> tuple[np.ndarray, np.ndarray, list[int]]:
    niah = set(CATEGORIES["retrieval"])
    lengths = sorted({t for (task, t), samples in run.samples.items() if task in niah and any(s.depth is not None for s in samples)})
    if not lengths:
        raise ReportError(
            f"no NIAH sample logs with needle depths for {run.name}: run lm-eval with --log_samples on the niah tasks"
        )
    sums = np.zeros((DEPTH_BINS, len(lengths)))
    counts = np.zeros((DEPTH_BINS, len(lengths)))
    for (task, tokens), samples in run.samples.items():
        if task not in niah or tokens not in lengths:
            continue
        j = lengths.index(tokens)
        for s in samples:
            if s.depth is None:
                continue
            i = min(int(s.depth // (100 / DEPTH_BINS)), DEPTH_BINS - 1)
            sums[i, j] += s.score
            counts[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), counts, lengths


def _figure_depth(run: Run) -> Any:
    from matplotlib.colors import Normalize

    matrix, _, lengths = _depth_matrix(run)
    width = 100 // DEPTH_BINS
    rows = [f"{i * width}-{(i + 1) * width}%" for i in range(DEPTH_BINS)]
    figure = _new_figure(max(5.0, 2.6 + 0.9 * len(lengths)), 4.8)
    ax = figure.add_subplot()
    image = _heatmap(ax, matrix, rows, [length_label(t) for t in lengths], Normalize(0, 100), "RdYlGn", ".0f")
    ax.set_ylabel("needle depth (percent of context)")
    ax.set_xlabel("context length")
    ax.set_title(f"NIAH score by needle depth\n{run.name}", fontsize=9)
    figure.colorbar(image, ax=ax, label="mean score (8 NIAH tasks)")
    return figure


def _save(figure: Any, path: str | Path) -> list[Path]:
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix.lower() in (".png", ".svg") else stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        target = stem.parent / (stem.name + suffix)
        figure.savefig(target, format=suffix[1:])
        written.append(target)
    return written


def _png_base64(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_scores(tables: Table | Sequence[Table], path: str | Path) -> list[Path]:
    """Score vs length per run with RULER's dashed 85.6 line; writes ``<path>.png`` and ``<path>.svg``."""
    return _save(_figure_scores([tables] if isinstance(tables, Table) else list(tables)), path)


def plot_recovery_heatmap(comparison: Comparison, path: str | Path) -> list[Path]:
    """Task x length recovery %, diverging at 100; writes PNG and SVG."""
    return _save(_figure_recovery(comparison), path)


def plot_depth_heatmap(run: Run, path: str | Path) -> list[Path]:
    """NIAH needle depth (10 bins) x length mean score from sample logs; writes PNG and SVG."""
    return _save(_figure_depth(run), path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _runs_with_depths(tables: Sequence[Table], comparisons: Sequence[Comparison]) -> list[Run]:
    runs: list[Run] = [t.run for t in tables if t.run is not None]
    for c in comparisons:
        runs += [c.baseline_run, c.candidate_run]
    unique: list[Run] = []
    for run in runs:
        if all(run is not u for u in unique) and any(task in CATEGORIES["retrieval"] and any(s.depth is not None for s in samples) for (task, _), samples in run.samples.items()):
            unique.append(run)
    return unique


def _same_run(a: Table, b: Table) -> bool:
    return a is b or (a.run is not None and a.run is b.run)


def _score_tables(tables: Sequence[Table], comparisons: Sequence[Comparison]) -> list[Table]:
    """The given tables plus each comparison's two runs, once each (by run, not by name:
    two runs of one checkpoint share a model name)."""
    out = list(tables)
    for c in comparisons:
        for t in (c.baseline_table, c.candidate_table):
            if not any(_same_run(t, x) for x in out):
                out.append(t)
    return out


def save_plots(items: Items, directory: str | Path) -> list[Path]:
    """Every plot that applies to ``items`` (scores, recovery heatmaps, depth heatmaps), as PNG and SVG."""
    tables, comparisons, _ = _collect(items)
    directory = Path(directory)
    written: list[Path] = []
    used: set[str] = set()
    score_tables = _score_tables(tables, comparisons)
    if score_tables:
        written += plot_scores(score_tables, directory / _unique_stem("ruler_scores", used))
    for comparison in comparisons:
        written += plot_recovery_heatmap(comparison, directory / _unique_stem(f"recovery_{_slug(comparison.candidate)}", used))
    for run in _runs_with_depths(tables, comparisons):
        written += plot_depth_heatmap(run, directory / _unique_stem(f"niah_depth_{_slug(run.name)}", used))
    return written


def _unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3`` ... when an earlier plot of this call took it.

    Runs are named by their labels, but two unlabelled runs of one model share a
    name; a plot written earlier in the same call is never overwritten. Compared
    case-insensitively, for case-insensitive file systems.
    """
    candidate, number = stem, 1
    while candidate.casefold() in used:
        number += 1
        candidate = f"{stem}_{number}"
    used.add(candidate.casefold())
    return candidate


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;color:#1d232a;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.86rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:right;white-space:nowrap}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
td.pass{text-decoration:underline}td.missing{color:#8c959f}
tr.overall td{font-weight:600;background:#f6f8fa}
.verdict{padding:.6rem 1rem;border-radius:6px;margin:.8rem 0;font-weight:600}
.verdict.pass{background:#dafbe1;border:1px solid #4ac26b}.verdict.fail{background:#ffebe9;border:1px solid #ff8182}
.note{color:#57606a;font-size:.85rem}.warn{color:#9a6700}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d0d7de}
.plots{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
"""


def _h(text: Any) -> str:
    return html.escape(str(text))


def _recovery_color(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 99.0:
        return "background:#dafbe1"
    if value >= 95.0:
        return "background:#fff8c5"
    return "background:#ffebe9"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cell_class: Any = None, cell_style: Any = None, row_class: Any = None) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_h(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = row_class(i, row) if row_class else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for j, value in enumerate(row):
            klass = cell_class(i, j, value) if cell_class else ""
            style = cell_style(i, j, value) if cell_style else ""
            attrs = (f' class="{klass}"' if klass else "") + (f' style="{style}"' if style else "")
            out.append(f"<td{attrs}>{_h(value.replace('**', ''))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _score_class(_i: int, j: int, value: str, first: int = 1, last: int | None = None) -> str:
    """Underline scores above the threshold (RULER's tables do) in columns first..last only."""
    if j < first or (last is not None and j > last):
        return ""
    if value == _MISSING:
        return "missing"
    try:
        return "pass" if float(value) > THRESHOLD else ""
    except ValueError:
        return ""


def _recovery_style(_i: int, j: int, value: str) -> str:
    if j == 0:
        return ""
    try:
        return _recovery_color(float(value))
    except ValueError:
        return ""


def _img(figure: Any, alt: str) -> str:
    return f'<figure><img alt="{_h(alt)}" src="data:image/png;base64,{_png_base64(figure)}"><figcaption class="note">{_h(alt)}</figcaption></figure>'


def to_html(items: Items, *, title: str = "RULER report", plots: bool | None = None) -> str:
    """One self-contained HTML file: inline CSS, tables, and plots as base64 PNG (no external requests).

    ``plots``: True requires matplotlib (error if missing), False leaves plots
    out, None (default) includes them when matplotlib is installed and says
    how to get them otherwise. Scores above 85.6 are underlined, as in RULER's
    tables; recovery cells are green >= 99%, yellow >= 95%, red below.
    """
    tables, comparisons, gates = _collect(items)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
    ]
    score_tables = _score_tables(tables, comparisons)
    if score_tables:
        parts.append("<h2>RULER scores</h2>")
        n_lengths = len(_all_lengths(score_tables))
        parts.append(
            _html_table(*_leaderboard_rows(score_tables), cell_class=lambda i, j, v: _score_class(i, j, v, 3, 2 + n_lengths))
        )
        parts.append(
            f'<p class="note">Score = mean of the 13 task scores (0-100); underlined = above {THRESHOLD} '
            "(Llama-2-7B-chat at 4K). Effective length: largest length above the threshold; the relative one keeps "
            f"≥85% of the model's own 4K score (NoLiMa). {_MISSING} = missing or partial.</p>"
        )
    for comparison in comparisons:
        result = gates.get(id(comparison))
        parts.append(f"<h2>{_h(comparison.candidate)} vs {_h(comparison.baseline)}</h2>")
        if result is not None:
            verdict = "pass" if result.passed else "fail"
            parts.append(f'<div class="verdict {verdict}">{_h(_gate_line(result).replace("**", ""))}')
            if result.reasons:
                parts.append("<ul>" + "".join(f"<li>{_h(r)}</li>" for r in result.reasons) + "</ul>")
            parts.append("</div>")
            parts += [f'<p class="note">{_h(n)}</p>' for n in result.notes]
        parts.append(f'<p class="note">Recovery = candidate / baseline × 100; Δ = candidate − baseline. Intervals: {_h(_method_text(comparison))}.</p>')
        n_rows = len(comparison.lengths)
        parts.append(
            _html_table(
                *_comparison_rows(comparison, result),
                cell_style=lambda i, j, v: _recovery_style(i, j, v) if j == 6 else "",
                row_class=lambda i, row: "overall" if i >= n_rows else "",
            )
        )
        parts.append(f"<h3>Recovery by task: {_h(comparison.candidate)}</h3>")
        parts.append(_html_table(*_recovery_matrix(comparison), cell_style=_recovery_style))
        if comparison.warnings:
            parts.append('<ul class="warn">' + "".join(f"<li>{_h(w)}</li>" for w in comparison.warnings) + "</ul>")
    for table in tables:
        parts.append(f"<h3>{_h(table.name)}: by task and length</h3>")
        if table.run is not None:
            parts.append(f'<p class="note">{_h(settings_text(table.run))}</p>')
        parts.append(_html_table(*_breakdown_rows(table), cell_class=lambda i, j, v: "" if i == 1 else _score_class(i, j, v)))
        parts += [f'<p class="note">{_h(n)}</p>' for n in table.notes]

    want = plots
    if want is None:
        try:
            _matplotlib()
            want = True
        except ReportError:
            want = False
            parts.append(f'<p class="note">Plots omitted: matplotlib is not installed ({_h(PLOT_INSTALL_HINT)}).</p>')
    if want:
        figures = []
        if score_tables:
            figures.append(_img(_figure_scores(score_tables), "RULER score vs length; dashed line: 85.6 threshold"))
        for comparison in comparisons:
            figures.append(_img(_figure_recovery(comparison), f"Recovery % by task and length: {comparison.candidate}"))
        for run in _runs_with_depths(tables, comparisons):
            figures.append(_img(_figure_depth(run), f"NIAH mean score by needle depth and length: {run.name}"))
        if figures:
            parts.append('<h2>Plots</h2><div class="plots">' + "".join(figures) + "</div>")
    parts.append(f'<p class="note">Generated by lm-eval-ruler {_h(_version())}.</p></body></html>')
    return "\n".join(parts) + "\n"


def _version() -> str:
    from . import __version__

    return __version__
