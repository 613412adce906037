"""Piece-wise token counting equals whole-prompt tokenization, and is refused where it would not."""

from __future__ import annotations

import pytest

from lm_eval_ruler import DatasetOptions, build_dataset
from lm_eval_ruler._tokenizer import PromptCounter, RenderSettings, load_tokenizer

NIAH = ["niah_single_1", "niah_multikey_2", "niah_multikey_3", "niah_single_2", "niah_multivalue", "niah_multiquery"]


def whole_count(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


@pytest.fixture(params=["llama3", "smollm2"])
def family_tokenizer(request, llama3_tokenizer):
    if request.param == "llama3":
        return llama3_tokenizer
    return str(request.getfixturevalue("smollm2"))


def test_generated_prompts_count_the_same_piecewise_and_whole(family_tokenizer, essays_cache):
    """Hundreds of real prompts per tokenizer family, at lengths that keep the test fast."""
    tokenizer = load_tokenizer(family_tokenizer)
    checked = 0
    for task in NIAH:
        for length, mode in ((1024, "raw"), (2048, "chat")):
            options = DatasetOptions(tokenizer=family_tokenizer, num_samples=60, use_cache=False, render_modes=(mode,))
            result = build_dataset(task, length, options)
            assert result.info["piecewise_counting"] is True
            for doc in result.docs:
                if mode == "raw":
                    prompt = doc["input"] + doc["gen_prefix"]
                else:
                    messages = [{"role": "user", "content": doc["input"]}, {"role": "assistant", "content": doc["gen_prefix"]}]
                    prompt = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
                expected = len(tokenizer(prompt, add_special_tokens=not prompt.startswith(tokenizer.bos_token or "\0"))["input_ids"])
                assert expected == doc["prompt_tokens"]
                checked += 1
    assert checked >= 700


def test_counter_matches_whole_counts_on_arbitrary_text(llama3_tokenizer, essays_file):
    import json

    tokenizer = load_tokenizer(llama3_tokenizer)
    counter = PromptCounter(tokenizer, RenderSettings(("raw",)))
    assert counter.piecewise
    text = json.loads(essays_file.read_text())["text"]
    for start in range(0, 400_000, 4_000):
        window = text[start : start + 3_000]
        assert counter.count_text(window) == whole_count(tokenizer, window)


def _sentencepiece_like_tokenizer(tmp_path):
    """A Metaspace (SentencePiece-style) tokenizer: a space marker is prepended, so pieces do not add up."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    corpus = ["The grass is green. The sky is blue. Here we go. One of the special magic numbers is: 1234567."] * 50
    raw.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>")
    fast.save_pretrained(tmp_path)
    return str(tmp_path)


def test_tokenizers_without_locality_fall_back_to_whole_counting(tmp_path):
    path = _sentencepiece_like_tokenizer(tmp_path)
    tokenizer = load_tokenizer(path)
    counter = PromptCounter(tokenizer, RenderSettings(("raw",)))
    assert counter.piecewise is False
    text = "One of the special magic numbers. The grass is green.\nHere we go, again."
    assert counter.count_text(text) == whole_count(tokenizer, text)
