"""Reading a sweep's output folder (``<output>/<model-slug>/<length>/``) as one :class:`Run` per model.

``lm-eval-ruler sweep`` writes these files and the report reads them; both take
the file names and the state reader from here, so the layout is defined once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._cell_settings import CellSettings, describe_differences
from ..errors import ReportError
from .runs import Run, load_run
from .table import ruler_table
from .text import to_markdown

#: A cell's state: status running/done/failed, exit code, timings, command, results file, settings.
CELL_FILE = "cell.json"
#: A cell's manifest: versions, GPU, tokenizer and data fingerprints, seeds, command.
MANIFEST_FILE = "manifest.json"
#: The cell's lm-eval output.
LOG_FILE = "lm_eval.log"


def read_state(path: Path) -> dict[str, Any] | None:
    """A cell's JSON state file, or None when it is missing, unreadable, half-written or not an object.

    Unlike :func:`~lm_eval_ruler.report.runs.read_results_file` this never raises: a sweep
    treats an unreadable state as "not done yet".
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def results_path(cell_dir: Path, state: Mapping[str, Any]) -> Path | None:
    """The results file a cell's state names, when it exists."""
    relative = state.get("results_file")
    if not relative:
        return None
    path = cell_dir / relative
    return path if path.is_file() else None


def recorded_settings(state: Mapping[str, Any]) -> CellSettings | None:
    """The settings a cell recorded in its state; None for a cell of an older lm-eval-ruler."""
    recorded = state.get("settings")
    return CellSettings.from_dict(recorded) if isinstance(recorded, Mapping) else None


def cell_files(path: Path) -> list[Path]:
    """``cell.json`` files of a sweep root (``<root>/<model>/<length>/``) or of one model's folder."""
    return sorted(path.glob(f"*/*/{CELL_FILE}")) or sorted(path.glob(f"*/{CELL_FILE}"))


def is_sweep_folder(path: str | os.PathLike[str]) -> bool:
    """True for a sweep's output folder, or one model's folder inside it."""
    return Path(path).is_dir() and bool(cell_files(Path(path)))


def load_sweep(output: str | os.PathLike[str]) -> dict[str, Run]:
    """One :class:`Run` per model from a sweep folder (all shards): the ``done`` cells' results merged.

    ``output`` is the sweep's ``--output`` (every model) or one model's folder in it. Models come
    in cell order, so the baseline (the first ``--model``) comes first, and are named by their
    label (``--model LABEL=PATH``), else by the model's name. Each cell serves its own
    window, so cells differ in ``max_model_len``/``max_length`` only; they are one run per model.
    """
    found: list[tuple[int, str, Path]] = []
    settings: dict[str, tuple[str, CellSettings | None]] = {}
    for state_path in cell_files(Path(output)):
        state = read_state(state_path)
        if not state or state.get("status") != "done":
            continue
        results = results_path(state_path.parent, state)
        if results is not None:
            model = str(state.get("label") or state.get("model"))
            found.append((int(state.get("cell_index", 1 << 30)), model, results))
            settings[model] = _same_settings(settings.get(model), f"{model} @ {state_path.parent.name}", recorded_settings(state))
    _check_folder_settings(output, settings)
    runs: dict[str, Run] = {}
    for _, model, results in sorted(found, key=lambda item: (item[0], item[1], str(item[2]))):
        part = load_run(results, name=model)
        if model not in runs:
            recorded = settings[model][1]
            info = {**part.info, "sweep_settings": None if recorded is None else recorded.to_dict()}
            runs[model] = Run(name=model, path=Path(output), files=(), results={}, samples={}, info=info, warnings=[])
        run = runs[model]
        run.files = (*run.files, *part.files)
        run.results.update(part.results)
        run.samples.update(part.samples)
        run.warnings.extend(part.warnings)
    return runs


def _same_settings(
    seen: tuple[str, CellSettings | None] | None, label: str, recorded: CellSettings | None
) -> tuple[str, CellSettings | None]:
    """The settings shared by one model's cells so far; a cell that disagrees is a mixed folder."""
    if seen is None:
        return label, recorded
    first, expected = seen
    if (expected is None) != (recorded is None):
        raise ReportError(
            f"{first} and {label} cannot be reported together: one recorded its settings and the other "
            "(made by an older lm-eval-ruler) did not; rerun the older one with `lm-eval-ruler sweep ... --replace`"
        )
    if expected is not None and recorded is not None and expected.differences(recorded):
        raise ReportError(
            f"{first} and {label} were made with different settings: "
            f"{describe_differences([(label, expected.differences(recorded))])}; "
            "rerun with the same settings (`lm-eval-ruler sweep ... --replace`) or report them as separate folders"
        )
    return seen


def _check_folder_settings(output: str | os.PathLike[str], settings: Mapping[str, tuple[str, CellSettings | None]]) -> None:
    """The models of one folder may differ in their own arguments only (see ``CellSettings``)."""
    recorded = [(label, value) for label, value in settings.values() if value is not None]
    for label, value in recorded[1:]:
        differences = recorded[0][1].differences(value, same_model=False)
        if differences:
            raise ReportError(
                f"{output} mixes experiments: {recorded[0][0]} and {label} were made with different settings: "
                f"{describe_differences([(label, differences)])}; their scores are not comparable side by side"
            )


def sweep_table(output: Path, say: Callable[[str], None]) -> str | None:
    """The per-model RULER table printed at the end of a sweep; None (with a note) when it cannot be built."""
    try:
        runs = load_sweep(output)
        if not runs:
            return None
        tables = [ruler_table(run) for run in runs.values()]
        return str(to_markdown(tables, title=f"RULER sweep: {output}"))
    except Exception as exc:  # noqa: BLE001 - the table is a convenience; results are on disk regardless
        say(f"note: could not build the report table ({type(exc).__name__}: {exc}); results are in {output}")
        return None
