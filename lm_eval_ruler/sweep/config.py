"""What a sweep is: its configuration, the models (with labels and per-model options), and their validation.

Everything here is cheap and imports neither lm-eval nor the data wing: a sweep refuses a bad
flag before it generates data or starts a process.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._server import ServedModel
from .._tasks import (
    DEFAULT_NUM_SAMPLES,
    DEFAULT_PROFILE,
    DEFAULT_SEED,
    LENGTHS,
    STANDARD_LENGTHS,
    TASKS,
    check_profile,
    parse_length,
    task_spec,
)
from ..data.cache import cache_root
from ..errors import ConfigurationError

BACKENDS = ("vllm", "hf", "local-completions", "dummy")
#: ``tight``: serve the longest generated prompt + answer of the cell (<= the length; the
#: tasks accept it because their datasets are already cached); ``length``: the task length;
#: ``model``: the largest tight window of the model's cells in this run, so they share an engine.
WINDOW_POLICIES = ("length", "model", "tight")
#: A running cell's ``cell.json`` heartbeat is refreshed this often...

VLLM_ONLY = {
    "tensor_parallel_size": "--tensor-parallel-size",
    "data_parallel_size": "--data-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "kv_cache_dtype": "--kv-cache-dtype",
    "enable_prefix_caching": "--enable-prefix-caching",
    "quantization": "--quantization",
    "hf_overrides": "--hf-overrides",
}
#: Server-mode options -> (lm-eval model arg, default, flag). Eight parallel requests keep a
#: vLLM server batching; lm-eval's own default of one leaves it idle between requests. A 128K
#: prompt on a busy server can take minutes, past lm-eval's 300 s default timeout.
SERVER_OPTIONS = {
    "num_concurrent": ("num_concurrent", 8, "--num-concurrent"),
    "max_retries": ("max_retries", 3, "--max-retries"),
    "request_timeout": ("timeout", 600, "--request-timeout"),
}
#: lm-eval model args that change how requests travel, not what they answer: not cell settings.
TRANSPORT_ARGS = frozenset(arg for arg, _, _ in SERVER_OPTIONS.values())
#: Model-args keys the sweep sets itself (per cell or from --model/--base-url).
_RESERVED_MODEL_ARGS = {
    "max_model_len": "the sweep sizes the window per cell; cap it with --max-window",
    "max_length": "the sweep sizes the window per cell; cap it with --max-window",
    "pretrained": "name the model with --model",
    "base_url": "use --base-url",
}


@dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep. Only ``models`` is required."""

    #: Models: names or paths, or ``LABEL=PATH`` (the label names the output folder and the run in
    #: reports, so one checkpoint can be evaluated under several labels); the first is the baseline.
    models: tuple[str | ModelSpec, ...]
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
    #: Model args for one labelled model, over ``model_args`` (``{"fp8": {"quantization": "fp8"}}``).
    model_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Server mode: an OpenAI-compatible completions endpoint (backend local-completions); the
    #: window and (without ``tokenizer``) the tokenizer are read from the server's ``/v1/models``.
    base_url: str | None = None
    #: The tokenizer that sizes the prompts (model arg ``tokenizer``); None = the model's own, or
    #: in server mode the served model's (its ``/v1/models`` root if it loads here, else its id).
    tokenizer: str | None = None
    #: Server mode: parallel requests, attempts per request and seconds per request (lm-eval's
    #: ``num_concurrent``, ``max_retries``, ``timeout``); None = the defaults of ``SERVER_OPTIONS``.
    num_concurrent: int | None = None
    max_retries: int | None = None
    request_timeout: int | None = None
    #: lm-eval ``--batch_size``; None = ``auto`` for vllm, lm-eval's default otherwise.
    batch_size: str | int | None = None
    device: str | None = None
    #: ``(i, n)``: run the cells whose index % n == i.
    shard: tuple[int, int] = (0, 1)
    dry_run: bool = False
    #: Refuse lengths above this window instead of reading the model's config.
    max_window: int | str | None = None
    #: max_model_len/max_length per cell: ``tight`` (its longest prompt + answer), ``length`` (the
    #: length) or ``model`` (the largest tight window of the model's cells: one vLLM engine serves
    #: all of a model's lengths in the sweep's worker).
    window: str = "tight"
    cache_dir: str | os.PathLike[str] | None = None
    offline: bool = False
    log_samples: bool = True
    #: Kill a cell's process after this many seconds (the cell is marked failed).
    cell_timeout: float | None = None
    #: Run each cell in a fresh process instead of the sweep's worker (``_cell_worker``), which
    #: imports lm-eval and vLLM once and keeps an engine while cells ask for the same one.
    process_per_cell: bool = False
    #: Extra arguments appended to every lm-eval command.
    lm_eval_args: tuple[str, ...] = ()
    python: str = field(default_factory=lambda: sys.executable)
    progress: bool = True
    #: Print the per-model table at the end.
    report: bool = True
    #: Move cells made with other settings aside (to ``<output>/.replaced/<time>/``) and run them
    #: again, instead of refusing to start.
    replace: bool = False


