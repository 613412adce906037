"""RULER's NIAH rules (spec §3.5, §5.1) checked on generated docs."""

from __future__ import annotations

import random
import re
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_eval_ruler import BudgetError, DatasetOptions, build_dataset
from lm_eval_ruler.data.families.haystack import DEPTHS, AdjectiveNounKeys, niah_keys
from lm_eval_ruler.data.families.templates import NOISE_BLOCK, singularize

SINGLE_PREFIX = " The special magic {t} for {k} mentioned in the provided text is"
SINGLE_HEAD = "A special magic {t} is hidden within the following text. Make sure to memorize it. I will quiz you about the {t} afterwards.\n"
SINGLE_TAIL = "\nWhat is the special magic {t} for {k} mentioned in the provided text?"
NUMBER = r"\d{7}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def docs(task: str, tokenizer: str, length: int = 4096, n: int = 5, **options) -> list[dict]:
    return build_dataset(task, length, DatasetOptions(tokenizer=tokenizer, num_samples=n, use_cache=False, **options)).docs


def needle_re(type_v: str, value: str) -> str:
    return rf"One of the special magic {type_v} for (.+?) is: ({value})\."


def test_depth_grid_is_numpy_linspace():
    assert DEPTHS == tuple(int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int))


def test_singular_rewrite_order_and_scope():
    assert singularize("Some x are all y are z answers") == "A x is y is z answer"
    # Blind replacement also hits model-template text, as in RULER (vicuna's "polite answers").
    assert "polite answer to" in singularize("polite answers to the user's questions")


def test_key_list_equals_rulers_materialized_list():
    """The arithmetic key index equals sorted(set(adj-noun)) entry for entry (6.2M keys)."""
    from wonderwords import random_word

    adjectives = list(random_word._get_words_from_text_file("adjectivelist.txt"))
    nouns = list(random_word._get_words_from_text_file("nounlist.txt"))
    assert (len(adjectives), len(set(adjectives)), len(nouns)) == (912, 910, 6786)
    reference = sorted({f"{a}-{n}" for a in adjectives for n in nouns})
    keys = niah_keys()
    assert len(keys) == len(reference) == 6_175_260
    assert all(keys[i] == reference[i] for i in range(len(reference)))
    rng = random.Random(7)
    assert rng.choice(keys) == random.Random(7).choice(reference)


def test_key_runs_merge_interleaving_adjectives():
    keys = AdjectiveNounKeys(["blue", "blue-eyed", "red"], ["eyed-cat", "ant", "zebra", "eye"])
    expected = sorted({f"{a}-{n}" for a in ["blue", "blue-eyed", "red"] for n in ["eyed-cat", "ant", "zebra", "eye"]})
    assert list(keys) == expected


def test_niah_single_1_template_needle_and_noise(llama3_tokenizer):
    for doc in docs("niah_single_1", llama3_tokenizer):
        value = doc["outputs"][0]
        assert re.fullmatch(NUMBER, value)
        key = re.search(needle_re("numbers", value), doc["input"]).group(1)
        assert doc["input"].startswith(SINGLE_HEAD.format(t="number"))
        assert doc["input"].endswith(SINGLE_TAIL.format(t="number", k=key))
        assert doc["gen_prefix"] == SINGLE_PREFIX.format(t="number", k=key)
        body = doc["input"][len(SINGLE_HEAD.format(t="number")) : -len(SINGLE_TAIL.format(t="number", k=key))]
        lines = body.split("\n")
        needles = [line for line in lines if line != NOISE_BLOCK]
        assert needles == [f"One of the special magic numbers for {key} is: {value}."]
        assert len(lines) == doc["haystack_size"] + 1
        assert re.fullmatch(r"[^\s-]+(?: [^\s-]+)*-.+", key), "words keys are adjective-noun"
        assert 0 <= doc["depth"] <= 100


def test_noise_haystack_fills_budget(llama3_tokenizer):
    produced = docs("niah_single_1", llama3_tokenizer, n=10)
    for doc in produced:
        assert doc["prompt_tokens"] + 128 == doc["length"] <= 4096
    # Fitted once and stepped back at most one 25-block step per sample.
    assert max(doc["length"] for doc in produced) > 4096 - 100


def test_needle_haystack_uuid_keys_and_values(llama3_tokenizer):
    for doc in docs("niah_multikey_3", llama3_tokenizer, n=3):
        value = doc["outputs"][0]
        assert re.fullmatch(UUID, value)
        assert str(uuid.UUID(value)) == value
        lines = doc["input"].split("\n")[1:-1]
        assert len(lines) == doc["haystack_size"] + 1
        assert all(re.fullmatch(needle_re("uuids", UUID).replace("(.+?)", f"({UUID})"), line) for line in lines)
        assert doc["gen_prefix"].startswith(" The special magic uuid for ") and doc["gen_prefix"].endswith(" is")


def test_multikey_2_distractors_are_word_number_needles(llama3_tokenizer):
    doc = docs("niah_multikey_2", llama3_tokenizer, n=1)[0]
    lines = doc["input"].split("\n")[1:-1]
    assert all(re.fullmatch(needle_re("numbers", NUMBER), line) for line in lines)
    assert sum(line.endswith(f" {doc['outputs'][0]}.") for line in lines) >= 1


