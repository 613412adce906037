"""The sweep runner: shards, resume, a killed sweep, manifests, window refusal, dry runs, one real cell.

The dummy backend answers "lol" without a model; the Llama-3 tokenizer sizes the data. Each
dummy cell is one real lm-eval run (in the sweep's worker process, or with ``process_per_cell``
its own ``python -m lm_eval_ruler run`` process), so the cells are shared through a module
fixture where they can be and kept to 1k/2k, 2 tasks, 2 samples.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from support.scripts import load_script

from lm_eval_ruler import sweep
from lm_eval_ruler.errors import BudgetError, ConfigurationError, RulerError
from lm_eval_ruler.report.sweep_folder import CELL_FILE, MANIFEST_FILE, is_sweep_folder, load_sweep, read_state
from lm_eval_ruler.sweep import SweepConfig, model_slug, parse_shard, plan_cells, run_sweep
from lm_eval_ruler.sweep.state import classify, now, pid_alive

REPO = Path(__file__).resolve().parents[1]
TASKS = ("niah_single_1", "niah_multikey_2")
MODEL = "fake/model"


def dummy_config(tokenizer: str, output: Path, cache: Path, **overrides: Any) -> SweepConfig:
    settings: dict[str, Any] = {
        "models": (MODEL,),
        "lengths": ("1k", "2k"),
        "tasks": TASKS,
        "backend": "dummy",
        "output": output,
        "num_samples": 2,
        "apply_chat_template": False,  # the dummy model's own chat template would need the hub
        "model_args": {"tokenizer": tokenizer},
        "cache_dir": cache,
        "progress": False,
        "report": False,
    }
    settings.update(overrides)
    return SweepConfig(**settings)


def cell_state(output: Path, length: str, model: str = MODEL) -> dict[str, Any]:
    return json.loads((output / model_slug(model) / length / CELL_FILE).read_text())


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, llama3_tokenizer: str) -> dict[str, Any]:
    """The 2-cell grid (1k, 2k) run as two shards, 0/2 then 1/2, into one output folder."""
    root = tmp_path_factory.mktemp("sweep")
    output, cache = root / "out", root / "cache"
    started = time.perf_counter()
    results = [run_sweep(dummy_config(llama3_tokenizer, output, cache, shard=(index, 2))) for index in (0, 1)]
    print(f"\ntwo dummy shards: {time.perf_counter() - started:.0f} s")
    return {"output": output, "cache": cache, "results": results, "tokenizer": llama3_tokenizer}


def test_shards_partition_the_cells_and_their_outputs_merge(sharded: dict[str, Any]):
    output = sharded["output"]
    first, second = sharded["results"]
    assert [(c.length, c.status, c.launched) for c in first.cells] == [("1k", "done", True)]
    assert [(c.length, c.status, c.launched) for c in second.cells] == [("2k", "done", True)]
    for length, shard in (("1k", "0/2"), ("2k", "1/2")):
        state = cell_state(output, length)
        assert state["status"] == "done" and state["exit_code"] == 0 and state["shard"] == shard
        assert (output / "fake__model" / length / state["results_file"]).is_file()
    # The merged folder is one run per model with every cell's tasks.
    [(name, run)] = load_sweep(output).items()
    assert name == MODEL
    assert set(run.results) == {(task, tokens) for task in TASKS for tokens in (1024, 2048)}
    assert all(result.score == 0.0 for result in run.results.values())
    assert is_sweep_folder(output) and is_sweep_folder(output / "fake__model")
    assert set(load_sweep(output / "fake__model")[MODEL].results) == set(run.results)

    # A larger grid: n shards are disjoint and together cover every cell exactly once.
    grid = SweepConfig(models=("org/base", "org/fp8"), lengths=("4k", "1k", "2k"), tasks=TASKS, output=output)
    every = [(c.model, c.length) for c in plan_cells(grid)]
    assert every == [(m, length) for m in ("org/base", "org/fp8") for length in ("1k", "2k", "4k")]
    for count in (2, 3, 4):
        parts = [[(c.model, c.length) for c in plan_cells(grid, shard=(i, count))] for i in range(count)]
        assert sorted(cell for part in parts for cell in part) == sorted(every)
        assert sum(len(part) for part in parts) == len(every)


def test_manifest_is_complete_and_matches_what_the_child_used(sharded: dict[str, Any]):
    output = sharded["output"]
    for length in ("1k", "2k"):
        manifest = json.loads((output / "fake__model" / length / MANIFEST_FILE).read_text())
        for key in (
            "plugin_version", "lm_eval_version", "vllm_version", "transformers_version", "torch_version", "gpu",
            "model_revision", "tokenizer_fingerprint", "chat_template_fingerprint", "cache_keys", "prompt_tokens",
            "seeds", "profile", "num_samples", "window", "command", "command_line", "backend", "model", "length",
        ):  # fmt: skip
            assert key in manifest, key
        assert manifest["plugin_version"] and manifest["lm_eval_version"] and manifest["transformers_version"]
        assert isinstance(manifest["gpu"]["name"], str) and manifest["gpu"]["name"]
        assert manifest["seeds"]["ruler_seed"] == 42 and manifest["profile"] == "reference"
        assert manifest["tokenizer_fingerprint"]
        assert set(manifest["cache_keys"]) == set(TASKS) == set(manifest["prompt_tokens"])
        assert all(set(stats) == {"min", "median", "max", "total"} for stats in manifest["prompt_tokens"].values())
        tokens = manifest["length_tokens"]
        # The default "tight" policy serves exactly the longest generated prompt + answer.
        assert manifest["window"]["longest_prompt_plus_answer"] == manifest["window"]["served"] <= tokens
        assert manifest["command"][:4] == [sys.executable, "-m", "lm_eval_ruler", "run"]
        assert cell_state(output, length)["command"] == manifest["command"]
        # The child loaded exactly the datasets the parent generated (same cache keys, from the cache).
        state = cell_state(output, length)
        results = json.loads((output / "fake__model" / length / state["results_file"]).read_text())
        for task in TASKS:
            ruler = results["configs"][f"ruler_{task}_{length}"]["metadata"]["ruler"]
            assert ruler["cache_key"] == manifest["cache_keys"][task]
            assert ruler["from_cache"] is True
        assert results["configs"][f"ruler_{TASKS[0]}_{length}"]["metadata"]["max_length"] == manifest["window"]["served"]


def test_second_invocation_skips_finished_cells(sharded: dict[str, Any]):
    output = sharded["output"]
    before = {length: (output / "fake__model" / length / CELL_FILE).read_bytes() for length in ("1k", "2k")}
    result = run_sweep(dummy_config(sharded["tokenizer"], output, sharded["cache"]))  # no shard: the whole grid
    assert result.launched == 0 and result.ok
    assert [c.status for c in result.cells] == ["skipped", "skipped"]
    assert all(c.results_file is not None and c.results_file.is_file() for c in result.cells)
    after = {length: (output / "fake__model" / length / CELL_FILE).read_bytes() for length in ("1k", "2k")}
    assert after == before


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"num_samples": 3}, "num_samples 2 (now 3)"),
        ({"tasks": (*TASKS, "vt")}, "tasks niah_single_1,niah_multikey_2 (now niah_single_1,niah_multikey_2,vt)"),
        ({"seed": 7}, "seed 42 (now 7)"),
        ({"model_args": {"tokenizer": "other"}}, "model_args"),
        ({"lengths": ("4k",), "profile": "2024"}, "profile 'reference' (now '2024')"),  # cells outside the grid count too
    ],
)
def test_rerun_with_other_settings_refuses_before_running_anything(
    sharded: dict[str, Any], tmp_path: Path, overrides: dict[str, Any], named: str
):
    output = tmp_path / "out"
    shutil.copytree(sharded["output"], output)
    before = sorted((p, p.read_bytes()) for p in output.rglob("*") if p.is_file())
    config = dummy_config(sharded["tokenizer"], output, sharded["cache"], **overrides)
    with pytest.raises(ConfigurationError) as error:
        run_sweep(config)
    message = str(error.value)
    assert named in message and "--replace" in message and "Nothing was run" in message
    assert sorted((p, p.read_bytes()) for p in output.rglob("*") if p.is_file()) == before


def test_replace_moves_old_cells_aside_and_evaluates_the_new_settings(sharded: dict[str, Any], tmp_path: Path):
    output = tmp_path / "out"
    shutil.copytree(sharded["output"], output)
    old_results = {length: cell_state(output, length)["results_file"] for length in ("1k", "2k")}
    result = run_sweep(dummy_config(sharded["tokenizer"], output, sharded["cache"], num_samples=3, replace=True))
    assert result.launched == 2 and result.ok and [c.status for c in result.cells] == ["done", "done"]
    for length in ("1k", "2k"):
        state = cell_state(output, length)
        assert state["settings"]["num_samples"] == 3 and state["attempt"] == 1
        [archived] = (output / sweep.REPLACED_DIR).glob(f"*/fake__model/{length}")
        assert json.loads((archived / CELL_FILE).read_text())["settings"]["num_samples"] == 2
        assert (archived / old_results[length]).is_file()  # nothing lost
    [(_name, run)] = load_sweep(output).items()
    assert run.info["settings"]["num_samples"] == 3 and run.info["sweep_settings"]["num_samples"] == 3
    assert {result.n for result in run.results.values()} == {3}
    # The same settings again: everything is skipped, nothing refused.
    again = run_sweep(dummy_config(sharded["tokenizer"], output, sharded["cache"], num_samples=3))
    assert again.launched == 0 and [c.status for c in again.cells] == ["skipped", "skipped"]


def test_report_refuses_a_folder_whose_cells_disagree(sharded: dict[str, Any], tmp_path: Path):
    from lm_eval_ruler import report
    from lm_eval_ruler.cli import main as cli_main

    output = tmp_path / "out"
    shutil.copytree(sharded["output"], output)
    [(_, run)] = load_sweep(output).items()
    text = report.to_markdown(report.ruler_table(run))
    assert "Settings: 2 samples/task, profile reference, seed 42, rendering raw, backend dummy, 2 task(s) per cell" in text

    path = output / "fake__model" / "2k" / CELL_FILE
    state = json.loads(path.read_text())
    state["settings"]["seed"] = 7
    path.write_text(json.dumps(state))
    with pytest.raises(report.ReportError, match="different settings: seed 42 \\(now 7\\)"):
        load_sweep(output)
    assert cli_main(["report", str(output)]) == 2
    assert cli_main(["compare", "--baseline", str(output), "--candidate", str(output)]) == 2


def test_missing_backend_and_dry_run_without_data(tmp_path: Path, llama3_tokenizer: str, monkeypatch: pytest.MonkeyPatch):
    """vLLM missing from the cells' Python stops the sweep at once; a dry run needs no data files."""
    output = tmp_path / "out"
    config = dummy_config(llama3_tokenizer, output, tmp_path / "cache", backend="vllm", apply_chat_template=False)
    with pytest.raises(ConfigurationError, match=r"cannot run the vllm backend: .*pip install 'lm-eval-ruler\[vllm\]'"):
        run_sweep(config)
    assert not output.exists()
    # QA with no SQuAD anywhere and downloads off: the dry run still prints the command.
    planned = run_sweep(dummy_config(llama3_tokenizer, output, tmp_path / "cache", tasks=("qa_squad",), lengths=("4k",),
                                     offline=True, dry_run=True))  # fmt: skip
    [cell] = planned.cells
    assert cell.status == "planned" and '"max_length": 4096' in " ".join(cell.command)
    assert not (tmp_path / "cache" / "data").exists()


