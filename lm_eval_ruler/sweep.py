"""``lm-eval-ruler sweep``: a grid of models x lengths, one lm-eval process per cell, resumable.

A *cell* is one model at one length. Each cell is one ``python -m lm_eval_ruler run`` process
(lm-eval's CLI with our tasks registered) that evaluates all the requested RULER tasks at that
length and writes its results under ``<output>/<model-slug>/<length>/``. The sweep

1. validates everything cheap first: tasks, lengths, backend options, and every length against
   the model's window (``--max-window``, else the model's ``config.json``), so a length that
   cannot be served is refused *before* anything runs;
2. generates (or loads) every pending cell's datasets in this process, with exactly the
   options the child will derive from its metadata, so the child loads them from the cache
   and the served window can be sized from the real prompts;
3. runs the cells in a fixed order (``--shard i/n`` takes every n-th), recording each in
   ``cell.json`` (status running/done/failed, exit code, timings, command, results file) and
   ``manifest.json`` (versions, GPU, tokenizer and data fingerprints, seeds, command).

A second invocation skips ``done`` cells and reruns ``failed`` and stale ``running`` ones, so
a killed sweep continues where it stopped. All shards write the same layout, so merging them
is pointing the report at the output folder.

Python API: ``run_sweep(SweepConfig(models=("meta-llama/Llama-3.1-8B-Instruct",), ...))``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import re
import shlex
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ._cell_settings import CellSettings, describe_differences
from ._files import write_json_atomically
from ._tasks import (
    CUSTOM_LENGTH,
    CUSTOM_LENGTH_KEY,
    DATA_VERSION,
    DEFAULT_NUM_SAMPLES,
    DEFAULT_PROFILE,
    DEFAULT_SEED,
    LENGTHS,
    PREFIX,
    STANDARD_LENGTHS,
    TASKS,
    check_profile,
    parse_length,
    task_spec,
)
from ._validate import BACKEND_REQUIREMENTS
from ._window import config_window, window_model_args
from .errors import BudgetError, ConfigurationError
from .provenance import Provenance
from .report.sweep_folder import (
    CELL_FILE,
    LOG_FILE,
    MANIFEST_FILE,
    cell_files,
    is_sweep_folder,
    load_sweep,
    read_state,
    recorded_settings,
    results_path,
    sweep_table,
)

__all__ = [
    "BACKENDS",
    "Cell",
    "CellOutcome",
    "SweepConfig",
    "SweepResult",
    "add_arguments",
    "is_sweep_folder",
    "load_sweep",
    "main",
    "model_slug",
    "parse_shard",
    "plan_cells",
    "run_command",
    "run_sweep",
]

BACKENDS = ("vllm", "hf", "local-completions", "dummy")
#: ``tight``: serve the longest generated prompt + answer of the cell (<= the length; the
#: tasks accept it because their datasets are already cached); ``length``: the task length.
WINDOW_POLICIES = ("length", "tight")
#: A running cell's ``cell.json`` heartbeat is refreshed this often...
HEARTBEAT_SECONDS = 60.0
#: ...and a ``running`` cell from another host is stale once its heartbeat is this old.
STALE_AFTER_SECONDS = 600.0
#: lm-eval's defaults for --seed (random, numpy, torch, fewshot); the sweep does not change them.
LM_EVAL_DEFAULT_SEEDS = "0,1234,1234,1234"

_VLLM_ONLY = {
    "tensor_parallel_size": "--tensor-parallel-size",
    "data_parallel_size": "--data-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "kv_cache_dtype": "--kv-cache-dtype",
    "enable_prefix_caching": "--enable-prefix-caching",
    "quantization": "--quantization",
    "hf_overrides": "--hf-overrides",
}
#: Model-args keys the sweep sets itself (per cell or from --model/--base-url).
_RESERVED_MODEL_ARGS = {
    "max_model_len": "the sweep sizes the window per cell; cap it with --max-window",
    "max_length": "the sweep sizes the window per cell; cap it with --max-window",
    "pretrained": "name the model with --model",
    "base_url": "use --base-url",
}
# --------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep. Only ``models`` is required."""

    #: Model names or paths; the first is the baseline the report compares against.
    models: tuple[str, ...]
    #: Named lengths (``4k``) or token counts (``100000`` runs the ``*_custom`` tasks).
    lengths: tuple[str | int, ...] = STANDARD_LENGTHS
    #: RULER task names; None = all 13 (run as the ``ruler_<len>`` group).
    tasks: tuple[str, ...] | None = None
    #: vllm, hf, local-completions or dummy; None = vllm, or local-completions with base_url.
    backend: str | None = None
    output: str | os.PathLike[str] = "ruler-sweep"
    num_samples: int = DEFAULT_NUM_SAMPLES
    apply_chat_template: bool = True
    system_instruction: str | None = None
    profile: str = DEFAULT_PROFILE
    #: RULER's data seed (``ruler_seed``), not lm-eval's ``--seed``.
    seed: int = DEFAULT_SEED
    # vLLM pass-through (None = not passed)
    tensor_parallel_size: int | None = None
    data_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_dtype: str | None = None
    enable_prefix_caching: bool | None = None
    quantization: str | None = None
    hf_overrides: Mapping[str, Any] | str | None = None
    #: Any other model args, for every model (e.g. ``{"tokenizer": ..., "dtype": "bfloat16"}``).
    model_args: Mapping[str, Any] = field(default_factory=dict)
    #: Server mode: an OpenAI-compatible completions endpoint (backend local-completions).
    base_url: str | None = None
    #: lm-eval ``--batch_size``; None = ``auto`` for vllm, lm-eval's default otherwise.
    batch_size: str | int | None = None
    device: str | None = None
    #: ``(i, n)``: run the cells whose index % n == i.
    shard: tuple[int, int] = (0, 1)
    dry_run: bool = False
    #: Refuse lengths above this window instead of reading the model's config.
    max_window: int | str | None = None
    window: str = "tight"
    cache_dir: str | os.PathLike[str] | None = None
    offline: bool = False
    log_samples: bool = True
    #: Kill a cell's process after this many seconds (the cell is marked failed).
    cell_timeout: float | None = None
    #: Extra arguments appended to every lm-eval command.
    lm_eval_args: tuple[str, ...] = ()
    python: str = field(default_factory=lambda: sys.executable)
    progress: bool = True
    #: Print the per-model table at the end.
    report: bool = True
    #: Move cells made with other settings aside (to ``<output>/.replaced/<time>/``) and run them
    #: again, instead of refusing to start.
    replace: bool = False


