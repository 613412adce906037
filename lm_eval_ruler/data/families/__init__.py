"""The five RULER task families and the kit they share.

Each family module has one entry point, ``generate(settings, counter, resources)``
(a pure function of the task spec, the settings, the prompt counter and the
external files: the same inputs give byte-identical docs in any process).
``FAMILIES`` maps a ``TaskSpec.family`` to it; ``build`` calls it from there.

``kit`` is what the families share (settings, RNGs, prompt parts, sizing,
docs); ``budget`` the size searches; ``haystack`` word pools, essays and the
sentence splitter; ``templates`` NVIDIA's prompt and model templates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..tokens import PromptCounter
from . import common_words, frequent_words, niah, qa, variable_tracking
from .kit import GenerationSettings, Resources

#: A family generator: (settings, counter, resources) -> docs.
Generator = Callable[[GenerationSettings, PromptCounter, Resources], list[dict[str, Any]]]

#: ``TaskSpec.family`` -> its generator.
FAMILIES: Mapping[str, Generator] = {
    "niah": niah.generate,
    "variable_tracking": variable_tracking.generate,
    "common_words": common_words.generate,
    "frequent_words": frequent_words.generate,
    "qa": qa.generate,
}

#: ``TaskSpec.family`` -> the profiles in which NVIDIA nests its answered in-context example in the
#: model template (CWE's few-shot example always; VT's example only in the 2024 code, head uses the
#: plain task template). Under a chat template these tasks' data depend on ``example_rendering``.
NESTED_EXAMPLES: Mapping[str, tuple[str, ...]] = {
    "common_words": ("reference", "2024"),
    "variable_tracking": ("2024",),
}


def nests_examples(family: str, profile: str) -> bool:
    """Whether NVIDIA wraps this family's in-context example in the model template under ``profile``."""
    return profile in NESTED_EXAMPLES.get(family, ())


__all__ = ["FAMILIES", "NESTED_EXAMPLES", "Generator", "nests_examples"]
