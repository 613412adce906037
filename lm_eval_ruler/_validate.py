"""Check a run's RULER-relevant arguments before anything expensive happens.

A bad ``--metadata`` value used to surface only once lm-eval had loaded the
model (minutes on a large vLLM model) and built our task, at the bottom of a
long traceback. Everything here is pure: it needs neither lm-eval, torch nor
transformers, so the ``lm-eval-ruler`` command and the ``lm_eval`` startup
hook can run it first. Server mode (``base_url``) is the exception: the
server's ``/v1/models`` names the window and tokenizer (``_server``), asked here
with a short timeout. This module judges task names and the backend; the
metadata options are parsed by ``data.options``, which the task (``harness``)
uses too, so the two can never disagree.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ._server import SERVER_BACKENDS, complete_server_args
from ._tasks import CATEGORIES, CUSTOM_LENGTH, CUSTOM_LENGTH_KEY, LENGTHS, PREFIX, SUITE, TASKS, length_groups, parse_length
from .data.options import custom_length, dataset_option_values, parse_int_option
from .errors import ConfigurationError, RulerError

#: lm-eval's own RULER port (``lm_eval/tasks/ruler``): never ours, never touched.
LM_EVAL_BUILTIN_TASKS = frozenset({"ruler", "ruler_vt", "ruler_cwe", "ruler_fwe", "ruler_qa_squad", "ruler_qa_hotpot"})
#: Backends whose Python packages we can check up front: model name -> (modules, pip extra).
BACKEND_REQUIREMENTS = {
    "hf": (("torch", "accelerate"), "hf"),
    "hf-auto": (("torch", "accelerate"), "hf"),
    "huggingface": (("torch", "accelerate"), "hf"),
    "vllm": (("vllm",), "vllm"),
    "vllm-vlm": (("vllm",), "vllm"),
    # lm-eval's API backends import these lazily and fail only once the run has started.
    "local-completions": (("aiohttp", "tenacity", "requests"), "api"),
}
_LENGTH_LIKE = re.compile(r"^\d+[kKmM]?$")
_GLOB_CHARS = frozenset("*?[]")
#: ``ruler_<stem>_<length>``: the 13 tasks and the per-length category groups.
_CATEGORY_STEMS = {"niah": "retrieval", "aggregation": "aggregation", "qa": "qa"}
_STEMS = frozenset({*TASKS, *_CATEGORY_STEMS})


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
    if model in SERVER_BACKENDS and merged.get("base_url"):
        try:  # the server names the window and the tokenizer the options need
            merged.update(complete_server_args(merged))
        except RulerError as exc:
            problems.append(exc)
            checks = []
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
