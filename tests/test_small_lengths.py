"""Lengths below 4K: ``ruler_1k``/``ruler_2k`` hold only the tasks that fit, and the report scores them.

QA's smallest prompt is 10 whole documents, more than 1k tokens even with the small test files,
so a 13-task ``ruler_1k`` aborted on qa_squad and lost the 11 tasks that fit. The measured
minimums behind the rule are in ``lm_eval_ruler/_tasks.py`` (``QA_MIN_GROUP_LENGTH``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lm_eval_ruler import BudgetError, DatasetOptions, build_dataset
from lm_eval_ruler._tasks import CATEGORIES, LENGTHS, TASKS, length_groups, tasks_fitting
from lm_eval_ruler.configs import expected_files
from lm_eval_ruler.report import Run, TaskResult, ruler_table
from lm_eval_ruler.report.cli import main as report_cli

FIXTURES = Path(__file__).parent / "fixtures"
QA_FILES = (("squad", str(FIXTURES / "squad_dev_mini.json")), ("hotpotqa", str(FIXTURES / "hotpot_dev_mini.json")))
NOT_QA = tuple(name for name in TASKS if name not in CATEGORIES["qa"])


# --------------------------------------------------------------------------- the task table and the YAML


@pytest.mark.parametrize("length", ["1k", "2k"])
def test_small_groups_hold_the_tasks_that_fit_and_no_empty_category(length: str):
    assert tasks_fitting(LENGTHS[length]) == NOT_QA
    groups = {group.name: group for group in length_groups(length)}
    assert list(groups) == [f"ruler_{length}", f"ruler_niah_{length}", f"ruler_aggregation_{length}"]
    assert groups[f"ruler_{length}"].tasks == tuple(TASKS[t].task_name(length) for t in NOT_QA)
    assert "11 tasks" in groups[f"ruler_{length}"].description and "qa_squad" in groups[f"ruler_{length}"].description
    files = expected_files()
    assert f"{length}/ruler_qa_{length}.yaml" not in files
    group = yaml.safe_load(files[f"{length}/ruler_{length}.yaml"])
    assert len(group["task"]) == 11 and not any("qa_" in task for task in group["task"])
    # The tasks themselves still exist at every length, QA included: run alone, they refuse clearly.
    for name in TASKS:
        assert f"{length}/ruler_{name}_{length}.yaml" in files


@pytest.mark.parametrize("length", ["4k", "8k", "128k", "1m", "custom"])
def test_from_4k_and_custom_groups_keep_all_13(length: str):
    groups = {group.name: group for group in length_groups(length)}
    assert len(groups[f"ruler_{length}"].tasks) == 13 and f"ruler_qa_{length}" in groups
    assert "13 task scores" in groups[f"ruler_{length}"].description
    if length != "custom":
        assert tasks_fitting(LENGTHS[length]) == tuple(TASKS)
    assert tasks_fitting(None) == tuple(TASKS)


def test_qa_squad_1k_alone_still_refuses_clearly(llama3_tokenizer: str, cache_dir: Path):
    options = DatasetOptions(llama3_tokenizer, num_samples=2, render_modes=("raw",), download=False, data_files=QA_FILES)
    with pytest.raises(BudgetError, match=r"qa_squad at 1024 tokens: the length is too small.*needs a length of at least 1\d{3}"):
        build_dataset("qa_squad", 1024, options)


@pytest.mark.parametrize("mode", ["raw", "chat"])
def test_every_task_of_ruler_1k_fits_both_tokenizers(mode: str, llama3_tokenizer: str, smollm2: Path, essays_cache: Path):
    """The measurement behind the rule, kept as a guard (the closest is essay multiquery, ~90 tokens spare)."""
    for tokenizer in (llama3_tokenizer, str(smollm2)):
        options = DatasetOptions(tokenizer, num_samples=5, render_modes=(mode,), use_cache=False)
        for name in tasks_fitting(1024):
            docs = build_dataset(name, 1024, options).docs
            assert max(doc["prompt_tokens"] for doc in docs) + TASKS[name].max_gen_toks <= 1024, (name, tokenizer)


# --------------------------------------------------------------------------- the report's per-length score


def run_with(name: str, lengths: dict[str, tuple[str, ...]], score=lambda task: 50.0) -> Run:
    results = {
        (task, LENGTHS[length]): TaskResult(task, LENGTHS[length], f"ruler_{task}_{length}", score(task), 1.0, 10, {}, Path("x"))
        for length, tasks in lengths.items()
        for task in tasks
    }
    return Run(name, Path("."), (), results, {}, {})


def test_table_scores_the_fitting_tasks_below_4k_and_all_13_from_4k():
    scores = {name: float(i) for i, name in enumerate(TASKS)}
    table = ruler_table(run_with("m", {"1k": NOT_QA, "2k": tuple(TASKS), "4k": NOT_QA}, scores.__getitem__))
    one, two, four = table.row("1k"), table.row("2k"), table.row("4k")
    assert one.complete and one.score == pytest.approx(sum(scores[t] for t in NOT_QA) / 11)
    assert one.stderr == pytest.approx((11**0.5) / 11) and one.categories["qa"] is None
    assert two.score == pytest.approx(sum(scores.values()) / 13)  # all 13 ran: RULER's own score
    assert four.score is None and four.missing == ("qa_squad", "qa_hotpot")  # 4K needs all 13
    notes = "\n".join(table.notes)
    assert "1K score is the mean of the 11 tasks that fit" in notes and "qa_squad, qa_hotpot need 4K" in notes
    assert "2K score is the mean" not in notes
    assert "4K is partial: 2 of 13 tasks missing (qa_squad, qa_hotpot)" in notes
    assert table.scores == {1024: one.score, 2048: two.score}


def test_table_small_length_missing_a_fitting_task_has_no_score():
    table = ruler_table(run_with("m", {"1k": tuple(t for t in NOT_QA if t != "vt")}))
    row = table.row("1k")
    assert row.score is None and row.missing == ("vt",)
    assert "1K is partial: 1 of 11 tasks missing (vt); no length score" in table.notes
    assert table.effective_length is None


def test_effective_length_counts_small_lengths():
    table = ruler_table(run_with("m", {"1k": NOT_QA, "2k": NOT_QA}, lambda task: 90.0))
    assert table.effective_length == ">2K"


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_ruler_1k_runs_through_lm_eval_with_the_dummy_model(
    tmp_path: Path, llama3_tokenizer: str, essays_cache: Path, capsys: pytest.CaptureFixture[str]
):
    output = tmp_path / "out"
    command = [
        sys.executable, "-m", "lm_eval_ruler", "run", "--model", "dummy", "--model_args", f"tokenizer={llama3_tokenizer}",
        "--tasks", "ruler_1k", "--metadata", json.dumps({"num_samples": 2}), "--output_path", str(output),
    ]  # fmt: skip
    env = {**os.environ, "LM_EVAL_RULER_CACHE": str(essays_cache)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    [path] = sorted(output.rglob("results_*.json"))[-1:]
    results = json.loads(path.read_text())["results"]
    assert {f"ruler_{name}_1k" for name in NOT_QA} <= set(results)
    assert not any(key.startswith("ruler_qa_") for key in results)
    assert results["ruler_1k"]["score,none"] == 0.0

    assert report_cli(["report", f"tiny={output}"]) == 0
    text = capsys.readouterr().out
    assert "| tiny | <1K | – | 0.0 |" in text
    assert "1K score is the mean of the 11 tasks that fit" in text
