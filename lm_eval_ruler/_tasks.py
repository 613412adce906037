"""The one table every other part reads: tasks, lengths, groups, profiles.

YAML configs, the CLI, generators and reports all derive from these
definitions, so a task's settings live in exactly one place (see
``lm_eval_ruler._configs`` for the generated YAML).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigurationError

PREFIX = "ruler"

#: Named lengths. 1k = 1024 tokens, as in RULER (4K = 4096 ... 128K = 131072).
LENGTHS: Mapping[str, int] = MappingProxyType(
    {
        "1k": 1024,
        "2k": 2048,
        "4k": 4096,
        "8k": 8192,
        "16k": 16384,
        "32k": 32768,
        "64k": 65536,
        "128k": 131072,
        "256k": 262144,
        "512k": 524288,
        "1m": 1048576,
    }
)
STANDARD_LENGTHS: tuple[str, ...] = ("4k", "8k", "16k", "32k", "64k", "128k")
#: Name of the length suffix whose value comes from ``--metadata ruler_custom_length=N``.
CUSTOM_LENGTH = "custom"
CUSTOM_LENGTH_KEY = "ruler_custom_length"

#: ``reference`` follows NVIDIA RULER's current code (head ``c3f5e3b``);
#: ``2024`` reproduces the code behind the published leaderboard numbers.
PROFILES: tuple[str, ...] = ("reference", "2024")
DEFAULT_PROFILE = "reference"
DEFAULT_SEED = 42
DEFAULT_NUM_SAMPLES = 500

#: Bumped whenever generated data of any task changes for the same inputs;
#: part of every dataset cache key.
DATA_VERSION = 1


@dataclass(frozen=True)
class TaskSpec:
    """One RULER task: how to generate it, how to score it, how long to answer."""

    name: str
    family: str
    category: str
    max_gen_toks: int
    metric: str
    params: Mapping[str, Any] = field(default_factory=dict)
    #: lm-eval task ``version``; bump when this task's data or scoring changes.
    version: int = 1
    description: str = ""
    #: Smallest length (tokens) whose groups include this task; see ``tasks_fitting``.
    min_group_length: int = 0

    def task_name(self, length: str) -> str:
        return f"{PREFIX}_{self.name}_{length}"


def _niah(name: str, description: str, **params: Any) -> TaskSpec:
    defaults = {"num_needle_k": 1, "num_needle_v": 1, "num_needle_q": 1, "type_needle_k": "words", "type_needle_v": "numbers"}
    return TaskSpec(name, "niah", "retrieval", 128, "all", MappingProxyType(defaults | params), description=description)


#: Which tasks the groups of a short length hold. A task's smallest haystack has a fixed size (essay
#: NIAH 500 words, CWE 10 words x 30 + a few-shot example, VT 5 noise blocks + its example, QA 10
#: documents), and below it a sample cannot fit: the task's own ``ruler_<task>_<len>`` config refuses
#: with a BudgetError, and a group holding it would lose every other task of the run. Measured smallest
#: length (prompt + answer tokens, worst of 20 samples; Llama-3 128K vocab / SmolLM2 49K / Mistral 32K
#: SentencePiece, raw and chat rendering): NIAH single_1 320-374, multikey_2 302-354, multikey_3
#: 562-781, single_2/3 786-887, multikey_1 838-925, multivalue 841-931, multiquery 864-953; VT
#: 765-832; CWE 719-876; FWE fits at 256; qa_squad 1,004-1,148 and qa_hotpot 787-917 on the small
#: test files. So at 1k (1024) the 11 non-QA tasks fit with >= 71 tokens (7%) to spare, and at 2k
#: with over 1,000. QA is left out below 4k: its minimum is 10 whole documents; the test files'
#: paragraphs average 86 (SQuAD) and 66 (HotpotQA) Llama-3 tokens, a real SQuAD paragraph (~120
#: words) about twice that, which puts 10 real documents near 2k; and a HotpotQA sample that
#: overflows steps back 10 documents, below its own 10 paragraphs, and fails unless the task's size is
#: at least 20 documents (RULER sizes QA for >= 4K, ruler-spec §5.5). Rule: a task is in the groups
#: at a length only if its worst measured minimum leaves a margin at that length (QA: from 4k).
QA_MIN_GROUP_LENGTH = 4096

#: The 13 tasks, in NVIDIA's order (``scripts/config_tasks.sh``).
TASKS: Mapping[str, TaskSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _niah("niah_single_1", "S-NIAH-1: one number needle in repeated noise sentences", type_haystack="noise"),
            _niah("niah_single_2", "S-NIAH-2: one number needle in Paul Graham essays", type_haystack="essay"),
            _niah("niah_single_3", "S-NIAH-3: one UUID needle in essays", type_haystack="essay", type_needle_v="uuids"),
            _niah("niah_multikey_1", "MK-NIAH-1: four keys in essays, one asked", type_haystack="essay", num_needle_k=4),
            _niah("niah_multikey_2", "MK-NIAH-2: the haystack is distractor needles", type_haystack="needle"),
            _niah(
                "niah_multikey_3",
                "MK-NIAH-3: UUID keys and values among UUID distractor needles",
                type_haystack="needle",
                type_needle_k="uuids",
                type_needle_v="uuids",
            ),
            _niah("niah_multivalue", "MV-NIAH: one key with four values in essays", type_haystack="essay", num_needle_v=4),
            _niah("niah_multiquery", "MQ-NIAH: four keys in essays, all four asked", type_haystack="essay", num_needle_q=4),
            TaskSpec(
                "vt",
                "variable_tracking",
                "multi_hop",
                30,
                "all",
                MappingProxyType({"num_chains": 1, "num_hops": 4}),
                version=2,
                description="Variable tracking: one chain of 4 hops in noise, with an in-context example",
            ),
            TaskSpec(
                "cwe",
                "common_words",
                "aggregation",
                120,
                "all",
                MappingProxyType({"freq_cw": 30, "freq_ucw": 3, "num_cw": 10, "num_fewshot": 1}),
                version=2,
                description="Common words extraction: the 10 most repeated words of a numbered list",
            ),
            TaskSpec(
                "fwe",
                "frequent_words",
                "aggregation",
                50,
                "all",
                MappingProxyType({"alpha": 2.0, "coded_wordlen": 6}),
                description="Frequent words extraction: the 3 most frequent coded words under a Zipf law",
            ),
            TaskSpec(
                "qa_squad",
                "qa",
                "qa",
                32,
                "part",
                MappingProxyType({"dataset": "squad"}),
                description="Single-hop QA: SQuAD 2.0 dev questions among distractor paragraphs",
                min_group_length=QA_MIN_GROUP_LENGTH,
            ),
            TaskSpec(
                "qa_hotpot",
                "qa",
                "qa",
                32,
                "part",
                MappingProxyType({"dataset": "hotpotqa"}),
                description="Multi-hop QA: HotpotQA dev-distractor questions among distractor paragraphs",
                min_group_length=QA_MIN_GROUP_LENGTH,
            ),
        )
    }
)

CATEGORIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        category: tuple(name for name, spec in TASKS.items() if spec.category == category)
        for category in ("retrieval", "multi_hop", "aggregation", "qa")
    }
)


@dataclass(frozen=True)
class GroupSpec:
    """An lm-eval group: its row is the unweighted mean of its tasks' scores."""

    name: str
    tasks: tuple[str, ...]
    description: str


