"""The sweep's cells: one per model and length, their datasets, served window and lm-eval command.

Datasets are generated (or loaded) here, in the sweep's process, with exactly the options the
cell's lm-eval run will derive from its metadata: the cell then loads them from the cache,
and its window is sized from the real prompts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._server import ServedModel, served_model, server_tokenizer
from .._tasks import CUSTOM_LENGTH, CUSTOM_LENGTH_KEY, LENGTHS, PREFIX, TASKS
from .._window import window_model_args
from ..errors import BudgetError
from ..provenance import Provenance
from .config import SERVER_OPTIONS, VLLM_ONLY, ModelSpec, Resolved, SweepConfig, parse_shard, resolve


@dataclass
class Cell:
    """One model at one length: one lm-eval run."""

    index: int
    spec: ModelSpec
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
    def model(self) -> str:
        """What lm-eval loads (``pretrained``)."""
        return self.spec.path

    @property
    def name(self) -> str:
        """The model's name in folders' ``cell.json`` and in reports: its label, else its path."""
        return self.spec.name

    @property
    def title(self) -> str:
        return f"{self.name} @ {self.length}"

    @property
    def arguments(self) -> list[str]:
        """``command`` without ``python -m lm_eval_ruler``: what the sweep's worker runs (``cli.main``)."""
        return self.command[3:]


def _lm_eval_tasks(tasks: tuple[str, ...], length: str) -> tuple[str, ...]:
    suffix = length if length in LENGTHS else CUSTOM_LENGTH
    if tasks == tuple(TASKS):
        return (f"{PREFIX}_{suffix}",)
    return tuple(TASKS[name].task_name(suffix) for name in tasks)


def plan(resolved: Resolved) -> list[Cell]:
    """Every cell in run order: models as given, lengths ascending."""
    cells = []
    for spec in resolved.models:
        for length, tokens in resolved.lengths:
            cells.append(
                Cell(
                    index=len(cells),
                    spec=spec,
                    length=length,
                    tokens=tokens,
                    tasks=resolved.tasks,
                    directory=resolved.output / spec.folder / length,
                    lm_eval_tasks=_lm_eval_tasks(resolved.tasks, length),
                )
            )
    return cells


def plan_cells(config: SweepConfig, shard: tuple[int, int] | str | None = None) -> list[Cell]:
    """The sweep's cells in run order (models as given, lengths ascending); with ``shard``, that shard's."""
    cells = plan(resolve(config))
    index, count = parse_shard(config.shard if shard is None else shard)
    return [cell for cell in cells if cell.index % count == index]


# --------------------------------------------------------------------------------------------
# per-cell arguments and datasets


def base_model_args(resolved: Resolved, spec: ModelSpec) -> dict[str, Any]:
    """A model's lm-eval args without the per-cell window: backend defaults, --model-arg, its own options."""
    config = resolved.config
    model = spec.path
    if resolved.backend == "local-completions":
        # The plugin counts every budget with a local tokenizer (checked against the server's /tokenize).
        args: dict[str, Any] = {"model": model, "base_url": config.base_url, "tokenizer_backend": "huggingface"}
        for name, (arg, default, _) in SERVER_OPTIONS.items():
            args[arg] = default if getattr(config, name) is None else getattr(config, name)
        if config.tokenizer is None and "tokenizer" not in {**resolved.model_args, **spec.options}:
            args["tokenizer"] = server_tokenizer(served_card(resolved, spec))
    else:
        args = {"pretrained": model}
    if config.tokenizer is not None:
        args["tokenizer"] = config.tokenizer
    if resolved.backend == "vllm":
        for name in VLLM_ONLY:
            value = resolved.hf_overrides if name == "hf_overrides" else getattr(config, name)
            if value is not None:
                args[name] = value
    args.update(resolved.model_args)
    args.update(spec.options)
    return args


def served_card(resolved: Resolved, spec: ModelSpec) -> ServedModel:
    """Server mode: the served model's ``/v1/models`` card (window, loaded path), asked once per sweep."""
    if spec.path not in resolved.served:
        assert resolved.config.base_url is not None
        resolved.served[spec.path] = served_model(resolved.config.base_url, spec.path)
    return resolved.served[spec.path]


def _metadata(resolved: Resolved, cell: Cell) -> dict[str, Any]:
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


def prepare(resolved: Resolved, cell: Cell, memo: dict[Any, dict[str, Any]]) -> None:
    """Generate or load the cell's datasets as the child will, size the window, build the command."""
    from ..data import build_dataset, options_from_metadata

    config = resolved.config
    base_args = base_model_args(resolved, cell.spec)
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
            raise BudgetError(f"{cell.title}: a generated prompt + answer is {cell.needed} tokens, over the length {cell.tokens}")
        cell.window = cell.tokens if config.window == "length" else cell.needed
    cell.metadata = metadata
    set_window(resolved, cell, cell.window)


def set_window(resolved: Resolved, cell: Cell, window: int) -> None:
    """Serve ``window`` tokens in this cell: its model args and command."""
    cell.window = window
    cell.model_args = {**base_model_args(resolved, cell.spec), **window_model_args(resolved.backend, window)}
    cell.command = _command(resolved, cell)


def share_model_windows(resolved: Resolved, cells: list[Cell]) -> None:
    """``--window model``: each model's cells serve the largest of their windows, so they ask for one engine."""
    for name in dict.fromkeys(cell.name for cell in cells):
        own = [cell for cell in cells if cell.name == name and cell.window is not None]
        if own:
            window = max(cell.window for cell in own if cell.window is not None)
            for cell in own:
                set_window(resolved, cell, window)


def _command(resolved: Resolved, cell: Cell) -> list[str]:
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


