"""Variable tracking (RULER ``variable_tracking.py``, noise haystack).

One process of NVIDIA's script first generates an in-context example with a
500-token budget, then the task samples; both runs share the seeded
``random`` and ``numpy.random`` streams, so this module draws from one
``Rngs`` in the same order: example estimate probe, example size search,
example sample, then the main estimate probe, size search and samples (each
main sample draws its chain and noise positions, then, in the reference
profile, the example's new names and value).

Profiles:

* ``reference`` (head ``c3f5e3b``): binary search; the example uses the plain
  task template, 3-letter names, the value 12345 and no generation reserve;
  every sample gets the example with fresh names and value; noise blocks are
  joined with newlines; the example is followed by one newline.
* ``2024`` (``f682453``, behind the published numbers): linear search; one
  fixed example for all samples (random value, generation reserve of 30
  subtracted); noise blocks end in a newline and are joined with spaces; the
  example's template has its whitespace collapsed and its last word dropped
  (the 2024 code does this whatever the model template, so without one the
  example question ends "... in the text Answer:"); "assgined"; the example is
  inserted as ``" " + example + "\\n\\n"`` after an example string that itself
  ends in ``"\\n\\n"``. Under chat-only rendering with
  ``ruler_example_rendering=nvidia`` (the default) the model template is the
  tokenizer's chat template split around the user text
  (``chat_model_template``), so the example keeps NVIDIA's piece of it
  (ChatML: ``... in the text above.<|im_end|> Answer: ...``); the doc's user
  text is NVIDIA's string without the outer wrapper lm-eval adds, so it
  starts with that inserted space, which a template that trims message
  content (Llama-3.1's ``| trim``) drops: the one byte by which such prompts
  differ from NVIDIA's (counts are of what is sent).

Deviations from NVIDIA's code (all outside what a successful NVIDIA run produces):

* Every count is of the final prompt as lm-eval sends it (``PromptCounter``:
  chat template and BOS included); the example itself, which is a fragment,
  is counted plainly as RULER does.
* 2024 profile: the per-sample check counts the final prompt with the example
  inserted against ``length - 30`` (the 2024 code summed the parts), so a
  prompt plus its 30 answer tokens never exceeds the length.
* A chain draw with a repeated name makes NVIDIA's ``generate_chains`` raise
  IndexError (its extra names form an incomplete chain). Inside the
  per-sample loops that error is caught and the sample steps back, which is
  reproduced; during a size search it aborts NVIDIA's script, while here the
  probe is drawn again at the same size.
* Where NVIDIA's per-sample loop would retry forever (the smallest haystack
  still too long), a ``BudgetError`` is raised.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import BudgetError
from ..tokens import CountedText, PromptCounter
from .budget import binary_search_size, linear_search_size
from .kit import GenerationSettings, Prompt, PromptBuilder, Resources, Rngs, make_doc
from .templates import NOISE_BLOCK, VT_ANSWER_PREFIX, VT_ANSWER_PREFIX_2024, VT_TEMPLATE

MAIN_STEP = 10
SMALL_MAIN_STEP = 5
ICL_STEP = 5
ICL_BUDGET = 500
ICL_MAX_HOPS = 10
ICL_NAME_LENGTH = 3
NAME_LENGTH = 5
#: Placeholder value of the reference example, replaced per sample.
ICL_VALUE = "12345"
#: Where NVIDIA inserts the example: before the first 20 characters of the task template.
TASK_MARKER = VT_TEMPLATE[:20]
#: The 2024 noise unit carried its own newline.
NOISE_BLOCK_2024 = NOISE_BLOCK + "\n"


class _DuplicateNames(Exception):
    """NVIDIA's ``generate_chains`` raises IndexError when a drawn name repeats."""


@dataclass
class _Draw:
    """One generated sample: the formatted text parts and the gold names."""

    user: str
    answer_prefix: str
    names: list[str]
    context: CountedText | None = None


