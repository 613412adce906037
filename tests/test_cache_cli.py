"""The dataset cache as a team uses it: listing past bad entries, selective clearing, verifying,
shared-cache permissions, one generator per key under concurrency, and explained misses."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from lm_eval_ruler import DatasetOptions, build_dataset
from lm_eval_ruler._files import file_sha256, locked, write_atomically, write_json_atomically
from lm_eval_ruler.cli import main
from lm_eval_ruler.data.cache import DatasetCache

#: (task, length) of the small real entries every test starts from; none needs a data file.
CELLS = (("niah_single_1", 1024), ("niah_multikey_2", 1024), ("niah_single_1", 2048))


def _options(tokenizer: str, cache: Path, **kw: Any) -> DatasetOptions:
    return DatasetOptions(**{"tokenizer": tokenizer, "num_samples": 2, "render_modes": ("raw",), "cache_dir": str(cache), **kw})


@pytest.fixture(scope="module")
def template_cache(llama3_tokenizer: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with the CELLS generated once per module; tests work on copies."""
    root = tmp_path_factory.mktemp("template-cache")
    for task, length in CELLS:
        assert not build_dataset(task, length, _options(llama3_tokenizer, root)).from_cache
    return root


@pytest.fixture()
def filled_cache(template_cache: Path, cache_dir: Path) -> Path:
    shutil.copytree(template_cache, cache_dir)
    return cache_dir


def _entries(cache: Path) -> dict[tuple[Any, Any], Any]:
    return {(e.info.get("task"), e.info.get("length")): e for e in DatasetCache(cache / "datasets").entries() if not e.bad}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _ruler_files(cache: Path) -> list[Path]:
    return sorted((cache / "datasets").glob("*/*.ruler"))


# ------------------------------------------------------------------ ls and clear --bad


def test_ls_lists_past_an_empty_entry_and_clear_bad_removes_only_it(filled_cache: Path, capsys):
    good = _entries(filled_cache)
    empty = filled_cache / "datasets" / "ab" / f"{'ab' * 32}.ruler"
    empty.parent.mkdir(exist_ok=True)
    empty.touch()

    code, out = _cli(capsys, "cache", "ls", "--cache-dir", str(filled_cache))
    assert code == 1
    for entry in good.values():
        assert entry.key[:12] in out
    assert out.count("niah_single_1") == 2 and "niah_multikey_2" in out
    assert f"BAD {empty}: empty file (0 bytes)" in out
    assert out.rstrip().endswith(f"remove them with: lm-eval-ruler cache clear --bad --cache-dir {filled_cache}")

    code, out = _cli(capsys, "cache", "clear", "--bad", "--cache-dir", str(filled_cache))
    assert code == 0 and "removed 1 cached dataset(s)" in out
    assert not empty.exists()
    assert _ruler_files(filled_cache) == sorted(e.path for e in good.values())

    code, out = _cli(capsys, "cache", "ls", "--cache-dir", str(filled_cache))
    assert code == 0 and "BAD" not in out and "3 dataset(s)" in out


def test_ls_row_shows_what_tells_entries_apart(filled_cache: Path, capsys):
    code, out = _cli(capsys, "cache", "ls", "--cache-dir", str(filled_cache))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:8] == ["TASK", "LENGTH", "PROFILE", "SEED", "N", "RENDER", "SYSTEM", "TEMPLATE"]
    row = next(line for line in rows if line.startswith("niah_multikey_2"))
    assert row.split()[:8] == ["niah_multikey_2", "1024", "reference", "42", "2", "raw", "no", "-"]
    assert "llama3" in row


def test_bad_entries_of_every_kind_are_listed_not_raised(tmp_path: Path):
    cache = DatasetCache(tmp_path)
    cache.store("cd" * 32, [{"a": 1}], {"task": "t", "length": 1})
    bad = {
        "empty file (0 bytes)": b"",
        "header is not JSON": b"not json\n",
        "cache format 1": b'{"format": 1, "key": "x"}\n',
        "truncated header": b'{"format": 2',
        "not a cache entry header": b"[1, 2]\n",
    }
    for index, content in enumerate(bad.values()):
        path = tmp_path / "ef" / f"{index:064d}.ruler"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / f"{'ab' * 32}.jsonl.gz").write_bytes(b"old")

    entries = list(cache.entries())
    assert len(entries) == 7
    errors = [e.error for e in entries if e.bad]
    assert len(errors) == 6
    for reason in [*bad, "cache format 1, which this version no longer reads"]:
        assert any(error.startswith(reason) for error in errors), reason
    assert all(e.info == {} and e.count == 0 for e in entries if e.bad)
    assert all(cache.verify(e) == e.error for e in entries)
    assert [e.key for e in cache.select(bad=True)] == [e.key for e in entries if e.bad]
    assert cache.remove(cache.select(bad=True)) == 6
    assert [e.key for e in cache.entries()] == ["cd" * 32]