@dataclass
class Cell:
    """One model at one length: one lm-eval process."""

    index: int
    model: str
    slug: str
    length: str
    tokens: int
    tasks: tuple[str, ...]
    directory: Path
    lm_eval_tasks: tuple[str, ...]
    window: int | None = None
    needed: int | None = None
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    model_args: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} @ {self.length}"


@dataclass
class CellOutcome:
    model: str
    length: str
    directory: Path
    #: done / failed (this run), skipped (already done), busy (running elsewhere), planned (dry run)
    status: str
    launched: bool = False
    exit_code: int | None = None
    seconds: float | None = None
    results_file: Path | None = None
    command: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class SweepResult:
    output: Path
    shard: tuple[int, int]
    cells: list[CellOutcome]
    table: str | None = None

    @property
    def launched(self) -> int:
        return sum(cell.launched for cell in self.cells)

    @property
    def failed(self) -> list[CellOutcome]:
        return [cell for cell in self.cells if cell.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class _Resolved:
    config: SweepConfig
    backend: str
    tasks: tuple[str, ...]
    lengths: tuple[tuple[str, int], ...]
    model_args: dict[str, Any]
    hf_overrides: dict[str, Any] | None
    max_window: int | None
    output: Path
    cache_dir: Path


def parse_shard(value: str | Sequence[int]) -> tuple[int, int]:
    """``"1/4"`` -> ``(1, 4)``; checks 0 <= i < n."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        if not match:
            raise ConfigurationError(f"invalid --shard {value!r}: write i/n, e.g. 0/4 ... 3/4 for four shards")
        index, count = int(match.group(1)), int(match.group(2))
    else:
        index, count = (int(v) for v in value)
    if count < 1 or not 0 <= index < count:
        raise ConfigurationError(f"invalid shard {index}/{count}: need 0 <= i < n (e.g. 0/2 and 1/2)")
    return index, count


def model_slug(model: str) -> str:
    """A directory name for a model id or path (``meta-llama/Llama-3.1-8B`` -> ``meta-llama__Llama-3.1-8B``)."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "__", model.strip().rstrip("/"))
    slug = slug.strip("_").lstrip(".")
    return slug or "model"


def _length_entry(value: str | int) -> tuple[str, int]:
    tokens = parse_length(value)
    for name, count in LENGTHS.items():
        if count == tokens:
            return name, tokens
    return str(tokens), tokens


def _cli_value(text: str) -> Any:
    """``--model-arg`` values: true/false, numbers, JSON, else the string."""
    lowered = text.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def _parse_model_args(items: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"invalid --model-arg {item!r}: write KEY=VALUE, e.g. --model-arg dtype=bfloat16")
        result[key.strip()] = _cli_value(value)
    return result


def _parse_json_object(value: Mapping[str, Any] | str | None, flag: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{flag} must be a JSON object, e.g. '{{\"rope_scaling\": {{...}}}}': {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigurationError(f"{flag} must be a JSON object, got {value!r}")
    return parsed


def _resolve(config: SweepConfig) -> _Resolved:
    from .data.cache import cache_root

    models = tuple(config.models)
    if not models:
        raise ConfigurationError("name at least one model: --model NAME_OR_PATH (repeat it; the first is the baseline)")
    slugs: dict[str, str] = {}
    for model in models:
        slug = model_slug(model)
        if slug in slugs:
            raise ConfigurationError(
                f"models {slugs[slug]!r} and {model!r} would share the output folder {slug!r}; give each model once"
            )
        slugs[slug] = model

    backend = config.backend
    if config.base_url:
        if backend not in (None, "local-completions"):
            raise ConfigurationError(f"--base-url runs the local-completions backend; drop --backend {backend}")
        backend = "local-completions"
    backend = backend or "vllm"
    if backend not in BACKENDS:
        raise ConfigurationError(f"unknown backend {backend!r}; use one of: {', '.join(BACKENDS)}")
    if backend == "local-completions" and not config.base_url:
        raise ConfigurationError("the local-completions backend needs --base-url http://HOST:PORT/v1/completions")
    if backend != "vllm":
        given = [flag for name, flag in _VLLM_ONLY.items() if getattr(config, name) is not None]
        if given:
            where = "the server's own settings" if config.base_url else "--model-arg KEY=VALUE for this backend's options"
            raise ConfigurationError(f"{', '.join(given)} apply to the vllm backend only, not {backend}; use {where}")

    if config.tasks is None or list(config.tasks) in (["all"], []):
        tasks = tuple(TASKS)
    else:
        wanted = {task_spec(str(name).strip()).name for name in config.tasks}
        tasks = tuple(name for name in TASKS if name in wanted)

    lengths = sorted({_length_entry(value) for value in config.lengths}, key=lambda entry: entry[1])
    if not lengths:
        raise ConfigurationError("give at least one length, e.g. --lengths 4k,8k")

    if config.num_samples < 1:
        raise ConfigurationError(f"--num-samples must be at least 1, got {config.num_samples}")
    check_profile(config.profile)
    if config.window not in WINDOW_POLICIES:
        raise ConfigurationError(f"unknown window policy {config.window!r}; use one of: {', '.join(WINDOW_POLICIES)}")
    parse_shard(config.shard)

    model_args = dict(config.model_args)
    for key, why in _RESERVED_MODEL_ARGS.items():
        if key in model_args:
            raise ConfigurationError(f"--model-arg {key}=... is set by the sweep: {why}")
    hf_overrides = _parse_json_object(config.hf_overrides, "--hf-overrides")
    max_window = None if config.max_window is None else parse_length(config.max_window)
    return _Resolved(
        config=config,
        backend=backend,
        tasks=tasks,
        lengths=tuple(lengths),
        model_args=model_args,
        hf_overrides=hf_overrides,
        max_window=max_window,
        output=Path(config.output).expanduser().absolute(),
        cache_dir=cache_root(None if config.cache_dir is None else str(config.cache_dir)).expanduser().absolute(),
    )


def _lm_eval_tasks(tasks: tuple[str, ...], length: str) -> tuple[str, ...]:
    suffix = length if length in LENGTHS else CUSTOM_LENGTH
    if tasks == tuple(TASKS):
        return (f"{PREFIX}_{suffix}",)
    return tuple(TASKS[name].task_name(suffix) for name in tasks)


def _plan(resolved: _Resolved) -> list[Cell]:
    cells = []
    for model in resolved.config.models:
        slug = model_slug(model)
        for length, tokens in resolved.lengths:
            cells.append(
                Cell(
                    index=len(cells),
                    model=model,
                    slug=slug,
                    length=length,
                    tokens=tokens,
                    tasks=resolved.tasks,
                    directory=resolved.output / slug / length,
                    lm_eval_tasks=_lm_eval_tasks(resolved.tasks, length),
                )
            )
    return cells


def plan_cells(config: SweepConfig, shard: tuple[int, int] | str | None = None) -> list[Cell]:
    """The sweep's cells in run order (models as given, lengths ascending); with ``shard``, that shard's."""
    cells = _plan(_resolve(config))
    index, count = parse_shard(config.shard if shard is None else shard)
    return [cell for cell in cells if cell.index % count == index]


# --------------------------------------------------------------------------------------------
# windows


def _mentions_rope(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any("rope" in str(key).lower() or _mentions_rope(item) for key, item in value.items())
    return False


def _check_backend(resolved: _Resolved) -> None:
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
                              env=_child_env(resolved.cache_dir))  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"cannot run the cells' Python {python}: {exc}") from None
    if done.returncode != 0:
        problem = done.stdout.strip() or (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise ConfigurationError(f"the cells' Python {python} cannot run the {resolved.backend} backend: {problem}. Nothing was run.")


def _check_windows(resolved: _Resolved, cells: list[Cell], say: Callable[[str], None]) -> dict[str, tuple[int | None, str]]:
    """Refuse (before anything runs) every length a model cannot serve."""
    windows: dict[str, tuple[int | None, str]] = {}
    for model in resolved.config.models:
        if resolved.max_window is not None:
            windows[model] = (resolved.max_window, f"--max-window {resolved.max_window}")
        elif _mentions_rope(resolved.hf_overrides):
            windows[model] = (None, "--hf-overrides changes RoPE scaling: trusting the requested lengths")
        else:
            windows[model] = config_window(model, resolved.model_args, backend=resolved.backend)
            if windows[model][0] is None:
                say(f"note: {model}: window unknown ({windows[model][1]}); not checked. Pass --max-window N to check it.")
    problems = []
    for model, (window, source) in windows.items():
        over = [cell for cell in cells if cell.model == model and window is not None and cell.tokens > window]
        if over:
            names = ", ".join(f"{cell.length} ({cell.tokens} tokens)" for cell in over)
            problems.append(f"{model}: its window is {window} tokens ({source}) but {names} does not fit")
    if problems:
        raise BudgetError(
            "refusing to start: "
            + "; ".join(problems)
            + ". Drop those lengths from --lengths, or, if the served window really is larger (RoPE/YaRN scaling), "
            "pass the scaling with --hf-overrides or the served window with --max-window N. Nothing was run."
        )
    return windows


# --------------------------------------------------------------------------------------------
# settings: a finished cell is reused only when it was made with the current settings

REPLACED_DIR = ".replaced"


def cell_settings(resolved: _Resolved, model: str) -> CellSettings:
    """The settings every cell of ``model`` runs with in this invocation."""
    config = resolved.config
    return CellSettings(
        tasks=resolved.tasks,
        num_samples=config.num_samples,
        profile=config.profile,
        seed=config.seed,
        apply_chat_template=config.apply_chat_template,
        system_instruction=config.system_instruction,
        backend=resolved.backend,
        model_args=_base_model_args(resolved, model),
        lm_eval_args=tuple(config.lm_eval_args),
        data_version=DATA_VERSION,
        task_versions={task: TASKS[task].version for task in resolved.tasks},
    )


def _settings_conflicts(resolved: _Resolved) -> list[tuple[Path, str, dict[str, tuple[Any, Any]]]]:
    """Cells in the output folder (finished, or running elsewhere) made with other settings than this run's.

    Every cell of the folder is checked, not only this grid's: the report reads the
    whole folder, so a cell of another length or model made with other settings
    would be mixed in just the same. A failed cell holds no results and is rerun anyway.
    """
    current = {model_slug(model): cell_settings(resolved, model) for model in resolved.config.models}
    some = next(iter(current.values()))
    conflicts = []
    for state_path in cell_files(resolved.output):
        state = read_state(state_path) or {}
        if state.get("status") not in ("done", "running"):
            continue
        slug = state_path.parent.parent.name
        label = f"{state.get('model', slug)} @ {state_path.parent.name}"
        recorded = recorded_settings(state)
        if recorded is None:
            conflicts.append((state_path.parent, label, {"settings": ("not recorded (an older lm-eval-ruler)", "recorded")}))
            continue
        mine = current.get(slug)
        differences = recorded.differences(mine if mine is not None else some, same_model=mine is not None)
        if differences:
            conflicts.append((state_path.parent, label, differences))
    return conflicts


def _check_settings(resolved: _Resolved, say: Callable[[str], None]) -> None:
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


# --------------------------------------------------------------------------------------------
# per-cell arguments and datasets


def _base_model_args(resolved: _Resolved, model: str) -> dict[str, Any]:
    config = resolved.config
    if resolved.backend == "local-completions":
        args: dict[str, Any] = {"model": model, "base_url": config.base_url, "tokenizer": model}
    else:
        args = {"pretrained": model}
    if resolved.backend == "vllm":
        for name in _VLLM_ONLY:
            value = resolved.hf_overrides if name == "hf_overrides" else getattr(config, name)
            if value is not None:
                args[name] = value
    args.update(resolved.model_args)
    return args


def _metadata(resolved: _Resolved, cell: Cell) -> dict[str, Any]:
    config = resolved.config
    metadata: dict[str, Any] = {
        "num_samples": config.num_samples,
        "ruler_seed": config.seed,
        "ruler_profile": config.profile,
        "ruler_cache_dir": str(resolved.cache_dir),
        "ruler_apply_chat_template": config.apply_chat_template,
    }
    if config.system_instruction:
        metadata["ruler_system_instruction"] = config.system_instruction
    if config.offline:
        metadata["ruler_offline"] = True
    if cell.length not in LENGTHS:
        metadata[CUSTOM_LENGTH_KEY] = cell.tokens
    return metadata


def _prepare(resolved: _Resolved, cell: Cell, memo: dict[Any, dict[str, Any]]) -> None:
    """Generate or load the cell's datasets as the child will, size the window, build the command."""
    from .data import build_dataset, options_from_metadata

    config = resolved.config
    base_args = _base_model_args(resolved, cell.model)
    metadata = _metadata(resolved, cell)
    # The child sees model_args | metadata (lm-eval's merge), so the options and cache keys match.
    options = options_from_metadata({**base_args, **metadata})
    cell.datasets = {}
    for task in cell.tasks:
        key = (options, task, cell.tokens)
        if key not in memo:
            # A dry run generates nothing (it must work before data files are downloaded).
            generated = build_dataset(task, cell.tokens, options, cached_only=config.dry_run)
            if generated is None:
                continue
            summary = Provenance.from_dataset(generated.info, generated.from_cache).to_dict()
            summary["docs"] = len(generated.docs)
            summary["longest_prompt_plus_answer"] = max(doc["length"] for doc in generated.docs)
            del generated
            memo[key] = summary
        cell.datasets[task] = memo[key]
    if len(cell.datasets) < len(cell.tasks):  # a dry run without cached data: the window is the length
        cell.needed = None
        cell.window = cell.tokens
    else:
        cell.needed = max(summary["longest_prompt_plus_answer"] for summary in cell.datasets.values())
        if cell.needed > cell.tokens:  # the generators guarantee this never happens
            raise BudgetError(f"{cell.label}: a generated prompt + answer is {cell.needed} tokens, over the length {cell.tokens}")
        cell.window = cell.tokens if config.window == "length" else cell.needed
    cell.model_args = {**base_args, **window_model_args(resolved.backend, cell.window)}
    cell.metadata = metadata
    cell.command = _command(resolved, cell)


def _command(resolved: _Resolved, cell: Cell) -> list[str]:
    config = resolved.config
    command = [
        config.python, "-m", "lm_eval_ruler", "run",
        "--model", resolved.backend,
        "--model_args", json.dumps(cell.model_args, sort_keys=True),
        "--tasks", ",".join(cell.lm_eval_tasks),
        "--output_path", f"{cell.directory}{os.sep}",
        "--metadata", json.dumps(cell.metadata, sort_keys=True),
    ]  # fmt: skip
    if config.log_samples:
        command.append("--log_samples")
    if config.apply_chat_template:
        command.append("--apply_chat_template")
    if config.system_instruction:
        command += ["--system_instruction", config.system_instruction]
    batch_size = config.batch_size if config.batch_size is not None else ("auto" if resolved.backend == "vllm" else None)
    if batch_size is not None:
        command += ["--batch_size", str(batch_size)]
    if config.device:
        command += ["--device", config.device]
    command += list(config.lm_eval_args)
    return command


# --------------------------------------------------------------------------------------------
# state files


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: Any, needle: str | None = None) -> bool:
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


def _classify(cell_dir: Path, state: Mapping[str, Any] | None) -> str:
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
        if _pid_alive(state.get("pid"), needle="lm_eval_ruler"):
            return "busy"
        return "busy" if _pid_alive(state.get("sweep_pid")) and fresh else "todo"
    return "busy" if fresh else "todo"


def _find_results(cell_dir: Path, since: float) -> Path | None:
    candidates = [p for p in cell_dir.rglob("results_*.json") if p.stat().st_mtime >= since - 1]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


# --------------------------------------------------------------------------------------------
# environment and manifest


def _package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def _repo_root() -> Path | None:
    """The directory this package was imported from, when it is not an installed site-packages copy."""
    root = Path(__file__).resolve().parent.parent
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()] if p}
    return None if root in installed else root


