"""Every task at 4k and 16k (and the heaviest at 128k) stays within budget with real tokenizers, chat template included."""

from __future__ import annotations

from pathlib import Path

import pytest

from lm_eval_ruler import TASKS, DatasetOptions, build_dataset
from lm_eval_ruler.data.tokens import PromptCounter, RenderSettings, load_tokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
QA_FILES = (("squad", str(FIXTURES / "squad_dev_mini.json")), ("hotpotqa", str(FIXTURES / "hotpot_dev_mini.json")))
CELLS = [(task, length, 5) for length in (4096, 16384) for task in TASKS] + [("cwe", 131072, 3), ("niah_multikey_3", 131072, 3)]


@pytest.fixture(params=["llama3", "smollm2"])
def tokenizer_path(request, llama3_tokenizer):
    return llama3_tokenizer if request.param == "llama3" else str(request.getfixturevalue("smollm2"))


@pytest.mark.slow
def test_no_prompt_exceeds_its_budget(tokenizer_path, essays_cache):
    tokenizer = load_tokenizer(tokenizer_path)
    whole = PromptCounter(tokenizer, RenderSettings(("raw", "chat")), piecewise=False)
    rows = []
    for task, length, samples in CELLS:
        result = build_dataset(task, length, DatasetOptions(tokenizer=tokenizer_path, num_samples=samples, data_files=QA_FILES))
        budget = length - TASKS[task].max_gen_toks
        recounted = [whole.count(doc["input"], doc["gen_prefix"]) for doc in result.docs]
        assert recounted == [doc["prompt_tokens"] for doc in result.docs]
        assert max(recounted) <= budget, f"{task} at {length} over budget"
        stats = result.info["prompt_tokens"]
        rows.append(f"| {task} | {length} | {stats['min']} | {stats['median']} | {stats['max']} | {budget} |")
    print(f"\n{Path(tokenizer_path).name}: prompt tokens (chat and raw renderings, the larger)\n"
          "| task | length | min | median | max | budget |\n|---|---|---|---|---|---|\n" + "\n".join(rows))
