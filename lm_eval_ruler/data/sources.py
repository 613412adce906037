"""External data files: pinned by size and sha256, downloaded once, verified, cached.

RULER reads three files it does not generate: the Paul Graham essay haystack,
SQuAD 2.0 dev and HotpotQA dev (distractor). Their bytes determine every
generated sample, so each is pinned to one exact file (``SOURCES``, listed in
``catalog``). A file is fetched at most once per cache and is afterwards only
``stat``-ed, so a run never needs the network again; air-gapped machines get
the same files with ``lm-eval-ruler data import`` (files are identified by
content, not by name).

Layout (``<cache>`` is ``cache.cache_root()``: ``$LM_EVAL_RULER_CACHE``, else
``$XDG_CACHE_HOME/lm-eval-ruler``, else ``~/.cache/lm-eval-ruler``)::

    <cache>/data/<filename>             the verified file
    <cache>/data/<filename>.verified    sidecar: size, mtime_ns, sha256 of the last full hash
    <cache>/data/.<filename>.lock       flock taken while the file is written or replaced
    <cache>/data/.<filename>.*.part     temporary download/import (removed on failure)

Why the pieces:

* The sidecar makes verification cheap: hashing 61 MB on every task load in
  every data-parallel rank adds up, so a file whose size and mtime still match
  the sidecar is trusted; any change to either triggers a full re-hash.
* Downloads stream into a temporary file in the same directory and are moved
  into place with ``os.replace`` only after size and hash match, so a reader
  never sees a partial or wrong file, even across processes.
* The ``fcntl.flock`` lock serialises writers: when several ranks start at
  once, one downloads and the others wait and then find the verified file.
* Environment variables: ``LM_EVAL_RULER_OFFLINE=1`` forbids any network
  access (a missing file is an error naming the offline fix);
  ``LM_EVAL_RULER_DOWNLOAD_TIMEOUT`` is the per-connection socket timeout in
  seconds (default 60). Proxies come from the usual ``http(s)_proxy`` variables
  through ``urllib``.

Tests and callers with their own mirrors pass a ``Source`` object wherever a
name is accepted (for example ``dataclasses.replace(SOURCES["squad"],
urls=(...,))``); nothing global needs patching. ``import_file`` and
``status`` take the set of candidate sources as ``catalog=`` for the same
reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shlex
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .._files import file_sha256, locked, write_atomically
from ..errors import DataSourceError
from .cache import CACHE_ENV, cache_root
from .catalog import KNOWN_VARIANTS, SOURCES, Source

__all__ = [
    "DEFAULT_TIMEOUT",
    "KNOWN_VARIANTS",
    "OFFLINE_ENV",
    "SOURCES",
    "TIMEOUT_ENV",
    "DataSourceError",
    "Source",
    "SourceStatus",
    "data_dir",
    "download",
    "import_file",
    "provenance",
    "source_path",
    "status",
]

logger = logging.getLogger(__name__)

OFFLINE_ENV = "LM_EVAL_RULER_OFFLINE"
TIMEOUT_ENV = "LM_EVAL_RULER_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 60.0

_CHUNK = 1 << 20
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class SourceStatus:
    """What ``status`` found for one source (for ``lm-eval-ruler data status``).

    ``size`` and ``sha256`` describe the file on disk (``None`` when missing or
    not hashed); ``verified`` means they equal the pinned values.
    """

    name: str
    filename: str
    path: Path
    present: bool
    verified: bool
    size: int | None
    sha256: str | None
    detail: str


# --------------------------------------------------------------------------- paths


def data_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/data``, where the pinned files live."""
    return cache_root(cache) / "data"


# --------------------------------------------------------------------------- public API