# ------------------------------------------------------------------ clear selectors


def test_clear_selectors_remove_exactly_what_they_say(filled_cache: Path, llama3_tokenizer: str, capsys):
    entries = _entries(filled_cache)
    single_1k, multikey_1k, single_2k = (entries[cell] for cell in CELLS)
    cache_dir = ["--cache-dir", str(filled_cache)]

    code, out = _cli(capsys, "cache", "clear", *cache_dir)
    assert code == 2
    assert "--task, --length, --tokenizer, --older-than, --bad" in out and "--all" in out
    code, _ = _cli(capsys, "cache", "clear", "--all", "--task", "niah_single_1", *cache_dir)
    assert code == 2
    assert len(_ruler_files(filled_cache)) == 3

    code, out = _cli(capsys, "cache", "clear", "--task", "niah_single_1", "--dry-run", *cache_dir)
    assert code == 0 and out.count("would remove niah_single_1") == 2 and "would remove 2 cached dataset(s)" in out
    assert len(_ruler_files(filled_cache)) == 3

    code, out = _cli(capsys, "cache", "clear", "--tokenizer", "no-such-tokenizer", *cache_dir)
    assert code == 0 and "removed 0 cached dataset(s)" in out

    code, out = _cli(capsys, "cache", "clear", "--task", "niah_single_1", "--length", "2k", *cache_dir)
    assert code == 0 and single_2k.key[:12] in out and "removed 1 cached dataset(s)" in out
    assert _ruler_files(filled_cache) == sorted([single_1k.path, multikey_1k.path])

    two_hours_ago = time.time() - 7200
    os.utime(single_1k.path, (two_hours_ago, two_hours_ago))
    code, out = _cli(capsys, "cache", "clear", "--older-than", "1h", *cache_dir)
    assert code == 0 and single_1k.key[:12] in out and "removed 1 cached dataset(s)" in out
    assert _ruler_files(filled_cache) == [multikey_1k.path]
    # Its alias went with it, and building it again simply regenerates it.
    aliases = [p.read_text() for p in (filled_cache / "datasets" / "aliases").iterdir()]
    assert single_1k.key not in aliases and multikey_1k.key in aliases
    assert not build_dataset("niah_single_1", 1024, _options(llama3_tokenizer, filled_cache)).from_cache

    code, out = _cli(capsys, "cache", "clear", "--length", "1024", "--tokenizer", "llama3", *cache_dir)
    assert code == 0 and "removed 2 cached dataset(s)" in out
    assert _ruler_files(filled_cache) == []


def test_clear_all_removes_everything(filled_cache: Path, capsys):
    (filled_cache / "datasets" / "ab").mkdir(exist_ok=True)
    (filled_cache / "datasets" / "ab" / f"{'ab' * 32}.ruler").touch()
    code, out = _cli(capsys, "cache", "clear", "--all", "--cache-dir", str(filled_cache))
    assert code == 0 and "removed 4 cached dataset(s)" in out and "removed BAD" in out
    assert _ruler_files(filled_cache) == []
    assert list((filled_cache / "datasets" / "aliases").iterdir()) == []