def test_one_checkpoint_under_two_labels_with_its_own_options(tmp_path: Path, llama3_tokenizer: str, capsys):
    """bf16 vs online FP8 of the same path: two folders, two runs named by label, and a compare between them."""
    from lm_eval_ruler.cli import main as cli_main

    output = tmp_path / "out"
    config = dummy_config(
        llama3_tokenizer, output, tmp_path / "cache", models=("base=fake/model", "fp8=fake/model"),
        model_options={"fp8": {"quantization": "fp8"}}, lengths=("1k",), tasks=("niah_single_1",),
    )  # fmt: skip
    result = run_sweep(config)
    assert result.ok and [(c.model, c.status) for c in result.cells] == [("base", "done"), ("fp8", "done")]
    manifests = {label: json.loads((output / label / "1k" / MANIFEST_FILE).read_text()) for label in ("base", "fp8")}
    assert "quantization" not in manifests["base"]["model_args"] and manifests["fp8"]["model_args"]["quantization"] == "fp8"
    assert manifests["base"]["model"] == manifests["fp8"]["model"] == "fake/model" and manifests["fp8"]["label"] == "fp8"
    assert list(load_sweep(output)) == ["base", "fp8"]
    capsys.readouterr()
    assert cli_main(["compare", "--baseline", str(output / "base"), "--candidate", str(output / "fp8"), "--min-recovery", "0"]) in (0, 1)
    assert "fp8 vs base" in capsys.readouterr().out
    # A label the grid does not define, or two models in one folder, are refused before anything runs.
    with pytest.raises(ConfigurationError, match="no --model LABEL=PATH defines"):
        plan_cells(SweepConfig(models=("a=x/y",), model_options={"b": {"dtype": "float16"}}))
    with pytest.raises(ConfigurationError, match="share the output folder 'a'"):
        plan_cells(SweepConfig(models=("a=x/y", "a=x/z")))


