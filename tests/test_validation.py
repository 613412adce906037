"""Early validation: bad RULER task names, metadata and backends fail before lm-eval loads a model."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_ruler import __version__
from lm_eval_ruler._validate import check_task_name, validate_run
from lm_eval_ruler.cli import main
from lm_eval_ruler.data.options import DATA_FILE_KEYS, OPTION_KEYS, parse_flag, parse_int_option
from lm_eval_ruler.errors import ConfigurationError, TokenizerError

REPO = Path(__file__).resolve().parents[1]
#: lm-eval's evaluator logs this right before it builds the model (lm_eval/evaluator.py, simple_evaluate).
MODEL_LOAD_MARKER = "Initializing hf model"
#: ... and the hf backend this as it starts setting the model up (lm_eval/models/huggingface.py).
HF_DEVICE_MARKER = "Using device"
TOK = {"tokenizer": "some/tokenizer"}


# --- task names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ruler_niah_single_1_5k", "ruler_5k", "ruler_qa_3000", "ruler_cwe_100k", "ruler_niah_2m"])
def test_invalid_length_lists_the_valid_lengths_and_custom(name):
    with pytest.raises(ConfigurationError) as info:
        check_task_name(name)
    message = str(info.value)
    assert name in message
    assert "1k, 2k, 4k, 8k, 16k, 32k, 64k, 128k, 256k, 512k, 1m" in message
    assert "_custom" in message and "--metadata ruler_custom_length=" in message


def test_wrong_case_length_suggests_the_name():
    with pytest.raises(ConfigurationError, match="did you mean ruler_niah_64k"):
        check_task_name("ruler_niah_64K")


def test_category_group_that_does_not_exist_at_a_small_length():
    with pytest.raises(ConfigurationError, match="there is no group ruler_qa_1k: .* grouped from 4k on; run ruler_1k"):
        check_task_name("ruler_qa_1k")
    assert check_task_name("ruler_qa_4k") == "4k" and check_task_name("ruler_niah_1k") == "1k"


def test_missing_length_suffix():
    with pytest.raises(ConfigurationError, match="ruler_niah_single_1 needs a length suffix"):
        check_task_name("ruler_niah_single_1")


@pytest.mark.parametrize(
    "name, suffix",
    [
        ("ruler_niah_single_1_4k", "4k"),
        ("ruler_qa_squad_128k", "128k"),
        ("ruler_vt_1m", "1m"),
        ("ruler_64k", "64k"),
        ("ruler_aggregation_8k", "8k"),
        ("ruler_custom", "custom"),
        ("ruler_cwe_custom", "custom"),
        ("ruler_suite", "suite"),
    ],
)
def test_our_valid_names(name, suffix):
    assert check_task_name(name) == suffix


@pytest.mark.parametrize(
    "name",
    [
        # lm-eval's own RULER port
        "ruler", "ruler_vt", "ruler_cwe", "ruler_fwe", "ruler_qa_squad", "ruler_qa_hotpot",
        "niah_single_1", "niah_multikey_3",
        # other people's tasks, globs, files
        "hellaswag", "ruler_mytask", "ruler_mytask_4k", "ruler_*", "ruler_niah_*_5k", "rulerish_5k",
    ],
)  # fmt: skip
def test_names_that_are_not_ours_pass_untouched(name):
    assert check_task_name(name) is None


def test_builtin_ruler_tasks_are_never_validated():
    # lm-eval's own tasks: even metadata our tasks would refuse is not our business.
    assert validate_run(["ruler_qa_squad", "ruler_vt", "ruler", "niah_single_1"], {"num_samples": "abc", "ruler_x": 1}) == []
    assert validate_run("hellaswag,arc_easy", {"num_samples": 2.5}, "vllm") == []


def test_custom_tasks_need_their_length():
    with pytest.raises(ConfigurationError, match="ruler_custom_length=<tokens>"):
        validate_run(["ruler_niah_single_1_custom"], TOK)
    assert validate_run(["ruler_niah_single_1_custom"], {**TOK, "ruler_custom_length": "96k"}) == ["ruler_niah_single_1_custom"]
    with pytest.raises(ConfigurationError, match="invalid length 'lots'"):
        validate_run(["ruler_custom"], {**TOK, "ruler_custom_length": "lots"})


def test_comma_separated_and_whitespace_names():
    assert validate_run("ruler_4k, hellaswag,ruler_qa_8k", TOK) == ["ruler_4k", "ruler_qa_8k"]


# --- metadata -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2.5, "2.5", "abc", True, False, None, "", [3]])
def test_strict_integers(value):
    with pytest.raises(ConfigurationError, match=r"num_samples must be a whole number \(e.g. --metadata num_samples=100\)"):
        parse_int_option(value, "num_samples")


def test_integers_that_are_accepted():
    assert parse_int_option(7, "ruler_seed") == 7
    assert parse_int_option(" 12 ", "ruler_seed") == 12
    assert parse_int_option("-3", "ruler_seed") == -3
    # lm-eval's key=value parser turns "-1" and "1e3" into floats: integral ones are exact.
    assert parse_int_option(-1.0, "ruler_seed") == -1
    assert parse_int_option(1000.0, "num_samples") == 1000
    with pytest.raises(ConfigurationError, match="at least 1, got 0"):
        parse_int_option("0", "num_samples", minimum=1)


@pytest.mark.parametrize(
    "metadata, match",
    [
        ({"num_samples": 2.5}, "num_samples must be a whole number.*got 2.5"),
        ({"num_samples": "abc"}, "num_samples must be a whole number.*got 'abc'"),
        ({"num_samples": True}, "num_samples must be a whole number.*got True"),
        ({"num_samples": 0}, "num_samples must be at least 1"),
        ({"ruler_seed": "4.2"}, r"ruler_seed must be a whole number \(e.g. --metadata ruler_seed=42\)"),
        ({"ruler_profle": "2024"}, "unknown metadata key.*ruler_profle.*valid ruler_\\* keys are"),
        ({"ruler_profile": "v3"}, "reference, 2024"),
        ({"ruler_cache": "maybe"}, "ruler_cache must be true or false"),
        ({"ruler_model_template": "llama-9"}, "unknown model_template"),
        ({"max_model_len": "64k"}, "max_model_len must be a whole number"),
    ],
)
def test_bad_metadata_is_refused(metadata, match):
    with pytest.raises(ConfigurationError, match=match):
        validate_run(["ruler_niah_single_1_4k"], {**TOK, **metadata})


def test_model_args_are_merged_like_lm_eval():
    # lm-eval merges model_args | metadata: metadata wins, and pretrained names the tokenizer.
    assert validate_run(["ruler_4k"], {"num_samples": 3}, "dummy", {"pretrained": "x", "num_samples": "abc"}) == ["ruler_4k"]
    with pytest.raises(TokenizerError, match="pretrained=<model> or tokenizer="):
        validate_run(["ruler_4k"], {"num_samples": 3}, "dummy")


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigurationError) as info:
        validate_run(["ruler_niah_5k", "ruler_vt_4k"], {**TOK, "num_samples": 2.5})
    message = str(info.value)
    assert message.startswith("2 problems with this run: (1) task ruler_niah_5k") and "(2) num_samples" in message
    assert "\n" not in message


def test_flags():
    assert parse_flag("Yes", "ruler_offline") is True and parse_flag(0, "ruler_cache") is False
    with pytest.raises(ConfigurationError, match="ruler_offline must be true or false"):
        parse_flag("2", "ruler_offline")


def test_data_file_keys_match_the_sources():
    from lm_eval_ruler.data.sources import SOURCES

    assert list(DATA_FILE_KEYS) == list(SOURCES)
    assert all(key in OPTION_KEYS for key in DATA_FILE_KEYS.values())


def test_harness_uses_the_same_parsers(llama3_tokenizer):
    from lm_eval_ruler.data import options_from_metadata
    from lm_eval_ruler.harness import task_length

    with pytest.raises(ConfigurationError, match="num_samples must be a whole number"):
        options_from_metadata({"tokenizer": llama3_tokenizer, "num_samples": 2.5})
    with pytest.raises(ConfigurationError, match="ruler_seed must be a whole number"):
        options_from_metadata({"tokenizer": llama3_tokenizer, "ruler_seed": True})
    assert options_from_metadata({"tokenizer": llama3_tokenizer, "num_samples": "7"}).num_samples == 7
    assert task_length(4096, {}) == 4096


# --- backends -------------------------------------------------------------------------------------


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in modules else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_vllm_names_the_pip_command(monkeypatch):
    _without(monkeypatch, "vllm")
    with pytest.raises(ConfigurationError, match=r"--model vllm needs vllm.*pip install 'lm-eval-ruler\[vllm\]'"):
        validate_run(["ruler_4k"], TOK, "vllm")
    # A run without our tasks is not our business.
    assert validate_run(["hellaswag"], TOK, "vllm") == []


def test_missing_torch_for_hf(monkeypatch):
    _without(monkeypatch, "torch")
    with pytest.raises(ConfigurationError, match=r"--model hf needs torch.*pip install 'lm-eval-ruler\[hf\]'"):
        validate_run(["ruler_4k"], TOK, "hf")
    assert validate_run(["ruler_4k"], TOK, "local-completions") == ["ruler_4k"]


def test_present_backend_passes(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: object())
    assert validate_run(["ruler_4k"], TOK, "vllm") == ["ruler_4k"]


# --- the startup hook's check inside lm-eval --------------------------------------------------------


def test_hook_validates_in_evaluator_config():
    from lm_eval_ruler._hook import patch_lm_eval

    patch_lm_eval()
    from lm_eval.config.evaluate_config import EvaluatorConfig

    def configure(tasks, metadata):
        return EvaluatorConfig(model="dummy", model_args={"tokenizer": "t"}, tasks=tasks, metadata=metadata)._configure()

    with pytest.raises(ConfigurationError, match="num_samples must be a whole number"):
        configure(["ruler_niah_single_1_4k"], {"num_samples": "abc"})
    with pytest.raises(ConfigurationError, match="'5k' is not a RULER length"):
        configure("hellaswag,ruler_niah_5k", {})
    # Other tasks (lm-eval's own RULER included) are untouched, whatever the metadata.
    assert configure(["hellaswag"], {"num_samples": "abc"}).metadata["num_samples"] == "abc"
    assert configure(["ruler_qa_squad"], {"ruler_oops": 1, "max_seq_lengths": [4096]}).metadata["ruler_oops"] == 1


def test_ruler_runs_on_vllm_tokenize_with_threads(monkeypatch):
    """lm-eval turns tokenizer threads off; RULER runs on vLLM turn them back on (the prompts are tokenized at once)."""
    import os

    from lm_eval_ruler import _validate
    from lm_eval_ruler._hook import patch_lm_eval

    patch_lm_eval()
    from lm_eval.config.evaluate_config import EvaluatorConfig

    monkeypatch.setattr(_validate, "backend_problem", lambda model: None)  # no vLLM on CPU machines
    for model, tasks, threads in (("vllm", ["ruler_niah_single_1_4k"], "true"), ("vllm", ["hellaswag"], "false"),
                                  ("hf", ["ruler_niah_single_1_4k"], "false")):  # fmt: skip
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
        EvaluatorConfig(model=model, model_args={"tokenizer": "t"}, tasks=tasks, metadata={})._configure()
        assert os.environ["TOKENIZERS_PARALLELISM"] == threads, (model, tasks)


# --- the lm-eval-ruler command --------------------------------------------------------------------


def test_run_error_is_one_line_exit_2(capsys):
    code = main(["run", "--model", "hf", "--model_args", "pretrained=/nowhere", "--tasks", "ruler_niah_single_1_4k",
                 "--metadata", "num_samples=abc"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == ["error: num_samples must be a whole number (e.g. --metadata num_samples=100), got 'abc'"]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "metadata",
    [
        ["num_samples=2.5"],
        ["ruler_seed=1", "num_samples=2.5"],  # lm-eval's space-separated form
        ['{"num_samples": 2.5}'],  # and its JSON form
    ],
)
def test_run_reads_metadata_as_lm_eval_does(capsys, metadata):
    code = main(["run", "--model", "dummy", "--model_args", "tokenizer=t", "-t", "ruler_4k", "--metadata", *metadata])
    err = capsys.readouterr().err
    assert code == 2 and "got 2.5" in err and len(err.strip().splitlines()) == 1


def test_run_bad_length_lists_lengths(capsys):
    code = main(["run", "--model", "dummy", "--model_args", "tokenizer=t", "--tasks", "ruler_niah_single_1_5k"])
    err = capsys.readouterr().err
    assert code == 2 and "valid lengths are 1k" in err and "ruler_niah_single_1_custom" in err


def test_debug_shows_the_traceback(capsys):
    code = main(["--debug", "run", "--model", "dummy", "--model_args", "tokenizer=t", "--tasks", "ruler_4k",
                 "--metadata", "num_samples=abc"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback (most recent call last)" in err and "ConfigurationError: num_samples" in err


def test_debug_is_removed_for_own_commands(capsys, tmp_path):
    assert main(["data", "status", "--cache-dir", str(tmp_path), "--debug"]) in (0, 1)
    assert "essays" in capsys.readouterr().out


def test_version(capsys):
    import importlib.metadata

    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"lm-eval-ruler {__version__} (lm-eval {importlib.metadata.version('lm_eval')})"


def test_help_mentions_version_and_debug(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--version" in out and "--debug" in out and "ruler_suite" in out


# --- subprocesses: before the model loads -----------------------------------------------------------


def _python(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        **(env_extra or {}),
    }
    return subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)


@pytest.mark.slow
def test_error_raised_inside_lm_eval_is_one_line(llama3_tokenizer, cache_dir):
    """A RulerError from inside lm-eval's run (a BudgetError in a task) is one line too, exit 2."""
    result = _python(["-m", "lm_eval_ruler", "run", "--model", "dummy", "--model_args", f"tokenizer={llama3_tokenizer}",
                      "--tasks", "ruler_niah_single_1_4k", "--metadata", "num_samples=1,max_model_len=2048"])  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the task length is 4096 tokens") and "max_model_len=2048" in last


