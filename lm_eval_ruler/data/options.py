"""What a generation request asks for: ``DatasetOptions``, and the run metadata parsed into it.

lm-eval passes every ``--model_args`` and ``--metadata`` key to a task as
metadata; ``options_from_metadata`` turns that into ``DatasetOptions``. The
parsers here are pure (no lm-eval, torch or transformers at import), so the
``lm-eval-ruler`` command, the ``lm_eval`` startup hook (``_validate``), the
task (``harness``) and the sweep all parse options the same way and can never
disagree.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._tasks import (
    CUSTOM_LENGTH_KEY,
    DEFAULT_NUM_SAMPLES,
    DEFAULT_PROFILE,
    DEFAULT_SEED,
    PROFILES,
    check_profile,
    parse_length,
)
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .tokens import RenderMode

#: How answered in-context examples are rendered under a chat template: ``nvidia`` nests each in the
#: whole chat template (a user turn, then the answer after the assistant header), as NVIDIA's
#: prepare.py does with a model template; ``inline`` keeps them as text inside the one user message.
EXAMPLE_RENDERINGS: tuple[str, ...] = ("nvidia", "inline")
DEFAULT_EXAMPLE_RENDERING = "nvidia"

#: Metadata keys this plugin reads (besides the model args it shares with lm-eval).
OPTION_KEYS = {
    "num_samples": f"samples per task and length (default {DEFAULT_NUM_SAMPLES})",
    "ruler_seed": f"generator seed (default {DEFAULT_SEED}, as RULER)",
    "ruler_profile": (
        f"{' or '.join(PROFILES)} (NVIDIA's current code, or the code behind the published numbers; default {DEFAULT_PROFILE})"
    ),
    "ruler_apply_chat_template": "true/false: size prompts for exactly this rendering (set automatically from --apply_chat_template)",
    "ruler_system_instruction": "the run's system instruction, so it is budgeted (set automatically from --system_instruction)",
    "ruler_model_template": "render with one of NVIDIA's hand-written model templates (e.g. meta-llama3)",
    "ruler_example_rendering": (
        f"{' or '.join(EXAMPLE_RENDERINGS)}: under --apply_chat_template, wrap the answered in-context examples "
        "(cwe; vt under the 2024 profile) in the chat template as NVIDIA does, or keep them inline in the user "
        f"message (default {DEFAULT_EXAMPLE_RENDERING})"
    ),
    "ruler_cache_dir": "cache directory for data files and generated datasets",
    "ruler_cache": "false to regenerate instead of using the dataset cache",
    "ruler_offline": "true to never download data files",
    CUSTOM_LENGTH_KEY: "token length for the *_custom tasks (e.g. 100000 or 96k)",
    "ruler_essays_file": "use this PaulGrahamEssays.json instead of the pinned download",
    "ruler_squad_file": "use this SQuAD 2.0 dev JSON instead of the pinned download",
    "ruler_hotpotqa_file": "use this HotpotQA dev-distractor JSON instead of the pinned download",
}
#: Data source name -> the metadata key naming a local copy (``sources.SOURCES`` order).
DATA_FILE_KEYS = {name: f"ruler_{name}_file" for name in ("essays", "squad", "hotpotqa")}
_INT_EXAMPLES = {"num_samples": 100, "ruler_seed": 42, "max_model_len": 65536, "max_length": 65536, "ruler_length": 4096}
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_FLAG_TRUE = {"1", "true", "yes", "on"}
_FLAG_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class DatasetOptions:
    """User-facing knobs of one generation request (all have RULER defaults)."""

    tokenizer: str
    num_samples: int = DEFAULT_NUM_SAMPLES
    seed: int = DEFAULT_SEED
    profile: str = DEFAULT_PROFILE
    render_modes: tuple[RenderMode, ...] = ("raw", "chat")
    system_instruction: str | None = None
    model_template: str | None = None
    #: ``EXAMPLE_RENDERINGS``; only chat-only rendering (``render_modes == ("chat",)``) uses ``nvidia``.
    example_rendering: str = DEFAULT_EXAMPLE_RENDERING
    add_bos_token: bool | None = None
    trust_remote_code: bool = False
    tokenizer_revision: str | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    download: bool = True
    #: Source name -> a local file to use instead of the pinned download.
    data_files: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ConfigurationError(f"num_samples must be at least 1, got {self.num_samples}")
        check_profile(self.profile)
        parse_example_rendering(self.example_rendering)
        if self.model_template is not None:
            from .families.templates import model_template as lookup_model_template

            lookup_model_template(self.model_template)


def options_from_metadata(metadata: Mapping[str, Any]) -> DatasetOptions:
    """Generation options from lm-eval task metadata (model args + --metadata)."""
    return DatasetOptions(**dataset_option_values(metadata))


def parse_int_option(value: Any, key: str, *, minimum: int | None = None) -> int:
    """A whole number from metadata: an int or an integer string; never a bool or a fraction.

    Integral floats are accepted because lm-eval's own ``key=value`` parser
    turns ``-1`` and ``1e3`` into floats; ``2.5`` is an error, not 2.
    """
    exact = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    integral_float = isinstance(value, float) and value.is_integer()
    integer_text = isinstance(value, str) and _INT_RE.match(value) is not None
    if not (exact or integral_float or integer_text):
        example = _INT_EXAMPLES.get(key, 1)
        raise ConfigurationError(f"{key} must be a whole number (e.g. --metadata {key}={example}), got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ConfigurationError(f"{key} must be at least {minimum}, got {number}")
    return number


def parse_flag(value: Any, key: str) -> bool:
    """true/false from metadata (a bool, or 1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _FLAG_TRUE:
        return True
    if text in _FLAG_FALSE:
        return False
    raise ConfigurationError(f"{key} must be true or false, got {value!r}")


def parse_example_rendering(value: Any) -> str:
    """``ruler_example_rendering``: one of ``EXAMPLE_RENDERINGS``."""
    text = str(value).strip().lower()
    if text not in EXAMPLE_RENDERINGS:
        raise ConfigurationError(f"ruler_example_rendering must be one of {', '.join(EXAMPLE_RENDERINGS)}, got {value!r}")
    return text


def check_option_keys(metadata: Mapping[str, Any]) -> None:
    """Refuse ``ruler_*`` keys we do not read: a typo would silently use the default."""
    unknown = sorted(k for k in metadata if isinstance(k, str) and k.startswith("ruler_") and k not in OPTION_KEYS)
    if unknown:
        valid = ", ".join(k for k in OPTION_KEYS if k.startswith("ruler_"))
        raise ConfigurationError(f"unknown metadata key(s) {', '.join(unknown)}; valid ruler_* keys are: {valid}")


def dataset_option_values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``DatasetOptions`` fields a run's metadata (model args + --metadata) asks for, validated."""
    from .families.templates import model_template as lookup_model_template
    from .tokens import resolve_tokenizer_name

    check_option_keys(metadata)
    chat = metadata.get("ruler_apply_chat_template")
    if chat is None:
        modes: tuple[str, ...] = ("raw", "chat")
    else:
        modes = ("chat",) if parse_flag(chat, "ruler_apply_chat_template") else ("raw",)
    model_template = metadata.get("ruler_model_template") or None
    if model_template and modes == ("chat",):
        raise ConfigurationError(
            "ruler_model_template already wraps prompts in NVIDIA's format; drop --apply_chat_template or ruler_model_template"
        )
    if model_template:
        lookup_model_template(str(model_template))
    add_bos = metadata.get("add_bos_token")
    return {
        "tokenizer": resolve_tokenizer_name(metadata),
        "num_samples": parse_int_option(metadata.get("num_samples", DEFAULT_NUM_SAMPLES), "num_samples", minimum=1),
        "seed": parse_int_option(metadata.get("ruler_seed", DEFAULT_SEED), "ruler_seed"),
        "profile": check_profile(str(metadata.get("ruler_profile", DEFAULT_PROFILE))),
        "render_modes": modes,
        "system_instruction": metadata.get("ruler_system_instruction") or None,
        "model_template": model_template,
        "example_rendering": parse_example_rendering(metadata.get("ruler_example_rendering") or DEFAULT_EXAMPLE_RENDERING),
        "add_bos_token": None if add_bos is None else parse_flag(add_bos, "add_bos_token"),
        "trust_remote_code": parse_flag(metadata.get("trust_remote_code", False), "trust_remote_code"),
        "tokenizer_revision": metadata.get("tokenizer_revision") or metadata.get("revision") or None,
        "cache_dir": metadata.get("ruler_cache_dir") or None,
        "use_cache": parse_flag(metadata.get("ruler_cache", True), "ruler_cache"),
        "download": not parse_flag(metadata.get("ruler_offline", False), "ruler_offline"),
        "data_files": tuple((name, str(metadata[key])) for name, key in DATA_FILE_KEYS.items() if metadata.get(key)),
    }


def custom_length(metadata: Mapping[str, Any]) -> int:
    """The token length of the ``*_custom`` tasks, from ``--metadata ruler_custom_length=N``."""
    if CUSTOM_LENGTH_KEY not in metadata:
        raise ConfigurationError(
            f"the *_custom tasks take their length from metadata: add --metadata {CUSTOM_LENGTH_KEY}=<tokens> "
            "(e.g. 100000 or 96k), at most your served window"
        )
    return parse_length(metadata[CUSTOM_LENGTH_KEY])