def test_worker_runs_every_cell_and_matches_a_process_per_cell(tmp_path: Path, llama3_tokenizer: str):
    """One worker process runs both cells (one pid, cells 1 and 2 of it); with ``--window model`` both serve the
    2k cell's window; the answers, doc hashes and results are those of a fresh process per cell."""
    cache = tmp_path / "cache"
    shared = run_sweep(dummy_config(llama3_tokenizer, tmp_path / "shared", cache, window="model"))
    separate = run_sweep(dummy_config(llama3_tokenizer, tmp_path / "separate", cache, process_per_cell=True))
    assert shared.ok and separate.ok and shared.launched == separate.launched == 2
    in_worker = [cell_state(tmp_path / "shared", length) for length in ("1k", "2k")]
    own = [cell_state(tmp_path / "separate", length) for length in ("1k", "2k")]
    assert in_worker[0]["pid"] == in_worker[1]["pid"] and [s["worker_cell"] for s in in_worker] == [1, 2]
    assert own[0]["pid"] != own[1]["pid"] and "worker_cell" not in own[0]
    assert not pid_alive(in_worker[0]["pid"]), "the worker outlived its sweep"
    windows = [json.loads(state["command"][state["command"].index("--model_args") + 1])["max_length"] for state in in_worker]
    tight = [json.loads(state["command"][state["command"].index("--model_args") + 1])["max_length"] for state in own]
    assert windows == [tight[1], tight[1]] and tight[0] < tight[1]
    same_answers = load_script("gpu_study/same_answers.py")
    lines, same = same_answers.compare(tmp_path / "shared", tmp_path / "separate")
    assert same and len(lines) == 2 + 2 * len(TASKS), "\n".join(lines)
    assert same_answers.compare(tmp_path / "shared", tmp_path / "missing")[1] is False
    for samples in (tmp_path / "separate").rglob("samples_*.jsonl"):
        samples.unlink()
    assert same_answers.compare(tmp_path / "shared", tmp_path / "separate") == (
        [f"no sample of {tmp_path / 'shared'} and {tmp_path / 'separate'} to compare (no samples_*.jsonl: run without --log_samples?)"], False)  # fmt: skip
    log = (tmp_path / "shared" / "fake__model" / "2k" / "lm_eval.log").read_text()
    assert "(cell 2 of the sweep's worker" in log and "ruler_niah_single_1_2k" in log and "ruler_niah_single_1_1k" not in log


