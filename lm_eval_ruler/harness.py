"""The lm-eval side: the task class, dataset hook and per-sample scoring.

lm-eval passes every ``--model_args`` and ``--metadata`` key to the task as
metadata. This module turns that metadata into generation options, refuses
runs whose served window cannot hold the task (instead of letting a backend
left-truncate the prompt), and checks at request time that the prompt lm-eval
actually built still fits the budget the data was sized for.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lm_eval.api.task import ConfigurableTask

from ._dataset import DatasetOptions, GeneratedDataset, build_dataset
from ._tasks import CUSTOM_LENGTH_KEY, parse_length, task_spec
from ._tokenizer import PromptCounter, RenderMode, RenderSettings, load_tokenizer, resolve_tokenizer_name
from .errors import BudgetError, ConfigurationError
from .metrics import score_sample
from .sources import SOURCES

logger = logging.getLogger(__name__)

#: Metadata keys this plugin reads (besides the model args it shares with lm-eval).
OPTION_KEYS = {
    "num_samples": "samples per task and length (default 500)",
    "ruler_seed": "generator seed (default 42, as RULER)",
    "ruler_profile": "reference (NVIDIA's current code, default) or 2024 (the code behind the published numbers)",
    "ruler_apply_chat_template": "true/false: size prompts for exactly this rendering (set automatically from --apply_chat_template)",
    "ruler_system_instruction": "the run's system instruction, so it is budgeted (set automatically from --system_instruction)",
    "ruler_model_template": "render with one of NVIDIA's hand-written model templates (e.g. meta-llama3)",
    "ruler_cache_dir": "cache directory for data files and generated datasets",
    "ruler_cache": "false to regenerate instead of using the dataset cache",
    "ruler_offline": "true to never download data files",
    CUSTOM_LENGTH_KEY: "token length for the *_custom tasks (e.g. 100000 or 96k)",
    "ruler_essays_file": "use this PaulGrahamEssays.json instead of the pinned download",
    "ruler_squad_file": "use this SQuAD 2.0 dev JSON instead of the pinned download",
    "ruler_hotpotqa_file": "use this HotpotQA dev-distractor JSON instead of the pinned download",
}
_DATA_FILE_KEYS = {name: f"ruler_{name}_file" for name in SOURCES}
_WINDOW_CONFIG_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{key} must be true or false, got {value!r}")


def _int(value: Any, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be an integer, got {value!r}") from None


def options_from_metadata(metadata: Mapping[str, Any]) -> DatasetOptions:
    """Generation options from lm-eval task metadata (model args + --metadata)."""
    unknown = sorted(k for k in metadata if k.startswith("ruler_") and k not in OPTION_KEYS and k != "ruler")
    if unknown:
        valid = ", ".join(k for k in OPTION_KEYS if k.startswith("ruler_"))
        raise ConfigurationError(f"unknown metadata key(s) {', '.join(unknown)}; valid ruler_* keys are: {valid}")
    chat = metadata.get("ruler_apply_chat_template")
    modes: tuple[RenderMode, ...] = ("raw", "chat") if chat is None else (("chat",) if _flag(chat, "ruler_apply_chat_template") else ("raw",))
    model_template = metadata.get("ruler_model_template")
    if model_template and modes == ("chat",):
        raise ConfigurationError(
            "ruler_model_template already wraps prompts in NVIDIA's format; drop --apply_chat_template or ruler_model_template"
        )
    add_bos = metadata.get("add_bos_token")
    return DatasetOptions(
        tokenizer=resolve_tokenizer_name(metadata),
        num_samples=_int(metadata.get("num_samples", 500), "num_samples"),
        seed=_int(metadata.get("ruler_seed", 42), "ruler_seed"),
        profile=str(metadata.get("ruler_profile", "reference")),
        render_modes=modes,
        system_instruction=metadata.get("ruler_system_instruction") or None,
        model_template=model_template or None,
        add_bos_token=None if add_bos is None else _flag(add_bos, "add_bos_token"),
        trust_remote_code=_flag(metadata.get("trust_remote_code", False), "trust_remote_code"),
        tokenizer_revision=metadata.get("tokenizer_revision") or metadata.get("revision") or None,
        cache_dir=metadata.get("ruler_cache_dir") or None,
        use_cache=_flag(metadata.get("ruler_cache", True), "ruler_cache"),
        download=not _flag(metadata.get("ruler_offline", False), "ruler_offline"),
        data_files=tuple((name, str(metadata[key])) for name, key in _DATA_FILE_KEYS.items() if metadata.get(key)),
    )


def task_length(ruler_length: Any, metadata: Mapping[str, Any]) -> int:
    if ruler_length is not None:
        return _int(ruler_length, "ruler_length")
    if CUSTOM_LENGTH_KEY not in metadata:
        raise ConfigurationError(
            f"the *_custom tasks take their length from metadata: add --metadata {CUSTOM_LENGTH_KEY}=<tokens> "
            "(e.g. 100000 or 96k), at most your served window"
        )
    return parse_length(metadata[CUSTOM_LENGTH_KEY])


def served_window(metadata: Mapping[str, Any], options: DatasetOptions) -> tuple[int | None, str]:
    """The largest prompt + answer the backend accepts without truncating, and where it came from."""
    for key in ("max_model_len", "max_length"):
        if metadata.get(key) is not None:
            window = _int(metadata[key], key)
            # API backends keep max_length - 1 tokens (lm-eval's TemplateAPI).
            if key == "max_length" and metadata.get("base_url"):
                return window - 1, f"max_length={window} (API backends use max_length - 1)"
            return window, f"{key}={window}"
    if metadata.get("base_url"):
        return 2047, "lm-eval's API default max_length=2048 (it truncates silently)"
    pretrained = metadata.get("pretrained")
    if not pretrained:
        return None, "unknown"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(pretrained), trust_remote_code=options.trust_remote_code)
    except Exception:  # noqa: BLE001 - not every model arg names a loadable config
        return None, "unknown"
    config = getattr(config, "text_config", None) or config
    for attr in _WINDOW_CONFIG_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value, f"the model config's {attr}={value}"
    return None, "unknown"


def check_window(length: int, metadata: Mapping[str, Any], options: DatasetOptions, needed: int | None = None) -> None:
    """Refuse a window that cannot hold the task; ``needed`` is the docs' real maximum when known."""
    window, source = served_window(metadata, options)
    if window is not None and window < (needed or length):
        if needed is not None:
            raise BudgetError(
                f"the longest prompt + answer of this task is {needed} tokens but the served window is {window} "
                f"({source}); serve at least {needed} tokens (or {length}, the task length)."
            )
        raise BudgetError(
            f"the task length is {length} tokens (prompt + answer) but the served window is {window} ({source}); "
            f"lm-eval would left-truncate every long prompt and score garbage. Serve a window of at least {length} "
            f"tokens (e.g. --model_args ...,max_model_len={length} for vllm, max_length={length} for hf, "
            f"max_length={length + 1} for local-completions), or run a shorter length."
        )


