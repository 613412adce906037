"""The eight needle-in-a-haystack tasks (RULER ``niah.py``).

Draw order, fixed-seed needle shuffle, depth placement and the singular
rewrite follow the reference exactly, because each of them changes which
samples are generated.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from ..tokens import CountedText, PromptCounter
from .haystack import DEPTHS, depth_of_position, niah_keys
from .kit import GenerationSettings, Prompt, PromptBuilder, Resources, Rngs, SizedTask, join_query, search_and_generate
from .templates import NIAH_ANSWER_PREFIX, NIAH_NEEDLE, NIAH_TEMPLATE, NOISE_BLOCK, singularize

ESSAY_STEP = 500
BLOCK_STEP = 25
SMALL_BLOCK_STEP = 5


def _value_drawer(kind: str, rngs: Rngs) -> Callable[[], str]:
    rng = rngs.py
    if kind == "numbers":
        return lambda: str(rng.randint(1_000_000, 9_999_999))
    if kind == "words":
        keys = niah_keys()
        return lambda: rng.choice(keys)
    if kind == "uuids":
        return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle type {kind!r}")


def generate(settings: GenerationSettings, counter: PromptCounter, resources: Resources) -> list[dict[str, Any]]:
    params = settings.task.params
    haystack = params["type_haystack"]
    type_v = params["type_needle_v"]
    num_q = params["num_needle_q"]
    num_v = params["num_needle_v"]
    num_k = max(params["num_needle_k"], num_q)
    rngs = Rngs(settings.seed)
    draw_key = _value_drawer(params["type_needle_k"], rngs)
    draw_value = _value_drawer(type_v, rngs)

    builder = PromptBuilder(NIAH_TEMPLATE, NIAH_ANSWER_PREFIX, settings.model_template)
    shown_type_v = type_v
    if num_q * num_v == 1:
        builder = builder.rewrite(singularize)
        shown_type_v = type_v[:-1]

    corpus = resources.essays() if haystack == "essay" else None
    essay_sentences = resources.essay_sentences() if haystack == "essay" else None
    sentences_of_size: dict[int, list[str]] = {}

    def build(num_haystack: int) -> Prompt:
        keys: list[str] = []
        values: list[list[str]] = []
        needles: list[str] = []
        for _ in range(num_k):
            keys.append(draw_key())
            key_values = []
            for _ in range(num_v):
                key_values.append(draw_value())
                needles.append(NIAH_NEEDLE.format(type_needle_v=type_v, key=keys[-1], value=key_values[-1]))
            values.append(key_values)
        rngs.fixed_shuffle(needles)

        if haystack == "essay":
            assert essay_sentences is not None
            if num_haystack not in sentences_of_size:
                if len(sentences_of_size) > 3:  # the per-sample fit revisits a few sizes
                    sentences_of_size.clear()
                sentences_of_size[num_haystack] = essay_sentences.sentences(num_haystack)
            context, depths = _insert_in_essay(sentences_of_size[num_haystack], needles, rngs, counter)
        else:
            if haystack == "noise":
                lines = [NOISE_BLOCK] * num_haystack
            else:
                lines = [
                    NIAH_NEEDLE.format(type_needle_v=type_v, key=draw_key(), value=draw_value())
                    for _ in range(num_haystack)
                ]
            context, depths = _insert_in_lines(lines, needles, rngs, counter)

        indices = rngs.py.sample(range(num_k), num_q)
        queries = [keys[i] for i in indices]
        answers = [value for i in indices for value in values[i]]
        user, prefix = builder.build(type_needle_v=shown_type_v, context=context.text, query=join_query(queries))
        needle_depths = {needle: depth for needle, depth in zip(needles, depths)}
        answer_depth = next(needle_depths[n] for n in needles if n.endswith(f" {answers[0]}."))
        return Prompt(user, prefix, answers, {"depth": answer_depth, "needle_depths": list(depths)}, context)

    if haystack == "essay":
        sizing = SizedTask(step=ESSAY_STEP, estimate_step=ESSAY_STEP, cap=len(corpus.words) if corpus else None)
    else:
        step = SMALL_BLOCK_STEP if settings.length < 4096 else BLOCK_STEP
        sizing = SizedTask(step=step, estimate_step=step)
    sizing.legacy_answer = lambda prompt: " ".join(prompt.outputs)
    return search_and_generate(settings, counter, build, sizing)


def _insert_in_essay(
    sentences: list[str], needles: list[str], rngs: Rngs, counter: PromptCounter
) -> tuple[CountedText, list[float]]:
    """Put needles between sentences at distinct random depths from RULER's grid."""
    n = len(sentences)
    drawn = rngs.py.sample(DEPTHS, len(needles))
    positions = [0] + sorted(int(n * (depth / 100)) for depth in drawn) + [n]
    items: list[str] = []
    for i in range(1, len(positions)):
        # An empty run of sentences stays an empty item: RULER joins it, giving a double space.
        items.extend(sentences[positions[i - 1] : positions[i]] or [""])
        if i - 1 < len(needles):
            items.append(needles[i - 1])
    depths = [depth_of_position(position, n) for position in positions[1:-1]]
    return counter.join(items, " "), depths


def _insert_in_lines(
    lines: list[str], needles: list[str], rngs: Rngs, counter: PromptCounter
) -> tuple[CountedText, list[float]]:
    """Insert needles at distinct random line indices, highest index first, one item per line."""
    total = len(lines)
    indexes = sorted(rngs.py.sample(range(total), len(needles)), reverse=True)
    for index, needle in zip(indexes, needles):
        lines.insert(index, needle)
    final_total = len(lines)
    depths = [depth_of_position(lines.index(needle), final_total) for needle in needles]
    return counter.join(lines, "\n"), depths
