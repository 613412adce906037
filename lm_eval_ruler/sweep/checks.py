"""Refusals before anything runs: the backend, each length against the model's window, and settings.

A sweep over several models and lengths runs for hours; each check here stops it in seconds,
before data are generated or a model is loaded, with a message that names the fix.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._cell_settings import CellSettings, describe_differences
from .._server import describe_window
from .._tasks import DATA_VERSION, TASKS
from .._validate import BACKEND_REQUIREMENTS
from .._window import config_window
from ..errors import BudgetError, ConfigurationError
from ..report.sweep_folder import cell_files, read_state, recorded_settings
from .config import TRANSPORT_ARGS, ModelSpec, Resolved
from .plan import Cell, base_model_args, served_card
from .state import child_env

# --------------------------------------------------------------------------------------------
# windows


def _mentions_rope(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any("rope" in str(key).lower() or _mentions_rope(item) for key, item in value.items())
    return False


def check_backend(resolved: Resolved) -> None:
    """Refuse before any data or cell work when the cells' Python cannot run the backend.

    The cells may run another Python (``--python``), so the check runs there, with the
    same rule ``lm-eval-ruler run`` applies in-process.
    """
    if resolved.backend not in BACKEND_REQUIREMENTS:
        return
    probe = (
        "import sys; from lm_eval_ruler._validate import backend_problem; "
        f"problem = backend_problem({resolved.backend!r}); print(problem or ''); sys.exit(3 if problem else 0)"
    )
    python = resolved.config.python
    try:
        done = subprocess.run([python, "-c", probe], check=False, capture_output=True, text=True, timeout=120,
                              env=child_env(resolved.cache_dir))  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"cannot run the cells' Python {python}: {exc}") from None
    if done.returncode != 0:
        problem = done.stdout.strip() or (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise ConfigurationError(f"the cells' Python {python} cannot run the {resolved.backend} backend: {problem}. Nothing was run.")


def check_windows(resolved: Resolved, cells: list[Cell], say: Callable[[str], None]) -> dict[str, tuple[int | None, str]]:
    """Refuse (before anything runs) every length a model cannot serve."""
    windows: dict[str, tuple[int | None, str]] = {}
    for spec in resolved.models:
        model = spec.name
        args = base_model_args(resolved, spec)
        if resolved.max_window is not None:
            windows[model] = (resolved.max_window, f"--max-window {resolved.max_window}")
        elif resolved.config.base_url:
            card = served_card(resolved, spec)
            windows[model] = (card.max_model_len, describe_window(resolved.config.base_url, card))
            if card.max_model_len is None:
                say(f"note: {model}: the server reports no max_model_len; window not checked. Pass --max-window N to check it.")
        elif _mentions_rope(resolved.hf_overrides) or _mentions_rope(args.get("hf_overrides")):
            windows[model] = (None, "--hf-overrides changes RoPE scaling: trusting the requested lengths")
        else:
            windows[model] = config_window(spec.path, args, backend=resolved.backend)
            if windows[model][0] is None:
                say(f"note: {model}: window unknown ({windows[model][1]}); not checked. Pass --max-window N to check it.")
    problems = []
    for model, (window, source) in windows.items():
        over = [cell for cell in cells if cell.name == model and window is not None and cell.tokens > window]
        if over:
            names = ", ".join(f"{cell.length} ({cell.tokens} tokens)" for cell in over)
            problems.append(f"{model}: its window is {window} tokens ({source}) but {names} does not fit")
    if problems:
        fix = (
            "serve a longer window (vllm serve ... --max-model-len N)"
            if resolved.config.base_url and resolved.max_window is None
            else "if the served window really is larger (RoPE/YaRN scaling), pass the scaling with --hf-overrides or "
            "the served window with --max-window N"
        )
        raise BudgetError(f"refusing to start: {'; '.join(problems)}. Drop those lengths from --lengths, or {fix}. Nothing was run.")
    return windows


# --------------------------------------------------------------------------------------------
# settings: a finished cell is reused only when it was made with the current settings

REPLACED_DIR = ".replaced"


def cell_settings(resolved: Resolved, spec: ModelSpec) -> CellSettings:
    """The settings every cell of the model ``spec`` runs with in this invocation."""
    config = resolved.config
    return CellSettings(
        tasks=resolved.tasks,
        num_samples=config.num_samples,
        profile=config.profile,
        seed=config.seed,
        apply_chat_template=config.apply_chat_template,
        system_instruction=config.system_instruction,
        backend=resolved.backend,
        model_args={key: value for key, value in base_model_args(resolved, spec).items() if key not in TRANSPORT_ARGS},
        lm_eval_args=tuple(config.lm_eval_args),
        data_version=DATA_VERSION,
        task_versions={task: TASKS[task].version for task in resolved.tasks},
    )


def _settings_conflicts(resolved: Resolved) -> list[tuple[Path, str, dict[str, tuple[Any, Any]]]]:
    """Cells in the output folder (finished, or running elsewhere) made with other settings than this run's.

    Every cell of the folder is checked, not only this grid's: the report reads the
    whole folder, so a cell of another length or model made with other settings
    would be mixed in just the same. A failed cell holds no results and is rerun anyway.
    """
    current = {spec.folder: cell_settings(resolved, spec) for spec in resolved.models}
    some = next(iter(current.values()))
    conflicts = []
    for state_path in cell_files(resolved.output):
        state = read_state(state_path) or {}
        if state.get("status") not in ("done", "running"):
            continue
        slug = state_path.parent.parent.name
        label = f"{state.get('label') or state.get('model', slug)} @ {state_path.parent.name}"
        recorded = recorded_settings(state)
        if recorded is None:
            conflicts.append((state_path.parent, label, {"settings": ("not recorded (an older lm-eval-ruler)", "recorded")}))
            continue
        mine = current.get(slug)
        differences = recorded.differences(mine if mine is not None else some, same_model=mine is not None)
        if differences:
            conflicts.append((state_path.parent, label, differences))
    return conflicts


def check_settings(resolved: Resolved, say: Callable[[str], None]) -> None:
    """Refuse to mix results of different settings in one folder, or with ``replace`` move the old cells aside."""
    conflicts = _settings_conflicts(resolved)
    if not conflicts:
        return
    summary = describe_differences((label, differences) for _, label, differences in conflicts)
    if not resolved.config.replace:
        raise ConfigurationError(
            f"refusing to start: {resolved.output} holds {len(conflicts)} cell(s) made with other settings, whose "
            f"results would be reported as this run's: {summary}. Rerun with --replace to move those cells to "
            f"{resolved.output / REPLACED_DIR}/<time>/ and evaluate them again, or write to another --output. Nothing was run."
        )
    if resolved.config.dry_run:
        say(f"--replace would move {len(conflicts)} cell(s) made with other settings aside: {summary}")
        return
    archive = resolved.output / REPLACED_DIR / _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    for directory, label, _ in conflicts:
        target = archive / directory.relative_to(resolved.output)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(directory, target)
    say(f"moved {len(conflicts)} cell(s) made with other settings to {archive} ({summary})")


