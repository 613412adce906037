"""What determined one task's data at one length: one typed record from generation to the report.

The record travels as a JSON object: ``build_dataset`` produces it, the lm-eval task
stores it in the results (``configs.<task>.metadata.ruler``), the sweep copies it into
each cell's ``manifest.json``, and ``report``/``compare`` read it back to refuse
mixing runs made on different data. Every stage reads the same field list, so adding
a determinant is one edit here.

Each field has a *role*:

* ``run``: must agree across every task of one run and between compared runs (the
  profile, seed, sample count, tokenizer, rendering ...);
* ``task``: must agree between compared runs for the same task and length (the cache
  key, the data files' hashes);
* ``info``: recorded, never compared (the tokenizer's name differs between a model and
  its quantized copy although the tokenizer is the same).

This module imports nothing beyond the standard library: the report reads it without
transformers or lm-eval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["INFO", "RUN", "TASK", "Provenance"]

RUN = "run"
TASK = "task"
INFO = "info"


def _role(role: str) -> Any:
    return field(default=None, metadata={"role": role})


@dataclass(frozen=True)
class Provenance:
    """The data provenance of one task at one length (``None``: not recorded, e.g. by an older version)."""

    task: str | None = _role(INFO)
    length: int | None = _role(INFO)
    task_version: int | None = _role(TASK)
    profile: str | None = _role(RUN)
    seed: int | None = _role(RUN)
    num_samples: int | None = _role(RUN)
    render_modes: tuple[str, ...] | None = _role(RUN)
    system_instruction: str | None = _role(RUN)
    model_template: str | None = _role(RUN)
    #: ``ruler_example_rendering`` as requested (it changes data only under chat-only rendering).
    example_rendering: str | None = _role(RUN)
    add_bos_token: bool | None = _role(RUN)
    tokenizer: str | None = _role(INFO)
    tokenizer_fingerprint: str | None = _role(RUN)
    chat_template_fingerprint: str | None = _role(RUN)
    wonderwords: str | None = _role(RUN)
    data_version: int | None = _role(RUN)
    cache_key: str | None = _role(TASK)
    sources: Mapping[str, Any] | None = _role(TASK)
    prompt_tokens: Mapping[str, Any] | None = _role(INFO)
    plugin_version: str | None = _role(INFO)
    from_cache: bool | None = _role(INFO)

    @classmethod
    def names(cls, *roles: str) -> tuple[str, ...]:
        """Field names with one of ``roles`` (all fields when none is given), in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if not roles or f.metadata["role"] in roles)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Provenance:
        """Read a recorded object (dataset info, results metadata, manifest); unknown keys are ignored."""
        data = data or {}
        values = {name: data.get(name) for name in cls.names()}
        if isinstance(values["render_modes"], (list, tuple)):
            values["render_modes"] = tuple(values["render_modes"])
        return cls(**values)

    @classmethod
    def from_dataset(cls, info: Mapping[str, Any], from_cache: bool) -> Provenance:
        """The record of a dataset just built or loaded (``GeneratedDataset.info``)."""
        return dataclasses.replace(cls.from_dict(info), from_cache=from_cache)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in results and manifests (render modes as a list)."""
        data = {name: getattr(self, name) for name in self.names()}
        if data["render_modes"] is not None:
            data["render_modes"] = list(data["render_modes"])
        if data["sources"] is not None:
            data["sources"] = dict(data["sources"])
        if data["prompt_tokens"] is not None:
            data["prompt_tokens"] = dict(data["prompt_tokens"])
        return data

    @property
    def recorded(self) -> bool:
        """Whether anything was recorded at all (results of other tasks or very old runs have nothing)."""
        return any(getattr(self, name) is not None for name in self.names(RUN, TASK))

    def comparable(self, name: str) -> Any:
        """A field's value as compared: data files by content hash, since their paths differ between machines."""
        value = getattr(self, name)
        if name == "sources" and isinstance(value, Mapping):
            return {
                key: (item.get("sha256") or item.get("fingerprint")) if isinstance(item, Mapping) else item
                for key, item in sorted(value.items())
            }
        return value

    def differences(self, other: Provenance, roles: tuple[str, ...] = (RUN, TASK)) -> dict[str, tuple[Any, Any]]:
        """Fields of ``roles`` recorded on both sides whose values differ: ``{name: (mine, theirs)}``.

        A field missing on one side (written by an older version) cannot be checked and is
        not reported as a difference.
        """
        found = {}
        for name in self.names(*roles):
            mine, theirs = self.comparable(name), other.comparable(name)
            if mine is not None and theirs is not None and mine != theirs:
                found[name] = (mine, theirs)
        return found

    def run_settings(self) -> dict[str, Any]:
        """The run-wide fields, for display and for checking that a run's tasks agree."""
        return {name: getattr(self, name) for name in self.names(RUN)}