def _child_env(cache_dir: Path) -> dict[str, str]:
    from .data.cache import CACHE_ENV

    env = dict(os.environ)
    root = _repo_root()
    if root is not None:
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != root]
        env["PYTHONPATH"] = os.pathsep.join([str(root), *rest])
    env[CACHE_ENV] = str(cache_dir)
    return env


_GPU_PROBE = (
    "import json\n"
    "try:\n"
    "    import torch\n"
    "    ok = torch.cuda.is_available()\n"
    "    info = {'name': torch.cuda.get_device_name(0) if ok else 'cpu', 'count': torch.cuda.device_count() if ok else 0,"
    " 'cuda': torch.version.cuda}\n"
    "except ImportError:\n"
    "    info = {'name': 'cpu', 'count': 0, 'cuda': None, 'note': 'torch not installed'}\n"
    "print(json.dumps(info))\n"
)


def _gpu_info(python: str, env: Mapping[str, str]) -> dict[str, Any]:
    """GPU name via torch.cuda, in a short-lived process so this one never holds a CUDA context."""
    try:
        done = subprocess.run([python, "-c", _GPU_PROBE], check=False, capture_output=True, text=True, timeout=300, env=dict(env))
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        info = {"name": "unknown", "error": f"{type(exc).__name__}: {exc}"}
    info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return info


