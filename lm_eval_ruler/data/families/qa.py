"""The two question-answering tasks (RULER ``qa.py``): SQuAD 2.0 dev and HotpotQA dev-distractor.

A sample is one dataset question whose own paragraph(s) are mixed with
distractor paragraphs up to the length budget. What the reference does, and
what is kept here because it decides which prompts are generated:

* DOCS is every paragraph of the file, deduplicated and sorted as strings;
  questions point at paragraphs by their index in DOCS.
* Sample ``i`` asks question ``i`` (the first answerable SQuAD questions, the
  first HotpotQA questions, in file order); the size search asks question 0.
* Distractors: SQuAD takes the rest of the article first and other articles'
  paragraphs only when the article runs out; HotpotQA always keeps its 10
  paragraphs (2 supporting, 8 retrieved distractors) and adds random others.
  Random picks are ``random.sample`` from the global stream over the other
  paragraph ids in id order.
* The documents are shuffled with a fresh ``random.Random(seed)``, so the gold
  paragraph sits at the same position in every sample with the same number of
  documents.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BudgetError, ConfigurationError, DataSourceError
from ..tokens import PromptCounter
from .budget import binary_search_size, fit_sample_to_budget
from .kit import GenerationSettings, Prompt, PromptBuilder, Resources, Rngs, SizedTask, legacy_probe_tokens, make_doc
from .templates import QA_ANSWER_PREFIX, QA_TEMPLATE

#: Documents added or removed per search step and per-sample step-back (``incremental``).
DOC_STEP = 10
DOCUMENT = "Document {i}:\n{document}"

_TASK_OF = {"squad": "qa_squad", "hotpotqa": "qa_hotpot"}
_FORMAT_OF = {
    "squad": "the SQuAD 2.0 dev set (dev-v2.0.json: {'version', 'data': [{'title', 'paragraphs': [{'context', 'qas': [...]}]}]})",
    "hotpotqa": (
        "the HotpotQA dev set, distractor setting (hotpot_dev_distractor_v1.json: a list of "
        "{'_id', 'question', 'answer', 'context': [[title, [sentence, ...]], ...], ...})"
    ),
}


@dataclass(frozen=True)
class QaItem:
    """One question: its gold answers and the DOCS ids of its own and its preferred distractor paragraphs."""

    query: str
    outputs: tuple[str, ...]
    #: The question's own paragraph(s): SQuAD's gold paragraph, HotpotQA's 10 context paragraphs.
    context: tuple[int, ...]
    #: Distractors taken before random ones: the other paragraphs of the SQuAD article (HotpotQA: none).
    more_context: tuple[int, ...] = ()


@dataclass(frozen=True)
class QaCorpus:
    docs: tuple[str, ...]
    items: tuple[QaItem, ...]


# --------------------------------------------------------------------------- loading


class _Malformed(Exception):
    """A structural problem, located by a JSON path such as ``data[3].paragraphs[0].context``."""


def load_corpus(dataset: str, path: Path) -> QaCorpus:
    """Parsed DOCS and questions of ``path``, parsed once per file content (keyed by path, size and mtime)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataSourceError(_problem(dataset, path, f"it cannot be read ({exc})")) from exc
    return _load_corpus(dataset, str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_corpus(dataset: str, path: str, size: int, mtime_ns: int) -> QaCorpus:
    try:
        data = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise DataSourceError(_problem(dataset, Path(path), f"it cannot be read ({exc})")) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataSourceError(_problem(dataset, Path(path), f"it is not valid JSON ({exc}); the file may be truncated")) from exc
    parse = {"squad": _parse_squad, "hotpotqa": _parse_hotpotqa}[dataset]
    try:
        corpus = parse(data)
    except _Malformed as exc:
        raise DataSourceError(_problem(dataset, Path(path), str(exc))) from None
    if not corpus.items:
        what = "answerable questions" if dataset == "squad" else "questions"
        raise DataSourceError(_problem(dataset, Path(path), f"it contains no {what}"))
    return corpus


def _problem(dataset: str, path: Path, what: str) -> str:
    return (
        f"{path} cannot be used for {_TASK_OF[dataset]}: {what}. {_TASK_OF[dataset]} needs {_FORMAT_OF[dataset]}. "
        f"Fetch the pinned file with `lm-eval-ruler data download {dataset}`, or on an offline machine copy it "
        f"over and run `lm-eval-ruler data import PATH`; if you set ruler_{dataset}_file, point it at that file."
    )


_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}


def _kind(value: Any) -> str:
    return "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)


def _field(record: Any, key: str, kind: type, where: str) -> Any:
    """``record[key]``, checked to be an object member of the JSON type ``kind``."""
    if not isinstance(record, dict):
        raise _Malformed(f"{where} is {_kind(record)}, expected an object")
    if key not in record:
        raise _Malformed(f"{where} has no {key!r} field")
    value = record[key]
    if not isinstance(value, kind):
        raise _Malformed(f"{where}.{key} is {_kind(value)}, expected {_JSON_KINDS[kind]}")
    return value


