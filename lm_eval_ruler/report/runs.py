"""Reading lm-eval results into a :class:`Run`: one model's task rows and sample logs.

lm-eval writes one ``results_<timestamp>.json`` per invocation (and, with
``--log_samples``, one ``samples_<task>_<timestamp>.jsonl`` per task). A run is
every such file of one model folder that belongs to the same evaluation; see
:func:`load_run` for how files are merged and which are set aside.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._tasks import CUSTOM_LENGTH, LENGTHS, PREFIX, TASKS, parse_length
from ..errors import ConfigurationError, ReportError
from ..provenance import Provenance

#: A task at a length in tokens, ``("niah_single_1", 4096)``: the key of ``Run.results`` and ``Run.samples``.
TaskLength = tuple[str, int]

#: One results file: (timestamp, path, parsed JSON).
_LoadedFile = tuple[str, Path, dict[str, Any]]


# --------------------------------------------------------------------------- names and lengths


def length_label(tokens: int) -> str:
    """RULER's column names: 4096 -> ``4K``, 1048576 -> ``1M``; other lengths in tokens."""
    for name, value in LENGTHS.items():
        if value == tokens:
            return name.upper()
    if tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    return str(tokens)


def parse_task_key(key: str) -> tuple[str, str] | None:
    """``ruler_niah_single_1_4k`` -> (``niah_single_1``, ``4k``); group rows and other tasks -> None."""
    if not key.startswith(PREFIX + "_"):
        return None
    stem, _, length = key[len(PREFIX) + 1 :].rpartition("_")
    if stem in TASKS and (length in LENGTHS or length == CUSTOM_LENGTH):
        return stem, length
    return None


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- the run


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
    results: dict[TaskLength, TaskResult]
    samples: dict[TaskLength, list[SampleScore]]
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


# --------------------------------------------------------------------------- results files

_TIMESTAMP_RE = re.compile(r"_(\d{4}-\d{2}-\d{2}T[\d\-.]+)$")


def _timestamp(path: Path) -> str:
    """lm-eval's ``datetime.now().isoformat()`` with ``:`` -> ``-``: sorts as text."""
    match = _TIMESTAMP_RE.search(path.stem)
    return match.group(1) if match else ""


def read_results_file(path: Path) -> dict[str, Any]:
    """One lm-eval results file, parsed; :class:`ReportError` when it is unreadable or not a results file."""
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
        if parse_task_key(key) is None or not isinstance(config, dict):
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
            score = finite_number(row.get("score"))
            if score is None or "doc_id" not in row:
                raise ReportError(f"{path}, line {number}: no numeric 'score' or no 'doc_id'; is this a RULER sample log?")
            doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
            samples.append(SampleScore(int(row["doc_id"]), row.get("doc_hash"), score, finite_number(doc.get("depth"))))
    return samples


# --------------------------------------------------------------------------- load_run and its steps


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
    loaded = sorted(((_timestamp(f), f, read_results_file(f)) for f in files), key=lambda item: (item[0], item[1].name))
    newest_file, newest = loaded[-1][1], loaded[-1][2]
    reference = _run_identity(newest_file, newest)
    warnings: list[str] = []
    used = _files_of_the_newest_run(loaded, newest, reference, warnings)
    results = _task_results(folder, used, warnings)
    return Run(
        name=name or _run_name(newest, folder),
        path=folder,
        files=tuple(f for _, f, _ in used),
        results=results,
        samples=_sample_logs(results),
        info=_run_info(newest, reference),
        warnings=warnings,
    )


def _files_of_the_newest_run(
    loaded: Sequence[_LoadedFile], newest: dict[str, Any], reference: Mapping[str, Any], warnings: list[str]
) -> list[_LoadedFile]:
    """The results files made like the newest one; each other file is skipped with a warning."""
    used: list[_LoadedFile] = []
    for stamp, file, data in loaded:
        differing = _identity_differences(_run_identity(file, data), reference)
        if differing and data is not newest:
            warnings.append(
                f"skipped {file.name}: its {', '.join(differing)} differ from the newest file's, so it is another run; "
                "pass that file explicitly to report it"
            )
            continue
        used.append((stamp, file, data))
    return used


