"""The evaluated model's tokenizer, and the prompt exactly as lm-eval sends it.

RULER's length budget counts the *final* prompt (chat template, task text and
answer prefix) with the model's own tokenizer. lm-eval builds that string
itself (``Task.fewshot_context``) and the backend then encodes it, adding a
BOS unless the string already starts with one. ``PromptCounter`` reproduces
both steps so that a generated prompt plus ``max_gen_toks`` never exceeds the
task length and no backend ever has to truncate.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigurationError, TokenizerError

RenderMode = Literal["raw", "chat"]
logger = logging.getLogger(__name__)

#: Where prompts are cut for piece-wise counting: before a single space
#: between two non-spaces, after a lone newline that follows text, before a
#: hyphen that follows a letter or digit, after a hyphen before a digit,
#: between a letter and a digit, and between a digit and punctuation. Regex
#: pre-tokenizers (Llama-3, GPT-2, Qwen) start a new pre-token at these
#: places, and BPE never merges across pre-tokens, so the pieces' counts add
#: up to the whole prompt's count. Word-sized pieces repeat across samples
#: (essay text, noise, CWE's numbered list, FWE's Zipf words, the halves of
#: NIAH's adjective-noun keys, the letter and digit runs of UUIDs), so most
#: are memo hits. Each rule looks at most two characters either side, and
#: every single space between non-spaces is a boundary, so texts are cut at
#: spaces with ``str.split`` and only unseen words are cut with the regex.
_PIECE_BOUNDARY = re.compile(
    r"(?<=\S)(?= \S)|(?<=\S\n)(?=\S)|(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])"
    r"|(?<=[^\W_])(?=-)|(?<=-)(?=\d)|(?<=\d)(?=[^\w\s])"
)
#: A space that is not between two non-spaces: such a text is not cut at every space.
_LOOSE_SPACE = re.compile(r" (?!\S)|(?<!\S) ")
#: ASCII whitespace other than space and newline (``re``'s ``\s`` includes \x1c-\x1f).
_RARE_ASCII_SPACE = re.compile(r"[\t\r\x0b\x0c\x1c-\x1f]")


def _spaces_are_boundaries(text: str) -> bool:
    """Every space of ``text`` sits between two non-spaces (string tests for ASCII, the regex otherwise)."""
    if not text or text[0] == " " or text[-1] == " ":
        return False
    if "  " in text or " \n" in text or "\n " in text:
        return False
    if text.isascii():
        return _RARE_ASCII_SPACE.search(text) is None
    return _LOOSE_SPACE.search(text) is None


def _ascii_classes() -> dict[str, np.ndarray]:
    """Per-byte character classes for the vectorized cutter, taken from ``re`` itself so they agree with the regex."""
    chars = [chr(code) for code in range(128)]

    def table(pattern: str) -> np.ndarray:
        compiled = re.compile(pattern)
        return np.array([bool(compiled.fullmatch(c)) for c in chars] + [False] * 128)

    classes = {
        "nonspace": table(r"\S"),
        "letter": table(r"[^\W\d_]"),
        "digit": table(r"\d"),
        "alnum": table(r"[^\W_]"),
        "punct": table(r"[^\w\s]"),
        "space": table(" "),
        "newline": table("\n"),
        "hyphen": table("-"),
    }
    for flags in classes.values():
        flags[0] = False  # the separator between texts: like the end of a string, it satisfies no lookaround
    return classes


_CLASSES = _ascii_classes()


def cut_pieces(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The non-empty pieces of ``_PIECE_BOUNDARY.split`` of every text, and for each piece its text's index.

    ASCII texts are cut together with numpy from per-character classes (the
    regex's lookarounds cost a fifth of a microsecond per character); other
    texts go through the regex.
    """
    plain = [index for index, text in enumerate(texts) if text.isascii() and "\0" not in text]
    pieces, owners = _cut_ascii([texts[index] for index in plain])
    owners = np.asarray(plain, dtype=np.int64)[owners] if plain else owners
    if len(plain) == len(texts):
        return pieces, owners
    chosen = set(plain)
    extra_pieces: list[str] = []
    extra_owners: list[int] = []
    for index, text in enumerate(texts):
        if index not in chosen:
            split = [piece for piece in _PIECE_BOUNDARY.split(text) if piece]
            extra_pieces += split
            extra_owners += [index] * len(split)
    return pieces + extra_pieces, np.concatenate((owners, np.array(extra_owners, dtype=np.int64)))