def _parse_squad(data: Any) -> QaCorpus:
    """RULER ``read_squad``: one item per answerable question, with all annotators' answers."""
    if isinstance(data, list):
        raise _Malformed("the top level is a list, expected an object with a 'data' list (is this a HotpotQA file?)")
    articles = _field(data, "data", list, "the top-level object")
    paragraphs: list[tuple[str, list[Any], str]] = []  # context, qas, location
    article_spans: list[tuple[int, int]] = []
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        start = len(paragraphs)
        for p, paragraph in enumerate(_field(article, "paragraphs", list, where)):
            loc = f"{where}.paragraphs[{p}]"
            paragraphs.append((_field(paragraph, "context", str, loc), _field(paragraph, "qas", list, loc), loc))
        article_spans.append((start, len(paragraphs)))

    docs = tuple(sorted({context for context, _, _ in paragraphs}))
    doc_id = {doc: i for i, doc in enumerate(docs)}
    items: list[QaItem] = []
    for start, end in article_spans:
        article_ids = [doc_id[context] for context, _, _ in paragraphs[start:end]]
        for context, qas, loc in paragraphs[start:end]:
            gold = doc_id[context]
            more = tuple(i for i in article_ids if i != gold)
            for q, qa in enumerate(qas):
                where = f"{loc}.qas[{q}]"
                if isinstance(qa, dict) and "is_impossible" not in qa:
                    raise _Malformed(f"{where} has no 'is_impossible' field (SQuAD 1.1 files lack it; SQuAD 2.0 is needed)")
                if _field(qa, "is_impossible", bool, where):
                    continue
                question = _field(qa, "question", str, where)
                answers = _field(qa, "answers", list, where)
                if not answers:
                    raise _Malformed(f"{where} is answerable (is_impossible false) but has no answers")
                texts = tuple(_field(answer, "text", str, f"{where}.answers[{n}]") for n, answer in enumerate(answers))
                items.append(QaItem(question, texts, (gold,), more))
    return QaCorpus(docs, tuple(items))


def _hotpot_paragraphs(example: Any, where: str) -> list[str]:
    """``title\\n`` + the sentences joined with no separator (they carry their own leading spaces)."""
    paragraphs = []
    for c, entry in enumerate(_field(example, "context", list, where)):
        loc = f"{where}.context[{c}]"
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list)):
            raise _Malformed(f"{loc} is not a [title, [sentence, ...]] pair")
        title, sentences = entry
        if not all(isinstance(sentence, str) for sentence in sentences):
            raise _Malformed(f"{loc} has a sentence that is not a string")
        paragraphs.append(f"{title}\n{''.join(sentences)}")
    return paragraphs


def _parse_hotpotqa(data: Any) -> QaCorpus:
    """RULER ``read_hotpotqa``: one item per example; its own 10 paragraphs are always included."""
    if isinstance(data, dict):
        hint = " (is this a SQuAD file?)" if "data" in data else ""
        raise _Malformed(f"the top level is an object, expected a list of examples{hint}")
    if not isinstance(data, list):
        raise _Malformed(f"the top level is {_kind(data)}, expected a list of examples")
    per_example = []
    for e, example in enumerate(data):
        where = f"example [{e}]"
        question = _field(example, "question", str, where)
        if "answer" not in example:
            raise _Malformed(f"{where} has no 'answer' field (HotpotQA test files have no answers; the dev file is needed)")
        answer = _field(example, "answer", str, where)
        per_example.append((question, answer, _hotpot_paragraphs(example, where)))
    docs = tuple(sorted({paragraph for _, _, paragraphs in per_example for paragraph in paragraphs}))
    doc_id = {doc: i for i, doc in enumerate(docs)}
    items = tuple(
        QaItem(question, (answer,), tuple(doc_id[paragraph] for paragraph in paragraphs))
        for question, answer, paragraphs in per_example
    )
    return QaCorpus(docs, items)


# --------------------------------------------------------------------------- generation


