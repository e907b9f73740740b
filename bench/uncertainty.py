"""How sure a benchmark figure is: 95 % intervals on accuracies and rates, and the paired test of two models.

* **Accuracies and the hit rate** (k right of n): the Wilson score interval, which stays inside 0…1 and keeps its
  coverage near 0 % and 100 %, where the normal approximation ("± 1.96 standard errors") does not.
* **False accepts** (k events over an exposure: hours of talk, or hundreds of other words): the exact Poisson
  (Garwood) interval, from the Poisson distribution itself (the chi-square/gamma relation, solved here by
  bisection on the Poisson CDF), so that 0 false accepts reads 0…3.69 per exposure, not 0…0.
* **Two models on the same items**: the exact McNemar test, a two-sided binomial test on the discordant pairs (the
  items exactly one of the two got right): whether the difference between the two accuracies is more than the
  luck of which items were drawn. Items both got right or both got wrong say nothing about the difference.

Pure functions of counts (math only, no SciPy: it is no dependency of the project).
"""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist
from typing import Any, Hashable, Sequence

import numpy as np

#: The confidence level of every interval, and 1 − it the p-value below which a paired difference is called real.
CONFIDENCE_LEVEL = 0.95

#: Decimals the report keeps of an interval's bounds (those of the figures they bracket).
REPORT_DECIMALS = 4

#: Significant digits the report keeps of a p-value (decimals would round a clear difference's to 0).
P_VALUE_SIGNIFICANT_DIGITS = 4

#: Bisection on the Poisson mean stops when the bracket is this narrow, relative to the mean (or absolutely below 1).
_POISSON_TOLERANCE = 1e-12

METHODS = {"level": CONFIDENCE_LEVEL,
           "accuracy_interval": "Wilson score interval (right out of scored)",
           "rate_interval": "exact Poisson (Garwood) interval on the count of false accepts, over its hours or "
                            "hundreds of words",
           "paired_test": "exact McNemar test: two-sided binomial test (p = 1/2) on the discordant items, those "
                          "exactly one of the two models named right"}


def _two_sided_tail(confidence: float) -> float:
    """The probability left in each tail of a two-sided interval at ``confidence``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a level between 0 and 1, got {confidence}")
    return (1.0 - confidence) / 2.0


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE_LEVEL) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion, ``successes`` of ``trials`` (``None`` for no trials)."""
    if not 0 <= successes <= trials:
        raise ValueError(f"successes: expected 0…{trials} (the trials), got {successes}")
    if trials == 0:
        return None
    z = NormalDist().inv_cdf(1.0 - _two_sided_tail(confidence))
    share = successes / trials
    z2_per_trial = z * z / trials
    denominator = 1.0 + z2_per_trial
    centre = (share + z2_per_trial / 2.0) / denominator
    half_width = z * math.sqrt(share * (1.0 - share) / trials + z2_per_trial / (4.0 * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half_width)
    high = 1.0 if successes == trials else min(1.0, centre + half_width)
    return low, high


def poisson_cdf(count: int, mean: float) -> float:
    """P(X ≤ ``count``) for X Poisson with ``mean`` (the terms summed in log space, so large means do not overflow)."""
    if count < 0:
        return 0.0
    if mean <= 0.0:
        return 1.0
    log_mean = math.log(mean)
    return min(1.0, math.fsum(math.exp(i * log_mean - mean - math.lgamma(i + 1)) for i in range(count + 1)))


def _mean_where_cdf_is(count: int, probability: float) -> float:
    """The Poisson mean μ with P(X ≤ ``count``; μ) = ``probability`` (the CDF falls as μ grows), by bisection."""
    low, high = 0.0, float(count) + 1.0
    while poisson_cdf(count, high) > probability:
        high *= 2.0
    while high - low > _POISSON_TOLERANCE * max(1.0, high):
        middle = (low + high) / 2.0
        if poisson_cdf(count, middle) > probability:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def poisson_interval(count: int, confidence: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
    """The exact (Garwood) interval of a Poisson mean from one observed ``count``: the lower bound the mean whose
    chance of ``count`` or more is the tail (0 for no events), the upper bound the mean whose chance of ``count``
    or fewer is the tail. Equal to the chi-square quantiles χ²(tail; 2k)/2 and χ²(1 − tail; 2k + 2)/2."""
    if count < 0:
        raise ValueError(f"count: expected a number of events >= 0, got {count}")
    tail = _two_sided_tail(confidence)
    low = 0.0 if count == 0 else _mean_where_cdf_is(count - 1, 1.0 - tail)
    return low, _mean_where_cdf_is(count, tail)


def rate_interval(count: int, exposure: float, confidence: float = CONFIDENCE_LEVEL) -> tuple[float, float] | None:
    """The exact Poisson interval of a rate, ``count`` events per unit of ``exposure`` (hours, or hundreds of
    words); ``None`` without exposure."""
    if exposure <= 0.0:
        return None
    low, high = poisson_interval(count, confidence)
    return low / exposure, high / exposure


def mcnemar_p_value(first_only_right: int, second_only_right: int) -> float:
    """The exact McNemar test's two-sided p-value: under "the two models are as good", each discordant item is
    either model's with probability 1/2; twice the binomial tail of the rarer side (at most 1; 1 with none)."""
    if first_only_right < 0 or second_only_right < 0:
        raise ValueError(f"discordant counts: expected >= 0, got {first_only_right} and {second_only_right}")
    discordant = first_only_right + second_only_right
    rarer = min(first_only_right, second_only_right)
    # C(n, 0) + … + C(n, rarer), each term from the one before (exact integers): math.comb per term was quadratic,
    # minutes for 20,000 items a side
    tail = term = 1
    for i in range(rarer):
        term = term * (discordant - i) // (i + 1)
        tail += term
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** discordant)))