_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class ModelSpec:
    """One evaluated model: what lm-eval loads, what the folder and the reports call it, its own args."""

    path: str
    label: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How reports name it: the label, else the model's name or path."""
        return self.label or self.path

    @property
    def folder(self) -> str:
        """Its folder under the sweep's output."""
        return self.label or model_slug(self.path)

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``LABEL=PATH`` or a plain model name or path."""
        label, sep, path = text.partition("=")
        if sep and _LABEL_RE.fullmatch(label) and path.strip():
            return cls(path.strip(), label)
        if sep and "/" not in label:
            raise ConfigurationError(
                f"invalid --model {text!r}: a label is letters, digits and . _ + - (e.g. --model fp8=org/model-FP8)"
            )
        return cls(text.strip())


@dataclass(frozen=True)
class Resolved:
    config: SweepConfig
    models: tuple[ModelSpec, ...]
    backend: str
    tasks: tuple[str, ...]
    lengths: tuple[tuple[str, int], ...]
    model_args: dict[str, Any]
    hf_overrides: dict[str, Any] | None
    max_window: int | None
    output: Path
    cache_dir: Path
    #: Server mode: each served model's ``/v1/models`` card, read once per sweep (``plan.served_card``).
    served: dict[str, ServedModel] = field(default_factory=dict)


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


def parse_model_args(items: Sequence[str]) -> dict[str, Any]:
    """``--model-arg KEY=VALUE`` items as a dict of typed values."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"invalid --model-arg {item!r}: write KEY=VALUE, e.g. --model-arg dtype=bfloat16")
        result[key.strip()] = _cli_value(value)
    return result


def parse_model_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--model-option LABEL:KEY=VALUE`` items as ``{label: {key: value}}``."""
    result: dict[str, dict[str, Any]] = {}
    for item in items:
        label, sep, rest = item.partition(":")
        if not sep or not _LABEL_RE.fullmatch(label) or "=" not in rest:
            raise ConfigurationError(
                f"invalid --model-option {item!r}: write LABEL:KEY=VALUE for a model given as --model LABEL=PATH, "
                "e.g. --model fp8=org/model --model-option fp8:quantization=fp8"
            )
        result.setdefault(label, {}).update(parse_model_args([rest]))
    return result


def _model_specs(config: SweepConfig) -> tuple[ModelSpec, ...]:
    """The models with their labels and own options; folders must be distinct, options must name a label."""
    specs = [model if isinstance(model, ModelSpec) else ModelSpec.parse(str(model)) for model in config.models]
    if not specs:
        raise ConfigurationError("name at least one model: --model NAME_OR_PATH (repeat it; the first is the baseline)")
    labels = {spec.label for spec in specs if spec.label}
    unknown = sorted(set(config.model_options) - labels)
    if unknown:
        raise ConfigurationError(
            f"--model-option names {', '.join(unknown)}, which no --model LABEL=PATH defines (labels: "
            f"{', '.join(sorted(labels)) or 'none'})"
        )
    specs = [ModelSpec(s.path, s.label, {**s.options, **config.model_options.get(s.label or "", {})}) for s in specs]
    folders: dict[str, str] = {}
    for spec in specs:
        for key in spec.options:
            if key in _RESERVED_MODEL_ARGS:
                raise ConfigurationError(f"--model-option {spec.label}:{key}=... is set by the sweep: {_RESERVED_MODEL_ARGS[key]}")
        if spec.folder in folders:
            raise ConfigurationError(
                f"models {folders[spec.folder]!r} and {spec.name!r} would share the output folder {spec.folder!r}; give "
                "each model once, or label them (--model base=PATH --model fp8=PATH)"
            )
        folders[spec.folder] = spec.name
    return tuple(specs)


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


def _check_server_options(config: SweepConfig, backend: str) -> None:
    """Server-mode options need --base-url and positive values; --tokenizer and a tokenizer model arg exclude each other."""
    for name, (arg, _, flag) in SERVER_OPTIONS.items():
        value = getattr(config, name)
        if value is None:
            continue
        if backend != "local-completions":
            raise ConfigurationError(f"{flag} applies to server mode (--base-url) only, not the {backend} backend")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{flag} must be a whole number of at least 1, got {value!r}")
        if arg in config.model_args:
            raise ConfigurationError(f"{flag} and --model-arg {arg}=... both set {arg}: give it once")
    if config.tokenizer is not None and "tokenizer" in config.model_args:
        raise ConfigurationError("--tokenizer and --model-arg tokenizer=... both name the tokenizer: give it once")


def resolve(config: SweepConfig) -> Resolved:
    """Check every setting (cheap: nothing is loaded) and fill in the defaults."""
    models = _model_specs(config)
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
    _check_server_options(config, backend)
    if backend != "vllm":
        given = [flag for name, flag in VLLM_ONLY.items() if getattr(config, name) is not None]
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
    return Resolved(
        config=config,
        models=models,
        backend=backend,
        tasks=tasks,
        lengths=tuple(lengths),
        model_args=model_args,
        hf_overrides=hf_overrides,
        max_window=max_window,
        output=Path(config.output).expanduser().absolute(),
        cache_dir=cache_root(None if config.cache_dir is None else str(config.cache_dir)).expanduser().absolute(),
    )