def tasks_fitting(tokens: int | None) -> tuple[str, ...]:
    """The RULER tasks (in table order) that the groups hold at a length of ``tokens``.

    All 13 from 4K up; below, only those whose smallest prompt fits with a margin
    (see ``QA_MIN_GROUP_LENGTH``). ``None`` (the ``custom`` length, unknown until
    run time) gives all 13: the user chose the length, and a task too long for it
    says so.
    """
    return tuple(name for name, spec in TASKS.items() if tokens is None or tokens >= spec.min_group_length)


def length_groups(length: str) -> tuple[GroupSpec, ...]:
    """The groups defined at one length, largest first; a category whose tasks do not all fit is left out."""
    fitting = tasks_fitting(None if length == CUSTOM_LENGTH else length_tokens(length))
    left_out = [name for name in TASKS if name not in fitting]
    if left_out:
        needed = min(TASKS[name].min_group_length for name in left_out)
        needed_name = next((name for name, tokens in LENGTHS.items() if tokens == needed), str(needed))
        overall = (
            f"RULER score at {length}: mean of the {len(fitting)} tasks that fit at this length "
            f"({', '.join(left_out)} need {needed_name} or more), not RULER's 13-task score"
        )
    else:
        overall = f"RULER score at {length}: mean of the 13 task scores"
    categories = (
        ("niah", "retrieval", "Retrieval at {length}: mean of the 8 NIAH tasks"),
        ("aggregation", "aggregation", "Aggregation at {length}: mean of cwe and fwe"),
        ("qa", "qa", "QA at {length}: mean of qa_squad and qa_hotpot"),
    )
    groups = [GroupSpec(f"{PREFIX}_{length}", tuple(TASKS[t].task_name(length) for t in fitting), overall)]
    for stem, category, description in categories:
        members = tuple(TASKS[t].task_name(length) for t in CATEGORIES[category] if t in fitting)
        if len(members) == len(CATEGORIES[category]):
            groups.append(GroupSpec(f"{PREFIX}_{stem}_{length}", members, description.format(length=length)))
    return tuple(groups)