def source_path(
    source: str | Source,
    cache: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> Path:
    """The path of the verified file for ``source`` (a name in ``SOURCES`` or a ``Source``).

    A cached file is trusted when its size and mtime match its ``.verified``
    sidecar, otherwise it is re-hashed; a corrupt file is deleted (with a
    warning) and treated as missing. A missing file is downloaded from each
    URL in turn unless ``download`` is false or ``$LM_EVAL_RULER_OFFLINE`` is
    set, in which case no network call is made and the error names the offline
    fix. Safe to call from several processes at once.
    """
    src = _resolve(source)
    target = data_dir(cache) / src.filename
    if _trusted(src, target):  # fast path: stats only, no lock, no hashing
        return target
    allow = download and not _offline()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataSourceError(
            f"cannot create the data cache {target.parent}: {exc}; point {CACHE_ENV} (or cache_dir) at a writable directory"
        ) from exc
    with _locked(target):
        # Re-check under the lock: another process may have just finished.
        problem = _problem(src, target)
        if problem is None:
            return target
        if problem != "missing":
            _discard(target, f"{problem}; deleting it and treating it as missing")
        if not allow:
            reason = (
                "downloading is disabled (download=False)" if not download else f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]} is set"
            )
            raise DataSourceError(
                f"{src.filename} ({src.name}) is not in the cache {target.parent} and {reason}.\n" + _offline_fix(src, cache)
            )
        _cleanup_parts(target)
        failures: list[str] = []
        for url in src.urls:
            try:
                _fetch(url, src, target)
            except _FetchFailed as exc:
                logger.warning("could not download %s from %s: %s", src.filename, url, exc)
                failures.append(f"  {url}: {exc}")
                continue
            except OSError as exc:  # local: disk full, permissions; another URL would not help
                raise DataSourceError(f"cannot write {src.filename} into {target.parent}: {exc}") from exc
            return target
        tried = "\n".join(failures) if failures else "  (the source lists no URLs)"
        raise DataSourceError(
            f"could not download {src.filename} ({src.name}); every URL failed:\n{tried}\n" + _offline_fix(src, cache)
        )


