"""Real runs through lm-eval's CLI: registration, the dummy model, and SmolLM2 on the hf backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from lm_eval_ruler import TASKS

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], env_extra: dict[str, str] | None = None, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def latest_results(output: Path) -> dict:
    [path] = sorted(output.rglob("results_*.json"))[-1:]
    return json.loads(path.read_text())


def test_wrapper_cli_help_and_include_path():
    out = run([str(BIN / "lm-eval-ruler"), "--help"]).stdout
    assert "ruler_suite" in out and "data download" in out
    path = run([sys.executable, "-m", "lm_eval_ruler", "include-path"]).stdout.strip()
    assert (Path(path) / "4k" / "ruler_4k.yaml").is_file()


@pytest.mark.slow
def test_wheel_in_fresh_venv_registers_tasks(tmp_path: Path):
    """A non-editable wheel install makes a plain `lm_eval ls tasks` list our tasks; the opt-out hides them."""
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)], timeout=600)
    [wheel] = list(wheels.glob("lm_eval_ruler-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", str(wheel)], timeout=1200)
    listing = run([str(env_dir / "bin" / "lm_eval"), "ls", "tasks"], timeout=600).stdout
    for name in ("ruler_niah_single_1_4k", "ruler_qa_hotpot_128k", "ruler_vt_1m", "ruler_cwe_custom"):
        assert name in listing
    groups = run([str(env_dir / "bin" / "lm_eval"), "ls", "groups"], timeout=600).stdout
    assert "ruler_64k" in groups and "ruler_suite" in groups
    hidden = run([str(env_dir / "bin" / "lm_eval"), "ls", "tasks"], {"LM_EVAL_RULER_AUTOLOAD": "0"}, timeout=600).stdout
    assert "ruler_niah_single_1_4k" not in hidden
    wrapped = run([str(env_dir / "bin" / "lm-eval-ruler"), "ls", "tasks"], {"LM_EVAL_RULER_AUTOLOAD": "0"}, timeout=600).stdout
    assert "ruler_niah_single_1_4k" in wrapped


def test_dummy_model_run_writes_task_and_group_rows(tmp_path: Path, llama3_tokenizer: str, essays_cache: Path):
    output = tmp_path / "out"
    run(
        [
            str(BIN / "lm_eval"), "--model", "dummy", "--model_args", f"tokenizer={llama3_tokenizer}",
            "--tasks", "ruler_niah_4k", "--metadata", "num_samples=2", "--output_path", str(output),
        ],
        {"LM_EVAL_RULER_CACHE": str(essays_cache)},
    )  # fmt: skip
    results = latest_results(output)
    assert results["results"]["ruler_niah_single_1_4k"]["score,none"] == 0.0
    group = results["results"]["ruler_niah_4k"]
    assert group["score,none"] == 0.0 and group["score_stderr,none"] == 0.0
    meta = results["configs"]["ruler_niah_single_1_4k"]["metadata"]["ruler"]
    assert meta["profile"] == "reference" and meta["num_samples"] == 2 and meta["render_modes"] == ["raw"]


@pytest.mark.slow
@pytest.mark.parametrize("chat", [False, True], ids=["raw", "chat"])
def test_smollm2_hf_niah_single_1_4k(tmp_path: Path, smollm2: Path, cache_dir: Path, chat: bool):
    """A real model, no truncation: every logged prompt re-tokenized fits 4096 - 128, and the score is real."""
    from transformers import AutoTokenizer

    output = tmp_path / "out"
    args = [
        str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={smollm2},dtype=float32",
        "--device", "cpu", "--tasks", "ruler_niah_single_1_4k", "--metadata", "num_samples=10",
        "--batch_size", "1", "--log_samples", "--output_path", str(output),
    ]  # fmt: skip
    if chat:
        args.append("--apply_chat_template")
    run(args, {"LM_EVAL_RULER_CACHE": str(cache_dir)})
    results = latest_results(output)
    score = results["results"]["ruler_niah_single_1_4k"]["score,none"]
    assert 0.0 <= score <= 100.0
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    [samples_file] = list(output.rglob("samples_ruler_niah_single_1_4k_*.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 10
    lengths = []
    for sample in samples:
        prompt = sample["arguments"]["gen_args_0"]["arg_0"]
        assert prompt.endswith(sample["doc"]["gen_prefix"].rstrip())
        lengths.append(len(tokenizer(prompt)["input_ids"]))
    assert max(lengths) <= 4096 - 128
    print(f"\nSmolLM2 hf {'chat' if chat else 'raw'}: score {score:.1f}, prompt tokens {min(lengths)}..{max(lengths)}")


FIXTURES = Path(__file__).resolve().parent / "fixtures"
QA_FILES = f"ruler_squad_file={FIXTURES / 'squad_dev_mini.json'},ruler_hotpotqa_file={FIXTURES / 'hotpot_dev_mini.json'}"


def test_dummy_model_ruler_4k_reports_the_per_length_score(tmp_path: Path, llama3_tokenizer: str, essays_cache: Path):
    """All 13 tasks through lm-eval (QA on small fixture files): task rows plus the ruler_4k group row."""
    output = tmp_path / "out"
    run(
        [
            str(BIN / "lm_eval"), "--model", "dummy", "--model_args", f"tokenizer={llama3_tokenizer}",
            "--tasks", "ruler_4k", "--metadata", f"num_samples=2,{QA_FILES}", "--output_path", str(output),
        ],
        {"LM_EVAL_RULER_CACHE": str(essays_cache)},
    )  # fmt: skip
    results = latest_results(output)["results"]
    tasks = [name for name in results if name.startswith("ruler_") and name != "ruler_4k"]
    assert len(tasks) == 13
    assert results["ruler_4k"]["score,none"] == 0.0
    assert results["ruler_4k"]["score_stderr,none"] == 0.0


@pytest.mark.slow
def test_smollm2_hf_all_13_tasks_4k(tmp_path: Path, smollm2: Path, essays_cache: Path):
    """A real model on every task at 4k (5 samples each): real per-task scores and the 13-task mean."""
    output = tmp_path / "out"
    run(
        [
            str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={smollm2},dtype=float32",
            "--device", "cpu", "--tasks", "ruler_4k", "--metadata", f"num_samples=5,{QA_FILES}",
            "--apply_chat_template", "--batch_size", "1", "--output_path", str(output),
        ],
        {"LM_EVAL_RULER_CACHE": str(essays_cache)},
    )  # fmt: skip
    results = latest_results(output)["results"]
    scores = {name: row["score,none"] for name, row in results.items()}
    assert all(0.0 <= value <= 100.0 for value in scores.values())
    task_scores = [scores[f"ruler_{task}_4k"] for task in TASKS]
    assert scores["ruler_4k"] == pytest.approx(sum(task_scores) / 13)
    print("\nSmolLM2-135M hf, 4k, 5 samples/task:", {k: round(v, 1) for k, v in sorted(scores.items())})


@pytest.mark.slow
def test_generate_defaults_are_cache_hits_for_a_chat_template_run(tmp_path: Path, smollm2: Path, cache_dir: Path):
    """`generate` with its defaults fills exactly what `lm_eval ... --apply_chat_template` reads."""
    tasks = ("niah_single_1", "niah_multikey_2")
    generated = run([
        str(BIN / "lm-eval-ruler"), "generate", "--tokenizer", str(smollm2), "--tasks", ",".join(tasks),
        "--lengths", "1k", "--num-samples", "2",
    ], {"LM_EVAL_RULER_CACHE": str(cache_dir)})  # fmt: skip
    # It says which runs its data serve: the chat rendering, since SmolLM2's tokenizer has a template.
    assert "--tasks ruler_niah_single_1_1k,ruler_niah_multikey_2_1k --apply_chat_template" in generated.stdout
    assert "lm-eval-ruler sweep --model MODEL --lengths 1k --num-samples 2" in generated.stdout
    output = tmp_path / "out"
    run([
        str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={smollm2},dtype=float32", "--device", "cpu",
        "--tasks", ",".join(f"ruler_{task}_1k" for task in tasks), "--metadata", "num_samples=2", "--batch_size", "1",
        "--apply_chat_template", "--output_path", str(output),
    ], {"LM_EVAL_RULER_CACHE": str(cache_dir)})  # fmt: skip
    configs = latest_results(output)["configs"]
    for task in tasks:
        provenance = configs[f"ruler_{task}_1k"]["metadata"]["ruler"]
        assert provenance["from_cache"] is True and provenance["render_modes"] == ["chat"], provenance


def test_sample_logs_keep_one_copy_of_each_prompt(tmp_path: Path, llama3_tokenizer: str, cache_dir: Path):
    """--log_samples: the prompt is logged once (in `arguments`); `doc_hash` still hashes the whole doc."""
    import hashlib

    from lm_eval_ruler import DatasetOptions, build_dataset

    output = tmp_path / "out"
    run([
        str(BIN / "lm-eval-ruler"), "run", "--model", "dummy", "--model_args", f"tokenizer={llama3_tokenizer}",
        "--tasks", "ruler_niah_single_1_1k", "--metadata", "num_samples=3", "--log_samples", "--output_path", str(output),
    ], {"LM_EVAL_RULER_CACHE": str(cache_dir)})  # fmt: skip
    [log] = output.rglob("samples_ruler_niah_single_1_1k_*.jsonl")
    samples = [json.loads(line) for line in log.read_text().splitlines()]
    docs = build_dataset("niah_single_1", 1024, DatasetOptions(tokenizer=llama3_tokenizer, num_samples=3, render_modes=("raw",))).docs
    for sample, doc in zip(samples, docs):
        assert "input" not in sample["doc"] and sample["doc"]["outputs"] == doc["outputs"]
        assert sample["arguments"]["gen_args_0"]["arg_0"] == doc["input"] + doc["gen_prefix"]
        full = json.dumps(doc, indent=2, ensure_ascii=False)
        assert sample["doc_hash"] == hashlib.sha256(full.encode()).hexdigest()
