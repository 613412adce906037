"""Generated data pinned by hash: a refactor that moves code must not change one byte of any doc.

The hashes were recorded from the code before the package was split into its data, report and
sweep wings. A change here means the generated data changed: that needs a task ``version`` bump
(and a CHANGELOG entry), never a silent new hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lm_eval_ruler import DatasetOptions, build_dataset

FIXTURES = Path(__file__).parent / "fixtures"

#: (task, length, profile, render modes) -> sha256 of the docs as sorted JSON, Llama-3 tokenizer, 3 samples.
NO_DATA_FILE = {
    ("niah_single_1", 1024, "reference", ("raw",)): "6a29e7da1f1cada2287d00e47d2252bfd0ea615c3d0bda7edc535f3c594cfccc",
    ("niah_multikey_2", 2048, "reference", ("raw",)): "84bb283fcc86fad1ce7b886b693ce65b09dac7b7be74988b882c466f717b61dc",
    ("niah_multikey_3", 1024, "reference", ("chat",)): "ce8c181f63e5e9746ca3185606f44c223e31512f22b802f77d9c281236f37b75",
    ("vt", 2048, "reference", ("raw",)): "f0065517a4c7595e7dca19de957da931609d6cb2dc0de6215f19638c023a49e6",
    ("vt", 2048, "2024", ("raw",)): "0f251a8effa643f7d03f74484601aadc09b6b28d05840388d699185ef1091be2",
    ("cwe", 1024, "reference", ("raw", "chat")): "85b023b6ed092d7e16c8671a821293984a4b3755019b72cb720aa56a240e9c2f",
    ("cwe", 2048, "2024", ("raw",)): "dba3d4a175106ec79418977e5f6f1c968021617a81a62846849dd5fae46ab231",
    ("fwe", 2048, "reference", ("chat",)): "f1fa9b509ed0c6e5a0a89c029d9422d8cc3cb2561812adeb1f008a6aaddfe379",
}
WITH_ESSAYS = {
    ("niah_single_2", 2048, "reference", ("raw",)): "354a5f9d898338619b38b0cb5a61a25b899d1f9d8f7c9a32d286ca5a382f55a6",
    ("niah_multivalue", 1024, "2024", ("chat",)): "bda4b326f1fb93e7bdc17b7883850a51fe0b14fc702bb4779c7c6b18d7f4d9d4",
}
WITH_QA_FIXTURES = {
    ("qa_squad", 4096, "reference", ("raw",)): "ae5a49855cf1f6dd7d4609015feb6adaf2caa25c68f9019ba5ebde1ddf7c8ea6",
    ("qa_hotpot", 4096, "2024", ("chat",)): "dd00f557465b56bfa82fb06ed5576296bbcc70bb96b121becb18b363a75a83fe",
}


def docs_hash(task: str, length: int, profile: str, modes: tuple[str, ...], tokenizer: str, cache: Path) -> str:
    files = (("squad", str(FIXTURES / "squad_dev_mini.json")), ("hotpotqa", str(FIXTURES / "hotpot_dev_mini.json")))
    options = DatasetOptions(
        tokenizer=tokenizer, num_samples=3, profile=profile, render_modes=modes, cache_dir=str(cache), use_cache=False,
        data_files=files if task.startswith("qa_") else (),
    )  # fmt: skip
    generated = build_dataset(task, length, options)
    assert generated is not None
    return hashlib.sha256(json.dumps(generated.docs, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("case", list(NO_DATA_FILE), ids=lambda case: "-".join(map(str, case[:3])) + "-" + "+".join(case[3]))
def test_generated_docs_are_unchanged(case, llama3_tokenizer: str, cache_dir: Path):
    assert docs_hash(*case, llama3_tokenizer, cache_dir) == NO_DATA_FILE[case]


@pytest.mark.parametrize("case", list(WITH_ESSAYS), ids=lambda case: "-".join(map(str, case[:3])))
def test_essay_docs_are_unchanged(case, llama3_tokenizer: str, essays_cache: Path):
    assert docs_hash(*case, llama3_tokenizer, essays_cache) == WITH_ESSAYS[case]


@pytest.mark.parametrize("case", list(WITH_QA_FIXTURES), ids=lambda case: "-".join(map(str, case[:3])))
def test_qa_docs_are_unchanged(case, llama3_tokenizer: str, cache_dir: Path):
    assert docs_hash(*case, llama3_tokenizer, cache_dir) == WITH_QA_FIXTURES[case]