class _Generator:
    def __init__(self, settings: GenerationSettings, counter: PromptCounter) -> None:
        self.settings = settings
        self.counter = counter
        self.legacy = settings.legacy
        self.num_chains = int(settings.task.params["num_chains"])
        self.num_hops = int(settings.task.params["num_hops"])
        self.rngs = Rngs(settings.seed)
        prefix = VT_ANSWER_PREFIX_2024 if self.legacy else VT_ANSWER_PREFIX
        self.builder = PromptBuilder(VT_TEMPLATE, prefix, settings.model_template)
        self.icl_template = self._icl_template(prefix)

    # ------------------------------------------------------------ one sample

    def _icl_template(self, prefix: str) -> str:
        """The template of the in-context example, filled as one string."""
        if not self.legacy:
            return VT_TEMPLATE + prefix
        # 2024: cut the model template off by collapsing whitespace and dropping the last word.
        full = self.builder.template + self.builder.answer_prefix
        start = full.index(TASK_MARKER)
        answer = full.index(prefix[:10])
        return " ".join(full[start:answer].split()[:-1]) + full[answer:]

    def _name(self, length: int) -> str:
        return "".join(self.rngs.py.choices(string.ascii_uppercase, k=length))

    def _chains(self, is_icl: bool) -> tuple[list[str], list[list[str]]]:
        """Names and chain statements, drawn as ``generate_chains`` draws them."""
        name_length = ICL_NAME_LENGTH if is_icl else NAME_LENGTH
        hops = min(ICL_MAX_HOPS, self.num_hops) if is_icl else self.num_hops
        group = hops + 1
        names = [self._name(name_length) for _ in range(group * self.num_chains)]
        while len(set(names)) < group * self.num_chains:
            names.append(self._name(name_length))
        groups: list[list[str]] = []
        chains: list[list[str]] = []
        for start in range(0, len(names), group):
            these = names[start : start + group]
            if is_icl and not self.legacy:
                value = ICL_VALUE
            else:
                value = str(self.rngs.np.randint(10000, 99999))
            if len(these) < group:
                # The appended names make an incomplete chain: NVIDIA's code fails here,
                # after drawing this chain's value.
                raise _DuplicateNames
            chain = [f"VAR {these[0]} = {value}"]
            chain += [f"VAR {these[j + 1]} = VAR {these[j]} " for j in range(hops)]
            groups.append(these)
            chains.append(chain)
        return groups[0], chains

    def _context(self, num_noises: int, chains: list[list[str]]) -> CountedText:
        if self.legacy:
            sentences = [NOISE_BLOCK_2024] * num_noises
            if len(sentences) <= len(chains[0]):
                # Too few blocks: the 2024 code splits them into sentences.
                pieces = [piece for block in sentences for piece in block.split(".")]
                sentences = [piece + "." if piece.strip() else piece for piece in pieces]
                if len(sentences) <= len(chains[0]):
                    chains = [chain[: len(sentences) - 1] for chain in chains]
        else:
            sentences = [NOISE_BLOCK] * num_noises
        for chain in chains:
            positions = sorted(self.rngs.py.sample(range(len(sentences)), len(chain)))
            for offset, position in enumerate(positions):
                sentences.insert(position + offset, chain[offset])
        context = self.counter.join(sentences, " " if self.legacy else "\n")
        tidied = context.text.replace(". \n", ".\n")
        return context if tidied == context.text else self.counter.join([tidied], "\n")

    def draw(self, num_noises: int, is_icl: bool) -> _Draw:
        """``generate_input_output``; raises ``_DuplicateNames`` where NVIDIA's raises."""
        names, chains = self._chains(is_icl)
        value = chains[0][0].split("=")[-1].strip()
        context = self._context(num_noises, chains)
        fields = {"context": context.text, "query": value, "num_v": self.num_hops + 1}
        if is_icl:
            return _Draw(self.icl_template.format(**fields), "", names)
        user, prefix = self.builder.build(**fields)
        return _Draw(self.builder.unwrap(user), prefix, names, context)

    def draw_retrying(self, num_noises: int, is_icl: bool) -> _Draw:
        """A size-search probe; NVIDIA's script would abort on a repeated name, we draw again."""
        while True:
            try:
                return self.draw(num_noises, is_icl)
            except _DuplicateNames:
                continue

    # -------------------------------------------------------------- example

    def icl_example(self) -> str:
        """The answered example string (before any per-sample randomization)."""
        count = self.counter.count_plain
        if self.legacy:
            reserve = self.settings.task.max_gen_toks

            def total(n: int) -> int:
                probe = self.draw_retrying(n, True)
                return count(probe.user + f" {probe.names}") + reserve

            size = max(linear_search_size(total, ICL_BUDGET, ICL_STEP), ICL_STEP)
        else:
            reserve = 0
            probe = self.draw_retrying(ICL_STEP, True)
            per_unit = count(probe.user) / ICL_STEP
            upper = max(int(ICL_BUDGET / per_unit * 3), ICL_STEP * 2)
            size = binary_search_size(
                lambda n: count(self.draw_retrying(n, True).user) <= ICL_BUDGET, ICL_STEP, upper, ICL_STEP
            )
        sample, _, _ = self._fit(
            size, ICL_STEP, ICL_BUDGET - reserve, reserve, lambda n: self.draw(n, True), lambda d: (d, count(d.user))
        )
        ending = "\n\n" if self.legacy else "\n"
        return sample.user + " " + " ".join(sample.names) + ending

    def randomize_icl(self, example: str) -> str:
        """Reference: new names (plain string replacement, in order) and a new value per sample."""
        for name in example.strip().split()[-self.num_hops - 1 :]:
            example = example.replace(name, self._name(len(name)))
        return example.replace(ICL_VALUE, str(self.rngs.np.randint(10000, 99999)))

    # ----------------------------------------------------------------- main

    def docs(self) -> list[dict[str, Any]]:
        settings = self.settings
        example = self.icl_example()
        example_tokens = self.counter.count_plain(example)
        gen = settings.task.max_gen_toks
        count = self.counter.count

        if self.legacy:
            step = MAIN_STEP

            def total(n: int) -> int:
                probe = self.draw_retrying(n, False)
                return count(probe.user, probe.answer_prefix + f" {probe.names}", probe.context) + gen + example_tokens

            size = max(linear_search_size(total, settings.length, step), step)
        else:
            step = SMALL_MAIN_STEP if settings.length < 4096 else MAIN_STEP
            probe = self.draw_retrying(step, False)
            per_unit = count(probe.user, probe.answer_prefix, probe.context) / step
            upper = max(int(settings.length / per_unit * 3), step * 2)

            def fits(n: int) -> bool:
                probe = self.draw_retrying(n, False)
                return count(probe.user, probe.answer_prefix, probe.context) + example_tokens + gen <= settings.length

            size = binary_search_size(fits, step, upper, step)

        def finish(draw: _Draw) -> tuple[_Draw, int]:
            shown = example if self.legacy else self.randomize_icl(example)
            cut = draw.user.index(TASK_MARKER)
            if self.legacy:
                user = draw.user[:cut] + " " + shown + "\n\n" + draw.user[cut:]
            else:
                user = draw.user[:cut] + shown + "\n" + draw.user[cut:]
            final = _Draw(user, draw.answer_prefix, draw.names, draw.context)
            return final, count(final.user, final.answer_prefix, final.context)

        docs = []
        for index in range(settings.num_samples):
            final, tokens, used = self._fit(
                size, step, settings.prompt_budget, gen, lambda n: self.draw(n, False), finish
            )
            prompt = Prompt(final.user, final.answer_prefix, list(final.names))
            docs.append(make_doc(index, prompt, tokens, used, settings))
        return docs

    def _fit(
        self,
        size: int,
        step: int,
        budget: int,
        reserve: int,
        draw: Callable[[int], _Draw],
        finish: Callable[[_Draw], tuple[_Draw, int]],
    ) -> tuple[_Draw, int, int]:
        """NVIDIA's per-sample loop: any failure (too long, repeated name) steps back one increment."""
        while True:
            tokens: int | None = None
            try:
                sample, tokens = finish(draw(size))
            except _DuplicateNames:
                pass
            else:
                if tokens <= budget:
                    return sample, tokens, size
            if size > step:
                size -= step
            elif tokens is not None:
                raise BudgetError(
                    f"{self.settings.describe()}: the length is too small for this task. Even the smallest "
                    f"haystack ({size} noise blocks) gives a {tokens}-token prompt, and with {reserve} tokens "
                    f"reserved for the answer that needs a length of at least {tokens + reserve} (the budget "
                    f"is {budget + reserve}). Use a longer length, or a shorter chat template or system instruction."
                )
            # A repeated name at the smallest size: NVIDIA draws again at the same size.


def generate(settings: GenerationSettings, counter: PromptCounter, resources: Resources) -> list[dict[str, Any]]:
    return _Generator(settings, counter).docs()
