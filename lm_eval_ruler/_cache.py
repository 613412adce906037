"""Generated datasets on disk, keyed by everything that determines them.

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
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import CacheError

logger = logging.getLogger(__name__)
FORMAT = 2
SUFFIX = ".ruler"
#: String fields at least this long are stored raw after their doc's line.
_RAW_MIN_CHARS = 1024
_RAW_FIELDS = "__raw__"
_TRAILER = "__end__"


def cache_key(determinants: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(determinants, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str) -> str:
    """A file's sha256, read once per process while its size and mtime stay the same.

    Cache keys hash tokenizer files (a tokenizer.json is ~9 MB) and user data
    files for every task and length built; a file edited in between changes its
    size or mtime and is hashed again. Raises ``OSError``.
    """
    stat = os.stat(path)
    return _sha256_while_unchanged(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_while_unchanged(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through a temporary file renamed over ``path``: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    info: dict[str, Any]
    count: int
    size: int


class _InvalidEntry(ValueError):
    pass


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

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def load(self, key: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        """Docs and build info for ``key``, or None when absent or invalid (then removed)."""
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.readline())
                if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("key") != key:
                    raise _InvalidEntry("failed verification")
                docs = _read_docs(handle, header.get("count"))
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
        _write_atomically(path, write)
        return path

    def store_alias(self, alias: str, key: str) -> None:
        """Remember that ``alias`` (a key computable without loading the tokenizer) names ``key``."""
        _write_atomically(self.root / "aliases" / alias, lambda handle: handle.write(key.encode()))

    def resolve_alias(self, alias: str) -> str | None:
        try:
            key = (self.root / "aliases" / alias).read_text().strip()
        except OSError:
            return None
        return key if len(key) == 64 and all(c in "0123456789abcdef" for c in key) else None

    def entries(self) -> Iterator[CacheEntry]:
        for path in sorted(self.root.glob(f"*/*{SUFFIX}")):
            try:
                with path.open("rb") as handle:
                    header = json.loads(handle.readline())
            except (OSError, ValueError) as exc:
                raise CacheError(f"unreadable cache entry {path}: {exc}; remove it with `lm-eval-ruler cache clear`") from exc
            yield CacheEntry(header.get("key", path.stem), path, header.get("info", {}), header.get("count", 0), path.stat().st_size)

    def clear(self) -> int:
        removed = 0
        # *.jsonl.gz: entries of cache format 1, which nothing reads any more.
        for path in [*self.root.glob(f"*/*{SUFFIX}"), *self.root.glob("*/*.jsonl.gz")]:
            path.unlink(missing_ok=True)
            removed += 1
        for leftover in [*self.root.glob("*/.*.tmp"), *self.root.glob("aliases/*")]:
            leftover.unlink(missing_ok=True)
        return removed

    @staticmethod
    def _discard(path: Path, why: str) -> None:
        logger.warning("dataset cache entry %s %s; regenerating it", path, why)
        path.unlink(missing_ok=True)
