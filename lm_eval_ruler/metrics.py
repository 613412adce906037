"""RULER's scoring, exactly as NVIDIA's ``scripts/eval`` does it.

Lenient on purpose: a case-insensitive substring test with no word
boundaries, on the whole continuation. Changing that would change every score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CONTROL_CHARS = re.compile(r"[\x00-\x1f]")


def postprocess_prediction(prediction: str) -> str:
    """Strip, turn every ASCII control character into a newline, strip again."""
    return _CONTROL_CHARS.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """Fraction of gold strings found in the prediction (NIAH, VT, CWE, FWE)."""
    text = prediction.lower()
    return sum(reference.lower() in text for reference in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1 if *any* gold answer is found (QA).

    lm-eval's built-in port returns the fraction of aliases found instead,
    which gives "Denver Broncos" 0.667 against three SQuAD aliases; NVIDIA
    gives 1.
    """
    text = prediction.lower()
    return float(any(reference.lower() in text for reference in references))


METRICS = {"all": string_match_all, "part": string_match_part}


def score_sample(metric: str, prediction: str, references: Sequence[str]) -> float:
    """One sample's score on RULER's 0-100 scale."""
    return 100.0 * METRICS[metric](postprocess_prediction(prediction), references)