def test_essay_tasks(llama3_tokenizer, essays_cache):
    for task, n_needles, type_v in (("niah_single_2", 1, "numbers"), ("niah_multikey_1", 4, "numbers"), ("niah_single_3", 1, "uuids")):
        for doc in docs(task, llama3_tokenizer, n=2):
            assert len(re.findall(needle_re(type_v, NUMBER if type_v == "numbers" else UUID), doc["input"])) == n_needles
            assert doc["input"].startswith(SINGLE_HEAD.format(t=type_v[:-1]))
            assert len(doc["needle_depths"]) == n_needles
            assert doc["prompt_tokens"] + 128 <= 4096


def test_multivalue_and_multiquery_keep_plural(llama3_tokenizer, essays_cache):
    plural_head = (
        "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the numbers afterwards.\n"
    )
    for doc in docs("niah_multivalue", llama3_tokenizer, n=2):
        assert doc["input"].startswith(plural_head)
        key = re.search(r"What are all the special magic numbers for (.+) mentioned", doc["input"]).group(1)
        assert len(doc["outputs"]) == 4
        for value in doc["outputs"]:
            assert f"One of the special magic numbers for {key} is: {value}." in doc["input"]
        assert doc["gen_prefix"] == f" The special magic numbers for {key} mentioned in the provided text are"
    for doc in docs("niah_multiquery", llama3_tokenizer, n=2):
        query = re.search(r"What are all the special magic numbers for (.+) mentioned", doc["input"]).group(1)
        keys = re.fullmatch(r"(.+), (.+), (.+), and (.+)", query).groups()
        assert len(doc["outputs"]) == 4
        for key, value in zip(keys, doc["outputs"]):
            assert f"One of the special magic numbers for {key} is: {value}." in doc["input"]


def test_essay_needles_sit_between_sentences(llama3_tokenizer, essays_cache):
    doc = docs("niah_single_2", llama3_tokenizer, n=1)[0]
    needle = re.search(needle_re("numbers", NUMBER), doc["input"]).group(0)
    before, after = doc["input"].split(needle)
    # Chunks are joined with single spaces; an empty chunk (depth 0 or 100) leaves a lone space.
    assert before.endswith(" ") and after.startswith(" ")
    assert before.startswith(SINGLE_HEAD.format(t="number") + "October 2015When I talk to a startup") or before.endswith("\n ")


def test_determinism_and_independence(llama3_tokenizer):
    first = docs("niah_single_1", llama3_tokenizer, n=3)
    random.seed(0)
    np.random.seed(1234)
    docs("niah_multikey_2", llama3_tokenizer, n=3)
    random.random()
    again = docs("niah_single_1", llama3_tokenizer, n=3)
    assert first == again


def test_seed_changes_data(llama3_tokenizer):
    assert docs("niah_single_1", llama3_tokenizer, n=2) != docs("niah_single_1", llama3_tokenizer, n=2, seed=7)


def test_length_smaller_than_template_is_refused(llama3_tokenizer):
    with pytest.raises(BudgetError, match="length is too small"):
        docs("niah_single_1", llama3_tokenizer, length=200, n=1)


def test_small_lengths_use_small_steps(llama3_tokenizer):
    """Below 4096, RULER grows noise/needle haystacks by 5 units instead of 25 (visible in the 2024 linear search)."""
    doc = docs("niah_single_1", llama3_tokenizer, length=1024, n=1, profile="2024")[0]
    assert doc["prompt_tokens"] + 128 <= 1024
    assert doc["haystack_size"] % 5 == 0 and doc["haystack_size"] % 25 != 0


def test_legacy_profile_sizes_linearly(llama3_tokenizer):
    for doc in docs("niah_single_1", llama3_tokenizer, n=2, profile="2024"):
        assert doc["haystack_size"] % 25 == 0
        assert doc["prompt_tokens"] + 128 <= 4096


def test_chat_template_is_budgeted(smollm2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    for doc in docs("niah_single_1", str(smollm2), n=3, render_modes=("chat",)):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": doc["input"]}, {"role": "assistant", "content": doc["gen_prefix"]}],
            tokenize=False,
            continue_final_message=True,
        )
        assert len(tokenizer(prompt)["input_ids"]) == doc["prompt_tokens"]
        assert doc["prompt_tokens"] + 128 <= 4096


@pytest.fixture(scope="module")
def essay_sentences(essays_file):
    from pathlib import Path

    from lm_eval_ruler.data.families.haystack import EssaySentences, essay_corpus_from_json, sentence_splitter

    corpus = essay_corpus_from_json(Path(essays_file).read_bytes())
    return corpus, sentence_splitter(), EssaySentences(corpus, sentence_splitter())


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_essay_prefix_sentences_equal_splitting_the_prefix(essay_sentences, data):
    """One Punkt pass over the corpus gives every prefix's sentences, cut anywhere, even past one copy."""
    corpus, splitter, index = essay_sentences
    total = len(corpus.words)
    num_words = data.draw(st.one_of(st.integers(1, 400), st.integers(1, total + 3000)))
    assert index.sentences(num_words) == splitter.split(corpus.text(num_words).strip())


def test_essay_prefix_sentences_at_sentence_ends(essay_sentences):
    """Cuts just before, at and after sentence ends, where Punkt's decisions are most context-dependent."""
    corpus, splitter, index = essay_sentences
    text, _, ends = index._split_prefix(len(corpus.words))
    for end in random.Random(3).sample(ends[:4000], 40):
        word = text[:end].count(" ") + 1
        for num_words in (word - 1, word, word + 1):
            assert index.sentences(num_words) == splitter.split(corpus.text(num_words).strip()), num_words