def test_a_failed_cell_ends_its_worker_and_the_next_cell_gets_a_fresh_one(tmp_path: Path, llama3_tokenizer: str):
    output = tmp_path / "out"
    result = run_sweep(dummy_config(llama3_tokenizer, output, tmp_path / "cache", lm_eval_args=("--limit", "many")))
    assert [(c.status, c.exit_code) for c in result.cells] == [("failed", 2), ("failed", 2)]
    states = [cell_state(output, length) for length in ("1k", "2k")]
    assert states[0]["pid"] != states[1]["pid"] and [s["worker_cell"] for s in states] == [1, 1]
    assert not any(pid_alive(state["pid"]) for state in states)
    assert "--limit" in (output / "fake__model" / "1k" / "lm_eval.log").read_text()


def test_cell_timeout_kills_the_worker(tmp_path: Path, llama3_tokenizer: str):
    output = tmp_path / "out"
    result = run_sweep(dummy_config(llama3_tokenizer, output, tmp_path / "cache", lengths=("1k",), cell_timeout=0.5))
    assert [c.status for c in result.cells] == ["failed"]
    state = cell_state(output, "1k")
    assert "killed after the --cell-timeout of 0.5 s" in state["message"] and not pid_alive(state["pid"])


def test_engine_pool_reuses_an_engine_only_for_identical_arguments():
    from lm_eval_ruler._cell_worker import _EnginePool

    built: list[dict[str, Any]] = []
    shut: list[int] = []

    class Core:
        def __init__(self, number: int) -> None:
            self.number = number

        def shutdown(self) -> None:
            shut.append(self.number)

    class Engine:
        def __init__(self, **kwargs: Any) -> None:
            built.append(kwargs)
            self.llm_engine = type("LLMEngine", (), {"engine_core": Core(len(built))})()

    pool = _EnginePool(Engine)
    first = pool(model="m", max_model_len=8192)
    assert isinstance(first.result(), Engine)
    assert pool(max_model_len=8192, model="m") is first and len(built) == 1 and not shut
    second = pool(model="m", max_model_len=4096)
    assert second is not first and shut == [1]
    assert second.llm_engine.engine_core.number == 2 and len(built) == 2
    pool.release()
    assert shut == [1, 2] and pool.engine is None


