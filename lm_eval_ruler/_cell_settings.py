"""What a sweep cell's results depend on, so a rerun with other settings never passes old results off as new.

A sweep skips the cells it finds finished. That is only safe when the finished cell
was made with the same settings as the current invocation: a smoke sweep at
``--num-samples 2`` followed by a full one into the same folder must not report the
smoke numbers. Each cell records its :class:`CellSettings` in ``cell.json`` and
``manifest.json``; the sweep compares them before it runs anything, and the folder
reader refuses a folder whose cells disagree.

Settings split in two: the model's own arguments (its path, vLLM options) may differ
between the models of one sweep, everything else must be the same across the whole
output folder, or the report would put numbers of different experiments side by side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CellSettings", "describe_differences"]

#: Fields that may differ between the models of one folder (compared only within one model).
PER_MODEL = ("model_args",)


def _frozen(value: Any) -> Any:
    """JSON-shaped values in a canonical form, so a value read back from cell.json compares equal."""
    if isinstance(value, Mapping):
        return {str(key): _frozen(item) for key, item in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_frozen(item) for item in value]
    return value


@dataclass(frozen=True)
class CellSettings:
    """Everything besides the model and the length that determines a sweep cell's results."""

    tasks: tuple[str, ...]
    num_samples: int
    profile: str
    seed: int
    apply_chat_template: bool
    system_instruction: str | None
    backend: str
    #: The model's lm-eval arguments without the per-cell window (max_model_len/max_length).
    model_args: Mapping[str, Any]
    #: Extra lm-eval arguments (--lm-eval-args), e.g. --gen_kwargs.
    lm_eval_args: tuple[str, ...]
    #: The plugin's data version and each task's version: a changed generator changes results.
    data_version: int
    task_versions: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {field.name: _frozen(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellSettings | None:
        """The settings a cell recorded, or None when it recorded none (an older version) or they are unreadable."""
        try:
            return cls(
                tasks=tuple(data["tasks"]),
                num_samples=int(data["num_samples"]),
                profile=str(data["profile"]),
                seed=int(data["seed"]),
                apply_chat_template=bool(data["apply_chat_template"]),
                system_instruction=data.get("system_instruction"),
                backend=str(data["backend"]),
                model_args=dict(data["model_args"]),
                lm_eval_args=tuple(data["lm_eval_args"]),
                data_version=int(data["data_version"]),
                task_versions=dict(data["task_versions"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def differences(self, other: CellSettings, *, same_model: bool = True) -> dict[str, tuple[Any, Any]]:
        """``{field: (mine, theirs)}`` for the fields that differ; the model's arguments only within one model."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {
            name: (mine[name], theirs[name])
            for name in mine
            if mine[name] != theirs[name] and (same_model or name not in PER_MODEL)
        }


def describe_differences(found: Iterable[tuple[str, Mapping[str, tuple[Any, Any]]]]) -> str:
    """``num_samples 2 (now 3) in model @ 1k, model @ 2k; ...``: one clause per differing field."""
    by_field: dict[tuple[str, str], list[str]] = {}
    for label, differences in found:
        for name, (recorded, current) in differences.items():
            by_field.setdefault((name, f"{_short(recorded)} (now {_short(current)})"), []).append(label)
    clauses = []
    for (name, values), labels in by_field.items():
        shown = ", ".join(labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4 else "")
        clauses.append(f"{name} {values} in {shown}")
    return "; ".join(clauses)


def _short(value: Any, limit: int = 60) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else repr(value) if isinstance(value, str) or value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
