"""What every family generator shares: settings, prompt parts, sizing, docs.

A family generator is a pure function of (task spec, settings, prompt
counter, resources): the same inputs give byte-identical docs in any process,
because each one draws only from RNGs it creates from ``settings.seed``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import file_sha256
from ..._tasks import TaskSpec
from .. import sources
from ..tokens import CountedText, PromptCounter
from .budget import binary_search_size, fit_sample_to_budget, linear_search_size
from .haystack import EssayCorpus, EssaySentences, SentenceSplitter, essay_corpus_from_json, sentence_splitter
from .templates import ModelTemplate


@dataclass(frozen=True)
class GenerationSettings:
    """Everything besides the tokenizer that determines a task's docs."""

    task: TaskSpec
    length: int
    num_samples: int
    seed: int
    profile: str
    model_template: ModelTemplate | None = None

    @property
    def prompt_budget(self) -> int:
        """Prompt tokens allowed: RULER's budget is prompt + answer tokens <= length."""
        return self.length - self.task.max_gen_toks

    @property
    def legacy(self) -> bool:
        """True for the 2024 profile (the code behind the published numbers)."""
        return self.profile == "2024"

    def describe(self) -> str:
        return f"{self.task.name} at {self.length} tokens"


@dataclass
class Rngs:
    """RULER's two random streams, owned by one generator call.

    RULER seeds the global ``random`` and ``numpy.random`` in a fresh process
    per task; private instances seeded the same way give the same draws
    without depending on what else ran in this process.
    """

    seed: int
    py: random.Random = field(init=False)
    np: np.random.RandomState = field(init=False)

    def __post_init__(self) -> None:
        self.py = random.Random(self.seed)
        self.np = np.random.RandomState(self.seed)

    def fixed_shuffle(self, items: list[Any]) -> None:
        """RULER's ``random.Random(seed).shuffle``: the same permutation for every list of a given length."""
        random.Random(self.seed).shuffle(items)


@dataclass(frozen=True)
class Prompt:
    """One generated sample before it becomes a doc."""

    user: str
    answer_prefix: str
    outputs: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    #: The haystack inside ``user`` with its precomputed piece count, for fast counting.
    context: CountedText | None = None


class Resources:
    """Lazy access to external data, so a task loads only what it needs."""

    def __init__(
        self, cache_dir: str | Path | None = None, download: bool = True, files: dict[str, str] | None = None
    ) -> None:
        self.cache_dir = cache_dir
        self.download = download
        self.files = files or {}
        self.used: dict[str, dict[str, Any]] = {}

    def path(self, name: str) -> Path:
        """The verified pinned file, or the user's own file (``ruler_<name>_file``), hashed for provenance."""
        if name in self.files:
            path = Path(self.files[name])
            self.used[name] = {"file": str(path), "sha256": data_file_sha256(str(path)), "pinned": False}
            return path
        path = sources.source_path(name, self.cache_dir, download=self.download)
        self.used.update(sources.provenance([name]))
        return path

    def essays(self) -> EssayCorpus:
        return _load_essays(str(self.path("essays")))

    def splitter(self) -> SentenceSplitter:
        splitter = sentence_splitter()
        self.used["sentence_splitter"] = {"name": splitter.name, "fingerprint": splitter.fingerprint}
        return splitter

    def essay_sentences(self) -> EssaySentences:
        """The sentence index of the essays, built once per process and shared by every task and length."""
        return _essay_sentences(self.essays(), self.splitter())


def data_file_sha256(path: str) -> str:
    """Hash of a user-supplied data file; it stands in for the pinned hash in cache keys."""
    from ...errors import DataSourceError

    try:
        return file_sha256(path)
    except OSError as exc:
        raise DataSourceError(f"cannot read data file {path}: {exc}; check the ruler_*_file metadata path") from exc


@functools.lru_cache(maxsize=2)
def _essay_sentences(corpus: EssayCorpus, splitter: SentenceSplitter) -> EssaySentences:
    return EssaySentences(corpus, splitter)


@functools.lru_cache(maxsize=2)
def _load_essays(path: str) -> EssayCorpus:
    return essay_corpus_from_json(Path(path).read_bytes())