# --------------------------------------------------------------------------- the report's fields


def _rounded(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [round(bound, REPORT_DECIMALS) for bound in interval]


def accuracy_interval(right: int, scored: int) -> list[float] | None:
    """The report's accuracy interval, ``[low, high]`` (``None`` when nothing was scored)."""
    return _rounded(wilson_interval(right, scored))


def per_class_intervals(confusion: np.ndarray, labels: Sequence[str]) -> dict[str, list[float] | None]:
    """Each class's accuracy (recall) interval from a confusion matrix (rows: true class)."""
    matrix = np.asarray(confusion, np.int64)
    return {label: accuracy_interval(int(matrix[i, i]), int(matrix[i].sum())) for i, label in enumerate(labels)}


def paired_comparison(model_right: Sequence[bool] | np.ndarray, other_right: Sequence[bool] | np.ndarray
                      ) -> dict[str, Any]:
    """The exact McNemar test of the model against another scored on the same items, in the same order
    (``model_right``, ``other_right``: each item named right or not)."""
    ours, theirs = np.asarray(model_right, bool), np.asarray(other_right, bool)
    if ours.shape != theirs.shape or ours.ndim != 1:
        raise ValueError(f"items: expected the same items scored by both, got {ours.shape} and {theirs.shape}")
    model_only = int(np.sum(ours & ~theirs))
    other_only = int(np.sum(~ours & theirs))
    p_value = mcnemar_p_value(model_only, other_only)
    return {"items": int(ours.size), "model_right_other_wrong": model_only, "other_right_model_wrong": other_only,
            "discordant": model_only + other_only, "p_value": float(f"{p_value:.{P_VALUE_SIGNIFICANT_DIGITS}g}"),
            "differs_at_level": p_value < 1.0 - CONFIDENCE_LEVEL}


def paired_on_common_items(model_items: Sequence[Hashable], model_right: Sequence[bool] | np.ndarray,
                           other_items: Sequence[Hashable], other_right: Sequence[bool] | np.ndarray
                           ) -> dict[str, Any] | None:
    """:func:`paired_comparison` on the items both scored (``*_items``: a key per item, e.g. a photo's path, in the
    order of its ``*_right``), in the model's order: a photo one of them could not read is left out of the pair,
    not paired with another. ``None`` when they share no item."""
    where = {item: i for i, item in enumerate(other_items)}
    pairs = [(i, where[item]) for i, item in enumerate(model_items) if item in where]
    if not pairs:
        return None
    model_index, other_index = (list(index) for index in zip(*pairs))
    return paired_comparison(np.asarray(model_right, bool)[model_index], np.asarray(other_right, bool)[other_index])


def operating_point_intervals(point: dict[str, Any]) -> dict[str, Any]:
    """The intervals of a streaming operating point's figures (a point of ``edgesense.bench.scoring``'s
    ``OperatingPoint.to_dict``), from the counts it holds: the hit rate (hits of the command words) and each word's
    (its ``per_word_counts``: hits of the times it was said), false accepts per hour of talk (its false accepts over
    its hours, unrounded where the point has them: ``hours`` is rounded to 3 decimals) and per 100 other words (the
    words stream's false accepts, on words and in the pauses, over its words / 100). A figure without its counts
    gets ``None``."""
    commands, talk, words = (point.get(key) or {} for key in ("commands_stream", "talk_stream", "words_stream"))
    hits = accuracy_interval(commands["hits"], commands["command_words"]) if "hits" in commands else None
    per_word = commands.get("per_word_counts")
    per_word_intervals = (None if per_word is None else
                          {word: accuracy_interval(n["hits"], n["said"]) for word, n in per_word.items()})
    hours = talk.get("hours_unrounded") or talk.get("hours")
    per_hour = _rounded(rate_interval(talk["false_accepts"], hours)) if "false_accepts" in talk and hours else None
    per_100 = None
    if words.get("words"):
        false_accepts = words["false_accepts_on_words"] + words["false_accepts_on_background"]
        per_100 = _rounded(rate_interval(false_accepts, words["words"] / 100.0))
    return {"hit_rate_interval": hits, "per_word_hit_rate_interval": per_word_intervals,
            "false_accepts_per_hour_interval": per_hour, "false_accepts_per_100_words_interval": per_100}