def _manifest(resolved: _Resolved, cell: Cell, model_window: tuple[int | None, str], gpu: dict[str, Any]) -> dict[str, Any]:
    from . import __version__

    config = resolved.config
    first = next(iter(cell.datasets.values()), {})
    return {
        "manifest_version": 1,
        "created": _now(),
        "model": cell.model,
        "model_slug": cell.slug,
        "model_revision": cell.model_args.get("revision"),
        "baseline": config.models[0],
        "backend": resolved.backend,
        "model_args": cell.model_args,
        "length": cell.length,
        "length_tokens": cell.tokens,
        "tasks": list(cell.tasks),
        "lm_eval_tasks": list(cell.lm_eval_tasks),
        "num_samples": config.num_samples,
        "profile": config.profile,
        "seeds": {"ruler_seed": config.seed, "lm_eval_seed": LM_EVAL_DEFAULT_SEEDS},
        "apply_chat_template": config.apply_chat_template,
        "system_instruction": config.system_instruction,
        "settings": cell_settings(resolved, cell.model).to_dict(),
        "window": {
            "served": cell.window,
            "policy": config.window,
            "longest_prompt_plus_answer": cell.needed,
            "model_window": model_window[0],
            "model_window_source": model_window[1],
        },
        "plugin_version": __version__,
        "plugin_dist_version": _package_version("lm-eval-ruler"),
        "lm_eval_version": _package_version("lm_eval"),
        "vllm_version": _package_version("vllm") if importlib.util.find_spec("vllm") else None,
        "transformers_version": _package_version("transformers"),
        "torch_version": _package_version("torch"),
        "python_version": platform.python_version(),
        "gpu": gpu,
        "host": socket.gethostname(),
        "tokenizer": first.get("tokenizer"),
        "tokenizer_fingerprint": first.get("tokenizer_fingerprint"),
        "chat_template_fingerprint": first.get("chat_template_fingerprint"),
        "cache_dir": str(resolved.cache_dir),
        "cache_keys": {task: info.get("cache_key") for task, info in cell.datasets.items()},
        "prompt_tokens": {task: info.get("prompt_tokens") for task, info in cell.datasets.items()},
        "datasets": cell.datasets,
        "shard": "{}/{}".format(*parse_shard(config.shard)),
        "cell_index": cell.index,
        "command": cell.command,
        "command_line": shlex.join(cell.command),
    }