def _identity_differences(identity: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """The parts of a file's run identity that differ from the newest file's, RULER settings spelled out."""
    differing = [key for key, value in identity.items() if value != reference[key]]
    if "ruler settings" in differing:
        mine, newest_settings = identity["ruler settings"], reference["ruler settings"]
        names = sorted(n for n in {*mine, *newest_settings} if mine.get(n) != newest_settings.get(n))
        differing[differing.index("ruler settings")] = (
            "RULER settings (" + ", ".join(f"{n} {mine.get(n)!r} vs {newest_settings.get(n)!r}" for n in names) + ")"
        )
    return differing


def _task_results(folder: Path, used: Sequence[_LoadedFile], warnings: list[str]) -> dict[TaskLength, TaskResult]:
    """Every RULER task row of the used files, newest file last (so its value wins)."""
    results: dict[TaskLength, TaskResult] = {}
    seen_other: list[str] = []
    for _, file, data in used:
        for key, row in data["results"].items():
            parsed = parse_task_key(key)
            if parsed is None:
                if not key.startswith(PREFIX + "_"):
                    seen_other.append(key)
                continue
            result = _task_result(file, data, key, parsed, row, warnings)
            if result is not None:
                results[(result.task, result.length)] = result
    if not results:
        listed = ", ".join(sorted(set(seen_other))[:8]) or "nothing"
        names = ", ".join(f.name for _, f, _ in used)
        raise ReportError(
            f"no RULER task results in {folder} ({names}): expected rows named ruler_<task>_<length> "
            f"(e.g. ruler_niah_single_1_4k), found {listed}. Was the run made with --tasks ruler_...?"
        )
    return results


def _task_result(
    file: Path, data: Mapping[str, Any], key: str, parsed: tuple[str, str], row: Any, warnings: list[str]
) -> TaskResult | None:
    """One results row as a :class:`TaskResult`; None (with a warning) when it has no score or no length."""
    task, length = parsed
    metadata = ((data.get("configs") or {}).get(key) or {}).get("metadata") or {}
    provenance = metadata.get("ruler") if isinstance(metadata.get("ruler"), dict) else {}
    score = finite_number((row or {}).get("score,none"))
    if score is None:
        warnings.append(f"{file.name}: {key} has no numeric 'score,none'; ignored")
        return None
    tokens = _tokens_for(key, length, data, provenance)
    if tokens is None:
        warnings.append(f"{file.name}: {key} does not record its length (metadata ruler.length); ignored")
        return None
    count = ((data.get("n-samples") or {}).get(key) or {}).get("effective")
    return TaskResult(
        task=task,
        length=tokens,
        lm_eval_task=key,
        score=score,
        stderr=finite_number(row.get("score_stderr,none")),
        n=int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else None,
        provenance=Provenance.from_dict(provenance),
        source=file,
    )


def _sample_logs(results: Mapping[TaskLength, TaskResult]) -> dict[TaskLength, list[SampleScore]]:
    """The sample log written with each result's own results file, where there is one."""
    samples: dict[TaskLength, list[SampleScore]] = {}
    for cell, result in sorted(results.items()):
        log = result.source.parent / f"samples_{result.lm_eval_task}_{_timestamp(result.source)}.jsonl"
        if log.is_file():
            samples[cell] = _read_samples(log)
    return samples


def _run_info(newest: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """Run-level facts, from the newest results file."""
    return {
        "model_name": newest.get("model_name"),
        "model_args": _model_args(newest),
        "chat_template_sha": newest.get("chat_template_sha"),
        "system_instruction_sha": newest.get("system_instruction_sha"),
        "lm_eval_version": newest.get("lm_eval_version"),
        "date": newest.get("date"),
        "max_length": newest.get("max_length"),
        "settings": reference["ruler settings"],
    }
