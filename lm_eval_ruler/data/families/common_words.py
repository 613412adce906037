"""Common words extraction (RULER ``common_words_extraction.py``).

Each sample draws its answered example list(s) and then its main list with
``random.sample`` from the shuffled wonderwords pool; only ``random`` is
used (NVIDIA's script does not seed numpy for CWE). Lists are shuffled with
a fresh ``random.Random(seed)``, so the positions of the common words are
the same in every list of a given length.

The answered example is wrapped in the full template (model template, task
text, answer prefix) and followed by its answer, then a newline and the
task's own template: ``example + " " + "1. a 2. b ..." + "\\n" + task``.
Without an NVIDIA model template the user text is exactly that string up to
the task's answer prefix, which lm-eval appends after its own chat template.
Under chat-only rendering with ``ruler_example_rendering=nvidia`` (the
default) the model template is the tokenizer's chat template split around
the user text (``chat_model_template``): the example becomes a whole
user/assistant exchange, as in NVIDIA's prompts, and the doc's user text is
NVIDIA's string without the outer wrapper that lm-eval adds.

Profiles: ``reference`` (head) sizes by binary search, from a 4096-word
probe with upper bound 2 * floor(length / tokens per word); ``2024`` grows the
list by 10 words until a probe (followed by its answer) overflows, stopping
at the pool size without a length check, and glues the example answer to
the prefix (``are:1. a``).

Deviations from NVIDIA's code:

* Counts are of the final prompt as lm-eval sends it (``PromptCounter``).
* Reference profile, more words than the wonderwords pool (8,169): NVIDIA
  then samples from ``english_words.json`` (a git-LFS file not shipped
  here). A size-search probe above the pool size is treated as not fitting
  without drawing anything; data are therefore identical to NVIDIA's
  whenever its search never probes beyond the pool (with the Llama-3
  tokenizer: every standard length up to 64K; at 128K it probes beyond the
  pool, rejects that probe, and settles at about 7,970 words, so the size is
  the same but later draws differ). If the whole pool fits the budget, the
  length needs words the pool does not have and a ``DataSourceError`` is
  raised.
* 2024 profile: at the pool cap NVIDIA's search stops without a length
  check; the per-sample step-back still guarantees the budget. Lengths whose
  budget holds more than the pool are capped as in 2024 (a warning is logged).
* Where NVIDIA's per-sample loop would retry forever, a ``BudgetError`` is raised.
"""

from __future__ import annotations

import logging
from typing import Any

from ...errors import DataSourceError
from ..tokens import PromptCounter
from .budget import binary_search_size, fit_sample_to_budget
from .haystack import common_word_pool
from .kit import GenerationSettings, Prompt, PromptBuilder, Resources, Rngs, make_doc
from .templates import CWE_ANSWER_PREFIX, CWE_TEMPLATE

logger = logging.getLogger(__name__)

STEP = 10
ESTIMATE_WORDS = 4096
#: Lengths below this use short lists (NVIDIA: ``max_seq_length < 4096``).
SMALL_LENGTH = 4096


def numbered(words: list[str]) -> str:
    """``1. w1 2. w2 ...``: RULER's list rendering, also used for the answers."""
    return " ".join(f"{i + 1}. {word}" for i, word in enumerate(words))


def numbered_items(words: list[str]) -> list[str]:
    """The space-separated items of ``numbered(words)``: labels and words, each reused across samples."""
    items = [""] * (2 * len(words))
    items[0::2] = _labels(len(words))
    items[1::2] = words
    return items


def _labels(count: int) -> list[str]:
    while len(_LABELS) < count:
        _LABELS.append(f"{len(_LABELS) + 1}.")
    return _LABELS[:count]


_LABELS: list[str] = []