# --------------------------------------------------------------------------------------------
# running


def _pdeathsig() -> Callable[[], None] | None:
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


def _kill_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
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


def _format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _run_cell(
    resolved: _Resolved,
    cell: Cell,
    env: Mapping[str, str],
    previous: Mapping[str, Any] | None,
    say: Callable[[str], None],
) -> CellOutcome:
    config = resolved.config
    state_path = cell.directory / CELL_FILE
    log_path = cell.directory / LOG_FILE
    started = time.time()
    state: dict[str, Any] = {
        "status": "running",
        "model": cell.model,
        "length": cell.length,
        "length_tokens": cell.tokens,
        "tasks": list(cell.lm_eval_tasks),
        "cell_index": cell.index,
        "shard": "{}/{}".format(*parse_shard(config.shard)),
        "attempt": int((previous or {}).get("attempt", 0)) + 1,
        "host": socket.gethostname(),
        "sweep_pid": os.getpid(),
        "pid": None,
        "started": _now(),
        "heartbeat": _now(),
        "finished": None,
        "seconds": None,
        "exit_code": None,
        "command": cell.command,
        "command_line": shlex.join(cell.command),
        "settings": cell_settings(resolved, cell.model).to_dict(),
        "window": cell.window,
        "results_file": None,
        "log_file": LOG_FILE,
        "manifest": MANIFEST_FILE,
        "message": "",
    }
    write_json_atomically(state_path, state)
    with open(log_path, "ab") as log:
        log.write(f"\n===== {_now()} attempt {state['attempt']}: {state['command_line']}\n".encode())
        log.flush()
        process = subprocess.Popen(
            cell.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
            preexec_fn=_pdeathsig(),  # noqa: PLW1509 - one prctl call, resolved before the fork
        )
    state["pid"] = process.pid
    write_json_atomically(state_path, state)
    message = ""
    try:
        while True:
            wait = HEARTBEAT_SECONDS
            if config.cell_timeout is not None:
                wait = max(0.1, min(wait, started + config.cell_timeout - time.time()))
            try:
                exit_code = process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                if config.cell_timeout is not None and time.time() >= started + config.cell_timeout:
                    _kill_group(process)
                    exit_code = process.returncode if process.returncode is not None else -9
                    message = f"killed after the --cell-timeout of {config.cell_timeout:g} s"
                    break
                state["heartbeat"] = _now()
                write_json_atomically(state_path, state)
    except BaseException:
        _kill_group(process)
        state.update(status="failed", exit_code=process.returncode, finished=_now(), seconds=round(time.time() - started, 1),
                     message="interrupted: the sweep was stopped while this cell ran")  # fmt: skip
        write_json_atomically(state_path, state)
        raise
    seconds = time.time() - started
    results = _find_results(cell.directory, started) if exit_code == 0 and not message else None
    if exit_code == 0 and not message and results is None:
        message = "lm-eval exited 0 but wrote no results_*.json"
    status = "done" if results is not None else "failed"
    if status == "failed" and not message:
        message = f"lm-eval exited with code {exit_code}; see {log_path}"
    state.update(
        status=status,
        exit_code=exit_code,
        finished=_now(),
        heartbeat=_now(),
        seconds=round(seconds, 1),
        results_file=None if results is None else str(results.relative_to(cell.directory)),
        results_path=None if results is None else str(results),
        message=message,
    )
    write_json_atomically(state_path, state)
    if status == "failed":
        tail = _tail(log_path)
        say(f"FAILED {cell.label} ({message}); last lines of {log_path}:\n{tail}")
    return CellOutcome(cell.model, cell.length, cell.directory, status, True, exit_code, seconds, results, cell.command, message)


