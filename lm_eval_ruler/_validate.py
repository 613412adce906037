"""Check a run's RULER-relevant arguments before anything expensive happens.

A bad ``--metadata`` value used to surface only once lm-eval had loaded the
model (minutes on a large vLLM model) and built our task, at the bottom of a
long traceback. Everything here is pure: it needs neither lm-eval, torch nor
transformers, so the ``lm-eval-ruler`` command and the ``lm_eval`` startup
hook can run it first, and the task (``harness``) uses the same parsers so the
two can never disagree.
"""

from __future__ import annotations

import importlib.util
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ._tasks import (
    CATEGORIES,
    CUSTOM_LENGTH,
    CUSTOM_LENGTH_KEY,
    DEFAULT_NUM_SAMPLES,
    DEFAULT_PROFILE,
    DEFAULT_SEED,
    LENGTHS,
    PREFIX,
    SUITE,
    TASKS,
    check_profile,
    length_groups,
    parse_length,
)
from .errors import ConfigurationError, RulerError

#: Metadata keys this plugin reads (besides the model args it shares with lm-eval).
OPTION_KEYS = {
    "num_samples": "samples per task and length (default 500)",
    "ruler_seed": "generator seed (default 42, as RULER)",
    "ruler_profile": "reference (NVIDIA's current code, default) or 2024 (the code behind the published numbers)",
    "ruler_apply_chat_template": "true/false: size prompts for exactly this rendering (set automatically from --apply_chat_template)",
    "ruler_system_instruction": "the run's system instruction, so it is budgeted (set automatically from --system_instruction)",
    "ruler_model_template": "render with one of NVIDIA's hand-written model templates (e.g. meta-llama3)",
    "ruler_cache_dir": "cache directory for data files and generated datasets",
    "ruler_cache": "false to regenerate instead of using the dataset cache",
    "ruler_offline": "true to never download data files",
    CUSTOM_LENGTH_KEY: "token length for the *_custom tasks (e.g. 100000 or 96k)",
    "ruler_essays_file": "use this PaulGrahamEssays.json instead of the pinned download",
    "ruler_squad_file": "use this SQuAD 2.0 dev JSON instead of the pinned download",
    "ruler_hotpotqa_file": "use this HotpotQA dev-distractor JSON instead of the pinned download",
}
#: Data source name -> the metadata key naming a local copy (``sources.SOURCES`` order).
DATA_FILE_KEYS = {name: f"ruler_{name}_file" for name in ("essays", "squad", "hotpotqa")}
#: lm-eval's own RULER port (``lm_eval/tasks/ruler``): never ours, never touched.
LM_EVAL_BUILTIN_TASKS = frozenset({"ruler", "ruler_vt", "ruler_cwe", "ruler_fwe", "ruler_qa_squad", "ruler_qa_hotpot"})
#: Backends whose Python packages we can check up front: model name -> (modules, pip extra).
BACKEND_REQUIREMENTS = {
    "hf": (("torch", "accelerate"), "hf"),
    "hf-auto": (("torch", "accelerate"), "hf"),
    "huggingface": (("torch", "accelerate"), "hf"),
    "vllm": (("vllm",), "vllm"),
    "vllm-vlm": (("vllm",), "vllm"),
}
_INT_EXAMPLES = {"num_samples": 100, "ruler_seed": 42, "max_model_len": 65536, "max_length": 65536, "ruler_length": 4096}
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_LENGTH_LIKE = re.compile(r"^\d+[kKmM]?$")
_GLOB_CHARS = frozenset("*?[]")
#: ``ruler_<stem>_<length>``: the 13 tasks and the per-length category groups.
_CATEGORY_STEMS = {"niah": "retrieval", "aggregation": "aggregation", "qa": "qa"}
_STEMS = frozenset({*TASKS, *_CATEGORY_STEMS})
_FLAG_TRUE = {"1", "true", "yes", "on"}
_FLAG_FALSE = {"0", "false", "no", "off"}


