"""A candidate against a baseline: recovery with intervals after checking both saw the same data, and the CI gate.

:func:`compare` gives a candidate's *recovery* of a baseline (the
quantization-evaluation convention: candidate / baseline x 100) per task,
category, length and overall; :func:`gate` turns it into a pass/fail decision.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._tasks import CATEGORIES, STANDARD_LENGTHS, TASKS, parse_length
from ..errors import ConfigurationError, ReportError
from .intervals import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, METHOD_BOOTSTRAP, METHOD_STDERR, Estimate, Intervals
from .runs import Run, TaskLength, length_label
from .table import TASK_ORDER, Table, mean, ruler_table

#: Run-level keys that change what the model saw although the data is the same.
CHECKED_RUN_INFO: tuple[str, ...] = ("chat_template_sha", "system_instruction_sha")


@dataclass(frozen=True)
class LengthComparison:
    """One compared length. ``complete`` is False when fewer than 13 tasks were compared."""

    length: int
    label: str
    tasks: tuple[str, ...]
    score: Estimate
    categories: Mapping[str, Estimate]
    per_task: Mapping[str, Estimate]

    @property
    def complete(self) -> bool:
        return len(self.tasks) == len(TASKS)


@dataclass(frozen=True)
class Comparison:
    """A candidate against a baseline on the same generated data.

    ``overall`` averages the compared lengths' scores (each length weighs the
    same, like RULER's Avg), and its recovery is candidate Avg / baseline Avg x
    100 — the ratio of the averages, not the average of per-length ratios, so
    it equals the recovery of RULER's Avg when 4K..128K are compared.
    """

    baseline: str
    candidate: str
    lengths: tuple[LengthComparison, ...]
    overall: Estimate
    method: str
    alpha: float
    n_bootstrap: int | None
    seed: int | None
    warnings: tuple[str, ...]
    baseline_table: Table = field(repr=False)
    candidate_table: Table = field(repr=False)
    baseline_run: Run = field(repr=False, compare=False)
    candidate_run: Run = field(repr=False, compare=False)
    _intervals: Intervals = field(repr=False, compare=False)

    def length(self, length: int | str) -> LengthComparison:
        tokens = parse_length(length) if isinstance(length, str) else length
        for item in self.lengths:
            if item.length == tokens:
                return item
        raise ReportError(f"{length_label(tokens)} was not compared (compared: {', '.join(i.label for i in self.lengths)})")

    def overall_for(self, lengths: Iterable[int | str] | str | None = None, alpha: float | None = None) -> Estimate:
        """The overall estimate over a subset of the compared lengths, at another alpha if given."""
        chosen = self.lengths if lengths is None else [self.length(t) for t in select_lengths(lengths, [i.length for i in self.lengths], "comparison")]
        groups = [[(task, item.length) for task in item.tasks] for item in chosen]
        return self._intervals.estimate(groups, self.alpha if alpha is None else alpha)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "method": self.method,
            "alpha": self.alpha,
            "confidence": 1 - self.alpha,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "warnings": list(self.warnings),
            "overall": self.overall.to_dict(),
            "lengths": [
                {
                    "length": item.length,
                    "label": item.label,
                    "complete": item.complete,
                    "tasks": list(item.tasks),
                    "score": item.score.to_dict(),
                    "categories": {k: v.to_dict() for k, v in item.categories.items()},
                    "per_task": {k: v.to_dict() for k, v in item.per_task.items()},
                }
                for item in self.lengths
            ],
        }


_RANGE_RE = re.compile(r"^\s*([^.\s]+)\s*\.\.\s*([^.\s]+)\s*$")


def select_lengths(spec: str | Iterable[int | str] | None, available: Sequence[int], what: str = "candidate") -> list[int]:
    """Lengths (tokens) chosen by ``spec`` among ``available``.

    ``"4k..64k"`` is an inclusive range over the available lengths;
    ``"4k,8k"`` or ``["4k", 8192]`` lists lengths, each of which must be
    available; ``"standard"`` means 4K..128K; None means all available.
    """
    available = sorted(available)
    if spec is None:
        return available
    try:
        if isinstance(spec, str):
            text = spec.strip()
            if text.lower() == "standard":
                text = f"{STANDARD_LENGTHS[0]}..{STANDARD_LENGTHS[-1]}"
            match = _RANGE_RE.match(text)
            if match:
                low, high = parse_length(match.group(1)), parse_length(match.group(2))
                if low > high:
                    raise ReportError(f"length range {spec!r} is reversed; write the shorter length first (e.g. 4k..64k)")
                chosen = [t for t in available if low <= t <= high]
                if not chosen:
                    raise ReportError(
                        f"no {what} lengths in {spec!r}; the {what} has {', '.join(map(length_label, available))}"
                    )
                return chosen
            items: list[int | str] = [part for part in text.split(",") if part.strip()]
        else:
            items = list(spec)
        wanted = sorted({parse_length(item) for item in items})
    except ConfigurationError as exc:
        raise ReportError(f"bad length selection {spec!r}: {exc}") from None
    absent = [t for t in wanted if t not in available]
    if absent:
        raise ReportError(
            f"the {what} has no results at {', '.join(map(length_label, absent))} "
            f"(it has {', '.join(map(length_label, available))})"
        )
    if not wanted:
        raise ReportError(f"empty length selection {spec!r}")
    return wanted


# --------------------------------------------------------------------------- same data, pairable logs


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_data(baseline: Run, candidate: Run, cells: Sequence[TaskLength]) -> tuple[list[str], list[str]]:
    """(mismatches that make scores incomparable, softer warnings)."""
    mismatches: dict[str, list[str]] = {}
    warnings: list[str] = []
    no_provenance: list[str] = []
    for cell in cells:
        b, c = baseline.results[cell], candidate.results[cell]
        if not b.provenance.recorded or not c.provenance.recorded:
            no_provenance.append(c.lm_eval_task)
            continue
        for key, (vb, vc) in b.provenance.differences(c.provenance).items():
            mismatches.setdefault(key, []).append(f"{c.lm_eval_task}: baseline {_short(vb)}, candidate {_short(vc)}")
        if b.n is not None and c.n is not None and b.n != c.n:
            mismatches.setdefault("n-samples", []).append(f"{c.lm_eval_task}: baseline {b.n}, candidate {c.n}")
    for key in CHECKED_RUN_INFO:
        vb, vc = baseline.info.get(key), candidate.info.get(key)
        if vb != vc:
            mismatches.setdefault(key, []).append(f"run-level: baseline {_short(vb)}, candidate {_short(vc)}")
    problems = [
        f"{key} differs in {len(items)} task(s), e.g. {items[0]}" if len(items) > 1 else f"{key} differs: {items[0]}"
        for key, items in mismatches.items()
    ]
    if no_provenance:
        warnings.append(
            f"{len(no_provenance)} task(s) have no ruler provenance in configs[...].metadata.ruler "
            f"(e.g. {no_provenance[0]}); identical data cannot be confirmed"
        )
    if baseline.info.get("lm_eval_version") != candidate.info.get("lm_eval_version"):
        warnings.append(
            f"lm_eval_version differs: baseline {baseline.info.get('lm_eval_version')}, "
            f"candidate {candidate.info.get('lm_eval_version')}"
        )
    versions = {(baseline.results[c].provenance.plugin_version, candidate.results[c].provenance.plugin_version) for c in cells}
    if any(vb != vc for vb, vc in versions):
        warnings.append(f"plugin_version differs: {min(versions, key=str)}")
    return problems, warnings


def _check_pairing(baseline: Run, candidate: Run, cells: Sequence[TaskLength]) -> tuple[list[str], list[str]]:
    """(doc mismatches, cells lacking logs) for the paired bootstrap."""
    mismatched: list[str] = []
    lacking: list[str] = []
    for cell in cells:
        name = candidate.results[cell].lm_eval_task
        if cell not in baseline.samples or cell not in candidate.samples:
            lacking.append(name)
            continue
        b = {s.doc_id: s.doc_hash for s in baseline.samples[cell]}
        c = {s.doc_id: s.doc_hash for s in candidate.samples[cell]}
        if len(b) != len(baseline.samples[cell]) or len(c) != len(candidate.samples[cell]):
            mismatched.append(f"{name}: duplicate doc_id in a sample log")
        elif b.keys() != c.keys():
            mismatched.append(f"{name}: baseline logged {len(b)} docs, candidate {len(c)}, {len(b.keys() ^ c.keys())} doc_id(s) unmatched")
        else:
            differing = [d for d in b if b[d] != c[d]]
            if differing:
                mismatched.append(f"{name}: doc_hash differs for {len(differing)} of {len(b)} docs (first doc_id {differing[0]})")
    return mismatched, lacking


def _check_sample_means(run: Run, cells: Sequence[TaskLength], role: str) -> list[str]:
    out = []
    for cell in cells:
        if run.samples.get(cell):
            sample_mean = mean([s.score for s in run.samples[cell]])
            if abs(sample_mean - run.results[cell].score) > 0.05:
                out.append(
                    f"{role} {run.results[cell].lm_eval_task}: sample log mean {sample_mean:.2f} != reported score "
                    f"{run.results[cell].score:.2f}; the log may belong to another run"
                )
    return out


# --------------------------------------------------------------------------- compare and its steps


def compare(
    baseline: Run,
    candidate: Run,
    *,
    lengths: str | Iterable[int | str] | None = None,
    alpha: float = 0.05,
    n_bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    method: str = "auto",
    allow_mismatch: bool = False,
) -> Comparison:
    """Recovery and difference of ``candidate`` vs ``baseline`` per task, category, length and overall.

    Compared are the candidate's tasks at the chosen lengths (``lengths``, see
    :func:`select_lengths`); the baseline must have every one of them, since a
    recovery against a missing baseline value means nothing. A length where
    the candidate ran fewer than 13 tasks is compared on those tasks and
    flagged as partial.

    Intervals (at level 1 - ``alpha``):

    * ``paired-bootstrap`` when both runs logged samples: documents are paired
      by task and ``doc_id`` (and must have equal ``doc_hash``), and resampled
      with replacement within each task and length, ``n_bootstrap`` times with
      a fixed ``seed``. Pairing removes the between-document variance both runs
      share, which is most of it: the intervals are much tighter than treating
      the runs as independent.
    * ``stderr`` otherwise: a normal approximation from lm-eval's reported
      standard errors, assuming independent runs (se = sqrt(se_a^2 + se_b^2);
      recovery by the delta method). Conservative for paired data.

    ``method`` is ``"auto"`` (bootstrap when possible), ``"paired-bootstrap"``
    (an error if impossible) or ``"stderr"``.

    Before any number is computed, the runs' provenance is checked: different
    tokenizer, chat template (fingerprint or applied sha), render modes,
    profile, seed, sample count, cache key or source-file hashes mean the two
    models answered different prompts. That raises :class:`ReportError`
    unless ``allow_mismatch=True``, which lists the differences in
    ``Comparison.warnings`` instead.
    """
    _check_arguments(alpha, method, n_bootstrap)
    chosen = select_lengths(lengths, candidate.lengths, "candidate")
    cells: list[TaskLength] = [cell for cell in sorted(candidate.results) if cell[1] in chosen]
    _require_baseline_cells(baseline, candidate, chosen, cells)

    warnings: list[str] = []
    mismatched_docs, lacking_logs = _check_same_data(baseline, candidate, cells, allow_mismatch, warnings)
    chosen_method = _interval_method(method, baseline, candidate, cells, mismatched_docs, lacking_logs, warnings)
    intervals = Intervals(chosen_method, cells, baseline, candidate, n_bootstrap, seed)
    compared = [_compare_length(intervals, candidate, tokens, alpha, warnings) for tokens in chosen]
    overall = intervals.estimate([[(task, item.length) for task in item.tasks] for item in compared], alpha)
    for run, role in ((baseline, "baseline"), (candidate, "candidate")):
        warnings.extend(f"{role}: {w}" for w in run.warnings)
    return Comparison(
        baseline=baseline.name,
        candidate=candidate.name,
        lengths=tuple(compared),
        overall=overall,
        method=chosen_method,
        alpha=alpha,
        n_bootstrap=n_bootstrap if chosen_method == METHOD_BOOTSTRAP else None,
        seed=seed if chosen_method == METHOD_BOOTSTRAP else None,
        warnings=tuple(warnings),
        baseline_table=ruler_table(baseline),
        candidate_table=ruler_table(candidate),
        baseline_run=baseline,
        candidate_run=candidate,
        _intervals=intervals,
    )


def _check_arguments(alpha: float, method: str, n_bootstrap: int) -> None:
    if not 0 < alpha < 1:
        raise ReportError(f"alpha must be between 0 and 1 (got {alpha}); 0.05 gives 95% intervals")
    if method not in ("auto", METHOD_BOOTSTRAP, METHOD_STDERR):
        raise ReportError(f"unknown method {method!r}; use auto, {METHOD_BOOTSTRAP} or {METHOD_STDERR}")
    if n_bootstrap < 100:
        raise ReportError(f"n_bootstrap={n_bootstrap} is too few for percentile intervals; use at least 1000")


def _require_baseline_cells(baseline: Run, candidate: Run, chosen: Sequence[int], cells: Sequence[TaskLength]) -> None:
    """Refuse when the baseline lacks any compared task, naming the lengths that could be compared instead."""
    absent = [cell for cell in cells if cell not in baseline.results]
    if not absent:
        return
    parts, usable = [], []
    for tokens in chosen:
        lacking = [task for task in TASK_ORDER if (task, tokens) in absent]
        if not lacking:
            usable.append(length_label(tokens).lower())
        elif len(lacking) == len(candidate.tasks_at(tokens)):
            parts.append(f"{length_label(tokens)} (all tasks)")
        else:
            parts.append(f"{length_label(tokens)} ({', '.join(lacking)})")
    hint = f" (e.g. --lengths {','.join(usable)})" if usable else ""
    raise ReportError(
        f"the baseline {baseline.name} ({baseline.path}) has no results for what the candidate ran: {'; '.join(parts)}. "
        f"Evaluate the baseline there too, or compare only lengths both runs have (--lengths, or lengths= in Python){hint}"
    )


def _check_same_data(
    baseline: Run, candidate: Run, cells: Sequence[TaskLength], allow_mismatch: bool, warnings: list[str]
) -> tuple[list[str], list[str]]:
    """Refuse runs made on different data (or, when allowed, warn); returns (mismatched docs, tasks lacking logs)."""
    problems, soft = _check_data(baseline, candidate, cells)
    mismatched_docs, lacking_logs = _check_pairing(baseline, candidate, cells)
    # Logged docs that differ mean different data, whatever the interval method.
    problems.extend(f"sample logs pair different documents: {m}" for m in mismatched_docs)
    if problems:
        if not allow_mismatch:
            raise ReportError(
                "baseline and candidate were not evaluated on the same data, so their scores are not comparable:\n  - "
                + "\n  - ".join(problems)
                + "\nRun both with the same tokenizer, chat template, profile, seed and num_samples (the same cached "
                "datasets), or pass allow_mismatch=True / --allow-mismatch to compare anyway with these as warnings."
            )
        warnings.extend(f"MISMATCH (allowed): {p}" for p in problems)
    warnings.extend(soft)
    return mismatched_docs, lacking_logs


def _interval_method(
    method: str,
    baseline: Run,
    candidate: Run,
    cells: Sequence[TaskLength],
    mismatched_docs: Sequence[str],
    lacking_logs: Sequence[str],
    warnings: list[str],
) -> str:
    """The interval method to use: the paired bootstrap when asked for or possible, else reported stderrs."""
    can_pair = not lacking_logs and not mismatched_docs
    if method == METHOD_BOOTSTRAP and not can_pair:
        why = f"no sample logs for {len(lacking_logs)} task(s), e.g. {lacking_logs[0]}" if lacking_logs else mismatched_docs[0]
        raise ReportError(f"a paired bootstrap needs matching sample logs in both runs ({why}); rerun with --log_samples or use method='stderr'")
    chosen_method = METHOD_STDERR if method == METHOD_STDERR or not can_pair else METHOD_BOOTSTRAP
    if method == "auto" and not can_pair and lacking_logs and (baseline.samples or candidate.samples):
        warnings.append(f"sample logs missing for {len(lacking_logs)} task(s) (e.g. {lacking_logs[0]}); intervals use reported stderrs")
    if chosen_method == METHOD_BOOTSTRAP:
        warnings.extend(_check_sample_means(baseline, cells, "baseline") + _check_sample_means(candidate, cells, "candidate"))
    else:
        no_se = [candidate.results[c].lm_eval_task for c in cells if baseline.results[c].stderr is None or candidate.results[c].stderr is None]
        if no_se:
            warnings.append(f"no reported stderr for {len(no_se)} task(s) (e.g. {no_se[0]}); their scopes have no intervals")
    return chosen_method


def _compare_length(intervals: Intervals, candidate: Run, tokens: int, alpha: float, warnings: list[str]) -> LengthComparison:
    """One length's estimates per task, per complete category and for its score (a warning when partial)."""
    tasks = tuple(task for task in TASK_ORDER if (task, tokens) in candidate.results)
    if len(tasks) < len(TASKS):
        warnings.append(
            f"{length_label(tokens)}: compared on {len(tasks)} of 13 tasks; its score is the mean of those, not RULER's 13-task score"
        )
    per_task = {task: intervals.estimate([[(task, tokens)]], alpha) for task in tasks}
    categories = {
        category: intervals.estimate([[(t, tokens) for t in members]], alpha)
        for category, members in CATEGORIES.items()
        if all(t in tasks for t in members)
    }
    score = intervals.estimate([[(task, tokens) for task in tasks]], alpha)
    return LengthComparison(tokens, length_label(tokens), tasks, score, categories, per_task)