class _Interrupt(KeyboardInterrupt):
    pass


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise _Interrupt(f"signal {signum}")


def run_sweep(config: SweepConfig, *, echo: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or with ``dry_run``, print) the sweep's cells for this shard; see the module docstring."""
    from tqdm import tqdm

    bar: Any = None

    def say(message: str) -> None:
        if echo is not None:
            echo(message)
        elif bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    resolved = _resolve(config)
    shard = parse_shard(config.shard)
    all_cells = _plan(resolved)
    cells = [cell for cell in all_cells if cell.index % shard[1] == shard[0]]
    shard_label = f" (shard {shard[0]}/{shard[1]}: {len(cells)} of {len(all_cells)} cells)" if shard[1] > 1 else ""
    windows = _check_windows(resolved, all_cells, say)  # every shard refuses the same grid
    if not config.dry_run:
        _check_backend(resolved)
    _check_settings(resolved, say)

    states = {cell.index: read_state(cell.directory / CELL_FILE) for cell in cells}
    kinds = {cell.index: _classify(cell.directory, states[cell.index]) for cell in cells}
    pending = [cell for cell in cells if config.dry_run or kinds[cell.index] == "todo"]
    say(
        f"RULER sweep{shard_label}: {len(config.models)} model(s) x {len(resolved.lengths)} length(s), "
        f"{len(resolved.tasks)} task(s), backend {resolved.backend}, output {resolved.output}; "
        f"{sum(k == 'done' for k in kinds.values())} done, {len(pending)} to run"
    )

    memo: dict[Any, dict[str, Any]] = {}
    for number, cell in enumerate(pending, 1):
        started = time.time()
        _prepare(resolved, cell, memo)
        cached = sum(info["from_cache"] for info in cell.datasets.values())
        say(
            f"data {number}/{len(pending)} {cell.label}: {len(cell.datasets)} dataset(s) ({cached} cached) in "
            f"{_format_seconds(time.time() - started)}; longest prompt + answer {cell.needed or '?'} -> window {cell.window}"
        )

    outcomes: dict[int, CellOutcome] = {}
    if config.dry_run:
        for cell in cells:
            note = " (done: would be skipped)" if kinds[cell.index] == "done" else ""
            sizing = (f"longest prompt + answer {cell.needed}" if cell.needed is not None
                      else "data not cached yet: a real run sizes the window from the generated prompts")  # fmt: skip
            print(f"# cell {cell.index} {cell.label}{note}: window {cell.window}, {sizing}")
            print(shlex.join(cell.command), flush=True)
            outcomes[cell.index] = CellOutcome(cell.model, cell.length, cell.directory, "planned", command=cell.command)
        return SweepResult(resolved.output, shard, [outcomes[cell.index] for cell in cells])

    env = _child_env(resolved.cache_dir)
    gpu: dict[str, Any] | None = None
    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, _raise_interrupt)
    durations: list[float] = []
    bar = tqdm(
        total=len(cells),
        initial=sum(kinds[cell.index] == "done" for cell in cells),
        desc="RULER sweep",
        unit="cell",
        file=sys.stderr,
        disable=not config.progress,
        dynamic_ncols=True,
    )
    try:
        for cell in cells:
            kind = kinds[cell.index]
            state = states[cell.index] or {}
            if kind == "done":
                results = results_path(cell.directory, state)
                outcomes[cell.index] = CellOutcome(cell.model, cell.length, cell.directory, "skipped",
                                                   exit_code=state.get("exit_code"), seconds=state.get("seconds"),
                                                   results_file=results, command=state.get("command", []),
                                                   message="done earlier")  # fmt: skip
                continue
            if kind == "busy":
                # Re-check: it may have finished while we were generating data.
                state = read_state(cell.directory / CELL_FILE) or {}
                if _classify(cell.directory, state) != "todo":
                    owner = f"pid {state.get('pid')} on {state.get('host')}"
                    say(f"skip {cell.label}: {CELL_FILE} says {state.get('status')} ({owner})")
                    status = "skipped" if state.get("status") == "done" else "busy"
                    outcomes[cell.index] = CellOutcome(
                        cell.model, cell.length, cell.directory, status, message=f"owned by another process ({owner})"
                    )
                    bar.update()
                    continue
                _prepare(resolved, cell, memo)
            if gpu is None:
                gpu = _gpu_info(config.python, env)
            cell.directory.mkdir(parents=True, exist_ok=True)
            write_json_atomically(cell.directory / MANIFEST_FILE, _manifest(resolved, cell, windows[cell.model], gpu))
            say(
                f"run  {cell.label}: {len(cell.lm_eval_tasks)} lm-eval task(s) {','.join(cell.lm_eval_tasks)}, "
                f"window {cell.window}; "
                f"log {cell.directory / LOG_FILE}"
            )
            outcome = _run_cell(resolved, cell, env, states[cell.index], say)
            outcomes[cell.index] = outcome
            durations.append(outcome.seconds or 0.0)
            remaining = sum(1 for c in cells if c.index not in outcomes)
            eta = f"; ~{_format_seconds(sum(durations) / len(durations) * remaining)} for {remaining} more" if remaining else ""
            say(f"{outcome.status:4} {cell.label} in {_format_seconds(outcome.seconds or 0)}"
                f"{' -> ' + str(outcome.results_file) if outcome.results_file else ''}{eta}")  # fmt: skip
            bar.update()
    finally:
        bar.close()
        bar = None
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    result = SweepResult(resolved.output, shard, [outcomes[cell.index] for cell in cells])
    counts = {status: sum(o.status == status for o in result.cells) for status in ("done", "skipped", "failed", "busy")}
    say(
        f"RULER sweep{shard_label}: {counts['done']} run now, {counts['skipped']} done earlier, {counts['failed']} failed, "
        f"{counts['busy']} owned by another process; results in {resolved.output}"
    )
    for outcome in result.failed:
        say(f"  failed: {outcome.model} @ {outcome.length}: {outcome.message} (rerun the same command to retry)")
    if config.report and any(o.status in ("done", "skipped") for o in result.cells):
        result.table = sweep_table(resolved.output, say)
        if result.table:
            print(result.table, flush=True)
    return result


