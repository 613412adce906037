"""Frequent words extraction (RULER ``freq_words_extraction.py``).

Every sample has a fresh vocabulary of random lowercase "coded words"
(``random.choices``, topped up until unique), sorted and then shuffled with
a fresh ``random.Random(seed)``; entry 0 becomes ``...`` (the noise). Word of
rank k appears floor(N * k**-alpha / zeta(alpha)) times; the expanded list is
shuffled with ``random.Random(seed)`` (one permutation per list length) and
joined with spaces. The gold answer is vocabulary entries 1-3.

Sizing is FWE's own: a first vocabulary fixes N by growing from
``max_len // coded_wordlen`` in steps of ``max_len // 32`` while the prompt
is shorter than ``max_len``, then one step back; each sample starts from that
N with its new vocabulary and drops ``max_len // 32`` words (same
vocabulary) while it is too long. Reference profile: ``max_len`` = length -
50 and vocabulary size ``max_len // 50``. 2024 profile: ``max_len`` = length
for the search, the step and the vocabulary size.

Deviations from NVIDIA's code:

* Counts are of the final prompt as lm-eval sends it (``PromptCounter``).
* 2024 profile: the 2024 code checked samples against the length itself, so
  prompt + 50 answer tokens could exceed it; here the per-sample check uses
  length - 50, so every prompt fits with its answer (the search, step and
  vocabulary size keep the 2024 rule).
* zeta(alpha) is computed without scipy: pi**2/6 for alpha = 2 (bit-identical
  to ``scipy.special.zeta(2.0)``), an Euler-Maclaurin sum otherwise.
* Where NVIDIA's per-sample loop would run forever (no words left and still
  too long), a ``BudgetError`` is raised.
"""

from __future__ import annotations

import math
import string
from typing import Any

import numpy as np

from ...errors import BudgetError
from ..tokens import CountedText, PromptCounter
from .kit import GenerationSettings, Prompt, PromptBuilder, Resources, Rngs, make_doc
from .templates import FWE_ANSWER_PREFIX, FWE_TEMPLATE

NOISE_WORD = "..."
WORDS_PER_VOCAB_ENTRY = 50
STEP_FRACTION = 32


def zeta(alpha: float) -> float:
    """Riemann zeta for real alpha > 1, as ``scipy.special.zeta(alpha)`` gives it."""
    if alpha <= 1:
        raise ValueError(f"the zeta distribution needs alpha > 1, got {alpha}")
    if alpha == 2:
        return math.pi**2 / 6
    # Euler-Maclaurin: direct sum to n - 1, integral tail, and Bernoulli corrections.
    n = 20
    total = math.fsum(k**-alpha for k in range(1, n))
    total += n ** (1 - alpha) / (alpha - 1) + 0.5 * n**-alpha
    bernoulli = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730)
    rising = alpha  # alpha (alpha + 1) ... (alpha + 2j - 2)
    factorial = 2.0
    for j, b in enumerate(bernoulli, start=1):
        total += b / factorial * rising * n ** (-alpha - 2 * j + 1)
        rising *= (alpha + 2 * j - 1) * (alpha + 2 * j)
        factorial *= (2 * j + 1) * (2 * j + 2)
    return total


def generate(settings: GenerationSettings, counter: PromptCounter, resources: Resources) -> list[dict[str, Any]]:
    params = settings.task.params
    alpha = float(params["alpha"])
    word_length = int(params["coded_wordlen"])
    rngs = Rngs(settings.seed)
    builder = PromptBuilder(FWE_TEMPLATE, FWE_ANSWER_PREFIX, settings.model_template)

    max_len = settings.length if settings.legacy else settings.prompt_budget
    budget = settings.prompt_budget
    vocab_size = int(params.get("vocab_size", -1))
    if vocab_size == -1:
        vocab_size = max_len // WORDS_PER_VOCAB_ENTRY
    step = max_len // STEP_FRACTION
    if vocab_size < 4 or step < 1:
        raise BudgetError(
            f"{settings.describe()}: the length is too small for this task (a budget of {max_len} tokens gives "
            f"a vocabulary of {vocab_size} words and a step of {step}); use a longer length."
        )
    weights = np.arange(1, vocab_size + 1) ** -alpha
    z = zeta(alpha)

    def vocabulary() -> list[str]:
        words = ["".join(rngs.py.choices(string.ascii_lowercase, k=word_length)) for _ in range(vocab_size)]
        while len(set(words)) < vocab_size:
            words.append("".join(rngs.py.choices(string.ascii_lowercase, k=word_length)))
        vocab = sorted(set(words))
        rngs.fixed_shuffle(vocab)
        vocab[0] = NOISE_WORD
        return vocab

    def build(vocab: list[str], num_words: int) -> Prompt:
        counts = (num_words * weights / z).astype(int)
        words: list[str] = []
        for word, count in zip(vocab, counts.tolist()):
            if count > 0:
                words.extend([word] * count)
        rngs.fixed_shuffle(words)
        context = _counted_words(counter, words, vocab, counts)
        user, prefix = builder.build(context=context.text, query="")
        return Prompt(user, prefix, vocab[1:4], context=context)

    def tokens(prompt: Prompt) -> int:
        return counter.count(prompt.user, prompt.answer_prefix, prompt.context)

    # The first vocabulary fixes N for every sample.
    vocab = vocabulary()
    num_words = max_len // word_length
    while tokens(build(vocab, num_words)) < max_len:
        num_words += step
    num_words -= step

    docs = []
    for index in range(settings.num_samples):
        vocab = vocabulary()
        used = num_words
        prompt = build(vocab, used)
        count = tokens(prompt)
        while count > budget:
            if used <= 0:
                raise BudgetError(
                    f"{settings.describe()}: the length is too small for this task. Even without coded words "
                    f"the prompt has {count} tokens, and with {settings.task.max_gen_toks} tokens reserved for "
                    f"the answer that needs a length of at least {count + settings.task.max_gen_toks}. Use a "
                    "longer length, or a shorter chat template or system instruction."
                )
            used -= step
            prompt = build(vocab, used)
            count = tokens(prompt)
        docs.append(make_doc(index, prompt, count, used, settings))
    return docs


def _counted_words(counter: PromptCounter, words: list[str], vocab: list[str], counts: np.ndarray) -> CountedText:
    """The space-joined words, counted from each vocabulary word's count times its multiplicity.

    Coded words and ``...`` have no spaces, so every junction is a piece
    boundary: the text costs one memo lookup per vocabulary entry instead of
    one per word (about 100,000 words at 128K).
    """
    text = " ".join(words)
    if not counter.piecewise or not words:
        return CountedText(text, 0)
    used = [index for index, count in enumerate(counts.tolist()) if count > 0]
    attached = counter.attached_tokens([vocab[index] for index in used], " ")
    if None in attached:
        return counter.join(words, " ")
    total = sum(tokens * int(counts[index]) for tokens, index in zip(attached, used))  # type: ignore[operator]
    first = words[0]
    first_attached = counter.attached_tokens([first], " ")[0]
    return CountedText(text, total - first_attached + counter.piece_tokens(first))  # type: ignore[operator]