class PromptBuilder:
    """Formats task text into the final user text and answer prefix.

    With an NVIDIA model template (``model_template`` metadata) the wrapper is
    part of the user text, exactly as RULER's prepare.py builds it; otherwise
    lm-eval's chat template (or none) wraps it later. A template derived from
    the tokenizer's chat template (``ModelTemplate.applied_by_harness``) is
    used the same way, to nest answered examples as NVIDIA does; ``unwrap``
    then removes the outer wrapper, which lm-eval's chat rendering adds.
    """

    def __init__(self, template: str, answer_prefix: str, model_template: ModelTemplate | None) -> None:
        self.template = model_template.wrap(template) if model_template else template
        self.answer_prefix = answer_prefix
        self.model_template = model_template

    def rewrite(self, transform: Callable[[str], str]) -> PromptBuilder:
        """Apply a whole-string rewrite (NIAH's singular form) to both parts."""
        builder = PromptBuilder.__new__(PromptBuilder)
        builder.template = transform(self.template)
        builder.answer_prefix = transform(self.answer_prefix)
        builder.model_template = self.model_template
        return builder

    def build(self, **fields: Any) -> tuple[str, str]:
        return self.template.format(**fields), self.answer_prefix.format(**fields)

    def unwrap(self, user: str) -> str:
        """The doc's user text for NVIDIA's whole prompt ``user`` (see ``ModelTemplate.unwrap``)."""
        return self.model_template.unwrap(user) if self.model_template else user


@dataclass
class SizedTask:
    """Sizing rules of one task: step, search bounds and the 2024 probe answer."""

    step: int
    estimate_step: int
    upper_bound: Callable[[float], int] | None = None
    cap: int | None = None
    legacy_answer: Callable[[Prompt], str] = lambda prompt: ""


def search_and_generate(
    settings: GenerationSettings,
    counter: PromptCounter,
    build: Callable[[int], Prompt],
    sizing: SizedTask,
) -> list[dict[str, Any]]:
    """Find the haystack size once, then fit each sample (RULER's two-phase sizing)."""
    budget = settings.prompt_budget
    gen = settings.task.max_gen_toks

    def tokens(prompt: Prompt) -> int:
        return counter.count(prompt.user, prompt.answer_prefix, prompt.context)

    if settings.legacy:
        size = linear_search_size(
            lambda n: legacy_probe_tokens(counter, build(n), sizing) + gen,
            settings.length,
            sizing.step,
            sizing.cap,
        )
        size = max(size, sizing.step)
    else:
        probe = build(sizing.estimate_step)
        per_unit = tokens(probe) / sizing.estimate_step
        upper = sizing.upper_bound(per_unit) if sizing.upper_bound else max(int(settings.length / per_unit * 3), sizing.step * 2)
        size = binary_search_size(lambda n: tokens(build(n)) + gen <= settings.length, sizing.step, upper, sizing.step)

    docs = []
    for index in range(settings.num_samples):
        fitted = fit_sample_to_budget(build, tokens, size, sizing.step, budget, gen, settings.describe())
        docs.append(make_doc(index, fitted.sample, fitted.prompt_tokens, fitted.size, settings))
    return docs


def legacy_probe_tokens(counter: PromptCounter, prompt: Prompt, sizing: SizedTask) -> int:
    """2024 probes counted the prompt followed by the gold answer text."""
    return counter.count(prompt.user, prompt.answer_prefix + sizing.legacy_answer(prompt), prompt.context)


def make_doc(index: int, prompt: Prompt, prompt_tokens: int, size: int, settings: GenerationSettings) -> dict[str, Any]:
    """The doc lm-eval sees; ``input`` and ``gen_prefix`` form the prompt, ``outputs`` the gold."""
    return {
        "index": index,
        "input": prompt.user,
        "gen_prefix": prompt.answer_prefix,
        "outputs": list(prompt.outputs),
        "length": prompt_tokens + settings.task.max_gen_toks,
        "prompt_tokens": prompt_tokens,
        "max_length": settings.length,
        "haystack_size": size,
        **prompt.extra,
    }


def join_query(keys: Sequence[str]) -> str:
    """``k1, k2, k3, and k4`` (Oxford comma), or the single key."""
    if len(keys) > 1:
        return ", ".join(keys[:-1]) + ", and " + keys[-1]
    return keys[0]
