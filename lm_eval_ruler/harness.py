"""The lm-eval side: the task class, dataset hook and per-sample scoring.

lm-eval passes every ``--model_args`` and ``--metadata`` key to the task as
metadata. This module turns that metadata into generation options (parsed by
``data.options``), refuses runs whose served window cannot hold the task
(instead of letting a backend left-truncate the prompt), and checks at request
time that the prompt lm-eval actually built still fits the budget the data was
sized for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from lm_eval.api.task import ConfigurableTask

from ._server import verify_server_tokenizer
from ._tasks import task_spec
from ._window import served_window
from .data.build import GeneratedDataset, build_dataset
from .data.options import DatasetOptions, custom_length, options_from_metadata, parse_int_option
from .data.tokens import PromptCounter, RenderMode, RenderSettings, load_tokenizer
from .errors import BudgetError
from .metrics import score_sample
from .provenance import Provenance

logger = logging.getLogger(__name__)
#: Progress lines go through lm-eval's own logger ("lm_eval", set up by its CLI), so they show in its output.
progress_logger = logging.getLogger("lm_eval.lm_eval_ruler")

__all__ = ["RulerTask", "build_for_task", "check_window", "task_length"]


def task_length(ruler_length: Any, metadata: Mapping[str, Any]) -> int:
    if ruler_length is not None:
        return parse_int_option(ruler_length, "ruler_length", minimum=1)
    return custom_length(metadata)


def check_window(length: int, metadata: Mapping[str, Any], needed: int | None = None) -> None:
    """Refuse a window that cannot hold the task; ``needed`` is the docs' real maximum when known."""
    window, source = served_window(metadata)
    if window is not None and window < (needed or length):
        if needed is not None:
            raise BudgetError(
                f"the longest prompt + answer of this task is {needed} tokens but the served window is {window} "
                f"({source}); serve at least {needed} tokens (or {length}, the task length)."
            )
        fix = (
            f"restart the server with a window of at least {length} tokens (vllm serve ... --max-model-len {length})"
            if metadata.get("base_url")
            else f"serve a window of at least {length} tokens (e.g. --model_args ...,max_model_len={length} for vllm, "
            f"max_length={length} for hf)"
        )
        raise BudgetError(
            f"the task length is {length} tokens (prompt + answer) but the served window is {window} ({source}); "
            f"lm-eval would left-truncate every long prompt and score garbage. {fix[0].upper() + fix[1:]}, or run a shorter length."
        )


def build_for_task(
    ruler_task: str, ruler_length: Any, metadata: Mapping[str, Any], *, log_as: str | None = None
) -> tuple[GeneratedDataset, DatasetOptions]:
    """Validate everything cheap first (task, length, options, window), then generate or load.

    ``log_as`` (the lm-eval task name) announces the build on lm-eval's logger
    once the options are known: generating can take minutes at long lengths.
    """
    task_spec(ruler_task)
    length = task_length(ruler_length, metadata)
    options = options_from_metadata(metadata)
    window, _ = served_window(metadata)
    if log_as:
        progress_logger.info(
            "%s: %d samples at %d tokens (tokenizer %s, profile %s): %s ...",
            log_as,
            options.num_samples,
            length,
            options.tokenizer,
            options.profile,
            "loading from the dataset cache, or generating if not cached (can take minutes at long lengths)"
            if options.use_cache
            else "generating (ruler_cache=false; can take minutes at long lengths)",
        )
    if window is not None and window < length:
        # A window below the length can still hold datasets already generated
        # (e.g. by `lm-eval-ruler sweep`, which sizes windows from real prompts).
        cached = build_dataset(ruler_task, length, options, cached_only=True) if options.use_cache else None
        if cached is None:
            check_window(length, metadata)
        else:
            check_window(length, metadata, needed=max(doc["length"] for doc in cached.docs))
            return cached, options
    generated = build_dataset(ruler_task, length, options)
    assert generated is not None
    return generated, options