#: The suite over the standard lengths; its score is RULER's "Avg" column.
SUITE = GroupSpec(
    f"{PREFIX}_suite",
    tuple(f"{PREFIX}_{length}" for length in STANDARD_LENGTHS),
    "RULER Avg: mean over 4k..128k of the per-length 13-task scores",
)


def all_length_names() -> tuple[str, ...]:
    return (*LENGTHS, CUSTOM_LENGTH)


_LENGTH_RE = re.compile(r"^\s*(\d+)\s*([kKmM]?)\s*$")


def parse_length(value: str | int) -> int:
    """Turn ``"96k"``, ``"100000"`` or ``131072`` into a token count.

    Served windows are often not powers of two (e.g. ``max_model_len=100000``),
    so any positive length is allowed here; k and m are binary (1k = 1024).
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"invalid length {value!r}")
    if isinstance(value, int):
        tokens = value
    else:
        match = _LENGTH_RE.match(str(value))
        if not match:
            known = ", ".join(LENGTHS)
            raise ConfigurationError(
                f"invalid length {value!r}: give a token count such as 100000, or a name such as {known}"
            )
        number, unit = int(match.group(1)), match.group(2).lower()
        tokens = number * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]
    if tokens <= 0:
        raise ConfigurationError(f"invalid length {value!r}: it must be a positive number of tokens")
    return tokens


def length_tokens(name: str) -> int:
    """Tokens for a named length (``4k`` -> 4096); error lists the valid names."""
    try:
        return LENGTHS[name.lower()]
    except KeyError:
        known = ", ".join(LENGTHS)
        raise ConfigurationError(
            f"unknown length {name!r}; named lengths are {known}. For any other length use the "
            f"'{CUSTOM_LENGTH}' tasks with --metadata {CUSTOM_LENGTH_KEY}=<tokens>"
        ) from None


def task_spec(name: str) -> TaskSpec:
    """Look up a task by its RULER name (``niah_single_1``, ``vt``, ``qa_squad`` ...)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigurationError(f"unknown RULER task {name!r}; tasks are: {', '.join(TASKS)}") from None


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ConfigurationError(f"unknown ruler_profile {profile!r}; use one of: {', '.join(PROFILES)}")
    return profile


def task_configs_dir() -> Path:
    """Where the YAML lives: inside the installed wheel, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "task_configs"
    return packaged if packaged.is_dir() else here.parent / "task_configs"