def download(
    names: Iterable[str | Source] | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Fetch and verify the named sources (default: all of ``SOURCES``); returns their paths.

    Every source is attempted even if an earlier one fails, so one run reports
    everything that is missing; the combined failure is raised at the end.
    """
    selected = list(SOURCES.values()) if names is None else [_resolve(n) for n in names]
    paths: list[Path] = []
    errors: list[str] = []
    for src in selected:
        try:
            paths.append(source_path(src, cache, download=True))
        except DataSourceError as exc:
            errors.append(str(exc))
    if errors:
        raise DataSourceError("\n\n".join(errors))
    return paths


def import_file(
    path: str | os.PathLike[str],
    cache: str | os.PathLike[str] | None = None,
    *,
    catalog: Iterable[Source] | None = None,
) -> Source | list[Source]:
    """Copy a file obtained elsewhere into the cache, identified by its sha256 (not its name).

    For air-gapped machines: ``squad.json`` from RULER's own download script is
    recognised as ``squad`` and stored as ``dev-v2.0.json``. A file that matches
    no source raises, listing what is expected. A directory imports every
    matching file in it (non-matching files are skipped; none matching is an
    error) and returns the list. ``catalog`` replaces ``SOURCES`` as the set of
    candidates (used by tests).
    """
    candidates = list(SOURCES.values()) if catalog is None else list(catalog)
    origin = Path(path).expanduser()
    if origin.is_dir():
        imported: list[Source] = []
        for entry in sorted(origin.iterdir()):
            if entry.is_file() and not entry.name.endswith(".verified"):
                src = _identify(entry, candidates)
                if src is not None:
                    _install(entry, src, cache)
                    imported.append(src)
        if not imported:
            raise DataSourceError(f"no file in {origin} matches a known data source.\n{_expected(candidates)}")
        return imported
    if not origin.is_file():
        raise DataSourceError(f"cannot import {origin}: no such file or directory")
    src = _identify(origin, candidates)
    if src is None:
        size = origin.stat().st_size
        digest = file_sha256(origin) if any(c.size == size for c in candidates) else None
        known = KNOWN_VARIANTS.get(digest or "")
        what = f"size {size:,} bytes" + (f", sha256 {digest}" if digest else "")
        hint = f"\nThis file is {known}." if known else ""
        raise DataSourceError(f"{origin} ({what}) matches no known data source.{hint}\n{_expected(candidates)}")
    _install(origin, src, cache)
    return src


def status(
    cache: str | os.PathLike[str] | None = None,
    *,
    catalog: Iterable[Source] | None = None,
) -> list[SourceStatus]:
    """Report which sources are present and verified; never downloads or deletes.

    Files without a valid sidecar are hashed (so the report is accurate); a
    successful hash records a sidecar so the next check is a ``stat``.
    """
    rows: list[SourceStatus] = []
    for src in SOURCES.values() if catalog is None else catalog:
        target = data_dir(cache) / src.filename
        try:
            st = target.stat()
        except FileNotFoundError:
            rows.append(
                SourceStatus(
                    src.name,
                    src.filename,
                    target,
                    False,
                    False,
                    None,
                    None,
                    f"missing: run `lm-eval-ruler data download {src.name}` or import it",
                )
            )
            continue
        if _sidecar_matches(src, target, st):
            rows.append(SourceStatus(src.name, src.filename, target, True, True, st.st_size, src.sha256, "ok"))
            continue
        if st.st_size != src.size:
            detail = f"wrong size: {st.st_size:,} bytes, expected {src.size:,}"
            rows.append(SourceStatus(src.name, src.filename, target, True, False, st.st_size, None, detail))
            continue
        digest = file_sha256(target)
        if digest == src.sha256:
            _write_sidecar(target, src, st)
            rows.append(SourceStatus(src.name, src.filename, target, True, True, st.st_size, digest, "ok"))
        else:
            known = KNOWN_VARIANTS.get(digest)
            detail = f"sha256 mismatch: {digest}, expected {src.sha256}" + (f" ({known})" if known else "")
            rows.append(SourceStatus(src.name, src.filename, target, True, False, st.st_size, digest, detail))
    return rows


def provenance(names: Iterable[str | Source]) -> dict[str, dict[str, Any]]:
    """``{name: {"file", "sha256", "size"}}`` of pinned sources, for task metadata.

    Recording the pinned hash is exact because ``source_path`` never returns a
    file that does not match it.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        src = _resolve(name)
        out[src.name] = {"file": src.filename, "sha256": src.sha256, "size": src.size}
    return out


# --------------------------------------------------------------------------- verification


def _resolve(source: str | Source) -> Source:
    if isinstance(source, Source):
        return source
    try:
        return SOURCES[source]
    except KeyError:
        raise DataSourceError(f"unknown data source {source!r}; known: {', '.join(SOURCES)}") from None


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise DataSourceError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _sidecar_matches(src: Source, target: Path, st: os.stat_result) -> bool:
    try:
        record = json.loads(_sidecar(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("sha256") == src.sha256
        and record.get("size") == st.st_size == src.size
        and record.get("mtime_ns") == st.st_mtime_ns
    )


def _write_sidecar(target: Path, src: Source, st: os.stat_result) -> None:
    """Record a successful full hash; failure (e.g. a read-only shared cache) only costs a re-hash later."""
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": src.sha256}
    sidecar = _sidecar(target)
    try:
        write_atomically(sidecar, lambda handle: handle.write(json.dumps(record).encode("utf-8")))
    except OSError as exc:
        logger.debug("cannot write %s: %s", sidecar, exc)


def _trusted(src: Source, target: Path) -> bool:
    """True when the sidecar vouches for the file as it is now (no hashing)."""
    try:
        st = target.stat()
    except OSError:
        return False
    return _sidecar_matches(src, target, st)


def _problem(src: Source, target: Path) -> str | None:
    """``None`` if ``target`` holds the pinned bytes, ``"missing"``, or what is wrong with it."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return "missing"
    if _sidecar_matches(src, target, st):
        return None
    if st.st_size != src.size:
        return f"cached {target} has {st.st_size:,} bytes, expected {src.size:,}"
    digest = file_sha256(target)
    if digest != src.sha256:
        return f"cached {target} has sha256 {digest}, expected {src.sha256}"
    _write_sidecar(target, src, st)
    return None


def _discard(target: Path, message: str) -> None:
    logger.warning("%s", message)
    for path in (target, _sidecar(target)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DataSourceError(f"{message}, but it cannot be deleted: {exc}") from exc


# --------------------------------------------------------------------------- writing


def _locked(target: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive ``flock`` on ``<dir>/.<filename>.lock`` (blocking; see ``_files.locked``)."""
    return locked(target.with_name(f".{target.name}.lock"))


def _part_prefix(target: Path) -> str:
    return f".{target.name}."


def _cleanup_parts(target: Path) -> None:
    """Remove temp files left by a killed writer; only lock holders create them, and we hold the lock."""
    for leftover in target.parent.glob(f"{_part_prefix(target)}*.part"):
        with contextlib.suppress(OSError):
            leftover.unlink()


class _FetchFailed(Exception):
    """One URL did not yield the pinned bytes; the next URL is tried."""


def _fetch(url: str, src: Source, target: Path) -> None:
    """Stream ``url`` into a temp file beside ``target``, check size and sha256, then ``os.replace``."""
    request = urllib.request.Request(url, headers={"User-Agent": "lm-eval-ruler (data download)", "Accept-Encoding": "identity"})

    def stream(out: IO[bytes]) -> None:
        try:
            response = urllib.request.urlopen(request, timeout=_timeout())
        except urllib.error.HTTPError as exc:
            raise _FetchFailed(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise _FetchFailed(f"cannot connect: {exc.reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _FetchFailed(f"cannot connect: {exc!r}") from None
        with response:
            _copy_verified(response, out, src, _announced_length(response))

    # The temporary file is .<filename>.<random>.part (what _cleanup_parts removes), fsync'ed,
    # given ordinary permissions (caches are shared) and renamed only after size and hash match.
    write_atomically(target, stream, suffix=".part")
    _write_sidecar(target, src, target.stat())
    logger.info("downloaded %s from %s", src.filename, url)


def _announced_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _copy_verified(response: Any, out: IO[bytes], src: Source, announced: int | None) -> None:
    # A server announcing another size is serving another file: refuse before reading it.
    if announced is not None and announced != src.size:
        raise _FetchFailed(f"server announces {announced:,} bytes, expected {src.size:,} (a different file)")
    digest = hashlib.sha256()
    received = 0
    with _progress(src) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except http.client.IncompleteRead as exc:
                received += len(exc.partial)
                raise _FetchFailed(f"truncated download: connection closed after {received:,} of {src.size:,} bytes") from None
            except (OSError, http.client.HTTPException) as exc:  # timeouts, resets
                kind = "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else "failed"
                raise _FetchFailed(f"download {kind} after {received:,} of {src.size:,} bytes: {exc!r}") from None
            if not chunk:
                break
            received += len(chunk)
            if received > src.size:
                raise _FetchFailed(f"server sent more than the expected {src.size:,} bytes (a different file)")
            digest.update(chunk)
            out.write(chunk)
            bar.update(len(chunk))
    if received != src.size:
        raise _FetchFailed(f"truncated download: received {received:,} of {src.size:,} bytes")
    if digest.hexdigest() != src.sha256:
        got = digest.hexdigest()
        known = KNOWN_VARIANTS.get(got)
        raise _FetchFailed(f"sha256 mismatch: got {got}, expected {src.sha256}" + (f" ({known})" if known else ""))


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _progress(src: Source) -> Iterator[Any]:
    """A tqdm byte counter on stderr; tqdm hides itself when stderr is not a terminal."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        yield _NoBar()
        return
    with tqdm(
        total=src.size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=src.filename,
        file=sys.stderr,
        disable=None,
        leave=False,
    ) as bar:
        yield bar


# --------------------------------------------------------------------------- import helpers


def _identify(path: Path, candidates: Sequence[Source]) -> Source | None:
    """The candidate whose pinned bytes ``path`` holds; only size-matching files are hashed."""
    size = path.stat().st_size
    sized = [c for c in candidates if c.size == size]
    if not sized:
        return None
    digest = file_sha256(path)
    return next((c for c in sized if c.sha256 == digest), None)


def _install(origin: Path, src: Source, cache: str | os.PathLike[str] | None) -> Path:
    """Copy ``origin`` to ``<cache>/data/<filename>`` atomically, re-hashing the bytes actually copied."""
    target = data_dir(cache) / src.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        if _problem(src, target) is None:
            return target  # already there (or origin *is* the cached file)
        _cleanup_parts(target)

        def copy(out: IO[bytes]) -> None:
            digest = hashlib.sha256()
            copied = 0
            with open(origin, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    copied += len(chunk)
            if copied != src.size or digest.hexdigest() != src.sha256:
                raise DataSourceError(f"{origin} changed while it was being imported; try again")

        write_atomically(target, copy, suffix=".part")
        _write_sidecar(target, src, target.stat())
    logger.info("imported %s as %s", origin, target)
    return target


# --------------------------------------------------------------------------- messages


def _offline_fix(src: Source, cache: str | os.PathLike[str] | None) -> str:
    """The exact steps to provide the file by hand; appended to every 'file unavailable' error."""
    target = data_dir(cache) / src.filename
    cache_flag = f" --cache-dir {shlex.quote(str(cache_root(cache)))}" if cache is not None else ""
    urls = "".join(f"    {url}\n" for url in src.urls)
    return (
        f"To provide it by hand, download {src.filename} ({src.size:,} bytes, sha256 {src.sha256}) "
        f"on a machine with internet access from one of:\n{urls}"
        f"then run:  lm-eval-ruler data import /path/to/{src.filename}{cache_flag}\n"
        f"or copy it to {target}"
    )


def _expected(candidates: Sequence[Source]) -> str:
    lines = [f"  {c.name}: {c.filename}, {c.size:,} bytes, sha256 {c.sha256}" for c in candidates]
    return "Expected one of:\n" + "\n".join(lines)