class RulerTask(ConfigurableTask):
    """A ConfigurableTask that records what it generated and guards the budget."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        self._counter: PromptCounter | None = None
        self._checked_renderings: tuple[RenderMode, ...] = ()
        super().__init__(config=config)

    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        import datasets

        kwargs_ = dict(dataset_kwargs or {})
        metadata = dict(self.config.metadata or {})
        started = time.perf_counter()
        generated, options = build_for_task(
            kwargs_["ruler_task"], kwargs_.get("ruler_length"), metadata, log_as=self.config.task
        )
        elapsed = time.perf_counter() - started
        self.dataset = {"test": datasets.Dataset.from_list(generated.docs)}
        tokenizer = load_tokenizer(options.tokenizer, options.trust_remote_code, options.tokenizer_revision)
        render = RenderSettings(tuple(generated.info["render_modes"]), options.system_instruction, options.add_bos_token)
        self._counter = PromptCounter(tokenizer, render, piecewise=False)
        self._checked_renderings = tuple(generated.info["render_modes"])
        if metadata.get("base_url"):
            # Server mode: the budgets above are counted locally, so the server must tokenize alike.
            doc = generated.docs[0]
            prompt = self._counter.render(doc["input"], doc["gen_prefix"], self._checked_renderings[-1])
            verify_server_tokenizer(metadata, tokenizer, prompt)
        summary = Provenance.from_dataset(generated.info, generated.from_cache).to_dict()
        self.config.metadata = {**metadata, "ruler": summary}
        stats = generated.info["prompt_tokens"]
        progress_logger.info(
            "%s: %d docs %s in %.1f s, prompt tokens min/median/max %s/%s/%s",
            self.config.task,
            len(generated.docs),
            "loaded from the dataset cache" if generated.from_cache else "generated",
            elapsed,
            stats.get("min"),
            stats.get("median"),
            stats.get("max"),
        )

    def construct_requests(self, doc: dict[str, Any], ctx: Any, **kwargs: Any) -> Any:
        self._check_prompt(doc, ctx)
        return super().construct_requests(doc, ctx, **kwargs)

    def _check_prompt(self, doc: dict[str, Any], ctx: Any) -> None:
        """Refuse a prompt that would not fit: it means this run renders differently than budgeted."""
        if self._counter is None or not isinstance(ctx, str):
            return
        max_gen = int(self.config.generation_kwargs.get("max_gen_toks", doc["length"] - doc["prompt_tokens"]))
        reserved = doc["length"] - doc["prompt_tokens"]
        known = any(ctx == self._counter.render(doc["input"], doc["gen_prefix"], mode) for mode in self._checked_renderings)
        if known and max_gen <= reserved:
            return
        tokens = self._counter.count_text(ctx)
        if tokens + max_gen > doc["max_length"]:
            raise BudgetError(
                f"{self.config.task}: the prompt lm-eval built is {tokens} tokens and max_gen_toks is {max_gen}, "
                f"over the task length {doc['max_length']}. The data was sized for {'/'.join(self._checked_renderings)} "
                "rendering; this run renders differently (a system instruction, chat template arguments, or a larger "
                "max_gen_toks in --gen_kwargs). Pass the same choices as metadata (--metadata "
                "ruler_apply_chat_template=true,ruler_system_instruction=...) or use the `lm-eval-ruler` command, which does it for you."
            )


def _log_prompt_once(doc: dict[str, Any]) -> None:
    """Drop the prompt text from the doc that lm-eval is about to log beside the prompt itself.

    With ``--log_samples`` lm-eval writes each sample's ``doc`` next to ``arguments``, the prompt
    built from it, so every RULER prompt was stored twice (about 180 MB per 4K cell of 5,500
    samples, gigabytes at 128K). lm-eval calls this with its own copy of the doc, after it built
    the requests and before it logs the doc; ``doc_hash`` is computed from the request's copy, so
    it still covers the prompt and pairs samples across runs.
    """
    doc.pop("input", None)


def process_results_part(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """QA scoring: any gold alias counts (NVIDIA's ``string_match_part``)."""
    _log_prompt_once(doc)
    return {"score": score_sample("part", results[0], doc["outputs"])}


def process_results_all(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """NIAH/VT/CWE/FWE scoring: the fraction of gold strings found (``string_match_all``)."""
    _log_prompt_once(doc)
    return {"score": score_sample("all", results[0], doc["outputs"])}