def _cut_ascii(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    joined = "\0".join(texts)
    if not joined.strip("\0"):
        return [], np.zeros(0, dtype=np.int64)
    codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    c = {name: flags[codes] for name, flags in _CLASSES.items()}
    before, after = slice(None, -1), slice(1, None)  # chars p-1 and p for boundary positions p = 1..n-1
    boundary = (
        (c["letter"][before] & c["digit"][after])
        | (c["digit"][before] & c["letter"][after])
        | (c["alnum"][before] & c["hyphen"][after])
        | (c["hyphen"][before] & c["digit"][after])
        | (c["digit"][before] & c["punct"][after])
    )
    # Space rule: s[p-1] non-space, s[p] == " ", s[p+1] non-space.
    boundary[:-1] |= c["nonspace"][:-2] & c["space"][1:-1] & c["nonspace"][2:]
    # Newline rule: s[p-2] non-space, s[p-1] == "\n", s[p] non-space.
    boundary[1:] |= c["nonspace"][:-2] & c["newline"][1:-1] & c["nonspace"][2:]
    separators = codes == 0
    boundary |= separators[before] | separators[after]
    starts = np.concatenate(([0], np.flatnonzero(boundary) + 1))
    ends = np.concatenate((starts[1:], [len(codes)]))
    keep = ~separators[starts]
    starts, ends = starts[keep], ends[keep]
    # An empty text has no piece here (the regex gives it one empty piece): either way it counts 0 tokens.
    return [joined[a:b] for a, b in zip(starts.tolist(), ends.tolist())], np.cumsum(separators)[starts]


#: After the first prompts of a process, whole-prompt verification is
#: rationed to about this fraction of the tokens counted piece-wise: a safety
#: net against a tokenizer for which the locality probe passed but real
#: prompts disagree, at a small fraction of one tokenization pass.
VERIFY_FIRST = 3
VERIFY_FRACTION = 1 / 256
_MEMO_LIMIT = 400_000
#: Texts longer than this are not memo keys (a fallback count of a whole prompt must not be kept).
_MEMO_TEXT_LIMIT = 4096
#: How far into a context the first and last stable piece boundaries are looked for.
_EDGE_WINDOW = 512


@dataclass(frozen=True)
class CountedText:
    """A context text with the summed token counts of its pieces, known before it is placed.

    Generators build haystacks from reusable parts (sentences, noise lines,
    list items) and add those parts' memoized counts, so a 128K-token prompt
    is counted without being split or tokenized; only its edges, where the
    template and chat wrapper meet it, are counted from text.
    """

    text: str
    tokens: int


class _TokenizerState:
    """Per-tokenizer memo and verification budget, shared by every counter of a process."""

    def __init__(self) -> None:
        #: Text or word -> summed counts of its regex pieces.
        self.pieces: dict[str, int] = {}
        #: Word -> summed counts of the regex pieces of the word after a space.
        self.words: dict[str, int] = {}
        #: Regex piece -> its token count.
        self.regex_pieces: dict[str, int] = {}
        #: Separator -> item -> tokens of the item with the separator attached (None: not reusable).
        self.attached: dict[str, dict[str, int | None]] = {" ": {}, "\n": {}}
        #: Item -> (head, interior piece tokens, tail) for separators without a fast path.
        self.spans: dict[str, tuple[str, int, str] | None] = {}
        self.counted_tokens = 0
        self.verified_tokens = 0
        self.verified_prompts = 0

    def due_for_verification(self, tokens: int) -> bool:
        self.counted_tokens += tokens
        return self.verified_prompts < VERIFY_FIRST or self.verified_tokens < self.counted_tokens * VERIFY_FRACTION


#: Keyed weakly, so that a test session's many tokenizers are not kept alive by their memos.
_STATES: weakref.WeakKeyDictionary[Any, _TokenizerState] = weakref.WeakKeyDictionary()


def _clean(item: str) -> bool:
    """Non-empty with non-space ends: such an item meets a space or newline separator at a piece boundary."""
    return bool(item) and not item[0].isspace() and not item[-1].isspace()


def _state_of(tokenizer: Any) -> _TokenizerState:
    try:
        state = _STATES.get(tokenizer)
        if state is None:
            state = _STATES[tokenizer] = _TokenizerState()
        return state
    except TypeError:  # not weakly referenceable or not hashable: a private state
        return _TokenizerState()


class LocalityViolation(RuntimeError):
    """Piece-wise and whole-prompt counts disagreed; generation restarts with whole counting."""


_TOKENIZER_KEYS = ("tokenizer", "pretrained", "model")


def resolve_tokenizer_name(metadata: Mapping[str, Any]) -> str:
    """Which tokenizer a run uses: ``tokenizer``, else ``pretrained``, else ``model``.

    On the lm-eval CLI every ``--model_args`` key reaches the task metadata, so
    the model being evaluated normally names its own tokenizer.
    """
    for key in _TOKENIZER_KEYS:
        value = metadata.get(key)
        if value:
            return str(value)
    raise TokenizerError(
        "RULER prompts are sized with the evaluated model's tokenizer, but none was given. "
        "Pass it in --model_args (pretrained=<model> or tokenizer=<name or path>), or with "
        "--metadata tokenizer=<name or path> (the Python API needs TaskManager(metadata={'tokenizer': ...}))."
    )


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """Load a Hugging Face tokenizer once per process.

    ``trust_remote_code`` is off unless the user opts in: a tokenizer name in a
    benchmark config should never be able to run arbitrary code by default.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise TokenizerError("transformers is required to load the tokenizer: pip install transformers") from exc
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as exc:
        raise TokenizerError(
            f"could not load tokenizer {name!r}: {exc}. Pass a local path or a reachable model id via "
            "--model_args tokenizer=... (or --metadata tokenizer=...); for tokenizers that need custom "
            "code add trust_remote_code=True."
        ) from exc


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what determines token counts: vocabulary, merges, normalizer, specials.

    Two checkpoints that share a tokenizer under different names get the same
    fingerprint, and a retrained tokenizer under the same name gets a new one.
    """
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    specials = {
        "class": type(tokenizer).__name__,
        "bos": tokenizer.bos_token,
        "eos": tokenizer.eos_token,
        "added": sorted(str(t) for t in tokenizer.all_special_tokens),
        "adds": _special_tokens_added(tokenizer),
    }
    digest.update(json.dumps(specials, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def chat_template_text(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return template.get("default")
    return template


def text_fingerprint(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def _special_tokens_added(tokenizer: Any, add_bos_token: bool | None = None) -> int:
    kwargs = {} if add_bos_token is None else {"add_special_tokens": add_bos_token}
    with_specials = len(tokenizer("hello world", **kwargs)["input_ids"])
    without = len(tokenizer("hello world", add_special_tokens=False)["input_ids"])
    return max(0, with_specials - without)


@dataclass(frozen=True)
class RenderSettings:
    """How lm-eval will render prompts in this run.

    ``modes`` holds ``raw`` (no ``--apply_chat_template``), ``chat``, or both
    when the run's choice is unknown at generation time; prompts then fit
    whichever rendering is longer.
    """

    modes: tuple[RenderMode, ...]
    system_instruction: str | None = None
    add_bos_token: bool | None = None
    chat_template_args: tuple[tuple[str, Any], ...] = ()


#: Stand-ins for a user text and an answer prefix, to split the chat rendering around them.
_SENTINEL_USER = "RULER_USER_TEXT_7f3a"
_SENTINEL_PREFIX = "RULER_ANSWER_PREFIX_7f3a"


class PromptCounter:
    """Counts the tokens of the final prompt for a user text and an answer prefix."""

    def __init__(self, tokenizer: Any, settings: RenderSettings, piecewise: bool = True) -> None:
        if "chat" in settings.modes and not chat_template_text(tokenizer):
            if settings.modes == ("chat",):
                raise ConfigurationError(
                    "--apply_chat_template was requested but the tokenizer has no chat template; "
                    "drop --apply_chat_template, or use --metadata model_template=<NVIDIA template name>"
                )
            settings = RenderSettings(("raw",), settings.system_instruction, settings.add_bos_token, settings.chat_template_args)
        self.tokenizer = tokenizer
        self.settings = settings
        self._bos = tokenizer.bos_token
        self._added = _special_tokens_added(tokenizer, settings.add_bos_token)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            self._encode = lambda text: len(backend.encode(text, add_special_tokens=False))
            self._encode_many = lambda texts: [len(e) for e in backend.encode_batch(texts, add_special_tokens=False)]
        else:
            self._encode = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
            self._encode_many = lambda texts: [self._encode(text) for text in texts]
        self._state = _state_of(tokenizer)
        self.piecewise = piecewise and self._locality_holds()

    def render(self, user: str, answer_prefix: str, mode: RenderMode) -> str:
        """The prompt string lm-eval builds for this doc in the given mode."""
        if mode == "raw":
            head = self.settings.system_instruction or ""
            needs_space = bool(user) and not (user[-1].isspace() or answer_prefix[:1].isspace())
            return head + user + (" " if needs_space else "") + answer_prefix
        messages = []
        if self.settings.system_instruction:
            messages.append({"role": "system", "content": self.settings.system_instruction})
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": answer_prefix})
        return self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=False,
            continue_final_message=True,
            **dict(self.settings.chat_template_args),
        )

    def chat_wrapper(self) -> tuple[str, str]:
        """What lm-eval's chat rendering puts around a doc's user text: ``(before, after)``.

        Rendered with ``render`` itself (sentinel user text and answer prefix),
        so it is by construction the wrapper of the prompts lm-eval sends:
        ``before`` holds BOS, the system turn (the run's system instruction or
        one the template injects) and the user header; ``after`` the end of
        turn and the assistant header, up to the answer prefix.
        """
        rendered = self.render(_SENTINEL_USER, _SENTINEL_PREFIX, "chat")
        if rendered.count(_SENTINEL_USER) != 1 or not rendered.endswith(_SENTINEL_PREFIX):
            raise ConfigurationError(
                "cannot locate the user message in this tokenizer's chat rendering, so RULER's in-context examples "
                "cannot be nested in it as NVIDIA does; add --metadata ruler_example_rendering=inline"
            )
        before, rest = rendered.split(_SENTINEL_USER)
        return before, rest[: -len(_SENTINEL_PREFIX)]

    def count_text(self, text: str, context: CountedText | None = None) -> int:
        """Tokens the backend feeds the model for ``text`` (BOS included when it adds one).

        ``context``, when given, is a part of ``text`` whose piece counts are
        already summed; only the text around it is split and counted.
        """
        added = 0 if (self._bos and text.startswith(self._bos)) else self._added
        if not self.piecewise:
            return self._encode(text) + added
        count = self._count_around(text, context) if context is not None else None
        if count is None:
            count = self.piece_tokens(text)
        if self._state.due_for_verification(count):
            whole = self._encode(text)
            self._state.verified_tokens += whole
            self._state.verified_prompts += 1
            if whole != count:
                self.piecewise = False
                logger.warning("piece-wise token counts disagree with whole-prompt counts for this tokenizer; counting whole prompts")
                raise LocalityViolation(f"piece-wise count {count} != whole count {whole}")
        return count + added

    def piece_tokens(self, text: str) -> int:
        """Sum of memoized piece counts: haystack pieces repeat across samples, so most are free."""
        return self.piece_tokens_many([text])[0]

    def piece_tokens_many(self, texts: Sequence[str]) -> list[int]:
        """``piece_tokens`` of each text, from memoized words; unseen words are cut and tokenized in one batch.

        A text whose spaces all sit between non-spaces is cut at every space:
        its first word and each following word with its space are memo keys.
        """
        memo, words = self._state.pieces, self._state.words
        plan: list[tuple[str, list[str]] | int | None] = []
        unseen_plain: set[str] = set()
        unseen_spaced: set[str] = set()
        for text in texts:
            if not _spaces_are_boundaries(text):
                if len(text) > _MEMO_TEXT_LIMIT:
                    # A whole prompt that cannot be cut at its spaces: counted, never kept in the memo.
                    plan.append(self._regex_piece_sums([text])[0])
                    continue
                plan.append(None)
                if text not in memo:
                    unseen_plain.add(text)
                continue
            first, *rest = text.split(" ")
            plan.append((first, rest))
            if first not in memo:
                unseen_plain.add(first)
            for word in rest:
                if word not in words:
                    unseen_spaced.add(word)
        if unseen_plain or unseen_spaced:
            full = len(memo) + len(unseen_plain) > _MEMO_LIMIT or len(words) + len(unseen_spaced) > _MEMO_LIMIT
            if full and (memo or words):
                memo.clear()
                words.clear()
                return self.piece_tokens_many(texts)
            plain, spaced = list(unseen_plain), list(unseen_spaced)
            counts = self._regex_piece_sums(plain + [" " + word for word in spaced])
            memo.update(zip(plain, counts))
            words.update(zip(spaced, counts[len(plain) :]))
        lookup = words.__getitem__
        return [
            memo[text] if entry is None else entry if isinstance(entry, int) else memo[entry[0]] + sum(map(lookup, entry[1]))
            for text, entry in zip(texts, plan)
        ]

    def _regex_piece_sums(self, texts: Sequence[str]) -> list[int]:
        """Sum of token counts of each text's pieces, tokenizing unseen pieces in one batch."""
        pieces, owners = cut_pieces(texts)
        counts = self._state.regex_pieces
        missing = {piece for piece in pieces if piece not in counts}
        if missing:
            if len(counts) + len(missing) > _MEMO_LIMIT:
                counts.clear()
                missing = set(pieces)
            unseen = list(missing)
            counts.update(zip(unseen, self._encode_many(unseen)))
        weights = np.fromiter(map(counts.__getitem__, pieces), dtype=np.int64, count=len(pieces))
        return np.bincount(owners, weights=weights, minlength=len(texts)).astype(np.int64).tolist()

    def join(self, items: Sequence[str], separator: str) -> CountedText:
        """``separator.join(items)`` with its piece count summed from per-item memos.

        With a space or newline separator, an item that starts and ends with
        a non-space character meets its neighbours at a piece boundary, so
        its count (with the separator attached where the boundary regex puts
        it: before a space, after a newline) is reused from the memo. If some
        item is not like that, items are merged across the junctions that
        are not boundaries and the merged chunks counted. Other separators
        go through ``_join_spans``.
        """
        text = separator.join(items)
        if not self.piecewise or not items:
            return CountedText(text, 0)
        if separator not in self._state.attached:
            return CountedText(text, self._join_spans(items, separator))
        space = separator == " "
        lone, attached = (items[0], items[1:]) if space else (items[-1], items[:-1])
        counts = self.attached_tokens(attached, separator)
        if _clean(lone) and None not in counts:
            return CountedText(text, self.piece_tokens(lone) + sum(counts))  # type: ignore[arg-type]
        chunks: list[str] = []
        pending = items[0]
        for item in items[1:]:
            if pending and item and not pending[-1].isspace() and not item[0].isspace():
                chunks.append(pending)
                pending = item
            else:
                pending = pending + separator + item
        chunks.append(pending)
        lone = chunks.pop(0) if space else chunks.pop()
        attached_chunks = [separator + chunk if space else chunk + separator for chunk in chunks]
        return CountedText(text, sum(self.piece_tokens_many([lone, *attached_chunks])))

    def attached_tokens(self, items: Sequence[str], separator: str) -> list[int | None]:
        """Piece counts of each item with a space before it or a newline after it, memoized per item.

        None for an item that is empty or starts or ends with whitespace: its
        junctions may not be piece boundaries, so it has no reusable count.
        """
        memo = self._state.attached[separator]
        unseen = list({item for item in items if item not in memo})
        if unseen:
            if len(memo) + len(unseen) > _MEMO_LIMIT:
                memo.clear()
                unseen = list(set(items))
            clean = [item for item in unseen if _clean(item)]
            attached = [separator + item if separator == " " else item + separator for item in clean]
            memo.update(zip(clean, self.piece_tokens_many(attached)))
            memo.update((item, None) for item in unseen if not _clean(item))
        return list(map(memo.__getitem__, items))

    def _join_spans(self, items: Sequence[str], separator: str) -> int:
        """Any separator: each item's interior pieces are stable, only the text between them is recounted."""
        spans = self._state.spans
        if len(spans) > _MEMO_LIMIT:
            spans.clear()
        for item in set(items):
            if item not in spans:
                spans[item] = self._span(item)
        junctions: list[str] = []
        interior = 0
        pending = ""
        for index, item in enumerate(items):
            if index:
                pending += separator
            span = spans[item]
            if span is None:
                pending += item
                continue
            head, inner, tail = span
            junctions.append(pending + head)
            interior += inner
            pending = tail
        junctions.append(pending)
        return interior + sum(self.piece_tokens_many(junctions))

    def _span(self, text: str) -> tuple[str, int, str] | None:
        """(text before its first stable boundary, pieces between, text after its last), if it has two."""
        boundaries = [match.start() for match in _PIECE_BOUNDARY.finditer(text, 2, len(text)) if match.start() <= len(text) - 2]
        if not boundaries:
            return None
        head, tail = text[: boundaries[0]], text[boundaries[-1] :]
        whole, head_tokens, tail_tokens = self.piece_tokens_many([text, head, tail])
        return head, whole - head_tokens - tail_tokens, tail

    def _count_around(self, text: str, context: CountedText) -> int | None:
        """Count ``text`` from the context's known sum and the pieces around it.

        Boundaries of the piece regex depend on two characters either side, so
        those at least two characters inside the context are the same in the
        prompt as in the context alone: the context's first and last pieces
        are recounted together with the text before and after them.
        """
        start = text.find(context.text)
        if start < 0 or len(context.text) < 8:
            return None
        end = start + len(context.text)
        first = _PIECE_BOUNDARY.search(text, start + 2, min(end, start + _EDGE_WINDOW))
        if first is None or first.start() > end - 2:
            return None
        cut_last = None
        for match in _PIECE_BOUNDARY.finditer(text, max(first.start(), end - _EDGE_WINDOW), end - 1):
            cut_last = match.start()
        if cut_last is None:
            return None
        cut_first = first.start()
        inner = context.tokens - self.piece_tokens(text[start:cut_first]) - self.piece_tokens(text[cut_last:end])
        return self.piece_tokens(text[:cut_first]) + inner + self.piece_tokens(text[cut_last:])

    def _locality_holds(self) -> bool:
        """Probe, before trusting piece-wise counts, that this tokenizer splits at our boundaries.

        SentencePiece tokenizers that prepend a space marker, normalizers that
        rewrite text across boundaries and added tokens that swallow spaces all
        break additivity; the probe text exercises those junctions.
        """
        probe = (
            "Some special magic numbers are hidden. One of the special magic numbers for glossy-contact lens is: 1234567.\n"
            "The grass is green. The sky is blue. Here we go.\nVAR QWERT = 51090\nVAR ASDFG = VAR QWERT \n"
            "Document 1:\nWhat's (really) 3.14, \"quoted\"? Yes: no; it isn't! 1. apple 2. über-naïve 3. 東京\n\n"
            "  two  spaces, tabs\tand dots ... f5d1e7a2-9b3c-4d0e-8f1a-2b3c4d5e6f70. Answer: They are:  ABC DEF\n"
        )
        texts = [probe]
        if chat_template_text(self.tokenizer) and "chat" in self.settings.modes:
            texts.append(self.render(probe, " The special magic number for x is", "chat"))
        try:
            return all(sum(self._encode_many(_PIECE_BOUNDARY.split(t))) == self._encode(t) for t in texts)
        except Exception:  # noqa: BLE001 - any failure means: do not take the fast path
            return False

    def count(self, user: str, answer_prefix: str, context: CountedText | None = None) -> int:
        """Prompt tokens under every rendering this run may use (the largest)."""
        return max(self.count_text(self.render(user, answer_prefix, mode), context) for mode in self.settings.modes)

    def count_plain(self, text: str) -> int:
        """Tokens of a bare text fragment, as RULER's own probes count them (no specials)."""
        return self._encode(text)
