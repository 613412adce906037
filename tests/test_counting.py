"""Piece-wise token counting equals whole-prompt tokenization, and is refused where it would not."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_eval_ruler import DatasetOptions, build_dataset
from lm_eval_ruler.data.tokens import PromptCounter, RenderSettings, load_tokenizer

NIAH = ["niah_single_1", "niah_multikey_2", "niah_multikey_3", "niah_single_2", "niah_multivalue", "niah_multiquery"]


def whole_count(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


@pytest.fixture(params=["llama3", "smollm2"])
def family_tokenizer(request, llama3_tokenizer):
    if request.param == "llama3":
        return llama3_tokenizer
    return str(request.getfixturevalue("smollm2"))


def test_generated_prompts_count_the_same_piecewise_and_whole(family_tokenizer, essays_cache):
    """Over a thousand real prompts per tokenizer family (with the next test), at lengths that keep the test fast."""
    tokenizer = load_tokenizer(family_tokenizer)
    checked = 0
    for task in NIAH:
        for length, mode in ((1024, "raw"), (2048, "chat")):
            options = DatasetOptions(tokenizer=family_tokenizer, num_samples=90, use_cache=False, render_modes=(mode,))
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
    assert checked == len(NIAH) * 2 * 90


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


OTHER_FAMILIES = ["vt", "cwe", "fwe", "qa_squad", "niah_single_3", "niah_multikey_1"]
QA_FIXTURES = Path(__file__).parent / "fixtures"


def test_every_family_counts_the_same_piecewise_and_whole(family_tokenizer, essays_cache):
    """The counted-context paths of VT, CWE, FWE and QA (and the remaining NIAH tasks) against whole counts."""
    whole = PromptCounter(load_tokenizer(family_tokenizer), RenderSettings(("raw", "chat")), piecewise=False)
    checked = 0
    for task in OTHER_FAMILIES:
        for length in (2048, 3072):
            options = DatasetOptions(
                tokenizer=family_tokenizer,
                num_samples=20,
                use_cache=False,
                data_files=(("squad", str(QA_FIXTURES / "squad_dev_mini.json")),),
            )
            result = build_dataset(task, length, options)
            assert result.info["piecewise_counting"] is True
            for doc in result.docs:
                assert whole.count(doc["input"], doc["gen_prefix"]) == doc["prompt_tokens"], (task, length, doc["index"])
                checked += 1
    assert checked == len(OTHER_FAMILIES) * 2 * 20


_ITEM = st.one_of(
    st.sampled_from(["", " ", "\n", "a", "The grass is green.", "VAR ABCDE = VAR FGHIJ ", "1.", "...", "x\n", " y", "Document 3:\n"]),
    st.text(alphabet="ab .,:\n-1", min_size=0, max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(_ITEM, min_size=1, max_size=12), separator=st.sampled_from([" ", "\n", "\n\n", "", " - "]))
def test_joined_counts_equal_whole_counts_for_any_items(llama3_tokenizer, items, separator):
    """Whatever the items (empty, space-edged, newline-edged) and separator, a joined count is exact in context."""
    tokenizer = load_tokenizer(llama3_tokenizer)
    counter = PromptCounter(tokenizer, RenderSettings(("raw",)))
    context = counter.join(items, separator)
    assert context.text == separator.join(items)
    for before, after in (("", ""), ("Text:\n", "\nWhat is it?"), ("go ", " now"), ("x", "y")):
        prompt = before + context.text + after
        expected = len(tokenizer(prompt)["input_ids"])
        counted = counter._count_around(prompt, context)
        if counted is not None:
            assert counted + counter._added == expected
        assert counter.count_text(prompt, context) == expected


def test_a_locality_violation_found_by_verification_regenerates_with_whole_counts(llama3_tokenizer, monkeypatch):
    """Poisoned piece counts are caught by whole-prompt verification; the dataset is then counted whole."""
    from lm_eval_ruler.data import tokens

    options = DatasetOptions(tokenizer=llama3_tokenizer, num_samples=4, use_cache=False, render_modes=("raw",))
    honest = build_dataset("niah_single_1", 1024, options)
    tokenizer = load_tokenizer(llama3_tokenizer, False, None)  # the object build_dataset uses
    monkeypatch.setitem(tokens._STATES, tokenizer, tokens._TokenizerState())
    state = tokens._state_of(tokenizer)
    state.regex_pieces[" grass"] = 40  # a wrong count for a piece every noise haystack contains
    poisoned = build_dataset("niah_single_1", 1024, options)
    assert poisoned.info["piecewise_counting"] is False
    assert poisoned.docs == honest.docs


@settings(max_examples=500, deadline=None)
@given(texts=st.lists(st.text(alphabet="ab Z9-._:\n\t\x1c é1", max_size=14), min_size=1, max_size=6))
def test_vectorized_cutter_equals_the_boundary_regex(texts):
    """The numpy cutter (ASCII texts, batched) gives exactly the regex's pieces, text by text."""
    from lm_eval_ruler.data.tokens import _PIECE_BOUNDARY, cut_pieces

    pieces, owners = cut_pieces(texts)
    cut = [[] for _ in texts]
    for piece, owner in zip(pieces, owners.tolist()):
        cut[owner].append(piece)
    assert cut == [[piece for piece in _PIECE_BOUNDARY.split(text) if piece] for text in texts]