@pytest.mark.parametrize("age", ["7", "d", "7y", "-1h"])
def test_older_than_rejects_malformed_ages(age: str, cache_dir: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cache", "clear", f"--older-than={age}"])
    assert exc.value.code == 2
    assert "e.g. 30m, 12h, 7d" in capsys.readouterr().err


# ------------------------------------------------------------------ verify


def test_verify_finds_a_byte_flipped_in_the_middle_and_deletes_nothing(filled_cache: Path, capsys):
    code, out = _cli(capsys, "cache", "verify", "--cache-dir", str(filled_cache))
    assert code == 0 and "verified 3 cached dataset(s)" in out and ": 0 bad" in out

    target = _entries(filled_cache)[CELLS[2]].path
    data = bytearray(target.read_bytes())
    middle = data.index(b"The grass is green", len(data) // 2)  # inside the second prompt's raw text
    data[middle + 4] = ord("G")
    target.write_bytes(bytes(data))

    assert _cli(capsys, "cache", "ls", "--cache-dir", str(filled_cache))[0] == 0  # the header is intact
    code, out = _cli(capsys, "cache", "verify", "--cache-dir", str(filled_cache))
    assert code == 1
    assert f"BAD {target} (niah_single_1 2048" in out and "failed verification" in out and ": 1 bad" in out
    assert target.read_bytes() == bytes(data)


# ------------------------------------------------------------------ permissions and helpers


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_cache_files_get_ordinary_permissions(tmp_path: Path, umask: int, mode: int):
    previous = os.umask(umask)
    try:
        cache = DatasetCache(tmp_path / "datasets")
        entry = cache.store("ef" * 32, [{"prompt": "x" * 5000}], {"task": "t"})
        cache.store_alias("12" * 32, "ef" * 32)
        write_json_atomically(tmp_path / "state.json", {"path": tmp_path})
    finally:
        os.umask(previous)
    for path in (entry, tmp_path / "datasets" / "aliases" / ("12" * 32), tmp_path / "state.json"):
        assert path.stat().st_mode & 0o777 == mode, path
    assert (tmp_path / "state.json").read_text() == json.dumps({"path": str(tmp_path)}, indent=2) + "\n"


def test_write_atomically_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "sub" / "file"
    target.parent.mkdir()
    target.write_bytes(b"old")

    def failing(handle: Any) -> None:
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(target, failing)
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["file"]


def test_file_sha256_sees_a_same_size_rewrite(tmp_path: Path):
    path = tmp_path / "data.json"
    path.write_bytes(b"aaaa")
    first = file_sha256(path)
    stat = path.stat()
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert file_sha256(path) != first


def test_locked_creates_its_directory(tmp_path: Path):
    with locked(tmp_path / "a" / "b.lock"):
        assert (tmp_path / "a" / "b.lock").exists()


# ------------------------------------------------------------------ one generator per key


def _build_in_child(cache: str, tokenizer: str, barrier: Any, results: Any) -> None:
    from lm_eval_ruler.data import build
    from lm_eval_ruler.data.tokens import load_tokenizer

    load_tokenizer(tokenizer, False, None)  # warm, so both processes reach the cache together
    generate, lock = build.FAMILIES["niah"], build.locked
    entered = []

    def slow_generate(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2)  # long enough for the other process to arrive at the lock
        return generate(*args, **kwargs)

    def recorded_lock(path: Path) -> Any:
        entered.append(path)
        return lock(path)

    build.FAMILIES, build.locked = {**build.FAMILIES, "niah": slow_generate}, recorded_lock
    barrier.wait(timeout=120)
    result = build_dataset("niah_single_1", 1024, _options(tokenizer, Path(cache)))
    results.put((result.from_cache, len(entered), result.docs))


def test_concurrent_builders_of_one_key_generate_once(llama3_tokenizer: str, cache_dir: Path):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_build_in_child, args=(str(cache_dir), llama3_tokenizer, barrier, results)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(from_cache for from_cache, _, _ in outcomes) == [False, True]
    assert [entered for _, entered, _ in outcomes] == [1, 1]  # both missed and waited on the lock
    assert outcomes[0][2] == outcomes[1][2]
    assert len(_ruler_files(cache_dir)) == 1
    assert [p.name for p in (cache_dir / "locks").iterdir()] == [f"{_entries(cache_dir)[CELLS[0]].key}.lock"]


# ------------------------------------------------------------------ explained misses


def test_a_miss_names_the_determinant_that_differs(llama3_tokenizer: str, cache_dir: Path, caplog):
    both = _options(llama3_tokenizer, cache_dir, render_modes=("raw", "chat"))
    caplog.set_level(logging.WARNING, logger="lm_eval_ruler.data.build")
    assert not build_dataset("niah_single_1", 1024, both).from_cache
    assert not caplog.records  # nothing cached for this task and length: nothing to explain
    cached_key = _entries(cache_dir)[CELLS[0]].key

    chat = _options(llama3_tokenizer, cache_dir, render_modes=("chat",))
    assert not build_dataset("niah_single_1", 1024, chat).from_cache
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"ruler cache miss for niah_single_1 at 1024: nearest cached entry {cached_key[:12]} differs in "
        "render_modes (cached ['raw', 'chat'], now ['chat'])"
    )

    caplog.clear()
    assert build_dataset("niah_single_1", 1024, chat).from_cache
    assert not build_dataset("niah_single_1", 2048, chat).from_cache
    assert not caplog.records


def test_nearest_prefers_fewest_differences(tmp_path: Path):
    cache = DatasetCache(tmp_path)
    base = {"task": "t", "length": 8, "seed": 1, "render_modes": ["raw"], "params": {"a": (1, 2)}}
    cache.store("a" * 64, [], {**base, "seed": 2, "render_modes": ["chat"]})
    cache.store("b" * 64, [], {**base, "seed": 2})
    cache.store("c" * 64, [], {**base, "length": 16})
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / f"{'d' * 64}.ruler").touch()  # a bad entry is skipped, not raised
    entry, differing = cache.nearest("t", 8, base)
    assert entry.key == "b" * 64 and differing == ["seed"]  # params' tuple equals its JSON list
    assert cache.nearest("t", 32, base) is None