def generate(settings: GenerationSettings, counter: PromptCounter, resources: Resources) -> list[dict[str, Any]]:
    params = settings.task.params
    num_cw = int(params["num_cw"])
    num_fewshot = int(params.get("num_fewshot", 1))
    rngs = Rngs(settings.seed)
    pool = list(common_word_pool())
    rngs.fixed_shuffle(pool)

    if settings.length < SMALL_LENGTH:
        example_words, example_common, example_uncommon = 20, 3, 1
        common_repeats, uncommon_repeats = 6, 1
    else:
        example_words, example_common, example_uncommon = 40, 10, 3
        common_repeats, uncommon_repeats = int(params["freq_cw"]), int(params["freq_ucw"])
    builder = PromptBuilder(CWE_TEMPLATE, CWE_ANSWER_PREFIX, settings.model_template)
    answer_gap = "" if settings.legacy else " "

    def word_list(num_words: int, common: int, uncommon: int) -> tuple[list[str], list[str]]:
        chosen = rngs.py.sample(pool, num_words)
        gold = chosen[:num_cw]
        words = gold * common + chosen[num_cw:] * uncommon
        rngs.fixed_shuffle(words)
        return words, gold

    def build(num_words: int) -> Prompt:
        shots = [word_list(example_words, example_common, example_uncommon) for _ in range(num_fewshot)]
        words, gold = word_list(num_words, common_repeats, uncommon_repeats)
        context = counter.join(numbered_items(words), " ")
        parts = []
        for shot_words, shot_gold in shots:
            user, prefix = builder.build(context=numbered(shot_words), query="", num_cw=num_cw)
            parts.append(user + prefix + answer_gap + numbered(shot_gold))
        user, prefix = builder.build(context=context.text, query="", num_cw=num_cw)
        return Prompt(builder.unwrap("\n".join(parts) + "\n" + user), prefix, gold, context=context)

    def tokens(prompt: Prompt) -> int:
        return counter.count(prompt.user, prompt.answer_prefix, prompt.context)

    gen = settings.task.max_gen_toks
    if settings.legacy:
        size = _legacy_search(settings, counter, build, len(pool))
    else:
        size = _binary_search(settings, build, tokens, len(pool))

    docs = []
    for index in range(settings.num_samples):
        fitted = fit_sample_to_budget(build, tokens, size, STEP, settings.prompt_budget, gen, settings.describe())
        docs.append(make_doc(index, fitted.sample, fitted.prompt_tokens, fitted.size, settings))
    return docs


def _binary_search(settings: GenerationSettings, build: Any, tokens: Any, pool_size: int) -> int:
    """Head: estimate from 4096 words, then binary search; probes beyond the pool do not fit."""
    length = settings.length
    gen = settings.task.max_gen_toks
    per_word = tokens(build(ESTIMATE_WORDS)) / ESTIMATE_WORDS
    upper = max(int(length // per_word) * 2, STEP * 2)
    beyond_pool = False

    def fits(num_words: int) -> bool:
        nonlocal beyond_pool
        if num_words > pool_size:
            beyond_pool = True
            return False
        return tokens(build(num_words)) + gen <= length

    size = binary_search_size(fits, STEP, upper, STEP)
    if beyond_pool and size >= pool_size:
        raise DataSourceError(
            f"{settings.describe()}: the length needs more distinct words than the wonderwords pool has "
            f"({pool_size}); a list of all {pool_size} words still fits the budget. NVIDIA's current code then "
            "samples from its english_words.json, which is not available here. Use a shorter length for cwe, "
            "or the 2024 profile (ruler_profile=2024), which caps the list at the pool size as the 2024 code did."
        )
    return size


def _legacy_search(settings: GenerationSettings, counter: PromptCounter, build: Any, pool_size: int) -> int:
    """2024: grow by 10 words while the probe plus its answer fits; the pool size ends the search unchecked."""
    gen = settings.task.max_gen_toks
    num_words = STEP
    total = 0
    while total + gen < settings.length:
        probe = build(num_words)
        total = counter.count(probe.user, probe.answer_prefix + " " + numbered(probe.outputs), probe.context)
        if total + gen > settings.length:
            num_words -= STEP
            break
        num_words += STEP
        if num_words > pool_size:
            num_words = pool_size
            logger.warning(
                "%s: the budget holds more than the %d words of the wonderwords pool; the 2024 code caps the "
                "list there, so prompts are shorter than the length",
                settings.describe(),
                pool_size,
            )
            break
    return max(num_words, STEP)
