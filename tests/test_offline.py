"""Air-gapped use: generation from a pre-filled cache with every socket blocked, and the data/cache commands."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lm_eval_ruler import DatasetOptions, build_dataset
from lm_eval_ruler.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Any connection attempt fails the test (and is recorded)."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_essay_and_qa_generation_make_no_network_call(essays_cache: Path, llama3_tokenizer: str, no_network: list[object]):
    options = DatasetOptions(
        tokenizer=llama3_tokenizer,
        num_samples=2,
        use_cache=False,
        download=False,
        data_files=(("squad", str(FIXTURES / "squad_dev_mini.json")),),
    )
    essay = build_dataset("niah_single_2", 4096, options)
    qa = build_dataset("qa_squad", 4096, options)
    assert len(essay.docs) == len(qa.docs) == 2
    assert essay.info["sources"]["essays"]["sha256"].startswith("d9e4663b")
    assert qa.info["sources"]["squad"]["pinned"] is False
    assert no_network == []


def test_data_commands(essays_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_network: list[object]):
    cache = str(tmp_path / "cache")
    assert main(["data", "import", str(essays_file), "--cache-dir", cache]) == 0
    assert "imported essays" in capsys.readouterr().out
    assert main(["data", "status", "--cache-dir", cache]) == 1  # SQuAD and HotpotQA still missing
    status = capsys.readouterr().out
    assert "essays" in status and "verified" in status and "missing" in status
    assert main(["data", "download", "essays", "--cache-dir", cache]) == 0  # present: no download needed
    capsys.readouterr()


def test_offline_download_of_a_missing_file_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch, no_network):
    monkeypatch.setenv("LM_EVAL_RULER_OFFLINE", "1")
    assert main(["data", "download", "squad", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "lm-eval-ruler data import" in capsys.readouterr().err


def test_cache_commands(llama3_tokenizer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cache = str(tmp_path / "cache")
    build_dataset("niah_single_1", 2048, DatasetOptions(tokenizer=llama3_tokenizer, num_samples=2, cache_dir=cache))
    assert main(["cache", "ls", "--cache-dir", cache]) == 0
    assert "niah_single_1" in capsys.readouterr().out
    assert main(["cache", "clear", "--all", "--cache-dir", cache]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert main(["generate", "--tokenizer", llama3_tokenizer, "--tasks", "niah_single_1", "--lengths", "2k", "--num-samples", "2", "--cache-dir", cache]) == 0
    assert main(["cache", "ls", "--cache-dir", cache]) == 0
    assert "niah_single_1" in capsys.readouterr().out