def test_an_engine_loads_while_the_cell_goes_on_and_its_first_use_waits():
    """lm-eval's backend gets the engine's model configuration at once (from EngineArgs, not the engine);
    generation waits for the load; a failed load raises its own error where the engine is used."""
    import threading

    from lm_eval_ruler._cell_worker import BUILD_THREAD, _EnginePool

    release = threading.Event()
    configs: list[dict[str, Any]] = []

    class Engine:
        def __init__(self, **kwargs: Any) -> None:
            assert threading.current_thread().name == BUILD_THREAD
            if not release.wait(timeout=30) or kwargs.get("max_model_len") == 0:
                raise ValueError("max_model_len must be positive")
            self.llm_engine = type("LLMEngine", (), {"model_config": "from the engine", "engine_core": None})()

        def generate(self, prompts: list[str]) -> list[str]:
            return [prompt.upper() for prompt in prompts]

    class EngineArgs:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        def create_model_config(self) -> str:
            configs.append(self.kwargs)
            return "from EngineArgs"

    arg_utils = types.ModuleType("vllm.engine.arg_utils")
    arg_utils.EngineArgs = EngineArgs  # type: ignore[attr-defined]
    fake_vllm = {"vllm": types.ModuleType("vllm"), "vllm.engine": types.ModuleType("vllm.engine"),
                 "vllm.engine.arg_utils": arg_utils}  # fmt: skip
    pool = _EnginePool(Engine)
    engine = pool(model="m", max_model_len=4096)
    with mock.patch.dict(sys.modules, fake_vllm):
        assert engine.llm_engine.model_config == "from EngineArgs"  # while the engine is still loading
    assert configs == [{"model": "m", "max_model_len": 4096}]
    release.set()
    assert engine.generate(["a"]) == ["A"] and engine.llm_engine.model_config == "from the engine"

    broken = pool(model="m", max_model_len=0)
    with pytest.raises(ValueError, match="must be positive"):
        broken.generate(["a"])
    assert pool(model="m", max_model_len=0) is not broken  # a failed build is not handed out again
    pool.release()


