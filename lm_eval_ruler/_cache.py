"""Generated datasets on disk, keyed by everything that determines them.

A cache entry is one gzip'd JSON-lines file: a header line (key, build info,
doc count, sha256 of the body) followed by one doc per line. It is written to
a temporary file and atomically renamed, so readers never see a partial
entry and concurrent writers of the same key each leave a complete one; on
read the body hash is checked and a bad entry is deleted and regenerated.
Plain JSON, never pickle: a cache file must not be able to run code.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CacheError

logger = logging.getLogger(__name__)
FORMAT = 1


def cache_key(determinants: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(determinants, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    info: dict[str, Any]
    count: int
    size: int


class DatasetCache:
    """Directory of generated datasets (``<cache>/datasets``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.jsonl.gz"

    def load(self, key: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        """Docs and build info for ``key``, or None when absent or invalid (then removed)."""
        path = self._path(key)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                header = json.loads(handle.readline())
                digest = hashlib.sha256()
                docs = []
                for line in handle:
                    digest.update(line.encode())
                    docs.append(json.loads(line))
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError) as exc:
            self._discard(path, f"unreadable ({exc})")
            return None
        if (
            header.get("format") != FORMAT
            or header.get("key") != key
            or header.get("count") != len(docs)
            or header.get("sha256") != digest.hexdigest()
        ):
            self._discard(path, "failed verification")
            return None
        return docs, header["info"]

    def store(self, key: str, docs: list[dict[str, Any]], info: dict[str, Any]) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two passes (hash, then write) instead of holding every serialized doc: at 128K the docs
        # alone are hundreds of megabytes.
        digest = hashlib.sha256()
        for doc in docs:
            digest.update((json.dumps(doc, ensure_ascii=False) + "\n").encode())
        header = {"format": FORMAT, "key": key, "count": len(docs), "sha256": digest.hexdigest(), "info": info}
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as handle:
                handle.write((json.dumps(header, ensure_ascii=False) + "\n").encode())
                for doc in docs:
                    handle.write((json.dumps(doc, ensure_ascii=False) + "\n").encode())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return path

    def store_alias(self, alias: str, key: str) -> None:
        """Remember that ``alias`` (a key computable without loading the tokenizer) names ``key``."""
        path = self.root / "aliases" / alias
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{alias[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(key)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def resolve_alias(self, alias: str) -> str | None:
        try:
            key = (self.root / "aliases" / alias).read_text().strip()
        except OSError:
            return None
        return key if len(key) == 64 and all(c in "0123456789abcdef" for c in key) else None

    def entries(self) -> Iterator[CacheEntry]:
        for path in sorted(self.root.glob("*/*.jsonl.gz")):
            try:
                with gzip.open(path, "rt", encoding="utf-8") as handle:
                    header = json.loads(handle.readline())
            except (OSError, EOFError, ValueError) as exc:
                raise CacheError(f"unreadable cache entry {path}: {exc}; remove it with `lm-eval-ruler cache clear`") from exc
            yield CacheEntry(header.get("key", path.stem), path, header.get("info", {}), header.get("count", 0), path.stat().st_size)

    def clear(self) -> int:
        removed = 0
        for path in self.root.glob("*/*.jsonl.gz"):
            path.unlink(missing_ok=True)
            removed += 1
        for leftover in [*self.root.glob("*/.*.tmp"), *self.root.glob("aliases/*")]:
            leftover.unlink(missing_ok=True)
        return removed

    @staticmethod
    def _discard(path: Path, why: str) -> None:
        logger.warning("dataset cache entry %s %s; regenerating it", path, why)
        path.unlink(missing_ok=True)
