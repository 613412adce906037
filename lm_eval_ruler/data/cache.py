"""The plugin's cache root, and the generated datasets kept under it, keyed by everything that determines them.

``cache_root()`` is the one place that decides where the cache lives
(``--cache-dir`` / ``ruler_cache_dir`` > ``$LM_EVAL_RULER_CACHE`` >
``$XDG_CACHE_HOME/lm-eval-ruler`` > ``~/.cache/lm-eval-ruler``); the pinned
data files live in ``<root>/data`` (``sources``), generated datasets in
``<root>/datasets`` (``datasets_dir``, ``DatasetCache.at``).

A cache entry is one file: a JSON header line (key, doc count, build info),
then per doc a JSON line holding its small fields and the byte lengths of its
long text fields, each of which follows as raw UTF-8, and a JSON trailer line
with the doc count and the sha256 of everything between header and trailer. Long
texts are stored raw because a 128K prompt is hundreds of kilobytes with a
newline every sentence: escaping them as JSON strings, or compressing them,
made a 128K x 500 load take three seconds instead of under one. It is
written to a temporary file and atomically renamed, so readers never see a
partial entry and concurrent writers of the same key each leave a complete
one; on read the trailer is checked and a bad entry is deleted and
regenerated. JSON and text, never pickle: a cache file must not be able to
run code.

Listing, selecting and verifying entries never stops at a bad one (an empty
file left by a full disk, a foreign file, an old format): it is reported as a
bad entry next to the good ones, so one broken file cannot hide a cache or
block cleaning it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .._files import write_atomically

logger = logging.getLogger(__name__)
#: Environment variable naming the cache root (a sweep sets it for its cells).
CACHE_ENV = "LM_EVAL_RULER_CACHE"
FORMAT = 2
SUFFIX = ".ruler"
#: String fields at least this long are stored raw after their doc's line.
_RAW_MIN_CHARS = 1024
_RAW_FIELDS = "__raw__"
_TRAILER = "__end__"
#: Entries of cache format 1, which nothing reads any more: listed as bad, removed by ``clear``.
_FORMAT1_GLOB = "*/*.jsonl.gz"
_MISSING = object()


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The plugin's cache root: ``cache_dir`` > ``$LM_EVAL_RULER_CACHE`` > ``$XDG_CACHE_HOME/lm-eval-ruler`` > ``~/.cache/lm-eval-ruler``.

    Nothing is created here; writers create what they need.
    """
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lm-eval-ruler"


def datasets_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache root>/datasets``, where generated datasets live."""
    return cache_root(cache_dir) / "datasets"


def cache_key(determinants: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(determinants, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One file of the cache, as its header describes it.

    A bad entry (unreadable, empty, not a cache header, another format) has
    ``error`` set, ``info`` empty and ``count`` 0; ``mtime`` is the file's
    modification time (seconds since the epoch) for either.
    """

    key: str
    path: Path
    info: dict[str, Any]
    count: int
    size: int
    error: str | None = None
    mtime: float = 0.0

    @property
    def bad(self) -> bool:
        return self.error is not None


class _InvalidEntry(ValueError):
    pass


def _read_header(handle: BinaryIO, key: str) -> dict[str, Any]:
    """The header line of the entry for ``key``; ``_InvalidEntry`` saying what is wrong with it."""
    line = handle.readline()
    if not line:
        raise _InvalidEntry("empty file")
    if not line.endswith(b"\n"):
        raise _InvalidEntry("truncated header")
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise _InvalidEntry(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict) or "format" not in header:
        raise _InvalidEntry("not a cache entry header")
    if header["format"] != FORMAT:
        raise _InvalidEntry(f"cache format {header['format']!r}, this version reads {FORMAT}")
    if header.get("key") != key:
        raise _InvalidEntry(f"header names key {str(header.get('key'))[:16]!r}, not its file name")
    if not isinstance(header.get("count"), int) or not isinstance(header.get("info"), dict):
        raise _InvalidEntry("header lacks its doc count or build info")
    return header


def _normalized(value: Any) -> Any:
    """``value`` as it reads back from a header (tuples become lists), so it compares equal to it."""
    return json.loads(json.dumps(value, default=str))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_difference(entry: CacheEntry, differing: list[str], determinants: dict[str, Any]) -> str:
    """``render_modes (cached ['raw', 'chat'], now ['chat'])``, for each differing determinant."""
    now = _normalized(determinants)
    return ", ".join(f"{name} (cached {_short(entry.info.get(name))}, now {_short(now.get(name))})" for name in differing)