# --------------------------------------------------------------------------------------------
# command line

DESCRIPTION = """\
Evaluate models x lengths, one lm-eval process per cell, resumable and shardable.

Each cell (model, length) runs `lm-eval-ruler run` with all requested tasks at that length and
writes OUTPUT/<model>/<length>/ (lm-eval results, samples, cell.json, manifest.json, lm_eval.log).
Rerunning the same command skips finished cells and reruns failed or interrupted ones.
"""

EXAMPLES = """\
examples:
  lm-eval-ruler sweep --model meta-llama/Llama-3.1-8B-Instruct \\
      --model RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8-dynamic --lengths 4k,8k,16k,32k,64k,128k \\
      --output results/ruler --tensor-parallel-size 2 --gpu-memory-utilization 0.9
  lm-eval-ruler sweep ... --shard 0/4          # on four nodes: --shard 0/4 ... 3/4, same --output
  lm-eval-ruler sweep ... --dry-run            # print the lm-eval commands, run nothing
  lm-eval-ruler sweep --model my-served-name --model-arg tokenizer=meta-llama/Llama-3.1-8B-Instruct \\
      --base-url http://localhost:8000/v1/completions --model-arg num_concurrent=16 --max-window 131072
"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the sweep's options to ``parser`` (used by ``lm-eval-ruler sweep``)."""
    grid = parser.add_argument_group("grid")
    grid.add_argument("--model", dest="models", action="append", required=True, metavar="NAME_OR_PATH",
                      help="model to evaluate; repeat for more (the first is the baseline)")
    grid.add_argument("--lengths", default=",".join(STANDARD_LENGTHS),
                      help=f"comma-separated lengths (default {','.join(STANDARD_LENGTHS)}); 1k 2k ... 1m, or a token count")
    grid.add_argument("--tasks", default="all", help="comma-separated RULER task names (default: all 13)")
    grid.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES, help="samples per task and length (default 500)")
    grid.add_argument("--apply-chat-template", action=argparse.BooleanOptionalAction, default=True,
                      help="render with the tokenizer's chat template (default: on)")
    grid.add_argument("--system-instruction", help="system instruction (budgeted into the prompts)")
    grid.add_argument("--profile", default=DEFAULT_PROFILE, choices=("reference", "2024"), help="RULER code profile")
    grid.add_argument("--seed", type=int, default=DEFAULT_SEED, help="RULER data seed (default 42)")
    grid.add_argument("--output", default="ruler-sweep", help="output folder shared by all shards (default ./ruler-sweep)")

    backend = parser.add_argument_group("backend")
    backend.add_argument("--backend", choices=BACKENDS, default=None, help="lm-eval model backend (default vllm)")
    backend.add_argument("--base-url", help="server mode: OpenAI-compatible completions URL (backend local-completions)")
    backend.add_argument("--tensor-parallel-size", type=int)
    backend.add_argument("--data-parallel-size", type=int)
    backend.add_argument("--gpu-memory-utilization", type=float)
    backend.add_argument("--kv-cache-dtype", help="e.g. fp8")
    backend.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    backend.add_argument("--quantization", help="vLLM quantization method (quantized checkpoints are usually auto-detected)")
    backend.add_argument("--hf-overrides", metavar="JSON",
                         help='vLLM hf_overrides, e.g. \'{"rope_scaling": {"rope_type": "yarn", ...}}\'')
    backend.add_argument("--model-arg", dest="model_arg", action="append", default=[], metavar="KEY=VALUE",
                         help="any other model arg, for every model (repeatable), e.g. dtype=bfloat16, tokenizer=...")
    backend.add_argument("--batch-size", help="lm-eval --batch_size (default auto for vllm)")
    backend.add_argument("--device", help="lm-eval --device (e.g. cpu for the hf backend without a GPU)")
    backend.add_argument("--lm-eval-args", default="", help="extra lm-eval arguments for every cell, as one quoted string")

    run = parser.add_argument_group("running")
    run.add_argument("--max-window", help="the served window: refuse longer lengths (default: read the model's config.json)")
    run.add_argument("--window", choices=WINDOW_POLICIES, default="tight",
                     help="max_model_len/max_length per cell: the longest prompt + answer (tight, default) or the length")
    run.add_argument("--shard", default="0/1", help="i/n: run only the cells with index %% n == i")
    run.add_argument("--dry-run", action="store_true",
                     help="print the commands; run nothing (uses cached data to size windows, generates none)")
    run.add_argument("--replace", action="store_true",
                     help="cells in --output made with other settings (samples, tasks, seed, model args ...) are moved "
                     "to OUTPUT/.replaced/<time>/ and run again; without it the sweep refuses to mix them")
    run.add_argument("--cache-dir", help="plugin cache (default $LM_EVAL_RULER_CACHE or ~/.cache/lm-eval-ruler)")
    run.add_argument("--offline", action="store_true", help="never download data files")
    run.add_argument("--log-samples", action=argparse.BooleanOptionalAction, default=True,
                     help="lm-eval --log_samples (default on)")
    run.add_argument("--cell-timeout", type=float, help="kill a cell after this many seconds (it is marked failed)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    run.add_argument("--no-report", dest="report", action="store_false", help="do not print the table at the end")
    parser.description = parser.description or DESCRIPTION
    parser.epilog = parser.epilog or EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    def split(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    tasks = split(args.tasks)
    return SweepConfig(
        models=tuple(args.models),
        lengths=split(args.lengths),
        tasks=None if tasks in ((), ("all",)) else tasks,
        backend=args.backend,
        output=args.output,
        num_samples=args.num_samples,
        apply_chat_template=args.apply_chat_template,
        system_instruction=args.system_instruction,
        profile=args.profile,
        seed=args.seed,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_dtype=args.kv_cache_dtype,
        enable_prefix_caching=args.enable_prefix_caching,
        quantization=args.quantization,
        hf_overrides=args.hf_overrides,
        model_args=_parse_model_args(args.model_arg),
        base_url=args.base_url,
        batch_size=args.batch_size,
        device=args.device,
        shard=parse_shard(args.shard),
        dry_run=args.dry_run,
        max_window=args.max_window,
        window=args.window,
        cache_dir=args.cache_dir,
        offline=args.offline,
        log_samples=args.log_samples,
        cell_timeout=args.cell_timeout,
        lm_eval_args=tuple(shlex.split(args.lm_eval_args)),
        progress=args.progress,
        report=args.report,
        replace=args.replace,
    )


def run_command(args: argparse.Namespace) -> int:
    """``lm-eval-ruler sweep``: 0 when every cell of this shard is done, 1 if any failed, 130 if interrupted."""
    try:
        result = run_sweep(config_from_args(args))
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return 130
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lm_eval_ruler.sweep ...`` (the same as ``lm-eval-ruler sweep ...``)."""
    from .errors import run_reporting_errors

    args = add_arguments(argparse.ArgumentParser(prog="lm-eval-ruler sweep")).parse_args(argv)
    return run_reporting_errors(lambda: run_command(args))


if __name__ == "__main__":
    sys.exit(main())
