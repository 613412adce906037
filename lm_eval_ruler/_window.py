"""The served window: how many prompt + answer tokens a backend accepts before it truncates.

lm-eval's backends left-truncate a prompt longer than their window, with at most a
warning, which cuts RULER's instruction and maybe the needle. So both the task (before
it builds data) and the sweep (before it starts a cell) compare lengths with the window,
and both read it here, where each backend's own rule is written once:

* ``max_model_len`` (vLLM) or ``max_length`` (hf and others) when the run sets one;
  lm-eval's API backends (``base_url``) keep ``max_length - 1`` tokens and default to 2048;
* otherwise the model's ``config.json``: vLLM takes the smallest of its window attributes
  and extends it by a RoPE scaling factor; lm-eval's hf backend takes the first of
  ``n_positions``, ``max_position_embeddings``, ``n_ctx`` (``lm_eval.models.utils.resolve_max_length``)
  and applies no factor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["API_DEFAULT_MAX_LENGTH", "config_window", "served_window", "window_model_args"]

#: lm-eval's TemplateAPI default ``max_length``; it keeps one token less.
API_DEFAULT_MAX_LENGTH = 2048
#: Config attributes vLLM reads for the window (it takes the smallest one present).
_VLLM_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
#: lm-eval's hf backend: the first of these present.
_HF_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")
#: RoPE types whose factor vLLM does not apply again (the config's window already counts it).
_ROPE_ALREADY_COUNTED = (None, "default", "su", "longrope", "llama3")


def served_window(metadata: Mapping[str, Any], *, backend: str | None = None) -> tuple[int | None, str]:
    """The window of a run from its lm-eval model args (+ metadata), and where it came from.

    ``backend`` chooses the config rule when no window is set (``vllm``; anything else
    gets lm-eval's hf rule). (None, "unknown") when nothing names one.
    """
    from .data.options import parse_int_option

    for key in ("max_model_len", "max_length"):
        if metadata.get(key) is not None:
            window = parse_int_option(metadata[key], key, minimum=1)
            if key == "max_length" and metadata.get("base_url"):
                return window - 1, f"max_length={window} (API backends use max_length - 1)"
            return window, f"{key}={window}"
    if metadata.get("base_url"):
        return API_DEFAULT_MAX_LENGTH - 1, f"lm-eval's API default max_length={API_DEFAULT_MAX_LENGTH} (it truncates silently)"
    pretrained = metadata.get("pretrained")
    if not pretrained:
        return None, "unknown"
    window, source = config_window(str(pretrained), metadata, backend=backend)
    return (window, f"the model config's {source}") if window is not None else (None, "unknown")


def config_window(model: str, model_args: Mapping[str, Any], *, backend: str | None = None) -> tuple[int | None, str]:
    """The window ``backend`` derives from the model's config.json; (None, why) when unknown."""
    try:
        from transformers import AutoConfig
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None, "transformers is not installed"
    from .data.options import parse_flag

    kwargs: dict[str, Any] = {"trust_remote_code": parse_flag(model_args.get("trust_remote_code", False), "trust_remote_code")}
    if model_args.get("revision"):
        kwargs["revision"] = str(model_args["revision"])
    try:
        config = AutoConfig.from_pretrained(model, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a served name or a fake model has no loadable config
        return None, f"no loadable config ({type(exc).__name__})"
    config = getattr(config, "text_config", None) or config
    found = {key: getattr(config, key) for key in _VLLM_KEYS + _HF_KEYS if isinstance(getattr(config, key, None), int)}
    found = {key: value for key, value in found.items() if value > 0}
    if backend != "vllm":
        key = next((key for key in _HF_KEYS if key in found), None)
        return (None, "its config names no window") if key is None else (found[key], f"config.json {key}={found[key]}")
    found = {key: value for key, value in found.items() if key in _VLLM_KEYS}
    if not found:
        return None, "its config names no window"
    key = min(found, key=lambda k: found[k])
    window, source = found[key], f"config.json {key}={found[key]}"
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None)
    if isinstance(rope, Mapping):
        rope_type = rope.get("rope_type") or rope.get("type")
        factor = rope.get("factor")
        if rope_type not in _ROPE_ALREADY_COUNTED and isinstance(factor, (int, float)) and factor > 1:
            base = rope.get("original_max_position_embeddings") if rope_type == "yarn" else None
            window = int((base or window) * factor)
            source += f" x {rope_type} factor {factor}"
    return window, source


def window_model_args(backend: str, window: int) -> dict[str, int]:
    """The model args that serve ``window`` prompt + answer tokens on ``backend``."""
    if backend == "vllm":
        return {"max_model_len": window}
    if backend == "local-completions":
        return {"max_length": window + 1}  # the API backends keep max_length - 1
    return {"max_length": window}
