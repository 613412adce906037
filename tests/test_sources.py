"""Pinned data files: download, verification, mirrors, locking, offline use and import.

Every network access goes to a local ``ThreadingHTTPServer`` on 127.0.0.1
serving a small fixture file described by a fake ``Source``; nothing here
touches the internet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import logging
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lm_eval_ruler.data import sources
from lm_eval_ruler.data.cache import CACHE_ENV, cache_root
from lm_eval_ruler.data.sources import SOURCES, Source
from lm_eval_ruler.errors import DataSourceError, RulerError

SHARED_ESSAYS = Path(__file__).resolve().parents[2] / "shared/data/PaulGrahamEssays.json"

PAYLOAD = b"".join(b"line %05d of the fixture file, long enough for several reads\n" % i for i in range(40_000))
FIXTURE = Source(
    name="fixture",
    filename="fixture.json",
    size=len(PAYLOAD),
    sha256=hashlib.sha256(PAYLOAD).hexdigest(),
    urls=(),
    description="test fixture",
)


class Server:
    """A local HTTP server with per-path behaviour and a request log."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        self.delay = 0.0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # http.server's name
                with server._lock:
                    server.requests.append(self.path)
                kind, body = server.routes.get(self.path, ("missing", b""))
                if kind == "missing":
                    self.send_error(404, "Not Found")
                    return
                time.sleep(server.delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(PAYLOAD) if kind == "truncated" else len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def serve(self, path: str, body: bytes = PAYLOAD, kind: str = "ok") -> str:
        """Serve ``body`` at ``path``; ``kind="truncated"`` announces the full size but sends ``body`` only."""
        self.routes[path] = (kind, body)
        return self.base + path

    def count(self, path: str) -> int:
        with self._lock:
            return self.requests.count(path)


@pytest.fixture()
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(sources.OFFLINE_ENV, raising=False)
    monkeypatch.delenv(sources.TIMEOUT_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connection attempt fails the test."""

    def refuse(self: socket.socket, *args: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def refused_url() -> str:
    """A URL on a local port nobody listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/fixture.json"


def data_files(cache: Path) -> list[str]:
    """Everything in ``<cache>/data`` except lock files (those persist by design)."""
    directory = cache / "data"
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


def with_urls(*urls: str) -> Source:
    return dataclasses.replace(FIXTURE, urls=urls)


# --------------------------------------------------------------------------- pinned table


def test_pinned_sources_are_well_formed() -> None:
    assert set(SOURCES) == {"essays", "squad", "hotpotqa"}
    for name, src in SOURCES.items():
        assert src.name == name
        assert len(src.sha256) == 64 and int(src.sha256, 16) >= 0
        assert src.size > 0 and src.urls and all(u.startswith(("http://", "https://")) for u in src.urls)
        assert len(set(src.urls)) == len(src.urls)
    assert SOURCES["essays"].size == 3_101_008
    assert SOURCES["essays"].sha256 == "d9e4663b58000c644994bb677b6c47a6c0e026d1bc2386aade8963ae7bd9e039"
    assert SOURCES["squad"].size == 4_370_528
    assert SOURCES["hotpotqa"].size == 46_320_117
    assert issubclass(DataSourceError, RulerError)


def test_provenance() -> None:
    assert sources.provenance(["essays", FIXTURE]) == {
        "essays": {"file": "PaulGrahamEssays.json", "sha256": SOURCES["essays"].sha256, "size": 3_101_008},
        "fixture": {"file": "fixture.json", "sha256": FIXTURE.sha256, "size": FIXTURE.size},
    }
    with pytest.raises(DataSourceError, match="unknown data source 'nope'"):
        sources.provenance(["nope"])


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home/.cache/lm-eval-ruler"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg/lm-eval-ruler"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert sources.data_dir(str(tmp_path / "arg")) == tmp_path / "arg/data"


# --------------------------------------------------------------------------- download


def test_download_verifies_and_caches(server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = with_urls(server.serve("/fixture.json"))
    path = sources.source_path(src, cache)
    assert path == cache / "data" / "fixture.json"
    assert path.read_bytes() == PAYLOAD
    sidecar = json.loads((cache / "data" / "fixture.json.verified").read_text())
    assert sidecar == {"size": FIXTURE.size, "mtime_ns": path.stat().st_mtime_ns, "sha256": FIXTURE.sha256}
    assert data_files(cache) == ["fixture.json", "fixture.json.verified"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600: caches are shared

    # Later calls trust the sidecar: no request and no hashing.
    monkeypatch.setattr(sources, "file_sha256", lambda p: pytest.fail("re-hashed a verified file"))
    assert sources.source_path(src, cache) == path
    assert server.count("/fixture.json") == 1


def test_mirror_fallback_after_404_and_refused(server: Server, cache: Path) -> None:
    good = server.serve("/mirror/fixture.json")
    src = with_urls(refused_url(), server.base + "/gone/fixture.json", good)
    path = sources.source_path(src, cache)
    assert path.read_bytes() == PAYLOAD
    assert server.count("/gone/fixture.json") == 1 and server.count("/mirror/fixture.json") == 1
    assert data_files(cache) == ["fixture.json", "fixture.json.verified"]


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        ("truncated", PAYLOAD[: len(PAYLOAD) // 2], "truncated download"),
        ("ok", PAYLOAD[:-1] + b"!", "sha256 mismatch"),
        ("ok", PAYLOAD + b"extra", "announces"),
    ],
    ids=["truncated", "wrong-hash", "wrong-size"],
)
def test_bad_bodies_are_rejected_and_leave_nothing(server: Server, cache: Path, kind: str, body: bytes, message: str) -> None:
    bad = server.serve("/bad/fixture.json", body, kind)
    src = with_urls(bad, server.base + "/also-missing.json")
    with pytest.raises(DataSourceError) as info:
        sources.source_path(src, cache)
    text = str(info.value)
    assert message in text
    assert bad in text and "/also-missing.json: HTTP 404" in text  # every URL with its failure
    assert "lm-eval-ruler data import /path/to/fixture.json --cache-dir" in text
    assert data_files(cache) == []  # no temp file, no target, no sidecar


def test_all_urls_failing_names_each(server: Server, cache: Path) -> None:
    refused = refused_url()
    src = with_urls(refused, server.base + "/nothing.json")
    with pytest.raises(DataSourceError) as info:
        sources.source_path(src, cache)
    text = str(info.value)
    assert f"{refused}: cannot connect" in text
    assert f"{server.base}/nothing.json: HTTP 404" in text
    assert f"or copy it to {cache / 'data' / 'fixture.json'}" in text


def test_corrupt_cache_is_replaced(server: Server, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = with_urls(server.serve("/fixture.json"))
    path = sources.source_path(src, cache)
    path.write_bytes(b"X" * FIXTURE.size)  # same size, new mtime: the sidecar no longer vouches
    with caplog.at_level(logging.WARNING, logger="lm_eval_ruler.data.sources"):
        assert sources.source_path(src, cache) == path
    assert path.read_bytes() == PAYLOAD
    assert server.count("/fixture.json") == 2
    assert any("expected" in r.getMessage() and "deleting" in r.getMessage() for r in caplog.records)


def test_truncated_cache_file_is_replaced(server: Server, cache: Path) -> None:
    src = with_urls(server.serve("/fixture.json"))
    path = sources.source_path(src, cache)
    with open(path, "r+b") as handle:
        handle.truncate(100)
    assert sources.source_path(src, cache).read_bytes() == PAYLOAD
    assert server.count("/fixture.json") == 2


def test_file_copied_by_hand_is_hashed_once(cache: Path, no_network: None) -> None:
    directory = cache / "data"
    directory.mkdir(parents=True)
    (directory / "fixture.json").write_bytes(PAYLOAD)
    src = with_urls("http://127.0.0.1:9/never")
    assert sources.source_path(src, cache, download=False) == directory / "fixture.json"
    assert (directory / "fixture.json.verified").exists()


def test_stale_partial_downloads_are_removed(server: Server, cache: Path) -> None:
    directory = cache / "data"
    directory.mkdir(parents=True)
    (directory / ".fixture.json.abc123.part").write_bytes(b"left by a killed process")
    sources.source_path(with_urls(server.serve("/fixture.json")), cache)
    assert data_files(cache) == ["fixture.json", "fixture.json.verified"]


def test_bad_timeout_setting(server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sources.TIMEOUT_ENV, "soon")
    with pytest.raises(DataSourceError, match=sources.TIMEOUT_ENV):
        sources.source_path(with_urls(server.serve("/fixture.json")), cache)
    assert data_files(cache) == []


def test_download_many(server: Server, cache: Path) -> None:
    good = with_urls(server.serve("/fixture.json"))
    other = dataclasses.replace(good, name="other", filename="other.json")
    assert sources.download([good, other], cache) == [cache / "data/fixture.json", cache / "data/other.json"]
    broken = dataclasses.replace(good, name="broken", filename="broken.json", urls=(server.base + "/x",))
    with pytest.raises(DataSourceError, match="broken.json"):
        sources.download([broken, good], cache)


# --------------------------------------------------------------------------- concurrency


def _concurrent_worker(src: Source, cache: str, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    path = sources.source_path(src, cache)
    results.put(str(path))  # type: ignore[attr-defined]


def test_concurrent_processes_download_once(server: Server, cache: Path) -> None:
    server.delay = 0.5  # the first download is still running when the second process asks
    src = with_urls(server.serve("/fixture.json"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    workers = [ctx.Process(target=_concurrent_worker, args=(src, str(cache), barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    paths = {results.get(timeout=5), results.get(timeout=5)}
    assert paths == {str(cache / "data" / "fixture.json")}
    assert (cache / "data" / "fixture.json").read_bytes() == PAYLOAD
    assert server.count("/fixture.json") == 1
    assert data_files(cache) == ["fixture.json", "fixture.json.verified"]


# --------------------------------------------------------------------------- offline


def test_offline_missing_raises_without_network(cache: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    src = with_urls("http://127.0.0.1:9/fixture.json")
    monkeypatch.setenv(sources.OFFLINE_ENV, "1")
    with pytest.raises(DataSourceError) as info:
        sources.source_path(src, cache)
    text = str(info.value)
    assert sources.OFFLINE_ENV in text
    assert "lm-eval-ruler data import /path/to/fixture.json" in text
    assert str(cache / "data" / "fixture.json") in text
    assert "http://127.0.0.1:9/fixture.json" in text  # where to get it on a connected machine

    monkeypatch.delenv(sources.OFFLINE_ENV)
    with pytest.raises(DataSourceError, match="download=False"):
        sources.source_path(src, cache, download=False)


def test_offline_present_makes_no_network_call(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    src = with_urls(server.serve("/fixture.json"))
    path = sources.source_path(src, cache)  # downloaded while the network is allowed
    request.getfixturevalue("no_network")
    monkeypatch.setenv(sources.OFFLINE_ENV, "1")
    assert sources.source_path(src, cache) == path
    assert sources.source_path(src, cache, download=False) == path
    assert server.count("/fixture.json") == 1


def test_offline_corrupt_is_deleted_then_reported(cache: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    directory = cache / "data"
    directory.mkdir(parents=True)
    (directory / "fixture.json").write_bytes(b"garbage")
    with pytest.raises(DataSourceError, match="lm-eval-ruler data import"):
        sources.source_path(with_urls("http://127.0.0.1:9/x"), cache, download=False)
    assert data_files(cache) == []


# --------------------------------------------------------------------------- import and status


def test_import_matching_file_by_content(tmp_path: Path, cache: Path, no_network: None) -> None:
    local = tmp_path / "downloads" / "any-name.json"
    local.parent.mkdir()
    local.write_bytes(PAYLOAD)
    assert sources.import_file(local, cache, catalog=[FIXTURE]) == FIXTURE
    assert (cache / "data" / "fixture.json").read_bytes() == PAYLOAD
    assert local.exists()  # copied, not moved
    assert sources.source_path(FIXTURE, cache, download=False) == cache / "data" / "fixture.json"
    # Importing again is a no-op.
    assert sources.import_file(local, cache, catalog=[FIXTURE]) == FIXTURE
    assert data_files(cache) == ["fixture.json", "fixture.json.verified"]


def test_import_non_matching_file(tmp_path: Path, cache: Path) -> None:
    same_size = tmp_path / "fixture.json"
    same_size.write_bytes(PAYLOAD[:-1] + b"?")
    with pytest.raises(DataSourceError) as info:
        sources.import_file(same_size, cache, catalog=[FIXTURE])
    text = str(info.value)
    assert "matches no known data source" in text and hashlib.sha256(same_size.read_bytes()).hexdigest() in text
    assert f"fixture: fixture.json, {FIXTURE.size:,} bytes, sha256 {FIXTURE.sha256}" in text

    other = tmp_path / "notes.txt"
    other.write_bytes(b"hello")
    with pytest.raises(DataSourceError, match="size 5 bytes"):
        sources.import_file(other, cache)
    with pytest.raises(DataSourceError, match="no such file"):
        sources.import_file(tmp_path / "absent.json", cache)
    assert data_files(cache) == []


def test_import_names_known_variants(tmp_path: Path, cache: Path) -> None:
    variant = b"not the original bytes"
    fake = dataclasses.replace(FIXTURE, size=len(variant))
    path = tmp_path / "hotpot.json"
    path.write_bytes(variant)
    digest = hashlib.sha256(variant).hexdigest()
    original = dict(sources.KNOWN_VARIANTS)
    sources.KNOWN_VARIANTS[digest] = "a re-serialised copy"
    try:
        with pytest.raises(DataSourceError, match="This file is a re-serialised copy"):
            sources.import_file(path, cache, catalog=[fake])
    finally:
        sources.KNOWN_VARIANTS.clear()
        sources.KNOWN_VARIANTS.update(original)


def test_import_directory(tmp_path: Path, cache: Path) -> None:
    other_payload = b'{"other": true}\n'
    other = Source("other", "other.json", len(other_payload), hashlib.sha256(other_payload).hexdigest(), (), "")
    folder = tmp_path / "carried-in"
    folder.mkdir()
    (folder / "a.json").write_bytes(PAYLOAD)
    (folder / "b.json").write_bytes(other_payload)
    (folder / "README").write_bytes(b"unrelated")
    assert sources.import_file(folder, cache, catalog=[FIXTURE, other]) == [FIXTURE, other]
    assert data_files(cache) == ["fixture.json", "fixture.json.verified", "other.json", "other.json.verified"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataSourceError, match="no file in"):
        sources.import_file(empty, cache, catalog=[FIXTURE])


def test_status(tmp_path: Path, cache: Path) -> None:
    broken = dataclasses.replace(FIXTURE, name="broken", filename="broken.json")
    absent = dataclasses.replace(FIXTURE, name="absent", filename="absent.json")
    local = tmp_path / "fixture.json"
    local.write_bytes(PAYLOAD)
    sources.import_file(local, cache, catalog=[FIXTURE])
    (cache / "data" / "broken.json").write_bytes(PAYLOAD[:-1] + b"!")
    rows = {row.name: row for row in sources.status(cache, catalog=[FIXTURE, broken, absent])}

    ok = rows["fixture"]
    assert (ok.present, ok.verified, ok.size, ok.sha256, ok.detail) == (True, True, FIXTURE.size, FIXTURE.sha256, "ok")
    assert ok.path == cache / "data" / "fixture.json" and ok.filename == "fixture.json"
    bad = rows["broken"]
    assert bad.present and not bad.verified and "sha256 mismatch" in bad.detail
    assert bad.sha256 == hashlib.sha256(PAYLOAD[:-1] + b"!").hexdigest()
    missing = rows["absent"]
    assert (missing.present, missing.verified, missing.size, missing.sha256) == (False, False, None, None)
    assert "lm-eval-ruler data download absent" in missing.detail
    assert (cache / "data" / "broken.json").exists()  # status never deletes

    assert [row.name for row in sources.status(cache)] == ["essays", "squad", "hotpotqa"]


@pytest.mark.skipif(not SHARED_ESSAYS.is_file(), reason=f"{SHARED_ESSAYS} not present")
def test_import_shared_essays_matches_pin(cache: Path, no_network: None) -> None:
    assert sources.import_file(SHARED_ESSAYS, cache) == SOURCES["essays"]
    path = sources.source_path("essays", cache, download=False)
    assert path == cache / "data" / "PaulGrahamEssays.json"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SOURCES["essays"].sha256
    row = next(r for r in sources.status(cache) if r.name == "essays")
    assert row.verified