def _json_line(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False) + "\n").encode()


def _encode_doc(doc: dict[str, Any]) -> Iterator[bytes]:
    """A doc's line (long texts as nulls, keeping the field order) and its raw text blocks."""
    raw = {name: value.encode() for name, value in doc.items() if isinstance(value, str) and len(value) >= _RAW_MIN_CHARS}
    if not raw:
        yield _json_line(doc)
        return
    line = {name: None if name in raw else value for name, value in doc.items()}
    line[_RAW_FIELDS] = [[name, len(block)] for name, block in raw.items()]
    yield _json_line(line)
    for block in raw.values():
        yield block
        yield b"\n"


def _read_docs(handle: BinaryIO, count: int | None) -> list[dict[str, Any]]:
    """Docs up to the trailer, checked against it and the header's count; ``ValueError`` when damaged."""
    digest = hashlib.sha256()
    docs = []
    while True:
        line = handle.readline()
        if not line.endswith(b"\n"):
            raise _InvalidEntry("truncated")
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise _InvalidEntry("not a doc")
        if _TRAILER in doc:
            end = doc[_TRAILER]
            if end != {"count": count, "sha256": digest.hexdigest()} or len(docs) != count or handle.read(1):
                raise _InvalidEntry("failed verification")
            return docs
        digest.update(line)
        for name, size in doc.pop(_RAW_FIELDS, []):
            block = handle.read(size + 1)
            if len(block) != size + 1 or block[-1:] != b"\n":
                raise _InvalidEntry("truncated")
            digest.update(block)
            doc[name] = block[:-1].decode()
        docs.append(doc)