def _bad_run(entry: str, smollm2: Path, *extra: str) -> list[str]:
    return ["-m", entry, "run", "--model", "hf", "--model_args", f"pretrained={smollm2}", "--device", "cpu",
            "--tasks", "ruler_niah_single_1_4k", "--metadata", "num_samples=abc", *extra]  # fmt: skip


@pytest.mark.slow
def test_validation_happens_before_the_model_loads(smollm2: Path, cache_dir: Path):
    # Control: without our startup hook (tasks only via --include_path) lm-eval loads the model
    # first and the bad value surfaces only when the task builds its data, under a traceback.
    control = _python(_bad_run("lm_eval", smollm2, "--include_path", str(REPO / "task_configs")),
                      {"LM_EVAL_RULER_AUTOLOAD": "0"})  # fmt: skip
    assert control.returncode != 0
    control_output = control.stdout + control.stderr
    assert MODEL_LOAD_MARKER in control_output and HF_DEVICE_MARKER in control_output
    assert "num_samples must be a whole number" in control_output and "Traceback" in control_output

    # lm-eval-ruler: one line, exit 2, and no model was ever built.
    ours = _python(_bad_run("lm_eval_ruler", smollm2))
    output = ours.stdout + ours.stderr
    assert ours.returncode == 2, output[-3000:]
    last = [line for line in ours.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error:") and "num_samples" in last
    assert "Traceback" not in output
    assert MODEL_LOAD_MARKER not in output and HF_DEVICE_MARKER not in output

    # Plain lm_eval (the installed startup hook): lm-eval prints the traceback, but before the model.
    plain = _python(_bad_run("lm_eval", smollm2))
    output = plain.stdout + plain.stderr
    assert plain.returncode != 0
    assert "ConfigurationError: num_samples must be a whole number" in output.strip().splitlines()[-1]
    assert MODEL_LOAD_MARKER not in output and HF_DEVICE_MARKER not in output


# --- progress lines inside lm-eval ----------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_download_logs_before_and_after_through_lm_eval_logger(llama3_tokenizer, cache_dir):
    from lm_eval.tasks import TaskManager

    from lm_eval_ruler._hook import patch_lm_eval

    patch_lm_eval()
    logger = logging.getLogger("lm_eval.lm_eval_ruler")
    handler = _Lines()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        metadata = {"tokenizer": llama3_tokenizer, "num_samples": 2, "ruler_apply_chat_template": False}
        manager = TaskManager(metadata=metadata)
        for _ in range(2):
            manager.load(["ruler_niah_single_1_1k"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    first, second, third, fourth = handler.lines
    assert first.startswith(f"ruler_niah_single_1_1k: 2 samples at 1024 tokens (tokenizer {llama3_tokenizer}, profile reference)")
    assert second.startswith("ruler_niah_single_1_1k: 2 docs generated in ") and "prompt tokens min/median/max" in second
    assert third == first
    assert fourth.startswith("ruler_niah_single_1_1k: 2 docs loaded from the dataset cache in ")


def test_validator_imports_neither_lm_eval_nor_torch():
    code = (
        "import sys; from lm_eval_ruler._validate import validate_run; "
        "validate_run(['ruler_4k'], {'tokenizer': 't', 'num_samples': 3}, 'hf'); "
        "print(sorted(m for m in ('lm_eval', 'torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    result = _python(["-c", code], {"LM_EVAL_RULER_AUTOLOAD": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_runs_of_only_our_tasks_skip_indexing_lm_evals_own_tasks():
    """lm-eval indexes ~15,000 task configs at every start (seconds per sweep cell); runs of only ours skip that."""
    from lm_eval_ruler import _hook
    from lm_eval_ruler.cli import check_lm_eval_args

    assert check_lm_eval_args(["run", "--model", "dummy", "--model_args", "tokenizer=x", "--tasks", "ruler_niah_single_1_1k,ruler_4k"]) is True
    assert check_lm_eval_args(["run", "--model", "dummy", "--model_args", "tokenizer=x", "--tasks", "ruler_niah_single_1_1k,arc_easy"]) is False
    assert check_lm_eval_args(["run", "--model", "dummy", "--model_args", "tokenizer=x", "--tasks", "ruler_vt"]) is False  # lm-eval's own port
    try:
        _hook.patch_lm_eval(only_our_tasks=True)
        from lm_eval.tasks import TaskManager

        ours_only = TaskManager()
        assert "ruler_niah_single_1_4k" in ours_only.all_tasks and "arc_easy" not in ours_only.all_tasks
    finally:
        _hook.patch_lm_eval()
    assert "arc_easy" in TaskManager().all_tasks
