"""Sizing a haystack to a token budget the way RULER does.

RULER sizes once per task and length (binary search in the current code,
linear search in the 2024 code), then builds each sample at that size and
steps back one increment, with a fresh random draw, until the sample fits.
Both searches consume the random stream with their probe samples, so the
exact probe sequence is part of the data distribution and is kept here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ...errors import BudgetError

Sample = TypeVar("Sample")


def binary_search_size(fits: Callable[[int], bool], lower: int, upper: int, fallback: int) -> int:
    """Largest probed size whose (freshly drawn) probe fitted, else ``fallback``.

    Every probe redraws its random parts, so the predicate is not monotone;
    like RULER's, the result is "the last size that fitted", not a true
    maximum, and later samples may still overflow and step back.
    """
    best: int | None = None
    while lower <= upper:
        mid = (lower + upper) // 2
        if fits(mid):
            best = mid
            lower = mid + 1
        else:
            upper = mid - 1
    return best if best is not None else fallback


def linear_search_size(total_tokens: Callable[[int], int], budget: int, step: int, cap: int | None = None) -> int:
    """RULER 2024's search: grow by ``step`` until a probe exceeds the budget, then step back.

    ``total_tokens`` returns the probe's tokens *including* the generation
    reserve. Reaching ``cap`` stops the search without a length check, as the
    2024 code did.
    """
    size = step
    total = 0
    while total < budget:
        total = total_tokens(size)
        if total > budget:
            size -= step
            break
        if cap is not None and size > cap:
            size = cap
            break
        size += step
    return size


@dataclass
class FittedSample(Generic[Sample]):
    sample: Sample
    prompt_tokens: int
    size: int


def fit_sample_to_budget(
    build: Callable[[int], Sample],
    prompt_tokens: Callable[[Sample], int],
    size: int,
    step: int,
    budget: int,
    reserve: int,
    what: str,
) -> FittedSample[Sample]:
    """Build one sample at ``size``; while it overflows, drop ``step`` units and redraw.

    RULER loops forever when even ``step`` units overflow; we stop with an
    error that names the smallest length that could work instead.
    """
    while True:
        sample = build(size)
        tokens = prompt_tokens(sample)
        if tokens <= budget:
            return FittedSample(sample, tokens, size)
        if size > step:
            size -= step
            continue
        raise BudgetError(
            f"{what}: the length is too small for this task. Even the smallest haystack ({size} units) gives "
            f"a {tokens}-token prompt, and with {reserve} tokens reserved for the answer that needs a length "
            f"of at least {tokens + reserve} (the budget is {budget + reserve}). Use a longer length, or a "
            "shorter chat template or system instruction."
        )
