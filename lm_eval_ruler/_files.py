"""Writing, hashing and locking files: the one place that does each of these right.

Caches and state files are read by other processes (data-parallel ranks, a
sweep's children, a teammate on a shared cluster cache) while they are being
written, so every write here goes through a temporary file in the same
directory that is fsync'ed and renamed over the target: a reader sees the old
file or the whole new one, never a prefix. The renamed file gets the
permissions a plain ``open()`` would have given it (``0o666 & ~umask``), not
``mkstemp``'s private ``0600``, because a cache shared by a team must be
readable by the team. Hashes of big files (a 9 MB ``tokenizer.json``, a 61 MB
dataset) are computed once per process while the file stays unchanged, and an
``flock`` serialises processes that would otherwise all do the same expensive
work.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO

try:  # POSIX; elsewhere writes stay atomic, only not serialised.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["current_umask", "file_sha256", "locked", "write_atomically", "write_json_atomically"]

logger = logging.getLogger(__name__)
_CHUNK = 1 << 20
#: Longest target name kept in a temporary file's name (NAME_MAX is 255 on common filesystems).
_MAX_PREFIX_NAME = 200


def current_umask() -> int:
    """The process umask, read without changing it where possible.

    ``os.umask`` can only be read by setting it, and the umask is process-wide:
    another thread creating a file between the two calls would get the
    temporary value. Linux (4.7+) reports it in ``/proc/self/status``; other
    systems fall back to the set-and-restore pair.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, write: Callable[[BinaryIO], None], *, suffix: str = ".tmp") -> None:
    """Write ``path`` through ``write(handle)`` so readers see the old file or the whole new one.

    The bytes go to ``.<name>.<random><suffix>`` beside ``path`` (same
    filesystem, so the rename is atomic), are fsync'ed, get mode ``0o666 &
    ~umask`` and are renamed over ``path``. Any exception, from ``write`` or
    the filesystem, removes the temporary file and propagates. Parent
    directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:_MAX_PREFIX_NAME]}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            mode = 0o666 & ~current_umask()
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), mode)
            else:  # pragma: no cover - Windows
                os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as indented JSON with a trailing newline, written atomically (state files people read).

    ``default=str`` keeps a stray ``Path`` or ``datetime`` from failing a
    long run at its last write.
    """
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """A file's sha256, read once per process while it stays unchanged.

    Cache keys hash tokenizer files (a tokenizer.json is ~9 MB) and data files
    for every task and length built. The memo is keyed by path, size,
    ``mtime_ns``, ``ctime_ns`` and inode, so an edited or replaced file is
    hashed again (``ctime`` and the inode catch a same-size rewrite within one
    mtime tick, which ``os.utime`` cannot fake). Raises ``OSError``.
    """
    stat = os.stat(path)
    return _sha256_while_unchanged(os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@functools.lru_cache(maxsize=64)
def _sha256_while_unchanged(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created, with its parents) while the body runs.

    Several processes about to do the same expensive work (download a file,
    generate a dataset) take the lock; the first does the work, the others
    wait and should then look again for its result. The lock file is never
    deleted: removing it could let two processes lock different inodes. Where
    locking is impossible (no ``fcntl``, a read-only directory) the body runs
    unlocked: the writes it guards are atomic anyway, only duplicated work
    becomes possible.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle: IO[bytes] = open(path, "ab")  # noqa: SIM115 - held across the yield
    except OSError as exc:
        logger.debug("cannot open lock file %s (%s); continuing unlocked", path, exc)
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
