"""lm-eval side: metadata options, clear errors for bad input, the request-time budget guard."""

from __future__ import annotations

import pytest

from lm_eval_ruler._window import config_window
from lm_eval_ruler.data import options_from_metadata
from lm_eval_ruler.errors import BudgetError, ConfigurationError, TokenizerError
from lm_eval_ruler.harness import build_for_task, check_window, task_length


def test_missing_tokenizer_names_the_arguments():
    with pytest.raises(TokenizerError, match="pretrained=<model> or tokenizer="):
        options_from_metadata({"num_samples": 5})


def test_unknown_ruler_metadata_key_is_refused(llama3_tokenizer):
    with pytest.raises(ConfigurationError, match="ruler_profle"):
        options_from_metadata({"tokenizer": llama3_tokenizer, "ruler_profle": "2024"})


def test_bad_profile_and_flags(llama3_tokenizer):
    with pytest.raises(ConfigurationError, match="reference, 2024"):
        options_from_metadata({"tokenizer": llama3_tokenizer, "ruler_profile": "v3"})
    with pytest.raises(ConfigurationError, match="true or false"):
        options_from_metadata({"tokenizer": llama3_tokenizer, "ruler_apply_chat_template": "maybe"})


def test_render_modes_follow_the_run(llama3_tokenizer):
    assert options_from_metadata({"tokenizer": llama3_tokenizer}).render_modes == ("raw", "chat")
    assert options_from_metadata({"tokenizer": llama3_tokenizer, "ruler_apply_chat_template": True}).render_modes == ("chat",)
    assert options_from_metadata({"tokenizer": llama3_tokenizer, "ruler_apply_chat_template": "false"}).render_modes == ("raw",)


def test_custom_length_needs_metadata():
    with pytest.raises(ConfigurationError, match="ruler_custom_length"):
        task_length(None, {})
    assert task_length(None, {"ruler_custom_length": "96k"}) == 98304
    with pytest.raises(ConfigurationError, match="invalid length"):
        task_length(None, {"ruler_custom_length": "lots"})


def test_unknown_task_and_model_template(llama3_tokenizer):
    with pytest.raises(ConfigurationError, match="unknown RULER task"):
        build_for_task("niah_single_9", 4096, {"tokenizer": llama3_tokenizer})
    with pytest.raises(ConfigurationError, match="meta-llama3"):
        options_from_metadata({"tokenizer": llama3_tokenizer, "ruler_model_template": "llama-9"})


def test_window_too_small_is_refused_before_generating():
    with pytest.raises(BudgetError, match="max_model_len=8192"):
        check_window(8192, {"max_model_len": 4096})
    with pytest.raises(BudgetError, match="at least 8192"):
        check_window(8192, {"max_length": 8000})
    # local-completions truncates silently with its default max_length of 2048.
    with pytest.raises(BudgetError, match="API default"):
        check_window(4096, {"base_url": "http://127.0.0.1:8000/v1/completions"})
    check_window(4096, {"max_model_len": 4096})
    check_window(4096, {"base_url": "http://x", "max_length": 4097})


def test_model_config_window_is_used(smollm2):
    check_window(8192, {"pretrained": str(smollm2)})
    with pytest.raises(BudgetError, match="max_position_embeddings=8192"):
        check_window(16384, {"pretrained": str(smollm2)})
    # vLLM's rule and lm-eval's hf rule agree on a plain config; vLLM extends it by a RoPE factor.
    assert config_window(str(smollm2), {}, backend="vllm") == config_window(str(smollm2), {}, backend="hf")
    assert config_window(str(smollm2), {}, backend="hf") == (8192, "config.json max_position_embeddings=8192")


def test_nvidia_model_template_wraps_the_user_text(llama3_tokenizer, cache_dir):
    dataset, _ = build_for_task(
        "niah_single_1", 4096, {"tokenizer": llama3_tokenizer, "num_samples": 2, "ruler_model_template": "meta-llama3"}
    )
    doc = dataset.docs[0]
    assert doc["input"].startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nA special magic number")
    assert doc["input"].endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert doc["prompt_tokens"] + 128 <= 4096
    assert dataset.info["model_template"] == "meta-llama3"


def test_request_guard_refuses_an_unbudgeted_rendering(llama3_tokenizer, cache_dir):
    from lm_eval.tasks import TaskManager

    from lm_eval_ruler._hook import patch_lm_eval

    patch_lm_eval()
    manager = TaskManager(metadata={"tokenizer": llama3_tokenizer, "num_samples": 2, "ruler_apply_chat_template": False})
    task = manager.load(["ruler_niah_single_1_4k"])["tasks"]["ruler_niah_single_1_4k"]
    doc = task.dataset["test"][0]
    prompt = doc["input"] + doc["gen_prefix"]
    task.construct_requests(doc=doc, ctx=prompt, metadata=("t", 0, 1))
    long_system = "You are a helpful assistant. " * 40
    with pytest.raises(BudgetError, match="sized for raw"):
        task.construct_requests(doc=doc, ctx=long_system + prompt, metadata=("t", 0, 1))
    assert task.config.metadata["ruler"]["prompt_tokens"]["max"] + 128 <= 4096