def test_the_workers_environment_report_comes_from_a_child_process():
    """torch's report initializes CUDA, which would make vLLM spawn (not fork) every later engine of the worker:
    the report is computed by a child process, equal to lm-eval's own, and copied into every cell's results."""
    from lm_eval.loggers.utils import add_env_info

    from lm_eval_ruler._cell_worker import _EnvironmentReport

    computed_here: list[dict[str, Any]] = []
    report = _EnvironmentReport(computed_here.append)
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    report(first)
    report(second)
    expected: dict[str, Any] = {}
    add_env_info(expected)
    assert not computed_here and first == second
    assert set(first) == set(expected) and first["lm_eval_version"] == expected["lm_eval_version"]
    assert first["transformers_version"] == expected["transformers_version"] and "PyTorch version" in first["pretty_env_info"]


def test_a_failed_environment_report_child_is_computed_in_the_cell(monkeypatch: pytest.MonkeyPatch):
    from lm_eval_ruler import _cell_worker

    monkeypatch.setattr(_cell_worker, "_REPORT_SCRIPT", "import sys; sys.exit('no torch here')")
    report = _cell_worker._EnvironmentReport(lambda storage: storage.update(computed="in the cell"))
    storage: dict[str, Any] = {}
    report(storage)
    assert storage == {"computed": "in the cell"}


def test_stale_running_cell_is_rerun_and_finished_one_is_not(sharded: dict[str, Any], tmp_path: Path):
    output = tmp_path / "out"
    shutil.copytree(sharded["output"], output)  # cell.json paths are relative: the copy is still resumable
    path = output / "fake__model" / "2k" / CELL_FILE
    state = json.loads(path.read_text())
    state.update(status="running", pid=dead_pid(), sweep_pid=dead_pid(), host=socket.gethostname(), heartbeat=now())
    path.write_text(json.dumps(state))
    untouched = (output / "fake__model" / "1k" / CELL_FILE).read_bytes()

    result = run_sweep(dummy_config(sharded["tokenizer"], output, sharded["cache"]))
    assert result.launched == 1 and result.ok
    assert [(c.length, c.status) for c in result.cells] == [("1k", "skipped"), ("2k", "done")]
    rerun = cell_state(output, "2k")
    assert rerun["status"] == "done" and rerun["attempt"] == 2
    assert (output / "fake__model" / "1k" / CELL_FILE).read_bytes() == untouched


def test_running_cell_owned_by_a_live_sweep_is_not_taken(tmp_path: Path):
    state = {"status": "running", "host": socket.gethostname(), "pid": dead_pid(), "sweep_pid": os.getpid()}
    state["heartbeat"] = now()
    assert classify(tmp_path, state) == "busy"
    assert classify(tmp_path, {**state, "heartbeat": "2000-01-01T00:00:00+00:00"}) == "todo"
    assert classify(tmp_path, {**state, "host": "elsewhere"}) == "busy"
    assert classify(tmp_path, {**state, "host": "elsewhere", "heartbeat": "2000-01-01T00:00:00+00:00"}) == "todo"
    assert classify(tmp_path, {"status": "failed"}) == "todo"
    assert classify(tmp_path, {"status": "done", "results_file": "missing.json"}) == "todo"