def generate(settings: GenerationSettings, counter: PromptCounter, resources: Resources) -> list[dict[str, Any]]:
    dataset = settings.task.params["dataset"]
    path = resources.path(dataset)
    corpus = load_corpus(dataset, path)
    if settings.num_samples > len(corpus.items):
        what = "answerable questions" if dataset == "squad" else "questions"
        raise ConfigurationError(
            f"{settings.describe()}: num_samples={settings.num_samples}, but {path} has only "
            f"{len(corpus.items)} {what} (sample i asks question i). Use num_samples <= {len(corpus.items)} "
            "(--metadata num_samples=N), or the full official file."
        )
    rngs = Rngs(settings.seed)
    builder = PromptBuilder(QA_TEMPLATE, QA_ANSWER_PREFIX, settings.model_template)
    docs = corpus.docs
    legacy_order = list(range(len(docs)))  # 2024 only: DOCS as RULER's in-place shuffles left it
    # RULER also seeds np.random here, but qa.py never draws from it; all draws are rngs.py.sample.

    @functools.lru_cache(maxsize=2)
    def others(index: int) -> list[int]:
        """Ids of every paragraph that is neither the question's own nor a preferred distractor, in id order."""
        item = corpus.items[index]
        taken = set(item.context) | set(item.more_context)
        return [i for i in range(len(docs)) if i not in taken]

    def build(index: int, num_docs: int) -> Prompt:
        item = corpus.items[index]
        gold, more = list(item.context), list(item.more_context)
        if num_docs < len(docs):
            if num_docs < len(gold):
                raise BudgetError(
                    f"{settings.describe()}: question {index} needs its {len(gold)} own paragraphs, but fewer "
                    f"documents ({num_docs}) fit the length budget. Use a longer length, or a shorter chat "
                    "template or system instruction."
                )
            if num_docs - len(gold) > len(more):
                ids = gold + more + rngs.py.sample(others(index), num_docs - len(gold) - len(more))
            else:
                ids = gold + rngs.py.sample(more, num_docs - len(gold))
            rngs.fixed_shuffle(ids)  # the permutation depends only on len(ids), as for RULER's list of texts
        elif settings.legacy:
            # 2024 used all DOCS and shuffled RULER's DOCS list itself, so every such prompt applies the
            # fixed permutation once more. That order is reproduced; that the mutated list also corrupted
            # later id lookups (gold paragraphs swapped for others) is not.
            rngs.fixed_shuffle(legacy_order)
            ids = list(legacy_order)
        else:
            ids = (list(range(len(docs))) * -(-num_docs // len(docs)))[:num_docs]
            rngs.fixed_shuffle(ids)
        # "\n\n".join(DOCUMENT.format(...)) as headers and paragraphs, so each paragraph's count is reused.
        parts: list[str] = []
        for n, i in enumerate(ids, 1):
            parts += [("\n\n" if n > 1 else "") + DOCUMENT.format(i=n, document=""), docs[i]]
        context = counter.join(parts, "")
        user, prefix = builder.build(context=context.text, query=item.query)
        own = set(gold)
        positions = [n for n, i in enumerate(ids, 1) if i in own]
        return Prompt(user, prefix, list(item.outputs), {"gold_documents": positions}, context)

    sizing = SizedTask(step=DOC_STEP, estimate_step=DOC_STEP, cap=len(docs))
    sizing.legacy_answer = lambda prompt: " " + str(prompt.outputs)
    size = _search_size(settings, counter, lambda n: build(0, n), sizing)

    out = []
    for index in range(settings.num_samples):
        # Overflow steps back 10 documents with a fresh draw. At 10 or fewer RULER redraws forever (it
        # terminates only if some draw fits); here that is a BudgetError, reachable only far below 4k.
        fitted = fit_sample_to_budget(
            functools.partial(build, index),
            functools.partial(_tokens, counter),
            size,
            DOC_STEP,
            settings.prompt_budget,
            settings.task.max_gen_toks,
            settings.describe(),
        )
        out.append(make_doc(index, fitted.sample, fitted.prompt_tokens, fitted.size, settings))
    return out


def _search_size(settings: GenerationSettings, counter: PromptCounter, probe: Callable[[int], Prompt], sizing: SizedTask) -> int:
    """The number of documents for the whole task, found with question 0.

    The same two searches as ``search_and_generate`` (QA needs its own loop because each sample asks a
    different question): head's binary search, or the 2024 linear search, whose QA version caps at the
    number of DOCS *after* stepping (a fitting probe at n with n + 10 > len(DOCS) gives len(DOCS), unprobed).
    """
    gen = settings.task.max_gen_toks
    if not settings.legacy:
        estimate = probe(sizing.estimate_step)
        per_doc = _tokens(counter, estimate) / sizing.estimate_step
        upper = max(int(settings.length / per_doc * 3), sizing.step * 2)
        return binary_search_size(lambda n: _tokens(counter, probe(n)) + gen <= settings.length, sizing.step, upper, sizing.step)
    num_docs, total = sizing.step, 0
    while total + gen < settings.length:
        total = legacy_probe_tokens(counter, probe(num_docs), sizing)
        if total + gen > settings.length:
            num_docs -= sizing.step
            break
        num_docs += sizing.step
        if sizing.cap is not None and num_docs > sizing.cap:
            num_docs = sizing.cap
            break
    # RULER would go on with 0 documents and loop forever; the per-sample fit reports the budget error instead.
    return max(num_docs, sizing.step)


def _tokens(counter: PromptCounter, prompt: Prompt) -> int:
    return counter.count(prompt.user, prompt.answer_prefix, prompt.context)