def parse_int_option(value: Any, key: str, *, minimum: int | None = None) -> int:
    """A whole number from metadata: an int or an integer string; never a bool or a fraction.

    Integral floats are accepted because lm-eval's own ``key=value`` parser
    turns ``-1`` and ``1e3`` into floats; ``2.5`` is an error, not 2.
    """
    exact = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    integral_float = isinstance(value, float) and value.is_integer()
    integer_text = isinstance(value, str) and _INT_RE.match(value) is not None
    if not (exact or integral_float or integer_text):
        example = _INT_EXAMPLES.get(key, 1)
        raise ConfigurationError(f"{key} must be a whole number (e.g. --metadata {key}={example}), got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ConfigurationError(f"{key} must be at least {minimum}, got {number}")
    return number


def parse_flag(value: Any, key: str) -> bool:
    """true/false from metadata (a bool, or 1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _FLAG_TRUE:
        return True
    if text in _FLAG_FALSE:
        return False
    raise ConfigurationError(f"{key} must be true or false, got {value!r}")


def check_option_keys(metadata: Mapping[str, Any]) -> None:
    """Refuse ``ruler_*`` keys we do not read: a typo would silently use the default."""
    unknown = sorted(k for k in metadata if isinstance(k, str) and k.startswith("ruler_") and k not in OPTION_KEYS)
    if unknown:
        valid = ", ".join(k for k in OPTION_KEYS if k.startswith("ruler_"))
        raise ConfigurationError(f"unknown metadata key(s) {', '.join(unknown)}; valid ruler_* keys are: {valid}")


def dataset_option_values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``DatasetOptions`` fields a run's metadata (model args + --metadata) asks for, validated."""
    from ._templates import model_template as lookup_model_template
    from ._tokenizer import resolve_tokenizer_name

    check_option_keys(metadata)
    chat = metadata.get("ruler_apply_chat_template")
    if chat is None:
        modes: tuple[str, ...] = ("raw", "chat")
    else:
        modes = ("chat",) if parse_flag(chat, "ruler_apply_chat_template") else ("raw",)
    model_template = metadata.get("ruler_model_template") or None
    if model_template and modes == ("chat",):
        raise ConfigurationError(
            "ruler_model_template already wraps prompts in NVIDIA's format; drop --apply_chat_template or ruler_model_template"
        )
    if model_template:
        lookup_model_template(str(model_template))
    add_bos = metadata.get("add_bos_token")
    return {
        "tokenizer": resolve_tokenizer_name(metadata),
        "num_samples": parse_int_option(metadata.get("num_samples", DEFAULT_NUM_SAMPLES), "num_samples", minimum=1),
        "seed": parse_int_option(metadata.get("ruler_seed", DEFAULT_SEED), "ruler_seed"),
        "profile": check_profile(str(metadata.get("ruler_profile", DEFAULT_PROFILE))),
        "render_modes": modes,
        "system_instruction": metadata.get("ruler_system_instruction") or None,
        "model_template": model_template,
        "add_bos_token": None if add_bos is None else parse_flag(add_bos, "add_bos_token"),
        "trust_remote_code": parse_flag(metadata.get("trust_remote_code", False), "trust_remote_code"),
        "tokenizer_revision": metadata.get("tokenizer_revision") or metadata.get("revision") or None,
        "cache_dir": metadata.get("ruler_cache_dir") or None,
        "use_cache": parse_flag(metadata.get("ruler_cache", True), "ruler_cache"),
        "download": not parse_flag(metadata.get("ruler_offline", False), "ruler_offline"),
        "data_files": tuple((name, str(metadata[key])) for name, key in DATA_FILE_KEYS.items() if metadata.get(key)),
    }


def custom_length(metadata: Mapping[str, Any]) -> int:
    """The token length of the ``*_custom`` tasks, from ``--metadata ruler_custom_length=N``."""
    if CUSTOM_LENGTH_KEY not in metadata:
        raise ConfigurationError(
            f"the *_custom tasks take their length from metadata: add --metadata {CUSTOM_LENGTH_KEY}=<tokens> "
            "(e.g. 100000 or 96k), at most your served window"
        )
    return parse_length(metadata[CUSTOM_LENGTH_KEY])


def _length_help(stem: str) -> str:
    custom = f"{PREFIX}_{stem}_{CUSTOM_LENGTH}" if stem else f"{PREFIX}_{CUSTOM_LENGTH}"
    return (
        f"valid lengths are {', '.join(LENGTHS)} (1k = 1024 tokens); for any other length use {custom} "
        f"with --metadata {CUSTOM_LENGTH_KEY}=<tokens> (e.g. 5000 or 96k)"
    )


def check_task_name(name: str) -> str | None:
    """Our length suffix of a requested task name (``"4k"``, ``"custom"``), None if the name is not ours.

    Only names that are clearly this plugin's are judged: ``ruler_<task>_<suffix>``,
    ``ruler_<group>_<suffix>`` and ``ruler_<suffix>`` where the stem is one of
    ours or the suffix looks like a length. lm-eval's own ``ruler``/``ruler_vt``/...
    tasks, other names and glob patterns pass untouched (None).
    """
    name = name.strip()
    if name in LM_EVAL_BUILTIN_TASKS or not name.startswith(f"{PREFIX}_") or _GLOB_CHARS & set(name):
        return None
    if name == SUITE.name:
        return "suite"
    rest = name[len(PREFIX) + 1 :]
    if rest in _STEMS:
        raise ConfigurationError(f"{name} needs a length suffix, e.g. {name}_4k; {_length_help(rest)}")
    stem, _, suffix = rest.rpartition("_")
    if stem and stem not in _STEMS:
        return None
    if suffix == CUSTOM_LENGTH:
        return suffix
    if suffix in LENGTHS:
        if stem in _CATEGORY_STEMS and name not in {group.name for group in length_groups(suffix)}:
            first = min(TASKS[t].min_group_length for t in CATEGORIES[_CATEGORY_STEMS[stem]])
            first_name = next((n for n, tokens in LENGTHS.items() if tokens == first), str(first))
            raise ConfigurationError(
                f"there is no group {name}: its tasks cannot fit at {suffix} and are grouped from {first_name} on; "
                f"run {PREFIX}_{suffix} (the tasks that fit) or a longer length"
            )
        return suffix
    if not stem and not _LENGTH_LIKE.match(suffix):
        return None  # ruler_<something>: somebody else's task
    hint = ""
    if suffix.lower() in LENGTHS:
        hint = f" (did you mean {PREFIX}_{stem + '_' if stem else ''}{suffix.lower()}?)"
    raise ConfigurationError(f"task {name}: {suffix!r} is not a RULER length{hint}; {_length_help(stem)}")


def backend_problem(model: str | None) -> str | None:
    """Why ``--model <model>`` cannot run in this Python, or None (unknown backends are not checked)."""
    if model not in BACKEND_REQUIREMENTS:
        return None
    modules, extra = BACKEND_REQUIREMENTS[model]
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (
        f"--model {model} needs {', '.join(missing)}, which is not installed in this Python environment: "
        f"pip install 'lm-eval-ruler[{extra}]'"
    )


def requested_names(tasks: Any) -> list[str]:
    """Task names from ``--tasks`` as lm-eval holds them (a list, or one comma-separated string)."""
    if tasks is None:
        return []
    items: Iterable[Any] = [tasks] if isinstance(tasks, str) else tasks
    names = []
    for item in items:
        if isinstance(item, str):  # dicts are inline task configs: not ours to judge
            names.extend(part.strip() for part in item.split(",") if part.strip())
    return names


def validate_run(
    tasks: Any,
    metadata: Mapping[str, Any] | None = None,
    model: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> list[str]:
    """Validate the RULER-relevant parts of an lm-eval run; return the requested names that are ours.

    ``metadata`` and ``model_args`` are merged as lm-eval does (metadata wins).
    Nothing is checked when no requested task is ours, so other lm-eval runs
    are never affected. Every problem found is reported, in one error.
    """
    problems: list[RulerError] = []
    ours: list[str] = []
    suffixes: set[str] = set()
    for name in requested_names(tasks):
        try:
            suffix = check_task_name(name)
        except RulerError as exc:
            problems.append(exc)
            continue
        if suffix is not None:
            ours.append(name)
            suffixes.add(suffix)
    if not ours and not problems:
        return []
    merged = {**(model_args or {}), **(metadata or {})}
    checks = [lambda: dataset_option_values(merged)]
    if CUSTOM_LENGTH in suffixes:
        checks.append(lambda: custom_length(merged))
    elif CUSTOM_LENGTH_KEY in merged:
        checks.append(lambda: parse_length(merged[CUSTOM_LENGTH_KEY]))
    for key in ("max_model_len", "max_length"):
        if merged.get(key) is not None:
            checks.append(lambda key=key: parse_int_option(merged[key], key, minimum=1))
    for check in checks:
        try:
            check()
        except RulerError as exc:
            problems.append(exc)
    backend = backend_problem(model)
    if backend:
        problems.append(ConfigurationError(backend))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigurationError(
            f"{len(problems)} problems with this run: " + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        )
    return ours