def test_killed_sweep_continues_where_it_stopped(tmp_path: Path, llama3_tokenizer: str):
    output, cache = tmp_path / "out", tmp_path / "cache"
    command = [
        sys.executable, "-m", "lm_eval_ruler.sweep", "--model", MODEL, "--model-arg", f"tokenizer={llama3_tokenizer}",
        "--lengths", "1k,2k", "--tasks", ",".join(TASKS), "--backend", "dummy", "--num-samples", "2",
        "--no-apply-chat-template", "--output", str(output), "--cache-dir", str(cache), "--no-progress", "--no-report",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    second = output / "fake__model" / "2k" / CELL_FILE
    with open(tmp_path / "sweep.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 900
            while True:
                state = read_state(second)
                if state and state.get("status") == "running" and state.get("pid"):
                    break
                assert process.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
                assert time.time() < deadline, "the second cell never started"
                time.sleep(0.2)
        finally:
            process.kill()  # SIGKILL: no cleanup in the sweep; its child gets SIGTERM from the kernel
            process.wait()
    child = state["pid"]
    deadline = time.time() + 120
    while pid_alive(child, needle="lm_eval_ruler") and time.time() < deadline:
        time.sleep(0.5)
    assert not pid_alive(child, needle="lm_eval_ruler"), "the cell's lm-eval process outlived the killed sweep"
    assert cell_state(output, "1k")["status"] == "done"
    assert cell_state(output, "2k")["status"] == "running"
    first_done = (output / "fake__model" / "1k" / CELL_FILE).read_bytes()

    result = run_sweep(dummy_config(llama3_tokenizer, output, cache))
    assert result.launched == 1 and result.ok
    assert [(c.length, c.status) for c in result.cells] == [("1k", "skipped"), ("2k", "done")]
    assert cell_state(output, "2k")["attempt"] == 2
    assert (output / "fake__model" / "1k" / CELL_FILE).read_bytes() == first_done


def test_max_window_refuses_longer_lengths_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    output = tmp_path / "out"
    config = SweepConfig(models=(MODEL,), lengths=("4k", "8k"), max_window=4096, output=output, progress=False)
    with pytest.raises(BudgetError) as error:
        run_sweep(config)
    message = str(error.value)
    assert "8k (8192 tokens)" in message and "4k (4096" not in message and "--max-window" in message
    assert not output.exists()
    # The command line says the same and exits 2.
    code = sweep.main(["--model", MODEL, "--lengths", "4k,8k", "--max-window", "4096", "--output", str(output)])
    assert code == 2 and "8k" in capsys.readouterr().err
    assert not output.exists()


def test_model_config_window_refuses_16k_for_an_8k_model(tmp_path: Path, smollm2: Path):
    output = tmp_path / "out"
    config = SweepConfig(models=(str(smollm2),), lengths=("8k", "16k"), backend="hf", output=output, progress=False)
    with pytest.raises(BudgetError) as error:
        run_sweep(config)
    message = str(error.value)
    assert "16k (16384 tokens)" in message and "max_position_embeddings=8192" in message and "8k (8192" not in message
    assert not output.exists()


def test_hf_overrides_with_rope_scaling_are_trusted(tmp_path: Path, smollm2: Path, capsys: pytest.CaptureFixture[str]):
    config = SweepConfig(
        models=(str(smollm2),),
        lengths=("16k",),
        tasks=("niah_single_1",),
        hf_overrides='{"rope_scaling": {"rope_type": "linear", "factor": 2.0}}',
        num_samples=2,
        output=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        dry_run=True,
        progress=False,
    )
    [cell] = run_sweep(config).cells
    model_args = json.loads(cell.command[cell.command.index("--model_args") + 1])
    assert 16384 - 200 < model_args["max_model_len"] <= 16384 and model_args["hf_overrides"]["rope_scaling"]["factor"] == 2.0


def test_dry_run_prints_commands_with_max_model_len(tmp_path: Path, llama3_tokenizer: str, capsys: pytest.CaptureFixture[str]):
    output = tmp_path / "out"
    code = sweep.main([
        "--model", MODEL, "--model-arg", f"tokenizer={llama3_tokenizer}", "--lengths", "2k,1k", "--tasks", ",".join(TASKS),
        "--num-samples", "2", "--output", str(output), "--cache-dir", str(tmp_path / "cache"), "--dry-run",
        "--tensor-parallel-size", "2", "--kv-cache-dtype", "fp8", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(sys.executable)]
    assert len(lines) == 2
    for line, tokens, length in zip(lines, (1024, 2048), ("1k", "2k")):
        served = int(re.search(r'"max_model_len": (\d+)', line).group(1))
        assert tokens - 200 < served <= tokens
        assert '"tensor_parallel_size": 2' in line and '"kv_cache_dtype": "fp8"' in line
        assert f"--tasks ruler_niah_single_1_{length},ruler_niah_multikey_2_{length}" in line
        assert "--batch_size auto" in line and "--apply_chat_template" in line and "--log_samples" in line
        assert f"--output_path {output / 'fake__model' / length}/" in line
    assert not list(output.rglob(CELL_FILE)) and not list(output.rglob(MANIFEST_FILE))


def test_server_mode_and_tight_window(tmp_path: Path, llama3_tokenizer: str):
    from support.fake_server import FakeServer

    with FakeServer(MODEL, None, 2048) as server:
        config = dummy_config(
            llama3_tokenizer, tmp_path / "out", tmp_path / "cache", backend=None, base_url=server.base_url,
            lengths=("1k",), window="tight", dry_run=True, model_args={},
        )  # fmt: skip
        with pytest.raises(RulerError, match="tokenizer"):  # the served name defaults as the tokenizer; "fake/model" is none
            run_sweep(config)
        [cell] = run_sweep(replace_model_args(config, {"tokenizer": llama3_tokenizer, "num_concurrent": 4})).cells
    command = cell.command
    assert command[command.index("--model") + 1] == "local-completions"
    args = json.loads(command[command.index("--model_args") + 1])
    assert args["model"] == MODEL and args["base_url"] == config.base_url and args["num_concurrent"] == 4
    # tight: the longest prompt + answer of the cell, + 1 because API backends keep max_length - 1.
    assert 900 < args["max_length"] - 1 <= 1024
    assert "--batch_size" not in command


def replace_model_args(config: SweepConfig, model_args: dict[str, Any]) -> SweepConfig:
    from dataclasses import replace

    return replace(config, model_args=model_args)


def test_configuration_errors_are_actionable():
    with pytest.raises(ConfigurationError, match="i/n"):
        parse_shard("2of2")
    with pytest.raises(ConfigurationError, match="0 <= i < n"):
        parse_shard("2/2")
    assert parse_shard("1/4") == (1, 4)
    bad = [
        ({"backend": "hf", "tensor_parallel_size": 2}, "--tensor-parallel-size apply to the vllm backend only"),
        ({"backend": "hf", "base_url": "http://x/v1/completions"}, "drop --backend hf"),
        ({"backend": "local-completions"}, "needs --base-url"),
        ({"model_args": {"max_model_len": 4096}}, "--max-window"),
        ({"models": ("a/b", "a/b")}, "share the output folder"),
        ({"tasks": ("niah_single_9",)}, "unknown RULER task"),
        ({"lengths": ("4q",)}, "invalid length"),
        ({"hf_overrides": "{not json"}, "JSON object"),
        ({"window": "huge"}, "window policy"),
    ]
    for overrides, fragment in bad:
        settings: dict[str, Any] = {"models": (MODEL,), **overrides}
        with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
            plan_cells(SweepConfig(**settings))
    assert model_slug("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama__Llama-3.1-8B-Instruct"
    assert model_slug("/models/llama/") == "models__llama"
    cells = plan_cells(SweepConfig(models=(MODEL,), lengths=("100000", "4096")))
    assert [(c.length, c.lm_eval_tasks) for c in cells] == [("4k", ("ruler_4k",)), ("100000", ("ruler_custom",))]


@pytest.mark.slow
def test_smollm2_hf_cell_scores(tmp_path: Path, smollm2: Path):
    started = time.perf_counter()
    result = run_sweep(
        SweepConfig(
            models=(str(smollm2),),
            lengths=("1k",),
            tasks=("niah_single_1",),
            backend="hf",
            device="cpu",
            batch_size=1,
            model_args={"dtype": "float32"},
            num_samples=2,
            output=tmp_path / "out",
            cache_dir=tmp_path / "cache",
            progress=False,
        )
    )
    assert result.ok and result.launched == 1
    [cell] = result.cells
    assert cell.status == "done" and cell.results_file is not None
    results = json.loads(cell.results_file.read_text())
    score = results["results"]["ruler_niah_single_1_1k"]["score,none"]
    assert isinstance(score, float) and 0.0 <= score <= 100.0
    assert results["configs"]["ruler_niah_single_1_1k"]["metadata"]["max_length"] <= 1024
    assert result.table is None or str(smollm2) in result.table
    print(f"\nSmolLM2 hf sweep cell: score {score:.1f} in {time.perf_counter() - started:.0f} s")


def test_sweep_worker_benchmark_prints_both_modes_side_by_side(tmp_path: Path, llama3_tokenizer: str):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sweep_worker.py"), "--tokenizer", llama3_tokenizer,
                           "--lengths", "1k", "--tasks", "niah_single_1", "--samples", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| process-per-cell", "| worker"))]
    assert len(rows) == 2 and rows[0].endswith("| 1.00x | - |") and rows[1].endswith("| yes |"), done.stdout