# --------------------------------------------------------------------------- gate


@dataclass(frozen=True)
class GateResult:
    """Pass/fail of a comparison; ``reasons`` say why it failed (empty when it passed)."""

    passed: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    min_recovery: float
    alpha: float
    lengths: tuple[str, ...]
    estimate: Estimate
    comparison: Comparison = field(repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.comparison.baseline,
            "candidate": self.comparison.candidate,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "min_recovery": self.min_recovery,
            "alpha": self.alpha,
            "lengths": list(self.lengths),
            "estimate": self.estimate.to_dict(),
        }


def gate(
    comparison: Comparison,
    min_recovery: float = 99.0,
    alpha: float = 0.05,
    lengths: str | Iterable[int | str] | None = None,
) -> GateResult:
    """Decide whether the candidate may ship: two checks on the *overall* estimate.

    1. Threshold: overall recovery (candidate Avg / baseline Avg x 100 over the
       gated lengths) must be >= ``min_recovery``.
    2. Significance: the drop must not be statistically significant, i.e. the
       upper bound of the (1 - ``alpha``) interval of candidate - baseline must
       not be below 0.

    Why one overall test rather than one per length: six per-length tests at
    alpha = 0.05 would fail an unchanged model up to ~26% of the time (multiple
    comparisons), and per-length intervals at RULER's sample sizes are wide.
    Per-length numbers stay in the report for people to read; restrict the
    gate to the lengths you care about with ``lengths`` (e.g. ``"4k..64k"``,
    leaving 128K report-only). When no interval is available the significance
    check is skipped and a note says so.
    """
    if not 0 < alpha < 1:
        raise ReportError(f"alpha must be between 0 and 1 (got {alpha})")
    estimate = comparison.overall_for(lengths, alpha)
    labels = tuple(
        item.label
        for item in comparison.lengths
        if lengths is None or item.length in select_lengths(lengths, [i.length for i in comparison.lengths], "comparison")
    )
    reasons: list[str] = []
    notes: list[str] = []
    scope = f"over {', '.join(labels)}"
    if estimate.recovery is None:
        reasons.append(f"overall recovery is undefined {scope}: the baseline scores 0")
    elif estimate.recovery < min_recovery:
        reasons.append(
            f"overall recovery {estimate.recovery:.2f}% {scope} is below the required {min_recovery:.2f}% "
            f"(baseline {estimate.baseline:.1f}, candidate {estimate.candidate:.1f})"
        )
    if estimate.difference_ci is None:
        notes.append("significance not tested: no interval (no sample logs and no reported stderrs)")
    elif estimate.difference_ci[1] < 0:
        lo, hi = estimate.difference_ci
        reasons.append(
            f"the drop is statistically significant: candidate - baseline = {estimate.difference:+.2f} points, "
            f"{100 * (1 - alpha):g}% CI [{lo:+.2f}, {hi:+.2f}] lies below 0 ({comparison.method})"
        )
    for item in comparison.lengths:
        if item.label in labels and item.score.difference_ci and item.score.difference_ci[1] < 0:
            notes.append(f"{item.label}: significant drop at this length alone ({item.score.difference:+.2f}); reported, not gated")
    return GateResult(not reasons, tuple(reasons), tuple(notes), min_recovery, alpha, labels, estimate, comparison)
