"""Baseline-vs-candidate estimates with confidence intervals: a paired bootstrap or reported stderrs.

An :class:`Estimate` is one scope (a task, category, length or the overall
score) of a comparison; :class:`Intervals` computes it for any nesting of
task-length cells from one set of bootstrap replicates, so every scope and
every later gate reads the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from .runs import Run, SampleScore, TaskLength
from .table import mean

METHOD_BOOTSTRAP = "paired-bootstrap"
METHOD_STDERR = "stderr"
#: Bootstrap resamples of a comparison (``compare --bootstrap``).
BOOTSTRAP_RESAMPLES = 2000
#: Seed of the bootstrap's resampling (``compare --seed``), fixed so reports are reproducible.
#: Not the data-generation seed (``_tasks.DEFAULT_SEED``).
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """Baseline vs candidate for one scope (task, category, length or overall).

    ``recovery`` = candidate / baseline x 100 (None when the baseline is 0);
    ``difference`` = candidate - baseline in score points. Intervals are at the
    comparison's (1 - alpha) level; None when they cannot be computed.
    """

    baseline: float | None
    candidate: float | None
    difference: float | None
    recovery: float | None
    difference_ci: tuple[float, float] | None = None
    recovery_ci: tuple[float, float] | None = None
    difference_se: float | None = None
    recovery_se: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "difference": self.difference,
            "recovery": self.recovery,
            "difference_ci": list(self.difference_ci) if self.difference_ci else None,
            "recovery_ci": list(self.recovery_ci) if self.recovery_ci else None,
            "difference_se": self.difference_se,
            "recovery_se": self.recovery_se,
        }


class Intervals:
    """Sampling distributions of baseline and candidate means, for any nesting of cells.

    A scope is a list of groups of cells; its score is the mean over groups of
    the mean over each group's cells (a length = one group of its tasks; the
    overall score = one group per length). Bootstrap replicates per cell are
    drawn once, so every scope and every later :func:`gate` call reads the same
    replicates and the numbers agree with each other.
    """

    def __init__(
        self,
        method: str,
        cells: Sequence[TaskLength],
        baseline: Run,
        candidate: Run,
        n_bootstrap: int,
        seed: int,
    ) -> None:
        self.method = method
        self.base_point = {cell: baseline.results[cell].score for cell in cells}
        self.cand_point = {cell: candidate.results[cell].score for cell in cells}
        self.reps: dict[TaskLength, tuple[np.ndarray, np.ndarray]] = {}
        self.variances: dict[TaskLength, tuple[float, float] | None] = {}
        if method == METHOD_BOOTSTRAP:
            rng = np.random.default_rng(seed)
            for cell in sorted(cells):
                base, cand = _paired_arrays(baseline.samples[cell], candidate.samples[cell])
                idx = rng.integers(0, len(base), size=(n_bootstrap, len(base)))
                self.reps[cell] = (base[idx].mean(axis=1), cand[idx].mean(axis=1))
        else:
            for cell in cells:
                se_b, se_c = baseline.results[cell].stderr, candidate.results[cell].stderr
                self.variances[cell] = None if se_b is None or se_c is None else (se_b * se_b, se_c * se_c)

    def estimate(self, groups: Sequence[Sequence[TaskLength]], alpha: float) -> Estimate:
        groups = [list(g) for g in groups if g]
        if not groups:
            return Estimate(None, None, None, None)
        base = mean([mean([self.base_point[c] for c in g]) for g in groups])
        cand = mean([mean([self.cand_point[c] for c in g]) for g in groups])
        diff = cand - base
        recovery = 100.0 * cand / base if base > 0 else None
        if self.method == METHOD_BOOTSTRAP:
            return self._bootstrap_estimate(groups, alpha, base, cand, diff, recovery)
        return self._stderr_estimate(groups, alpha, base, cand, diff, recovery)

    def _bootstrap_estimate(
        self, groups: list[list[TaskLength]], alpha: float, base: float, cand: float, diff: float, recovery: float | None
    ) -> Estimate:
        """Percentile intervals from the replicates of each scope's mean."""
        b = np.mean([np.mean([self.reps[c][0] for c in g], axis=0) for g in groups], axis=0)
        c_ = np.mean([np.mean([self.reps[c][1] for c in g], axis=0) for g in groups], axis=0)
        d = c_ - b
        lo, hi = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        diff_ci = (float(lo), float(hi))
        diff_se = float(np.std(d, ddof=1))
        rec_ci = rec_se = None
        if recovery is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(b > 0, 100.0 * c_ / b, np.nan)
            finite = r[np.isfinite(r)]
            if finite.size:
                lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
                rec_ci = (float(lo), float(hi))
                rec_se = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
        return Estimate(base, cand, diff, recovery, diff_ci, rec_ci, diff_se, rec_se)

    def _stderr_estimate(
        self, groups: list[list[TaskLength]], alpha: float, base: float, cand: float, diff: float, recovery: float | None
    ) -> Estimate:
        """Normal intervals from the reported stderrs, runs taken as independent; none if a stderr is missing."""
        variances = [self.variances.get(c) for g in groups for c in g]
        if any(v is None for v in variances):
            return Estimate(base, cand, diff, recovery)
        var_b = math.fsum(math.fsum(self.variances[c][0] for c in g) / len(g) ** 2 for g in groups) / len(groups) ** 2  # type: ignore[index]
        var_c = math.fsum(math.fsum(self.variances[c][1] for c in g) / len(g) ** 2 for g in groups) / len(groups) ** 2  # type: ignore[index]
        z = NormalDist().inv_cdf(1 - alpha / 2)
        diff_se = math.sqrt(var_b + var_c)
        diff_ci = (diff - z * diff_se, diff + z * diff_se)
        rec_ci = rec_se = None
        if recovery is not None:
            # Delta method for R = 100 C / B with independent C and B.
            rec_se = 100.0 * math.sqrt(var_c / base**2 + cand**2 * var_b / base**4)
            rec_ci = (recovery - z * rec_se, recovery + z * rec_se)
        return Estimate(base, cand, diff, recovery, diff_ci, rec_ci, diff_se, rec_se)


def _paired_arrays(base: Sequence[SampleScore], cand: Sequence[SampleScore]) -> tuple[np.ndarray, np.ndarray]:
    by_id = {s.doc_id: s.score for s in cand}
    ordered = sorted(base, key=lambda s: s.doc_id)
    return np.array([s.score for s in ordered], dtype=float), np.array([by_id[s.doc_id] for s in ordered], dtype=float)