def build_for_task(ruler_task: str, ruler_length: Any, metadata: Mapping[str, Any]) -> tuple[GeneratedDataset, DatasetOptions]:
    """Validate everything cheap first (task, length, options, window), then generate or load."""
    task_spec(ruler_task)
    length = task_length(ruler_length, metadata)
    options = options_from_metadata(metadata)
    window, _ = served_window(metadata, options)
    if window is not None and window < length:
        # A window below the length can still hold datasets already generated
        # (e.g. by `lm-eval-ruler sweep`, which sizes windows from real prompts).
        cached = build_dataset(ruler_task, length, options, cached_only=True) if options.use_cache else None
        if cached is None:
            check_window(length, metadata, options)
        else:
            check_window(length, metadata, options, needed=max(doc["length"] for doc in cached.docs))
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
        generated, options = build_for_task(kwargs_["ruler_task"], kwargs_.get("ruler_length"), metadata)
        self.dataset = {"test": datasets.Dataset.from_list(generated.docs)}
        tokenizer = load_tokenizer(options.tokenizer, options.trust_remote_code, options.tokenizer_revision)
        render = RenderSettings(tuple(generated.info["render_modes"]), options.system_instruction, options.add_bos_token)
        self._counter = PromptCounter(tokenizer, render, piecewise=False)
        self._checked_renderings = tuple(generated.info["render_modes"])
        summary = {k: generated.info[k] for k in ("profile", "seed", "num_samples", "length", "tokenizer", "tokenizer_fingerprint", "chat_template_fingerprint", "render_modes", "wonderwords", "data_version", "cache_key", "prompt_tokens", "sources", "plugin_version") if k in generated.info}
        summary["from_cache"] = generated.from_cache
        self.config.metadata = {**metadata, "ruler": summary}
        logger.info(
            "%s: %d docs %s, prompt tokens min/median/max %s",
            self.config.task,
            len(generated.docs),
            "loaded from cache" if generated.from_cache else f"generated in {generated.info.get('generation_seconds')} s",
            "/".join(str(v) for v in generated.info["prompt_tokens"].values()),
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


def process_results_part(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """QA scoring: any gold alias counts (NVIDIA's ``string_match_part``)."""
    return {"score": score_sample("part", results[0], doc["outputs"])}


def process_results_all(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """NIAH/VT/CWE/FWE scoring: the fraction of gold strings found (``string_match_all``)."""
    return {"score": score_sample("all", results[0], doc["outputs"])}
