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

__all__ = ["FAMILIES", "Generator"]