class DatasetCache:
    """Directory of generated datasets (``<cache>/datasets``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def at(cls, cache_dir: str | os.PathLike[str] | None = None) -> DatasetCache:
        """The dataset cache of a cache root (``cache_root(cache_dir)/datasets``)."""
        return cls(datasets_dir(cache_dir))

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def load(self, key: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        """Docs and build info for ``key``, or None when absent or invalid (then removed)."""
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                header = _read_header(handle, key)
                docs = _read_docs(handle, header["count"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            self._discard(path, f"unreadable or damaged ({exc})")
            return None
        return docs, header["info"]

    def store(self, key: str, docs: list[dict[str, Any]], info: dict[str, Any]) -> Path:
        def write(handle: BinaryIO) -> None:
            handle.write(_json_line({"format": FORMAT, "key": key, "count": len(docs), "info": info}))
            digest = hashlib.sha256()
            for doc in docs:
                for block in _encode_doc(doc):
                    digest.update(block)
                    handle.write(block)
            handle.write(_json_line({_TRAILER: {"count": len(docs), "sha256": digest.hexdigest()}}))

        path = self._path(key)
        write_atomically(path, write)
        return path

    def store_alias(self, alias: str, key: str) -> None:
        """Remember that ``alias`` (a key computable without loading the tokenizer) names ``key``."""
        write_atomically(self.root / "aliases" / alias, lambda handle: handle.write(key.encode()))

    def resolve_alias(self, alias: str) -> str | None:
        try:
            key = (self.root / "aliases" / alias).read_text().strip()
        except OSError:
            return None
        return key if len(key) == 64 and all(c in "0123456789abcdef" for c in key) else None

    def entries(self) -> Iterator[CacheEntry]:
        """Every entry, good or bad, in path order; reads only each file's header line.

        Never raises for a bad entry: it comes with ``error`` set (and an entry
        that vanishes while listing, e.g. removed by another process, is skipped).
        """
        paths = [*self.root.glob(f"*/*{SUFFIX}"), *self.root.glob(_FORMAT1_GLOB)]
        for path in sorted(paths):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                yield CacheEntry(path.name.split(".")[0], path, {}, 0, 0, f"unreadable ({exc})")
                continue
            key = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name.split(".")[0]
            if not path.name.endswith(SUFFIX):
                error = "cache format 1, which this version no longer reads"
                yield CacheEntry(key, path, {}, 0, stat.st_size, error, stat.st_mtime)
                continue
            try:
                with path.open("rb") as handle:
                    header = _read_header(handle, key)
            except FileNotFoundError:
                continue
            except _InvalidEntry as exc:
                error = "empty file (0 bytes)" if stat.st_size == 0 else str(exc)
                yield CacheEntry(key, path, {}, 0, stat.st_size, error, stat.st_mtime)
                continue
            except OSError as exc:
                yield CacheEntry(key, path, {}, 0, stat.st_size, f"unreadable ({exc})", stat.st_mtime)
                continue
            yield CacheEntry(key, path, header["info"], header["count"], stat.st_size, None, stat.st_mtime)

    def verify(self, entry: CacheEntry) -> str | None:
        """None when ``entry`` reads back whole (count and sha256 trailer, as ``load`` checks), else why not.

        Unlike ``load`` it deletes nothing: ``cache verify`` reports, ``cache clear --bad`` removes.
        """
        if entry.error is not None:
            return entry.error
        try:
            with entry.path.open("rb") as handle:
                header = _read_header(handle, entry.key)
                _read_docs(handle, header["count"])
        except FileNotFoundError:
            return "removed while being verified"
        except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
            return str(exc) or type(exc).__name__
        return None

    def select(
        self,
        task: str | None = None,
        length: int | None = None,
        tokenizer: str | None = None,
        older_than_seconds: float | None = None,
        bad: bool = False,
    ) -> list[CacheEntry]:
        """Entries matching every selector given (none given: all entries).

        ``tokenizer`` is a substring of the recorded tokenizer name (path or
        model id); ``older_than_seconds`` compares with the file's mtime;
        ``bad`` keeps only bad entries. A bad entry has no task, length or
        tokenizer, so it never matches those selectors.
        """
        now = time.time()
        selected = []
        for entry in self.entries():
            info = entry.info
            if bad and not entry.bad:
                continue
            if task is not None and info.get("task") != task:
                continue
            if length is not None and info.get("length") != length:
                continue
            if tokenizer is not None and tokenizer not in str(info.get("tokenizer", "")):
                continue
            if older_than_seconds is not None and now - entry.mtime <= older_than_seconds:
                continue
            selected.append(entry)
        return selected

    def remove(self, entries: Iterable[CacheEntry]) -> int:
        """Delete these entries (and aliases naming them); returns how many files were deleted.

        A later build of a removed key regenerates it; an alias that still
        named it would only miss, but is removed so it cannot linger.
        """
        removed = 0
        keys = set()
        for entry in entries:
            keys.add(entry.key)
            try:
                entry.path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
        for alias in self.root.glob("aliases/*"):
            if alias.name.startswith("."):
                continue
            if self.resolve_alias(alias.name) in keys:
                alias.unlink(missing_ok=True)
        return removed

    def nearest(self, task: str, length: int, determinants: dict[str, Any]) -> tuple[CacheEntry, list[str]] | None:
        """The cached entry of ``task`` at ``length`` closest to ``determinants``, and the keys that differ.

        Explains a cache miss ("cached for render_modes ['raw', 'chat'], now
        ['chat']"). Closest is fewest differing determinants, then newest;
        only headers are read. None when nothing is cached for that task and
        length.
        """
        wanted = _normalized(determinants)
        best: tuple[int, float, CacheEntry, list[str]] | None = None
        for entry in self.entries():
            if entry.bad or entry.info.get("task") != task or entry.info.get("length") != length:
                continue
            differing = [name for name, value in wanted.items() if entry.info.get(name, _MISSING) != value]
            rank = (len(differing), -entry.mtime)
            if best is None or rank < best[:2]:
                best = (*rank, entry, differing)
        return None if best is None else (best[2], best[3])

    def clear(self) -> int:
        """Delete every entry, good or bad, leftover temporary files and all aliases; returns the entry count."""
        removed = 0
        for path in [*self.root.glob(f"*/*{SUFFIX}"), *self.root.glob(_FORMAT1_GLOB)]:
            path.unlink(missing_ok=True)
            removed += 1
        for leftover in [*self.root.glob("*/.*.tmp"), *self.root.glob("aliases/*")]:
            leftover.unlink(missing_ok=True)
        return removed

    @staticmethod
    def _discard(path: Path, why: str) -> None:
        logger.warning("dataset cache entry %s %s; regenerating it", path, why)
        path.unlink(missing_ok=True)
